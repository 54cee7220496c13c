"""One rank of the DDP gradient check run by test_ddp.py (a script, not a test module).

Usage: python ddp_grad_worker.py RANK WORLD_SIZE STORE_FILE OUT_DIR [syncbn]

Each rank takes its slice of a fixed global batch, runs one step of every configuration
listed in :data:`CONFIGS` through DDP (gloo, CPU, float64) and saves the resulting
parameter gradients to ``OUT_DIR/rank{RANK}.pt``.  The test compares them with one
process's gradients on the whole batch, computed by :func:`gradients` with ``ddp=False``.

With ``syncbn``: one process per GPU (NCCL, rank r on cuda:r), a discriminator with
``SyncBatchNorm`` in training mode; :func:`syncbn_gradients` gives the gradients and the
running statistics, which the test compares with one process's plain ``BatchNorm1d`` on
the whole batch.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

import ogan_plugin
from ogan_plugin.integrations.ddp import distribute

Z, FEATURES, GLOBAL_BATCH = 6, 10, 8
#: (name, loss, routing); "hook" = hook mode in an alternating BCE loop with DDP(wrapped)
CONFIGS = [("split_qp", "qp", "split"), ("three_forward_hinge", "hinge", "three_forward"), ("hook_bce", "bce", "hook")]


def nets() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(Z, 16), nn.Tanh(), nn.Linear(16, FEATURES)).double()
    D = nn.Sequential(nn.Linear(FEATURES, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1)).double()
    return G, D


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(GLOBAL_BATCH, FEATURES, generator=g, dtype=torch.float64)
    z = torch.randn(GLOBAL_BATCH, Z, generator=g, dtype=torch.float64)
    return x, z


def gradients(config: tuple[str, str, str], x: torch.Tensor, z: torch.Tensor, ddp: bool) -> dict[str, torch.Tensor]:
    """Parameter gradients of one step of ``config`` on (x, z), through DDP or not."""
    _, loss, routing = config
    G, D = nets()
    W = ogan_plugin.wrap(D, z_dim=Z)
    if routing == "hook":
        hook = ogan_plugin.attach(W, G, corr_weight=0.5)
        G_run, D_run = (DDP(G), DDP(W)) if ddp else (G, W)
        ones, zeros = torch.ones(len(x), 1, dtype=x.dtype), torch.zeros(len(x), 1, dtype=x.dtype)
        bce = nn.BCEWithLogitsLoss()
        fake = G_run(z)
        (bce(D_run(x), ones) + bce(D_run(fake.detach()), zeros)).backward()
        d_grads = {f"D.{n}": p.grad.clone() for n, p in W.named_parameters()}
        bce(D_run(fake), ones).backward()  # the generator's step (D's grads from it are discarded)
        grads = {**d_grads, **{f"G.{n}": p.grad.clone() for n, p in G.named_parameters()}}
        assert hook.calls == 2
        hook.detach()
        return grads
    G_run, D_run = (DDP(G), distribute(W)) if ddp else (G, W)
    ogan_plugin.single_loss(G_run, D_run, x, z, loss=loss, routing=routing).backward()
    return {f"{k}.{n}": p.grad.clone() for k, m in (("G", G), ("D", W)) for n, p in m.named_parameters()}


def syncbn_gradients(x: torch.Tensor, z: torch.Tensor, device: torch.device, ddp: bool) -> dict[str, torch.Tensor]:
    """Gradients (and BatchNorm running statistics) of one hinge ``single_loss`` step with a
    training-mode BatchNorm in D: ``SyncBatchNorm`` under DDP on ``device``, or plain."""
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(Z, 16), nn.Tanh(), nn.Linear(16, FEATURES)).double()
    D = nn.Sequential(nn.Linear(FEATURES, 16), nn.BatchNorm1d(16), nn.LeakyReLU(0.2), nn.Linear(16, 1)).double()
    if ddp:
        D = nn.SyncBatchNorm.convert_sync_batchnorm(D)
    G, W = G.to(device), ogan_plugin.wrap(D, z_dim=Z).to(device).train()
    ids = {"device_ids": [device.index]} if device.type == "cuda" else {}
    G_run, D_run = (DDP(G, **ids), distribute(W, **ids)) if ddp else (G, W)
    ogan_plugin.single_loss(G_run, D_run, x.to(device), z.to(device), loss="hinge").backward()
    out = {f"{k}.{n}": p.grad.cpu().clone() for k, m in (("G", G), ("D", W)) for n, p in m.named_parameters()}
    bn = W.discriminator[1]
    out.update({"bn.running_mean": bn.running_mean.cpu().clone(), "bn.running_var": bn.running_var.cpu().clone()})
    return out


def main() -> None:
    rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    if sys.argv[5:] == ["syncbn"]:
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", init_method=f"file://{store}", rank=rank, world_size=world)
        x, z = batch()
        per = GLOBAL_BATCH // world
        mine = slice(rank * per, (rank + 1) * per)
        torch.save({"syncbn": syncbn_gradients(x[mine], z[mine], device, ddp=True)}, f"{out}/rank{rank}.pt")
        dist.destroy_process_group()
        return
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    x, z = batch()
    per = GLOBAL_BATCH // world
    mine = slice(rank * per, (rank + 1) * per)
    result = {c[0]: gradients(c, x[mine], z[mine], ddp=True) for c in CONFIGS}
    torch.save(result, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
