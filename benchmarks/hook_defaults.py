"""Hook mode's defaults on the PyTorch DCGAN example's own settings: a measured search.

The loop is the pytorch/examples dcgan/main.py loop, unchanged: BCE on a Sigmoid at D's
end, N(0, 0.02) init (its weights_init), two Adam optimizers (2e-4, betas (0.5, 0.999)),
``netD(real)``, ``netG(noise)`` with ``noise = torch.randn(B, nz, 1, 1)``,
``netD(fake.detach())``, errD backward and step, ``netD(fake)``, errG backward and step,
over a shuffled DataLoader (batch 64).  The networks are the example's, scaled to 32x32
by dropping the outermost stage (G's last hidden ngf layer, D's first ndf layer), so the
layers next to the code keep the example's widths (ngf*8 = ndf*8 channels at 4x4); with
``--image-size 64`` they are the example's five-layer nets, and the data has three
channels, as the example's ImageFolder gives.  The data are sklearn's digits (the demo's),
upsampled (bilinear) to the image size; at 32x32 a fixed 20 % held-out split is kept
apart for the reconstruction error, at 64x64 all 1797 digits train (870 iterations = 30
epochs, as the run in issue 23).

A configuration is ``plain`` (no plugin) or comma-separated settings of the one line,
``wrap(netD, z_dim=nz)`` + ``attach(netD, netG, corr_weight=d, corr_weight_g=g)``:

    d=auto        the library's default (``wrap(netD, z_dim=nz, generator=netG)``)
    d=w0.5        a fixed weight 0.5 in D's step (calls on fake.detach())
    g=...         the same for G's step (calls on fake; default: as d)
    nz=32         another noise size (default 100)
    ramp=400      the weights grow linearly from 0 over the first 400 steps
                  (``ogan_plugin.Ramp(w, 400)``)

``d=bX`` (a weight balanced against the adversarial gradient at D's output, ratio X) was
measured at commit f1bddf2, where ``ogan_plugin.Balanced`` existed; it was dropped after the
search (docs/training.md says why).

Each run reports: ``rho`` (mean rho(z, E(G(z))) over 1000 fresh z, eval mode),
``confidence``, ``classes`` and ``fd`` (ogan_plugin.evaluate.sample_quality on 1000
samples with a pixel classifier fit on the training digits; ``fd_ref``: the held-out
digits' own distance), ``rec_mse`` / ``mean_mse`` (held-out reconstruction error and the
mean image's), and the collapse check ``dx`` / ``dgz``: mean D(x) and D(G(z)) over the
last 50 iterations, as the example prints them (D(x) at 1.000 with samples far from the
data is the collapse seen in issue 23).

    python benchmarks/hook_defaults.py --configs plain d=w0.5 d=auto --seeds 0 1 2 --jobs 2 --csv hook.csv
    python benchmarks/hook_defaults.py --image-size 64 --width 64 --steps 870 --device cuda \\
        --configs plain d=w0.5 d=auto --seeds 0 1 --jobs 4 --csv hook64.csv

One torch thread per run (``--threads``); ``--jobs`` runs in parallel processes.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin import Ramp

FIELDS = ["config", "seed", "nz", "image_size", "width", "steps", "rho", "confidence", "classes", "fd", "fd_ref",
          "rec_mse", "mean_mse", "dx", "dgz", "rho_train", "seconds"]


# --- configurations -------------------------------------------------------------------------------
def _weight(text: str) -> Union[float, str]:
    if text == "auto":
        return "auto"
    if text[0] == "w":
        return float(text[1:])
    if text[0] == "b":
        raise ValueError(f"{text!r}: the balanced rule was measured at commit f1bddf2 and then dropped")
    raise ValueError(f"a weight is auto or wX (fixed), got {text!r}")


def parse_config(spec: str) -> dict[str, Any]:
    """``plain`` or ``d=..,g=..,nz=..,ramp=..`` (module doc) -> settings."""
    if spec == "plain":
        return {"plugin": False, "nz": 100}
    out: dict[str, Any] = {"plugin": True, "nz": 100, "d": "auto", "g": None, "ramp": 0}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        if key in ("d", "g"):
            out[key] = _weight(value)
        elif key in ("nz", "ramp"):
            out[key] = int(value)
        elif key == "plain":
            out["plugin"] = False
        else:
            raise ValueError(f"unknown setting {key!r} in {spec!r} (d, g, nz, ramp)")
    return out


# --- the example's networks ---------------------------------------------------------------------------
def weights_init(m: nn.Module) -> None:
    """pytorch/examples dcgan/main.py's weights_init."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def build(nz: int, ngf: int, ndf: int, nc: int, image_size: int) -> tuple[nn.Module, nn.Module]:
    """The example's Generator and Discriminator (64x64), or scaled to 32x32 (module doc)."""
    g_widths = [ngf * 8, ngf * 4, ngf * 2] + ([ngf] if image_size == 64 else [])
    g: list[nn.Module] = []
    c_in = nz
    for i, c in enumerate(g_widths):
        g += [nn.ConvTranspose2d(c_in, c, 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False), nn.BatchNorm2d(c),
              nn.ReLU(True)]
        c_in = c
    g += [nn.ConvTranspose2d(c_in, nc, 4, 2, 1, bias=False), nn.Tanh()]
    d_widths = ([ndf] if image_size == 64 else []) + [ndf * 2, ndf * 4, ndf * 8]
    d: list[nn.Module] = []
    c_in = nc
    for i, c in enumerate(d_widths):
        d += [nn.Conv2d(c_in, c, 4, 2, 1, bias=False)] + ([nn.BatchNorm2d(c)] if i else []) + [nn.LeakyReLU(0.2, inplace=True)]
        c_in = c
    d += [nn.Conv2d(c_in, 1, 4, 1, 0, bias=False), nn.Sigmoid()]
    return nn.Sequential(*g), nn.Sequential(*d)


