"""Shared fixtures: a zoo of discriminators of different shapes."""

from __future__ import annotations

import os
from typing import Callable

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip, with the reason, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
