"""Import the third-party GAN packages the tests in this folder run against.

The packages (``torchgan``, ``stylegan2-pytorch``, ``lightweight-gan``) and the few small
packages their modules import (einops, kornia, fire, ...) are listed, pinned, in
``requirements.txt`` beside this file; ``.ci/run`` installs them with ``pip install
--no-deps -r tests/thirdparty/requirements.txt``.  Under CI a missing package is an error; elsewhere the
tests are skipped with the command that installs them.

**Stand-ins.**  Some imports cannot work on a CPU-only machine, and these tests replace
them, only while the package is being imported, only where the real thing fails:

* ``torchvision``: the CPU build of torch used here has no matching torchvision wheel
  (its operators fail to register at import).  The three packages import torchvision at
  the top of their modules, but their discriminators and generators never use it.  Where
  ``import torchvision`` fails, an empty stand-in module (with empty ``transforms``,
  ``utils``, ``models`` and ``datasets`` submodules) is put into ``sys.modules`` for the
  import and removed afterwards.  With a working torchvision installed, the real one is
  imported and used.
* ``aim``: an experiment-logging package that ``stylegan2_pytorch`` imports at the top
  and its networks never use; the same empty stand-in when it is not installed.
* ``torch.cuda.is_available``: ``stylegan2_pytorch`` and ``lightweight_gan`` assert at
  import time that a GPU is present.  On a machine without one, it answers True for the
  duration of the import only; the networks then run on the CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from contextlib import contextmanager
from typing import Iterator

import pytest
import torch

#: module -> pip name, for the skip message
PACKAGES = {"torchgan": "torchgan", "stylegan2_pytorch": "stylegan2-pytorch", "lightweight_gan": "lightweight-gan"}


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:  # torchvision raises RuntimeError when its operators fail to register
        return False


def _empty_module(name: str, submodules: tuple[str, ...] = ()) -> dict[str, types.ModuleType]:
    root = types.ModuleType(name)
    root.__doc__ = "stand-in for tests/thirdparty (see its conftest.py)"
    made = {name: root}
    for sub in submodules:
        m = types.ModuleType(f"{name}.{sub}")
        setattr(root, sub, m)
        made[m.__name__] = m
    if "transforms" in submodules:
        fn = types.ModuleType(f"{name}.transforms.functional")
        made["torchvision.transforms"].functional = fn
        made[fn.__name__] = fn
    return made


@contextmanager
def _standins() -> Iterator[list[str]]:
    """Put the stand-ins (only those needed here) into sys.modules; yield their names."""
    added: dict[str, types.ModuleType] = {}
    if not _importable("torchvision"):
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]  # a half-imported real torchvision
        added.update(_empty_module("torchvision", ("transforms", "utils", "models", "datasets")))
    if not _importable("aim"):
        added.update(_empty_module("aim"))
    sys.modules.update(added)
    is_available = torch.cuda.is_available
    if not is_available():
        torch.cuda.is_available = lambda: True  # the import-time GPU assertion only
    try:
        yield sorted(added)
    finally:
        torch.cuda.is_available = is_available
        for k in added:
            sys.modules.pop(k, None)


def load(module: str) -> types.ModuleType:
    """Import a third-party package (with the stand-ins above where needed)."""
    if module in sys.modules:
        return sys.modules[module]
    if importlib.util.find_spec(module) is None:
        message = (
            f"{PACKAGES[module]} is not installed: pip install --no-deps -r tests/thirdparty/requirements.txt"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with _standins():
        return importlib.import_module(module)


@pytest.fixture(scope="session")
def torchgan():
    return load("torchgan")


@pytest.fixture(scope="session")
def stylegan2_pytorch():
    load("stylegan2_pytorch")
    return importlib.import_module("stylegan2_pytorch.stylegan2_pytorch")


@pytest.fixture(scope="session")
def lightweight_gan():
    load("lightweight_gan")
    return importlib.import_module("lightweight_gan.lightweight_gan")
