"""MkDocs hook: a source tree for mkdocstrings in which ``kernels/`` and ``adapters/`` sit inside
``ogan_plugin/``, as they do in the installed package (pyproject's ``package-dir`` maps them).

The API reference reads the sources statically (griffe), which does not follow that mapping;
so before the build this hook links the three folders into ``build/docs-src/ogan_plugin/``
and ``mkdocs.yml`` points mkdocstrings there.  Nothing is copied; ``build/`` is git-ignored.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "docs-src"


def on_startup(command: str, dirty: bool, **kwargs: object) -> None:
    """Make ``build/docs-src/ogan_plugin`` (runs once, before MkDocs reads any page)."""
    pkg = TREE / "ogan_plugin"
    if TREE.exists():
        shutil.rmtree(TREE)
    pkg.mkdir(parents=True)
    for entry in (ROOT / "ogan_plugin").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name in ("kernels", "adapters"):
        (pkg / name).symlink_to(ROOT / name)
