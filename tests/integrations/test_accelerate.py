"""HF Accelerate: wrap first, then ``accelerator.prepare``; the prepared modules go straight
into the O-GAN functions (single process here, two CPU processes under torchrun)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import accelerate  # noqa: F401  (the optional extra 'accelerate', installed by CI)

import ogan_plugin

WORKER = Path(__file__).with_name("accelerate_worker.py")


def load_worker():
    spec = importlib.util.spec_from_file_location("accelerate_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fresh_state():
    """Accelerate keeps its state in process-wide singletons: start and leave them clean."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    def reset():
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()

    reset()
    yield
    reset()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_prepared_modules_train_exactly_as_plain_ones(fresh_state) -> None:
    from accelerate import Accelerator

    worker = load_worker()
    accelerator = Accelerator(cpu=True)
    x, z, y = worker.batch()
    for config in worker.CONFIGS:
        want = worker.run(config, x, z, y)
        got = worker.run(config, x, z, y, accelerator)
        assert set(got) == set(want)
        for name, value in want.items():
            torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=f"{config[0]}: {name}")


def test_mixed_precision_forward_reaches_decompose(fresh_state) -> None:
    # accelerate patches the prepared module's forward with autocast; decompose and the
    # single loss run through that forward, so the head computes in bfloat16.
    from accelerate import Accelerator

    worker = load_worker()
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    G, D = (m.float() for m in worker.nets())
    G_p, D_p = accelerator.prepare(G, D)
    x, z, y = (t.float() if t.is_floating_point() else t for t in worker.batch())
    assert D_p.decompose(x, y).raw.dtype == torch.bfloat16
    out = ogan_plugin.single_loss(G_p, D_p, x, z, "hinge", y=y)
    accelerator.backward(out)
    got = [p.grad.clone() for p in D.parameters()]
    G32, D32 = (m.float() for m in worker.nets())
    ogan_plugin.single_loss(G32, D32, x, z, "hinge", y=y).backward()
    for a, b in zip(got, D32.parameters()):
        torch.testing.assert_close(a, b.grad, rtol=0.05, atol=0.05 * b.grad.abs().max().item())
    assert any(not torch.equal(a, b.grad) for a, b in zip(got, D32.parameters()))  # it did run in bfloat16


@pytest.mark.parametrize("backend", ["gloo", "nccl"])
def test_two_processes_under_torchrun_equal_one_process_on_the_whole_batch(backend: str, tmp_path: Path,
                                                                           need_gpus) -> None:
    """gloo: two CPU processes, with any GPU hidden from them (an Accelerate that sees CUDA
    may choose NCCL even for ``cpu=True``, and NCCL needs one GPU per process).  nccl: one
    process per GPU, which needs two GPUs (skipped, saying so, with fewer)."""
    worker = load_worker()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if backend == "gloo":
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        need_gpus(2)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(WORKER), str(tmp_path), "cpu" if backend == "gloo" else "cuda",
    ]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["backend"] for r in ranks] == [backend] * 2
    assert [r["prepared_type"] for r in ranks] == ["DistributedDataParallel"] * 2  # prepare did wrap in DDP
    assert all("before accelerator.prepare" in r["wrap_after_prepare"] for r in ranks)
    x, z, y = worker.batch()
    for config in worker.CONFIGS:
        want = worker.run(config, x, z, y)
        for got in ranks:
            assert set(got[config[0]]) == set(want)
            for name, value in want.items():
                torch.testing.assert_close(got[config[0]][name], value, rtol=1e-9, atol=1e-12, msg=f"{config[0]}: {name}")
        # not trivially equal: one rank's half batch alone gives something else
        half = worker.run(config, x[:4], z[:4], y[:4])
        assert any(not torch.allclose(half[n], want[n], rtol=1e-6) for n in want)


def test_ddp_around_a_plain_network_is_named() -> None:
    with pytest.raises(TypeError, match=r"wrapped_discriminator must be an OGANDiscriminator .*\(D = ogan_plugin.wrap"):
        ogan_plugin.single_loss(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(TypeError, match="DataParallel is not supported"):
        ogan_plugin.reconstruct(torch.nn.Linear(2, 2), torch.nn.DataParallel(ogan_plugin.wrap(torch.nn.Sequential(torch.nn.Linear(2, 1)), 2)), torch.zeros(2, 2))


def test_save_model_in_safetensors_keeps_the_patch_reduction(fresh_state, tmp_path: Path) -> None:
    # Accelerate saves models as safetensors, which hold tensors only: the head's extra
    # state (the name of its patch reduction) must be one.
    from accelerate import Accelerator
    from accelerate.utils import load_checkpoint_in_model

    from ogan_plugin.adapters.patch import patch_max, set_patch_reduction

    def patch_d() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 4, 2, 1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(8, 1, 3, 1, 1))

    torch.manual_seed(0)
    wrapped = ogan_plugin.wrap(patch_d(), z_dim=6)
    set_patch_reduction(wrapped, "max")
    Accelerator(cpu=True).save_model(wrapped, tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    other = ogan_plugin.wrap(patch_d(), z_dim=6)
    load_checkpoint_in_model(other, str(tmp_path))
    assert other.head.patch_reduction is patch_max
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(other.decompose(x).raw, wrapped.decompose(x).raw)
