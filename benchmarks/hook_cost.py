"""Host cost of hook mode: a plain alternating DCGAN-style step against the same with the one line.

Tiny networks (the host's work is what is timed): G = Linear(16, 64), ReLU, Linear(64, 64),
Tanh, 8x8 images; D = Flatten, Linear(64, 64), LeakyReLU, Linear(64, 1); batch 16, z 16,
Adam for each, BCE with logits, the PyTorch DCGAN example's order (D(real), G(z),
D(fake.detach()), backward, step; D(fake), backward, step).  Variants: ``plain``;
``wrapped`` (``wrap(D, 16)``, no hook: the widened head alone); ``hook``
(``wrap(D, 16, generator=G)``); ``augmented`` and ``augmented-hook`` (every D input through a
DiffAugment-style translation).  Rounds alternate the variants' order; medians.
``--pair dcgan32``: the DCGAN-like 32x32 pair of ``ogan-plugin bench --step`` instead
(batch 64, z 128), to see the same fixed cost against a real step::

    python benchmarks/hook_cost.py --rounds 31
    python benchmarks/hook_cost.py --pair dcgan32 --rounds 7 --steps 3 --warmup 3 --variants plain wrapped hook
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import ogan_plugin

VARIANTS = ("plain", "wrapped", "hook", "augmented", "augmented-hook")


def translate(x: torch.Tensor) -> torch.Tensor:
    """A random one-pixel shift per image, indexed with meshgrid as DiffAugment does."""
    n, _, h, w = x.shape
    tx, ty = torch.randint(-1, 2, (n, 1, 1)), torch.randint(-1, 2, (n, 1, 1))
    gb, gx, gy = torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij")
    pad = F.pad(x, [1, 1, 1, 1])
    return pad.permute(0, 2, 3, 1)[gb, (gx + tx + 1).clamp(0, h + 1), (gy + ty + 1).clamp(0, w + 1)].permute(0, 3, 1, 2)


def make_step(variant: str, pair: str = "tiny"):
    torch.manual_seed(0)
    if pair == "tiny":
        nz, batch, shape = 16, 16, (1, 8, 8)
        G = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(), nn.Unflatten(1, shape))
        D = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
    else:
        from ogan_plugin.bench.step import dcgan32_pair

        nz, batch, shape = 128, 64, (3, 32, 32)
        G, D = dcgan32_pair(nz)
    if variant != "plain" and variant != "augmented":
        D = ogan_plugin.wrap(D, z_dim=nz, generator=G if variant.endswith("hook") else None)
    aug = translate if variant.startswith("augmented") else (lambda x: x)
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    criterion = nn.BCEWithLogitsLoss()
    real = torch.rand(batch, *shape) * 2 - 1
    ones, zeros = torch.ones(batch), torch.zeros(batch)

    def step() -> None:
        D.zero_grad()
        criterion(D(aug(real)).view(-1), ones).backward()
        fake = G(torch.randn(batch, nz))
        criterion(D(aug(fake.detach())).view(-1), zeros).backward()
        opt_d.step()
        G.zero_grad()
        criterion(D(aug(fake)).view(-1), ones).backward()
        opt_g.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=31, help="timed rounds, each runs every variant (default 31)")
    parser.add_argument("--steps", type=int, default=50, help="steps per variant per round (default 50)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps per variant first (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--pair", choices=("tiny", "dcgan32"), default="tiny", help="the networks (default tiny)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = {v: make_step(v, args.pair) for v in args.variants}
    for v in args.variants:
        for _ in range(args.warmup):
            steps[v]()
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    for r in range(args.rounds):
        for v in args.variants if r % 2 == 0 else args.variants[::-1]:
            t = time.perf_counter()
            for _ in range(args.steps):
                steps[v]()
            times[v].append((time.perf_counter() - t) / args.steps * 1e6)
    medians = {v: statistics.median(t) for v, t in times.items()}
    print("| variant | us / step (median) | vs plain | vs its unhooked twin |")
    print("|---|---|---|---|")
    for v in args.variants:
        twin = {"hook": "plain", "wrapped": "plain", "augmented-hook": "augmented"}.get(v)
        vs_plain = f"{medians[v] / medians['plain']:.3f}" if "plain" in medians else "-"
        vs_twin = f"{medians[v] / medians[twin]:.3f}" if twin in medians else "-"
        print(f"| {v} | {medians[v]:.0f} | {vs_plain} | {vs_twin} |")


if __name__ == "__main__":
    main()
