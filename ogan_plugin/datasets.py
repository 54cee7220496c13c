"""Deprecated alias of :mod:`ogan_plugin.demo.data` (the demo's data loading moved there in 0.2.0).

``from ogan_plugin import datasets`` keeps working for one more release, with a
``DeprecationWarning``; import :mod:`ogan_plugin.demo.data` instead.
"""

import warnings

from ogan_plugin.demo.data import *  # noqa: F401,F403
from ogan_plugin.demo.data import __all__  # noqa: F401

warnings.warn(
    "ogan_plugin.datasets moved to ogan_plugin.demo.data; the old name will be removed in 0.3",
    DeprecationWarning,
    stacklevel=2,
)
