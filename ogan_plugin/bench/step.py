"""Benchmark of full training iterations: the plain GAN against every way to add O-GAN.

Times one whole iteration (noise, forwards, backward(s), optimizer step(s)) of:

* ``plain_alternating``: a plain GAN with its 1-output head, the usual PyTorch loop (as in
  the PyTorch DCGAN example): G once; D step on ``D(x_real)``, ``D(sg(x_fake))``; G step on
  ``D(x_fake)``; two optimizers, two steps;
* ``ogan_alternating``: the same loop with D wrapped by :func:`ogan_plugin.wrap` and the
  losses of :class:`ogan_plugin.OGANLoss` on ``D.decompose(...)`` (the plugin in an
  alternating loop);
* ``hook``: the plain loop's code unchanged, with the one line
  ``D = ogan_plugin.wrap(D, z_dim, generator=G)`` (hook mode);
* ``single_split``: :class:`ogan_plugin.SingleLossStep` (one optimizer over both networks);
* ``single_captured``: the same with ``capture=True`` (a CUDA graph on CUDA; compiled on CPU);
* optional extras (``variants=``): ``single_three_forward``, ``single_split_concat`` and
  ``ogan_alternating_frozen`` (D's ``requires_grad`` switched off during the G step).

Pairs (``pair=``): ``"dcgan32"`` (a DCGAN-like 32x32 pair: D with three strided 5x5
convolutions of 64/128/256 channels, BatchNorm on the last two, a linear head; G the
mirror), ``"dcgan64"`` (the PyTorch DCGAN example's 64x64 pair, 64 feature maps, BatchNorm,
z of shape (B, z, 1, 1)) and ``"tiny"`` (two small MLPs on 1x8x8 images: a step is all host
time, as a small GAN's step is on a GPU; ``host_cost=True`` picks it with batch 16 and z 16).
Every variant uses the same pair, loss (hinge by default), optimizer (Adam 2e-4, betas
(0.5, 0.999), as the DCGAN example) and batch.  Iterations are interleaved (each round runs
every variant once, in a rotating order) so that load from other processes hits all
variants alike; the table reports medians, quartiles and the ratio of medians to
``plain_alternating``.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from ogan_plugin.bench.timing import sync
from ogan_plugin.checks import check_int
from ogan_plugin.losses import OGANLoss, get_loss, pixel_distance
from ogan_plugin.networks import parse_device

__all__ = ["DEFAULT_VARIANTS", "VARIANTS", "PAIRS", "dcgan32_pair", "dcgan64_pair", "tiny_pair", "run_step_benchmark"]

#: Variants timed by default, in table order (the first is the reference of the ratios).
DEFAULT_VARIANTS = ("plain_alternating", "ogan_alternating", "hook", "single_split", "single_captured")
#: Every variant :func:`run_step_benchmark` knows.
VARIANTS = DEFAULT_VARIANTS + ("single_three_forward", "single_split_concat", "ogan_alternating_frozen")


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


def dcgan64_pair(z_dim: int = 128, channels: int = 3, width: int = 64) -> tuple[nn.Module, nn.Module]:
    """(G, D): the PyTorch DCGAN example's 64x64 pair (G takes z of shape (B, z_dim, 1, 1))."""
    w = width
    G = nn.Sequential(
        nn.ConvTranspose2d(z_dim, w * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(w * 8), nn.ReLU(True),
        nn.ConvTranspose2d(w * 8, w * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(w * 4), nn.ReLU(True),
        nn.ConvTranspose2d(w * 4, w * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(w * 2), nn.ReLU(True),
        nn.ConvTranspose2d(w * 2, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),
        nn.ConvTranspose2d(w, channels, 4, 2, 1, bias=False), nn.Tanh(),
    )  # fmt: skip
    D = nn.Sequential(
        nn.Conv2d(channels, w, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(w, w * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(w * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(w * 2, w * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(w * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(w * 4, w * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(w * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(w * 8, 1, 4, 1, 0, bias=False),
    )  # fmt: skip
    return G, D


def tiny_pair(z_dim: int = 16) -> tuple[nn.Module, nn.Module]:
    """(G, D): two small MLPs on 1x8x8 images, where a training step is all host time."""
    G = nn.Sequential(nn.Linear(z_dim, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))
    D = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
    return G, D


#: pair name -> (factory(z_dim), image shape, per-sample z shape(z_dim))
PAIRS: dict[str, tuple[Callable[[int], tuple[nn.Module, nn.Module]], tuple[int, ...], Callable[[int], tuple[int, ...]]]] = {
    "dcgan32": (dcgan32_pair, (3, 32, 32), lambda z: (z,)),
    "dcgan64": (dcgan64_pair, (3, 64, 64), lambda z: (z, 1, 1)),
    "tiny": (tiny_pair, (1, 8, 8), lambda z: (z,)),
}


def _adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


def _alternating(
    G: nn.Module, D: nn.Module, z_shape: tuple[int, ...], loss: str, mode: str, autocast: Callable
) -> Callable[[torch.Tensor], None]:
    """The usual two-optimizer loop.  ``mode``: "plain" (D's output), "ogan" (OGANLoss on
    decompositions), "frozen" (ogan, D frozen in the G step), "hook" (D's output, hook mode)."""
    opt_d, opt_g = _adam(D.parameters()), _adam(G.parameters())
    adv = get_loss(loss)
    crit = OGANLoss(loss, 0.5) if mode in ("ogan", "frozen") else None

    def step(x: torch.Tensor) -> None:
        z = torch.randn(x.shape[0], *z_shape, device=x.device)
        with autocast():
            fake = G(z)
            opt_d.zero_grad(set_to_none=True)
            if crit is not None:
                loss_d = crit.discriminator_loss(D.decompose(x), D.decompose(fake.detach()), z.flatten(1),
                                                 x_real=x, x_fake=fake)
            else:
                dist = pixel_distance(x, fake.detach()) if adv.needs_dist else None
                loss_d = adv.d_loss(D(x).view(-1), D(fake.detach()).view(-1), dist).mean()
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        if mode == "frozen":
            D.requires_grad_(False)
        with autocast():
            if crit is not None:
                loss_g = crit.generator_loss(D.decompose(fake), z.flatten(1))
            else:
                loss_g = adv.g_loss(D(fake).view(-1)).mean()
        loss_g.backward()
        if mode == "frozen":
            D.requires_grad_(True)
        opt_g.step()

    return step


def _build(
    variant: str, G0: nn.Module, D0: nn.Module, z_dim: int, z_shape: tuple[int, ...], loss: str,
    amp_dtype: Optional[torch.dtype], device: torch.device,
) -> Callable[[torch.Tensor], object]:
    import ogan_plugin

    G, D = copy.deepcopy(G0), copy.deepcopy(D0)

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    if variant == "plain_alternating":
        return _alternating(G, D, z_shape, loss, "plain", autocast)
    if variant == "hook":
        return _alternating(G, ogan_plugin.wrap(D, z_dim, generator=G), z_shape, loss, "plain", autocast)
    D = ogan_plugin.wrap(D, z_dim)
    if variant in ("ogan_alternating", "ogan_alternating_frozen"):
        return _alternating(G, D, z_shape, loss, "frozen" if variant.endswith("frozen") else "ogan", autocast)
    trainer = ogan_plugin.SingleLossStep(
        G, D, loss, 0.5, optimizer=_adam([*G.parameters(), *D.parameters()]),
        routing="three_forward" if variant == "single_three_forward" else "split",
        concat_batches=variant.endswith("concat"), amp_dtype=amp_dtype, z_shape=z_shape,
        capture=variant == "single_captured",
    )
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
    pair: str = "dcgan32",
    loss: str = "hinge",
    amp: Optional[str] = None,
    host_cost: bool = False,
) -> list[dict]:
    """Time full training iterations of each variant; print and return a table.

    Args:
        iters: timed rounds (each round runs every variant once).
        warmup: untimed rounds first (``single_captured`` captures during these).
        batch_size: images per batch.
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
        pair: a key of :data:`PAIRS`.
        loss: the adversarial loss of every variant (a registered name).
        amp: ``"bf16"`` or ``"fp16"``: every variant's forwards under ``torch.autocast``
            (SingleLossStep's ``amp_dtype``); None: float32.
        host_cost: the host-cost mode: the ``"tiny"`` pair, batch 16, z 16, one thread.

    Returns:
        One dict per variant: ``variant``, ``median_ms``, ``min_ms``, ``p25_ms``, ``p75_ms``,
        ``spread`` ((p75 - p25) / median, a noise indicator), ``ratio`` (median over
        ``plain_alternating``'s median), ``iters``, ``batch_size``, ``device``, ``threads``,
        ``timer``, ``pair``, ``z_dim``, ``loss``, ``amp``.
    """
    if host_cost:
        pair, batch_size, z_dim = "tiny", 16, 16
        torch.set_num_threads(1)
    if timer not in ("wall", "cpu"):
        raise ValueError(f"timer must be 'wall' or 'cpu', got {timer!r}")
    if timer == "cpu" and device != "cpu":
        raise ValueError("timer='cpu' measures host CPU time: use it with device='cpu'")
    if pair not in PAIRS:
        raise ValueError(f"pair must be one of {sorted(PAIRS)}, got {pair!r}")
    amp_dtype = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(amp, "bad")
    if amp_dtype == "bad":
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    get_loss(loss)  # a clear error for an unknown loss
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
    if amp == "fp16" and "single_captured" in names:
        names.remove("single_captured")  # float16 needs a GradScaler, which a captured step cannot run

    factory, image_shape, z_shape_of = PAIRS[pair]
    z_shape = z_shape_of(z_dim)
    torch.manual_seed(seed)
    G0, D0 = factory(z_dim)
    G0, D0 = G0.to(dev), D0.to(dev)
    x = torch.rand(batch_size, *image_shape, device=dev) * 2 - 1
    steps = {v: _build(v, G0, D0, z_dim, z_shape, loss, amp_dtype, dev) for v in names}
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
                "median_ms": round(1e3 * med, 4),
                "min_ms": round(1e3 * min(times[v]), 4),
                "p25_ms": round(1e3 * q[0], 4),
                "p75_ms": round(1e3 * q[2], 4),
                "spread": round((q[2] - q[0]) / med, 4),
                "ratio": round(med / base, 4),
                "iters": iters,
                "batch_size": batch_size,
                "device": str(dev),
                "threads": torch.get_num_threads(),
                "timer": timer,
                "pair": pair,
                "z_dim": z_dim,
                "loss": loss,
                "amp": amp or "float32",
            }
        )
    if verbose:
        print(f"full training iteration, {pair} pair, batch {batch_size}, z_dim {z_dim}, {loss} loss, Adam, "
              f"{amp or 'float32'}, {iters} interleaved rounds after {warmup} warm-up, device {dev}, "
              f"{torch.get_num_threads()} threads, {timer} time")
        print(f"{'variant':26s} {'median ms':>10s} {'min':>9s} {'p25':>9s} {'p75':>9s} {'spread':>7s} {'x plain':>8s}")
        for row in rows:
            print(f"{row['variant']:26s} {row['median_ms']:10.3f} {row['min_ms']:9.3f} {row['p25_ms']:9.3f} "
                  f"{row['p75_ms']:9.3f} {row['spread']:7.3f} {row['ratio']:8.3f}")
    if csv:
        import csv as _csv

        with open(csv, "w", newline="") as fh:
            writer = _csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows
