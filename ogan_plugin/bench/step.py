"""Benchmark of full training iterations: alternating GAN / O-GAN vs the single loss.

Times one whole iteration (noise, forwards, backward(s), optimizer step(s)) of:

* ``plain_alternating``: a plain GAN with its 1-output head, the usual PyTorch loop
  (as in the PyTorch DCGAN example): G once; D step on ``D(x_real)``, ``D(sg(x_fake))``;
  G step on ``D(x_fake)``; two optimizers, two steps;
* ``ogan_alternating``: the same loop and networks with D wrapped by
  :func:`ogan_plugin.wrap` (z_dim outputs) and :class:`ogan_plugin.OGANLoss`;
* ``single_three_forward`` / ``single_split``: :class:`ogan_plugin.SingleLossStep` with
  each routing (one optimizer over both networks);
* optional extras (``variants=``): ``single_split_concat`` (one D forward on the
  concatenated batch) and ``ogan_alternating_frozen`` (D's ``requires_grad`` switched off
  during the G step, so the G step skips D's weight gradients).

All variants use the same DCGAN-like 32x32 pair (D: three strided 5x5 convolutions with
64/128/256 channels, BatchNorm on the last two, a linear head; G: the mirror), QP loss,
RMSprop(1e-4, alpha=0.99) and the same batch.  Iterations are interleaved (each round runs
every variant once, in a rotating order) so that load from other processes hits all
variants alike; the table reports medians, quartiles and the ratio of medians to
``plain_alternating``.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from ogan_plugin.bench.timing import sync
from ogan_plugin.checks import check_int
from ogan_plugin.head import Decomposition
from ogan_plugin.wrapping import wrap
from ogan_plugin.losses import OGANLoss, pixel_distance, qp_d_loss, qp_g_loss
from ogan_plugin.networks import parse_device
from ogan_plugin.training import SingleLossStep

__all__ = ["DEFAULT_VARIANTS", "VARIANTS", "dcgan32_pair", "run_step_benchmark"]

#: Variants timed by default, in table order (the first is the reference of the ratios).
DEFAULT_VARIANTS = ("plain_alternating", "ogan_alternating", "single_three_forward", "single_split")
#: Every variant :func:`run_step_benchmark` knows.
VARIANTS = DEFAULT_VARIANTS + ("single_split_concat", "ogan_alternating_frozen")


def dcgan32_pair(z_dim: int = 128, channels: int = 3) -> tuple[nn.Module, nn.Module]:
    """(G, D): a DCGAN-like generator and plain 1-output discriminator for 32x32 images."""
    D = nn.Sequential(
        nn.Conv2d(channels, 64, 5, 2, 2), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 5, 2, 2), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Conv2d(128, 256, 5, 2, 2), nn.BatchNorm2d(256), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(256 * 4 * 4, 1),
    )  # fmt: skip
    G = nn.Sequential(
        nn.Linear(z_dim, 256 * 4 * 4), nn.Unflatten(1, (256, 4, 4)), nn.BatchNorm2d(256), nn.ReLU(),
        nn.ConvTranspose2d(256, 128, 5, 2, 2, output_padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 5, 2, 2, output_padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, channels, 5, 2, 2, output_padding=1), nn.Tanh(),
    )  # fmt: skip
    return G, D


def _rmsprop(params) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=1e-4, alpha=0.99)


def _alternating(G: nn.Module, D: nn.Module, z_dim: int, ogan: bool, freeze: bool) -> Callable[[torch.Tensor], None]:
    """The usual two-optimizer loop; ``ogan`` adds the correlation terms via OGANLoss."""
    opt_d, opt_g = _rmsprop(D.parameters()), _rmsprop(G.parameters())
    crit = OGANLoss("qp", 0.5) if ogan else None

    def score_or_raw(x: torch.Tensor) -> torch.Tensor | Decomposition:
        # O-GAN: the decomposition, so the adversarial terms see the score D's output gives
        # (here a plain D: the head's mean, as the raw outputs alone would give)
        return D.decompose(x) if ogan else D(x).view(-1)

    def step(x: torch.Tensor) -> None:
        z = torch.randn(x.shape[0], z_dim, device=x.device)
        fake = G(z)
        opt_d.zero_grad(set_to_none=True)
        r, f = score_or_raw(x), score_or_raw(fake.detach())
        if crit is not None:
            loss_d = crit.discriminator_loss(r, f, z, x_real=x, x_fake=fake)
        else:
            loss_d = qp_d_loss(r, f, pixel_distance(x, fake.detach()))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        if freeze:
            D.requires_grad_(False)
        g = score_or_raw(fake)
        loss_g = crit.generator_loss(g, z) if crit is not None else qp_g_loss(g)
        loss_g.backward()
        if freeze:
            D.requires_grad_(True)
        opt_g.step()

    return step


def _build(variant: str, G0: nn.Module, D0: nn.Module, z_dim: int) -> Callable[[torch.Tensor], None]:
    G, D = copy.deepcopy(G0), copy.deepcopy(D0)
    if variant == "plain_alternating":
        return _alternating(G, D, z_dim, ogan=False, freeze=False)
    D = wrap(D, z_dim)
    if variant in ("ogan_alternating", "ogan_alternating_frozen"):
        return _alternating(G, D, z_dim, ogan=True, freeze=variant.endswith("frozen"))
    routing = "three_forward" if variant == "single_three_forward" else "split"
    trainer = SingleLossStep(G, D, "qp", 0.5, routing=routing, concat_batches=variant.endswith("concat"), check_finite=False)
    return trainer.step


def run_step_benchmark(
    iters: int = 30,
    warmup: int = 5,
    batch_size: int = 64,
    device: str = "cpu",
    csv: Optional[str] = None,
    *,
    z_dim: int = 128,
    variants: Optional[Sequence[str]] = None,
    seed: int = 0,
    timer: str = "wall",
    verbose: bool = True,
) -> list[dict]:
    """Time full training iterations of each variant; print and return a table.

    Args:
        iters: timed rounds (each round runs every variant once).
        warmup: untimed rounds first.
        batch_size: images per batch (32x32, 3 channels).
        device: ``"cpu"`` or ``"cuda"`` (CUDA timings synchronize around each iteration).
        csv: write the rows to this CSV file too.
        z_dim: noise size / encoder width.
        variants: names from :data:`VARIANTS` (default :data:`DEFAULT_VARIANTS`);
            ``plain_alternating`` is always included, as the reference of the ratios.
        seed: seed of the networks and data.
        timer: ``"wall"`` (``time.perf_counter``) or ``"cpu"`` (``time.process_time``: the
            CPU time of this process, all its threads; far less sensitive to other
            processes on a shared machine, best with one thread where no thread waits).
        verbose: print the table.

    Returns:
        One dict per variant: ``variant``, ``median_ms``, ``min_ms``, ``p25_ms``, ``p75_ms``,
        ``spread`` ((p75 - p25) / median, a noise indicator), ``ratio`` (median over
        ``plain_alternating``'s median), ``iters``, ``batch_size``, ``device``, ``threads``,
        ``timer``.
    """
    if timer not in ("wall", "cpu"):
        raise ValueError(f"timer must be 'wall' or 'cpu', got {timer!r}")
    if timer == "cpu" and device != "cpu":
        raise ValueError("timer='cpu' measures host CPU time: use it with device='cpu'")
    clock = time.perf_counter if timer == "wall" else time.process_time
    check_int("iters", iters, 1)
    check_int("warmup", warmup, 0)
    check_int("batch_size", batch_size, 2)
    names = list(DEFAULT_VARIANTS if variants is None else variants)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if "plain_alternating" not in names:
        names.insert(0, "plain_alternating")
    dev = parse_device(device, "device", ("cpu", "cuda"))

    torch.manual_seed(seed)
    G0, D0 = dcgan32_pair(z_dim)
    G0, D0 = G0.to(dev), D0.to(dev)
    x = torch.rand(batch_size, 3, 32, 32, device=dev) * 2 - 1
    steps = {v: _build(v, G0, D0, z_dim) for v in names}
    times: dict[str, list[float]] = {v: [] for v in names}
    for r in range(warmup + iters):
        order = names[r % len(names):] + names[: r % len(names)]
        for v in order:
            sync(dev)
            t0 = clock()
            steps[v](x)
            sync(dev)
            if r >= warmup:
                times[v].append(clock() - t0)

    base = statistics.median(times["plain_alternating"])
    rows = []
    for v in names:
        q = statistics.quantiles(times[v], n=4) if len(times[v]) > 1 else [times[v][0]] * 3
        med = statistics.median(times[v])
        rows.append(
            {
                "variant": v,
                "median_ms": round(1e3 * med, 3),
                "min_ms": round(1e3 * min(times[v]), 3),
                "p25_ms": round(1e3 * q[0], 3),
                "p75_ms": round(1e3 * q[2], 3),
                "spread": round((q[2] - q[0]) / med, 4),
                "ratio": round(med / base, 4),
                "iters": iters,
                "batch_size": batch_size,
                "device": str(dev),
                "threads": torch.get_num_threads(),
                "timer": timer,
            }
        )
    if verbose:
        print(f"full training iteration, DCGAN-like 32x32 pair, batch {batch_size}, z_dim {z_dim}, "
              f"{iters} interleaved rounds after {warmup} warm-up, device {dev}, {torch.get_num_threads()} threads, "
              f"{timer} time")
        print(f"{'variant':26s} {'median ms':>10s} {'min':>9s} {'p25':>9s} {'p75':>9s} {'spread':>7s} {'x plain':>8s}")
        for row in rows:
            print(f"{row['variant']:26s} {row['median_ms']:10.2f} {row['min_ms']:9.2f} {row['p25_ms']:9.2f} "
                  f"{row['p75_ms']:9.2f} {row['spread']:7.3f} {row['ratio']:8.3f}")
        by = {row["variant"]: row for row in rows}
        if "ogan_alternating" in by:
            print(f"O-GAN overhead over the plain GAN (alternating): {100 * (by['ogan_alternating']['ratio'] - 1):+.1f}%")
            for v in ("single_split", "single_three_forward", "single_split_concat"):
                if v in by:
                    print(f"{v} / ogan_alternating: {by[v]['median_ms'] / by['ogan_alternating']['median_ms']:.3f}")
    if csv:
        import csv as _csv

        with open(csv, "w", newline="") as fh:
            writer = _csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows
