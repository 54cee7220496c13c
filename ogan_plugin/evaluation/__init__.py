"""The parts of :mod:`ogan_plugin.evaluate` (import from there): data plumbing, classifiers
and sample quality, steps to quality."""
