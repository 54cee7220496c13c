"""``ogan-plugin bench``: the benchmarks, a tool built on the library.

- :mod:`ogan_plugin.bench.kernels`: forward+backward of the fused operations per backend;
- :mod:`ogan_plugin.bench.step`: whole training iterations, alternating vs single loss;
- :mod:`ogan_plugin.bench.timing`: the timing helpers both use;
- :mod:`ogan_plugin.bench.command`: the command line.

Modules import the library and :mod:`~ogan_plugin.bench.timing`, never each other's
command line, so there is no import cycle.
"""
