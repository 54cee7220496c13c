"""Shared fixtures: the devices tests run on, and a zoo of discriminators of different shapes.

Devices.  ``device`` runs a test once per device this machine has: ``"cpu"`` everywhere,
plus ``"cuda"`` where torch sees a GPU, so the same plain ``pytest`` checks both on a GPU
machine.  ``triton_device`` is where the Triton kernels run: CUDA tensors on a GPU, CPU
tensors under Triton's interpreter (``TRITON_INTERPRET=1``, set below) without one.  Tests
that only a GPU can run are marked ``@pytest.mark.gpu`` and skip, with the reason,
without CUDA.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import spectral_norm as old_spectral_norm
from torch.nn.utils.parametrizations import spectral_norm

# Without a GPU the Triton kernels run in Triton's interpreter (tests/kernels).  The variable
# must be set before anything imports triton (importing ogan_plugin does, through
# torch._dynamo), hence here, in the first conftest pytest loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

#: the devices ``device`` runs each test on
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
#: where the Triton kernels run: the interpreter on CPU tensors, else compiled on CUDA
TRITON_DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" or not torch.cuda.is_available() else "cuda"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip, with the reason, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> Iterator[str]:
    """``"cpu"``, and ``"cuda"`` where torch sees a GPU (test ids ``[cpu]`` / ``[cuda]``).

    On CUDA, float32 convolutions and matrix products run in full float32 for the test (no
    TF32, which cuDNN uses by default and which rounds inputs to 10 mantissa bits), so the
    tests' float32 tolerances mean the same on both devices.
    """
    if request.param != "cuda":
        yield request.param
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield request.param
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def triton_device() -> str:
    """Where the Triton backend runs here: ``"cuda"`` on a GPU, ``"cpu"`` (interpreter) without one."""
    return TRITON_DEVICE


def gpus_or_skip(n: int) -> None:
    """Skip the calling test, saying why, unless torch sees at least ``n`` CUDA devices."""
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < n:
        pytest.skip(f"needs {n} CUDA GPUs (one process per GPU); torch sees {have}")


@pytest.fixture
def need_gpus() -> Callable[[int], None]:
    """``need_gpus(2)`` skips the test, with the reason, on a machine with fewer GPUs."""
    return gpus_or_skip


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks everywhere: one intra-op thread avoids oversubscribing small CPUs
    (thread hand-offs cost more than the work)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class CustomForward(nn.Module):
    """Head registered first, used last: detection must not rely on registration order."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 1)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x)).view(-1)


def dcgan() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(8, 16, 4, 2, 1), nn.BatchNorm2d(16), nn.LeakyReLU(0.2),
        nn.Conv2d(16, 1, 4, 1, 0), nn.Sigmoid(),
    )


#: name -> (factory, input shape)
ZOO: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 1)), (5, 1, 16, 16)),
    "dcgan_conv4x4": (dcgan, (5, 1, 16, 16)),
    "conv_flatten_linear": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 1)),
        (4, 3, 8, 8),
    ),
    "spectral_norm": (
        lambda: nn.Sequential(nn.Flatten(), spectral_norm(nn.Linear(64, 32)), nn.ReLU(), spectral_norm(nn.Linear(32, 1))),
        (6, 64),
    ),
    "spectral_norm_conv": (
        lambda: nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.ReLU(), spectral_norm(nn.Conv2d(8, 1, 8, 1, 0))),
        (5, 1, 16, 16),
    ),
    "old_spectral_norm": (
        lambda: nn.Sequential(nn.Linear(20, 16), nn.Tanh(), old_spectral_norm(nn.Linear(16, 1))),
        (7, 20),
    ),
    "sequential_nested": (
        lambda: nn.Sequential(nn.Sequential(nn.Linear(10, 16), nn.ReLU()), nn.Sequential(nn.Linear(16, 1), nn.Flatten(0))),
        (3, 10),
    ),
    "custom_forward": (CustomForward, (5, 1, 16, 16)),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(2, 4, 3, 2, 1), nn.ReLU(), nn.Conv1d(4, 1, 4)), (3, 2, 8)),
}


@pytest.fixture(params=sorted(ZOO))
def zoo_case(request: pytest.FixtureRequest) -> tuple[str, nn.Module, torch.Tensor]:
    """(name, discriminator in eval mode, input batch)."""
    torch.manual_seed(0)
    factory, shape = ZOO[request.param]
    d = factory()
    x = torch.randn(shape)
    d.train()
    d(x)  # settle BatchNorm statistics and spectral-norm power iterations
    d.eval()
    return request.param, d, x


@pytest.fixture
def zoo_case_on(zoo_case: tuple[str, nn.Module, torch.Tensor], device: str) -> tuple[str, nn.Module, torch.Tensor]:
    """``zoo_case`` with the discriminator and its batch moved to ``device``."""
    name, d, x = zoo_case
    return name, d.to(device), x.to(device)


@pytest.fixture
def one_process_group():
    """A gloo process group of this one process (DistributedDataParallel needs one on CPU),
    destroyed afterwards."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
