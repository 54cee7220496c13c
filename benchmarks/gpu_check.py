"""The first-contact GPU check (see ogan_plugin.bench.gpu_check), runnable from a source checkout.

The same as ``ogan-plugin bench --check``, but it also runs without installing the package
(a lent GPU machine with torch and triton but no network):

    python3 benchmarks/gpu_check.py [--csv bench.csv]     # on a GPU, under a minute
    python3 benchmarks/gpu_check.py --dry                 # on a CPU, Triton's interpreter
"""

from __future__ import annotations

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_from_checkout() -> None:
    """Import ``ogan_plugin`` from this checkout when it is not installed.

    The wheel maps ``kernels/`` and ``adapters/`` to ``ogan_plugin.kernels`` and
    ``ogan_plugin.adapters``; searching the repository root for the package's
    submodules does the same without an install.
    """
    spec = importlib.util.spec_from_file_location(
        "ogan_plugin", os.path.join(ROOT, "ogan_plugin", "__init__.py"),
        submodule_search_locations=[os.path.join(ROOT, "ogan_plugin"), ROOT],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["ogan_plugin"] = module
    spec.loader.exec_module(module)


if __name__ == "__main__":
    if "--dry" in sys.argv[1:]:  # before anything imports triton
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if importlib.util.find_spec("ogan_plugin") is None:
        _import_from_checkout()
    from ogan_plugin.cli import main

    sys.exit(main(["bench", "--check", *sys.argv[1:]]))
