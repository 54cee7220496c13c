"""Deprecated alias of :mod:`ogan_plugin.demo.models` (the demo's nets moved there in 0.2.0).

``from ogan_plugin.models import Generator`` keeps working for one more release, with a
``DeprecationWarning``; import :mod:`ogan_plugin.demo.models` instead.
"""

import warnings

from ogan_plugin.demo.models import *  # noqa: F401,F403
from ogan_plugin.demo.models import __all__  # noqa: F401

warnings.warn(
    "ogan_plugin.models moved to ogan_plugin.demo.models; the old name will be removed in 0.3",
    DeprecationWarning,
    stacklevel=2,
)
