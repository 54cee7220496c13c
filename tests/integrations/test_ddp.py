"""DistributedDataParallel: per-rank steps == one full-batch step, on CPU (gloo, 2 processes)
and, with two GPUs, with SyncBatchNorm (NCCL, one process per GPU)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.integrations.ddp import distribute

WORKER = Path(__file__).with_name("ddp_grad_worker.py")


def load_worker():
    spec = importlib.util.spec_from_file_location("ddp_grad_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_ranks(tmp_path: Path, world: int, *extra: str, hide_gpus: bool = True) -> list[dict]:
    """Run ``world`` worker processes (``extra``: the worker's mode) and load what each saved."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if hide_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the gloo run is a CPU run, also on a GPU machine
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), str(world), str(tmp_path / "store"), str(tmp_path), *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in range(world)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]


def test_two_rank_gradients_equal_one_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    worker = load_worker()
    world = 2
    ranks = run_ranks(tmp_path, world)

    x, z = worker.batch()
    for config in worker.CONFIGS:
        want = worker.gradients(config, x, z, ddp=False)
        for got in ranks:
            assert set(got[config[0]]) == set(want)
            for name, g in want.items():
                torch.testing.assert_close(got[config[0]][name], g, rtol=1e-9, atol=1e-12, msg=f"{config[0]}: {name}")
        # not trivially equal: one rank's half batch alone gives different gradients
        half = worker.gradients(config, x[: len(x) // world], z[: len(z) // world], ddp=False)
        assert any(not torch.allclose(half[n], want[n], rtol=1e-6) for n in want)


@pytest.mark.gpu
def test_syncbatchnorm_under_ddp_on_two_gpus_equals_batchnorm_on_the_whole_batch(tmp_path: Path, need_gpus) -> None:
    """Two processes, one GPU each (NCCL), D with SyncBatchNorm in training mode: each rank's
    gradients and running statistics equal one process's plain BatchNorm on the whole batch."""
    need_gpus(2)
    worker = load_worker()
    ranks = run_ranks(tmp_path, 2, "syncbn", hide_gpus=False)
    x, z = worker.batch()
    want = worker.syncbn_gradients(x, z, torch.device("cuda", 0), ddp=False)
    for got in ranks:
        assert set(got["syncbn"]) == set(want)
        for name, value in want.items():
            torch.testing.assert_close(got["syncbn"][name], value, rtol=1e-7, atol=1e-10, msg=f"syncbn: {name}")
    half = worker.syncbn_gradients(x[:4], z[:4], torch.device("cuda", 0), ddp=False)
    assert any(not torch.allclose(half[n], want[n], rtol=1e-4) for n in want)  # not trivially equal


def test_distribute_checks_its_argument() -> None:
    with pytest.raises(TypeError, match="wrap\\(D, z_dim\\) first"):
        distribute(nn.Linear(3, 1))
