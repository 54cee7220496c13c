"""Hook mode's former home: it is a core feature now, in :mod:`ogan_plugin.hook`.

``from ogan_plugin.integrations.hook import attach`` (and ``detach``, ``OGANHook``) keeps
working: this module re-exports them, without a warning (the public names are
``ogan_plugin.attach``, ``ogan_plugin.detach`` and ``ogan_plugin.OGANHook``).
"""

from ogan_plugin.hook import OGANHook, attach, detach

__all__ = ["OGANHook", "attach", "detach"]