# --- data ---------------------------------------------------------------------------------------------
def load_data(image_size: int) -> dict[str, torch.Tensor]:
    """train/test images in [-1, 1] (and labels): 32x32 one channel with a held-out split,
    64x64 three channels, all digits training (``test`` then holds the same 20 % split)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32))[:, None] / 8.0 - 1.0
    target = d.target
    x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(target.astype(np.int64))
    if image_size == 64:
        x = x.expand(-1, 3, -1, -1).contiguous()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    k = int(round(0.2 * len(x)))
    test, train = perm[:k], perm[k:]
    data = {"test_x": x[test], "test_y": y[test], "train_x": x[train], "train_y": y[train]}
    if image_size == 64:
        data["fit_x"], data["fit_y"] = x, y
    else:
        data["fit_x"], data["fit_y"] = x[train], y[train]
    return data


# --- one run ----------------------------------------------------------------------------------------------
def train_one(
    spec: str, seed: int, args: argparse.Namespace, data: dict[str, torch.Tensor]
) -> tuple[dict[str, Any], torch.Tensor]:
    """Train the example's loop once; return the run's row (without the sample quality) and
    1000 samples (CPU) for :func:`add_quality`."""
    cfg = parse_config(spec)
    nz, device = cfg["nz"], torch.device(args.device)
    torch.manual_seed(seed)
    nc = data["fit_x"].shape[1]
    netG, netD = build(nz, args.width, args.width, nc, args.image_size)
    netG, netD = netG.to(device), netD.to(device)
    netG.apply(weights_init)
    netD.apply(weights_init)
    hook = None
    if cfg["plugin"]:
        if cfg["d"] == "auto" and cfg["g"] is None:
            netD = ogan_plugin.wrap(netD, z_dim=nz, generator=netG)  # the one line, as a user writes it
        else:
            d, g = cfg["d"], cfg["g"]
            if cfg["ramp"]:
                d, g = Ramp(d, cfg["ramp"]), None if g is None else Ramp(g, cfg["ramp"])
            netD = ogan_plugin.wrap(netD, z_dim=nz)
            ogan_plugin.attach(netD, netG, corr_weight=d, corr_weight_g=g)
        hook = ogan_plugin.OGANHook.of(netD)
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data["fit_x"]), batch_size=args.batch_size,
                                         shuffle=True)
    dx, dgz, rho_train = [], [], []
    i, t0 = 0, time.perf_counter()
    while i < args.steps:
        for (real_cpu,) in loader:
            if i >= args.steps:
                break
            # ---- the example's loop ------------------------------------------------------------
            netD.zero_grad()
            real_cpu = real_cpu.to(device)
            b_size = real_cpu.size(0)
            label = torch.full((b_size,), 1.0, dtype=torch.float, device=device)
            output = netD(real_cpu).view(-1)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()
            noise = torch.randn(b_size, nz, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(0.0)
            output = netD(fake.detach()).view(-1)
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            optimizerD.step()
            netG.zero_grad()
            label.fill_(1.0)
            output = netD(fake).view(-1)
            errG = criterion(output, label)
            errG.backward()
            optimizerG.step()
            # ------------------------------------------------------------------------------------------
            dx.append(D_x)
            dgz.append(D_G_z1)
            if hook is not None and hook.last_rho is not None:
                rho_train.append(float(hook.last_rho))
            i += 1
            if args.verbose and (i % 200 == 0 or i == args.steps):
                r = f" rho {statistics.fmean(rho_train[-50:]):.3f}" if rho_train else ""
                print(f"  [{spec} s{seed}] {i}/{args.steps} D(x) {statistics.fmean(dx[-50:]):.3f} "
                      f"D(G(z)) {statistics.fmean(dgz[-50:]):.3f}{r}", flush=True)
    seconds = time.perf_counter() - t0
    row = {"config": spec, "seed": seed, "nz": nz, "image_size": args.image_size, "width": args.width,
           "steps": args.steps, "dx": statistics.fmean(dx[-50:]), "dgz": statistics.fmean(dgz[-50:]),
           "rho_train": statistics.fmean(rho_train[-50:]) if rho_train else None, "seconds": seconds}
    from ogan_plugin import evaluate

    z_shape = (nz, 1, 1)
    if cfg["plugin"]:
        row["rho"] = evaluate.mean_correlation(netG, netD, 1000, z_shape=z_shape)
        rec = evaluate.reconstruction_error(netG, netD, data["test_x"].to(device), mean_image=data["train_x"].mean(0),
                                            z_shape=z_shape)
        row["rec_mse"], row["mean_mse"] = rec.mse, rec.mean_image_mse
    samples = evaluate.generate(netG, nz, 1000, seed=seed + 1000, z_shape=z_shape).cpu()
    return row, samples


_CLASSIFIERS: dict[tuple, Any] = {}


def add_quality(row: dict[str, Any], samples: torch.Tensor, data: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Sample confidence, classes present and Fréchet distance of ``samples`` (the same
    numbers as :func:`ogan_plugin.evaluate.sample_quality`, on already drawn samples)."""
    from ogan_plugin import evaluate

    key = tuple(data["fit_x"].shape)
    if key not in _CLASSIFIERS:
        clf = evaluate.PixelClassifier().fit(data["fit_x"], data["fit_y"])
        ref = evaluate.frechet_distance(clf.features(data["fit_x"]), clf.features(data["test_x"]))
        _CLASSIFIERS[key] = (clf, ref)
    clf, ref = _CLASSIFIERS[key]
    proba = clf.predict_proba(samples)
    counts = np.bincount(proba.argmax(1).numpy(), minlength=proba.shape[1])
    row.update(confidence=float(proba.max(1).values.mean()), classes=int((counts >= 10).sum()),
               fd=evaluate.frechet_distance(clf.features(data["fit_x"]), clf.features(samples)), fd_ref=ref)
    return row


