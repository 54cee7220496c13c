"""What makes a patch discriminator's code reconstruct real images?  A measured search.

A small spectral-norm patch discriminator (16x16 digits -> a 4x4 map of patch scores, or
2x2 / 1x1 for the patch-count rows) is wrapped with ogan_plugin.wrap, so the patch adapter
widens its head convolution, and trained with SingleLossStep (hinge, corr_weight=1) against
the demo's generator on sklearn's digits (ogan_plugin.demo.data: 16x16, fixed held-out split).
Every configuration then reports, on the same held-out digits and the same fresh z:

    rho        mean rho(z, E(G(z))) over 1000 fresh z
    mse@s      held-out reconstruction MSE of G(s * encode(x)) at scales s (0.9 = METHOD.md)
    mean_img   MSE of predicting the training set's mean image (the "know nothing" floor)
    inv        MSE after 200 Adam steps on z from the encoder's code: how close the
               generator can come to the held-out digits at all
    self       MSE of reconstructing the generator's own samples (the encoder on its home ground)
    fd         Frechet distance of 1000 samples to the training digits in a pixel
               classifier's logit space (lower = better samples; fd_ref = held-out digits)

    python benchmarks/patch_encoder.py                       # every configuration, seed 0
    python benchmarks/patch_encoder.py --configs mean positional --seeds 0 1 --csv patch.csv
    python benchmarks/patch_encoder.py --configs mean positional --pictures docs/wrapping

One thread (the machine is shared); each configuration trains from the same seed.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch import Tensor

import ogan_plugin
from ogan_plugin import evaluate
from ogan_plugin.adapters.patch import REDUCTIONS, set_patch_reduction
from ogan_plugin.augment import RandomTranslate
from ogan_plugin.demo.data import load_digits, split
from ogan_plugin.demo.models import Generator

Z_DIM = 32
SCALES = (0.5, 0.7, 0.9, 1.1)


# --- a reduction tried beside the shipped ones (ogan_plugin.adapters.patch.REDUCTIONS) -------------
def patch_mix(out: Tensor) -> Tensor:
    """Each channel a fixed random (seeded) signed mix of all patches, weights N(0, 1/P)."""
    flat = out.flatten(2).float()
    z, P = flat.shape[1], flat.shape[2]
    g = torch.Generator().manual_seed(1000 * z + P)
    a = (torch.randn(z, P, generator=g) / math.sqrt(P)).to(flat.device)
    return (flat * a).sum(dim=2).to(out.dtype)


ALL_REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {**REDUCTIONS, "mix": patch_mix}


# --- the networks ---------------------------------------------------------------------------------
class PatchDiscriminator(nn.Module):
    """16x16 -> (B, 1, m, m) patch logits, m = 4, 2 or 1 (spectral norm on every layer)."""

    HEADS = {4: (3, 1), 2: (3, 0), 1: (4, 0)}  # map side -> (kernel, padding) of the head on the 4x4 features

    def __init__(self, width: int = 64, patches: int = 4) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        k, p = self.HEADS[patches]
        self.features = nn.Sequential(
            sn(nn.Conv2d(1, width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
        )
        self.head = sn(nn.Conv2d(2 * width, 1, k, 1, p))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


# --- configurations ---------------------------------------------------------------------------------
BASE: dict[str, Any] = {
    "patches": 4, "reduction": "mean", "steps": 1000, "lr": 2e-4, "d_lr_mult": 1.0,
    "corr_weight_g": None, "translate": 0, "width": 64,
}

CONFIGS: dict[str, dict[str, Any]] = {
    "mean": {},
    "max": {"reduction": "max"},
    "positional": {"reduction": "positional"},
    "mix": {"reduction": "mix"},
    "mean_2x2": {"patches": 2},
    "1x1_head": {"patches": 1},
    "mean_translate": {"translate": 1},
    "mean_g_weight_0.5": {"corr_weight_g": 0.5},
    "mean_slow_d": {"d_lr_mult": 0.5},
    "mean_2000_steps": {"steps": 2000},
    "positional_translate": {"reduction": "positional", "translate": 1},
    "mix_translate": {"reduction": "mix", "translate": 1},
}


def _invert(G: nn.Module, D, x: Tensor, steps: int = 200, lr: float = 0.05) -> float:
    """MSE after optimising z for each image (Adam), starting from 0.9 * encode(x)."""
    with torch.no_grad():
        z0 = 0.9 * D.encode(x)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = (G(z) - x).pow(2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((G(z) - x).pow(2).mean())


def run_config(name: str, cfg: dict[str, Any], seed: int, data, clf, pictures: str | None = None) -> dict[str, Any]:
    torch.manual_seed(seed)
    G = Generator(Z_DIM, 16, 1, cfg["width"])
    D = ogan_plugin.wrap(PatchDiscriminator(cfg["width"], cfg["patches"]), z_dim=Z_DIM)
    if cfg["patches"] > 1:
        set_patch_reduction(D, ALL_REDUCTIONS[cfg["reduction"]])
    opt = torch.optim.RMSprop(
        [{"params": G.parameters()}, {"params": D.parameters(), "lr": cfg["lr"] * cfg["d_lr_mult"]}],
        lr=cfg["lr"], alpha=0.99,
    )
    augment = RandomTranslate(cfg["translate"], 0.4, fill=-1.0, seed=seed + 7) if cfg["translate"] else None
    step = ogan_plugin.SingleLossStep(G, D, loss="hinge", corr_weight=1.0, corr_weight_g=cfg["corr_weight_g"],
                                      optimizer=opt, augment=augment,
                                      noise_generator=torch.Generator().manual_seed(seed + 2))
    rng = torch.Generator().manual_seed(seed + 1)
    x_train = data.train_x
    t0 = time.perf_counter()
    for _ in range(cfg["steps"]):
        idx = torch.randint(len(x_train), (64,), generator=rng)
        step.step(x_train[idx])
    train_s = time.perf_counter() - t0

    G.eval()
    D.eval()
    row: dict[str, Any] = {"config": name, "seed": seed, "steps": cfg["steps"], "train_s": round(train_s, 1)}
    row["rho"] = evaluate.mean_correlation(G, D, 1000, seed=seed + 100)
    mean_image = x_train.mean(0)
    for s in SCALES:
        rec = evaluate.reconstruction_error(G, D, data.test_x, mean_image=mean_image, scale=s)
        row[f"mse@{s}"] = rec.mse
    row["mean_img"] = rec.mean_image_mse
    row["inv"] = _invert(G, D, data.test_x)
    samples = evaluate.generate(G, Z_DIM, 500, seed=seed + 200)
    with torch.no_grad():
        row["self"] = float((ogan_plugin.reconstruct(G, D, samples) - samples).pow(2).mean())
    row["fd"] = evaluate.sample_quality(G, clf, x_train, Z_DIM, 1000, seed=seed + 300).frechet
    if pictures:
        from ogan_plugin.images import save_grid

        x = data.test_x[:16]
        rec = ogan_plugin.reconstruct(G, D, x)
        save_grid(torch.cat([x, rec, samples[:16]]), f"{pictures}/patch_{name}_seed{seed}.png", nrow=16)
    return row


COLUMNS = ["config", "seed", "steps", "rho", *[f"mse@{s}" for s in SCALES], "mean_img", "inv", "self", "fd", "train_s"]


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS), help="configurations to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default 0)")
    parser.add_argument("--steps", type=int, default=None, help="override every configuration's step count")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--csv", default=None, help="also append the rows to this CSV file")
    parser.add_argument("--pictures", default=None, metavar="DIR",
                        help="save DIR/patch_<config>_seed<seed>.png: 16 held-out digits, their reconstructions, 16 samples")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.pictures:
        Path(args.pictures).mkdir(parents=True, exist_ok=True)

    data = split(load_digits(16), held_out=0.2, seed=0)
    clf = evaluate.PixelClassifier().fit(data.train_x, data.train_y)
    fd_ref = evaluate.frechet_distance(clf.features(data.train_x), clf.features(data.test_x))
    print(f"# digits 16x16: {len(data.train_x)} train, {len(data.test_x)} held out; fd_ref {fd_ref:.3f}; "
          f"threads {args.threads}; torch {torch.__version__}", flush=True)
    print(" | ".join(COLUMNS), flush=True)
    for seed in args.seeds:
        for name in args.configs:
            cfg = {**BASE, **CONFIGS[name]}
            if args.steps is not None:
                cfg["steps"] = args.steps
            row = run_config(name, cfg, seed, data, clf, args.pictures)
            print(" | ".join(_fmt(row[c]) for c in COLUMNS), flush=True)
            if args.csv:
                with open(args.csv, "a", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=COLUMNS)
                    if f.tell() == 0:
                        w.writeheader()
                    w.writerow({c: row[c] for c in COLUMNS})


if __name__ == "__main__":
    sys.exit(main())
