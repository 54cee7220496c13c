"""The demo's pictures: samples, held-out reconstructions, interpolations and training curves
(PNG files drawn with Pillow through :mod:`ogan_plugin.images`)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn


def save_samples(G: nn.Module, path: Path, z_dim: int, seed: int) -> None:
    """A 10 x 10 grid of G(z); the same z for the O-GAN's and the plain GAN's grid."""
    from ogan_plugin.evaluate import generate
    from ogan_plugin.images import save_grid

    save_grid(generate(G, z_dim, 100, seed=seed + 3).cpu(), path, 10)


def save_pictures(G: nn.Module, D, sp, history: dict[str, list[float]], out: Path, z_dim: int, seed: int) -> None:
    from ogan_plugin.evaluate import reconstruct_batched
    from ogan_plugin.images import save_curves, save_grid
    from ogan_plugin.networks import eval_mode
    from ogan_plugin.reconstruction import interpolate

    save_samples(G, out / "samples.png", z_dim, seed)
    test = sp.test_x
    g = torch.Generator().manual_seed(seed + 4)
    pick = torch.randperm(test.shape[0], generator=g)[: min(40, test.shape[0])]
    originals = test[pick]
    rec = reconstruct_batched(G, D, originals)
    n = originals.shape[0]
    cols = min(10, n)
    rows = []
    for i in range(0, n - n % cols if n >= cols else n, cols):
        rows += [originals[i : i + cols], rec[i : i + cols]]
    save_grid(torch.cat(rows), out / "reconstructions.png", cols)
    k = min(8, test.shape[0] // 2)
    pairs = torch.randperm(test.shape[0], generator=g)[: 2 * k]
    device = next(D.parameters()).device
    with eval_mode(G, D):
        morph = interpolate(G, D, test[pairs[:k]].to(device), test[pairs[k:]].to(device), steps=10)
    save_grid(morph.float().cpu(), out / "interpolations.png")
    steps = list(range(1, len(history["rho"]) + 1))
    smooth = max(1, len(steps) // 100)
    save_curves(
        {"losses": {"loss_d": history["loss_d"], "loss_g": history["loss_g"]}, "correlation rho(z, E(G(z)))": {"rho": history["rho"]}},
        out / "training.png", steps=steps, smooth=smooth,
    )