def _worker(job: tuple[str, int, argparse.Namespace]) -> tuple[dict[str, Any], torch.Tensor]:
    spec, seed, args = job
    torch.set_num_threads(args.threads)
    row, samples = train_one(spec, seed, args, load_data(args.image_size))
    return row, samples


def _fmt(v: Any) -> str:
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def write_rows(path: Optional[str], rows: list[dict[str, Any]]) -> None:
    if not path:
        return
    new = not Path(path).exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in FIELDS})


def summary(rows: list[dict[str, Any]]) -> str:
    """Per configuration: median [min, max] of each figure over its seeds."""
    lines = [f"{'config':24s} {'seeds':>5s} " + " ".join(f"{k:>20s}" for k in ("rho", "confidence", "fd", "dx"))]
    for spec in dict.fromkeys(r["config"] for r in rows):
        rs = [r for r in rows if r["config"] == spec]
        cells = []
        for k in ("rho", "confidence", "fd", "dx"):
            v = [r[k] for r in rs if r.get(k) is not None]
            cells.append(f"{statistics.median(v):.3f} [{min(v):.3f},{max(v):.3f}]" if v else "-")
        lines.append(f"{spec:24s} {len(rs):5d} " + " ".join(f"{c:>20s}" for c in cells))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["plain", "d=w0.5", "d=auto"],
                        help="configurations (module doc; default: plain d=w0.5 d=auto)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    parser.add_argument("--steps", type=int, default=800, help="iterations (default 800)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--image-size", type=int, default=32, choices=(32, 64), help="32 or 64 (default 32)")
    parser.add_argument("--width", type=int, default=32, help="ngf = ndf (default 32; the example's is 64)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, in separate processes (default 1)")
    parser.add_argument("--csv", default=None, help="append one row per run to this CSV file")
    parser.add_argument("--quiet", dest="verbose", action="store_false", help="no progress lines")
    args = parser.parse_args(argv)
    for spec in args.configs:
        parse_config(spec)  # fail before training
    jobs = [(spec, seed, args) for seed in args.seeds for spec in args.configs]
    rows: list[dict[str, Any]] = []
    print(f"{len(jobs)} runs, {args.jobs} at once; torch {torch.__version__}; {args.device}", flush=True)
    if args.jobs == 1:
        results = map(_worker, jobs)
    else:
        pool = mp.get_context("spawn").Pool(args.jobs)
        results = pool.imap_unordered(_worker, jobs)
    data = {size: load_data(size) for size in {args.image_size}}
    for row, samples in results:  # the classifier is fit once, here, while the runs go on
        row = add_quality(row, samples, data[args.image_size])
        rows.append(row)
        write_rows(args.csv, [row])
        print(" ".join(f"{k}={_fmt(row.get(k))}" for k in FIELDS), flush=True)
    print(summary(rows))


if __name__ == "__main__":
    sys.exit(main())
