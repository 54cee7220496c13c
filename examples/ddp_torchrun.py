"""O-GAN single-loss training under DistributedDataParallel, launched with torchrun.

    torchrun --standalone --nproc_per_node 2 examples/ddp_torchrun.py --steps 300

Runs on CPUs (gloo) or one GPU per process (nccl).  The order that matters:

1. build G and D (no BatchNorm in D, or SyncBatchNorm on GPUs: see
   ``ogan_plugin.integrations.ddp``);
2. ``D = ogan_plugin.wrap(D, z_dim)`` BEFORE any DDP;
3. ``D_ddp = distribute(D)`` (DDP inside the wrapper, so the O-GAN losses' forwards are
   synchronised) and ``G_ddp = DDP(G)``;
4. train with ``SingleLossStep(G_ddp, D_ddp)``: one optimizer, one backward per step;
5. checkpoint the plain ``G`` and ``D`` (rank 0 only).

Each rank draws its own z and its own shard of the data (DistributedSampler); the
gradients are averaged, as one process on the concatenated batch would compute them.
Needs scikit-learn for the digits data.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

import ogan_plugin
from ogan_plugin.integrations.ddp import distribute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--nz", type=int, default=16)
    parser.add_argument("--checkpoint", default="ogan_ddp.pt")
    args = parser.parse_args()

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)

    from sklearn.datasets import load_digits

    data = torch.tensor(load_digits().images, dtype=torch.float32).flatten(1) / 8.0 - 1.0  # (1797, 64)
    sampler = torch.utils.data.DistributedSampler(torch.utils.data.TensorDataset(data), shuffle=True, seed=0)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data), batch_size=args.batch_size, sampler=sampler, drop_last=True
    )

    torch.manual_seed(0)  # same initial weights everywhere (DDP also broadcasts rank 0's)
    G = nn.Sequential(nn.Linear(args.nz, 128), nn.ReLU(), nn.Linear(128, 64), nn.Tanh()).to(device)
    D = nn.Sequential(nn.Linear(64, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1)).to(device)
    D = ogan_plugin.wrap(D, z_dim=args.nz)  # 1. wrap first
    ids = [local_rank] if use_cuda else None
    G_ddp, D_ddp = DDP(G, device_ids=ids), distribute(D, device_ids=ids)  # 2. then DDP
    step = ogan_plugin.SingleLossStep(G_ddp, D_ddp, loss="qp", noise_generator=torch.Generator(device).manual_seed(rank))

    epoch = 0
    while step.step_count < args.steps:
        sampler.set_epoch(epoch)
        for (x,) in loader:
            r = step.step(x.to(device))
            if rank == 0 and (r.step % 50 == 0 or r.step == 1):
                print(f"step {r.step:4d}  loss_d {float(r.loss_d):+.4f}  loss_g {float(r.loss_g):+.4f}  rho {float(r.rho):.3f}")
            if step.step_count >= args.steps:
                break
        epoch += 1

    if rank == 0:
        with torch.no_grad():
            z = torch.randn(1024, args.nz, device=device)
            rho = ogan_plugin.pearson_correlation(z, D.decompose(G(z)).raw).mean()
        print(f"{world} processes, rho(z, E(G(z))) on fresh z: {rho.item():.3f}")
        torch.save({"generator": G.state_dict(), "discriminator": D.state_dict()}, args.checkpoint)
        print(f"checkpoint (plain keys, load with OGANDiscriminator.from_state_dict): {args.checkpoint}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
