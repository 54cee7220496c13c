"""Shared set-up of the kernel tests: Triton's interpreter on CPU-only machines, poisoned
output buffers, float64 comparisons and kernel-launch counting.

Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors.
``TRITON_INTERPRET=1`` must be set before triton is first imported (``import ogan_plugin``
imports it through ``torch._dynamo``): ``tests/conftest.py``, which pytest loads first, sets
it on machines without CUDA; the line below only covers running this folder's files with
that conftest out of the way.  With a GPU and no ``TRITON_INTERPRET`` in the environment
the same tests run the compiled kernels on CUDA tensors: the ``triton_device`` fixture
(tests/conftest.py) says which.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ogan_plugin.kernels import pearson as pearson_mod  # noqa: E402
from ogan_plugin.kernels import single_loss as single_loss_mod  # noqa: E402

@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every buffer the launchers allocate starts as NaN, so an element a kernel forgot to
    write shows up as NaN in the comparison."""

    def alloc(shape, dtype, device):
        return torch.full(shape if isinstance(shape, tuple) else (shape,), float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(pearson_mod, "_alloc", alloc)


def _check(actual: torch.Tensor, expected: torch.Tensor, rtol: float, scale: Optional[float] = None, what: str = "") -> float:
    """Assert ``max|actual - expected| <= rtol * max(max|expected|, scale)``; return the ratio.

    ``scale`` is the natural size of a quantity whose entries may cancel to ~0 (e.g. the
    gradient at n = 2, exactly zero in exact arithmetic, is made of terms of size
    |g| / ||x - mean||).
    """
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert torch.isfinite(actual).all(), f"{what}: non-finite values (unwritten output?)"
    err = (actual.double().cpu() - expected.double().cpu()).abs().max().item()
    ref = max(expected.double().abs().max().item(), scale or 0.0)
    assert err <= rtol * ref, f"{what}: max error {err:.3e} > {rtol:g} * {ref:.3e}"
    return err / ref if ref else 0.0


@pytest.fixture
def check() -> Callable[..., float]:
    return _check


class _LaunchCounter(TorchDispatchMode):
    """Counts Triton kernel launches and every torch op that computes (launches) something.

    Allocations and views are free; the torch ops Triton's interpreter runs inside a
    launch, the NaN fill of the poisoned buffers and the ``torch.ops.ogan_plugin`` operators
    (which wrap the launches on CUDA) are not counted.
    """

    FREE = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach", "lift_fresh"}

    def __init__(self) -> None:
        super().__init__()
        self.triton: list[str] = []
        self.torch_ops: list[str] = []
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        # ogan_plugin's own operators (the CUDA path) only wrap the launches counted above
        if not self.paused and not func.is_view and name not in self.FREE and func.namespace != "ogan_plugin":
            self.torch_ops.append(name)
        return func(*args, **(kwargs or {}))


class _CountingKernel:
    def __init__(self, kernel, counter: _LaunchCounter, name: str) -> None:
        self.kernel, self.counter, self.name = kernel, counter, name

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            self.counter.triton.append(self.name)
            self.counter.paused = True
            try:
                return launch(*args, **kwargs)
            finally:
                self.counter.paused = False

        return run


@pytest.fixture
def count_launches(monkeypatch: pytest.MonkeyPatch):
    """``with count_launches() as c: ...`` -> ``c.triton`` (kernel names), ``c.torch_ops``."""
    pearson_mod._TRITON.build()
    single_loss_mod._TRITON.build()

    @contextmanager
    def counting() -> Iterator[_LaunchCounter]:
        counter = _LaunchCounter()
        with monkeypatch.context() as m:
            for mod, name in ((pearson_mod, "_pearson_fwd_kernel"), (pearson_mod, "_pearson_bwd_kernel"),
                              (single_loss_mod, "_objective_kernel")):
                m.setattr(mod, name, _CountingKernel(getattr(mod, name), counter, name))
            alloc = pearson_mod._alloc

            def unpaid_alloc(*args):
                counter.paused = True
                try:
                    return alloc(*args)
                finally:
                    counter.paused = False

            m.setattr(pearson_mod, "_alloc", unpaid_alloc)
            with counter:
                yield counter

    return counting
