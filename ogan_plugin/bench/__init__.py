"""``ogan-plugin bench``: the benchmarks, a tool built on the library.

- :mod:`ogan_plugin.bench.kernels`: forward+backward of the fused operations per backend;
- :mod:`ogan_plugin.bench.step`: whole training iterations, alternating vs single loss;
- :mod:`ogan_plugin.bench.compile`: ``--compile``, every kernel configuration built for a GPU
  target without a GPU (registers, spills);
- :mod:`ogan_plugin.bench.gpu_check`: ``--check``, the first-contact check on a GPU (``--dry``:
  the interpreter);
- :mod:`ogan_plugin.bench.invert`: ``--invert``, inversion from the encoder's start against
  mean and random starts on a demo checkpoint's held-out images;
- :mod:`ogan_plugin.bench.timing`: the timing helpers the benchmarks use;
- :mod:`ogan_plugin.bench.command`: the command line.

Modules import the library and :mod:`~ogan_plugin.bench.timing`; :mod:`~ogan_plugin.bench.invert`
also reads demo checkpoints and data through :mod:`ogan_plugin.demo.train` and
:mod:`ogan_plugin.demo.data` (and shares their progress bar).  None imports a command line
(``bench.command``, ``demo.command``, ``demo.invert``), so there is no import cycle.
"""
