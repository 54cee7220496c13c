"""``ogan-plugin invert``: find the codes of real images with a demo checkpoint's pair.

    ogan-plugin invert --checkpoint ogan-demo/checkpoint.pt my_digits/ more.npy --out inverted/

Inputs are image files, folders of images (read recursively) or ``.npy``/``.npz`` arrays,
read as ``ogan-plugin demo --data`` reads them (:mod:`ogan_plugin.demo.data`) and resized
(bilinear) to the checkpoint's image size.  Every image starts from the encoder's code
``0.9 * encode(x)`` and is refined with :func:`ogan_plugin.invert` (Adam on z, pixel MSE by
default) for up to ``--steps`` steps, stopping early per image once its loss stops
improving (``--tol``).  ``--steps 0`` skips the refinement: the encoder's codes only, one
forward pass per image (for retrieval or clustering).

The output folder (``--out``) receives:

``inversions.png``  for up to ``--grid`` images, groups of three rows of up to 10:
                    originals, encoder-only reconstructions ``G(0.9 * encode(x))``,
                    refined reconstructions ``G(z)`` (two rows with ``--steps 0``)
``codes.npz``       ``z``: (N, z_dim) float32 refined codes (``G(z)`` is the refined
                    reconstruction); ``encoder``: (N, z_dim) float32 encoder codes as fed
                    to G, ``0.9 * encode(x)``; ``names``: (N,) the images' names
                    (``numpy.load("codes.npz")["z"]``)
``losses.csv``      one row per image: ``index, name, encoder_loss, refined_loss, steps``
                    (the loss is ``--loss``, per image; ``steps``: steps it ran)

Nothing is written until every image is inverted: a bad checkpoint, a bad input or an
interrupted run leaves the output folder as it was.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ogan_plugin.cli import CommandError
from ogan_plugin.demo.train import DEFAULT_CHECKPOINT
from ogan_plugin.networks import parse_device
from ogan_plugin.reconstruction import DEFAULT_LR

__all__ = ["configure", "run", "write_outputs", "DEFAULT_CHECKPOINT"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ogan-plugin invert``."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders of images or .npy/.npz arrays (read like demo --data)")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                        help=f"a checkpoint written by ogan-plugin demo (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--out", default="ogan-invert", help="output folder (default ./ogan-invert/)")
    parser.add_argument("--steps", type=int, default=100,
                        help="refinement steps per image, 0 = encoder codes only (default 100)")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"Adam's learning rate on z (default {DEFAULT_LR})")
    parser.add_argument("--loss", default="mse", choices=("mse", "l1"), help="per-image pixel loss (default mse)")
    parser.add_argument("--tol", type=float, default=1e-3,
                        help="stop an image once its loss improved by less than this fraction over --patience "
                             "steps; 0 = only when it stops improving at all (default 1e-3)")
    parser.add_argument("--patience", type=int, default=20, help="the window of --tol, in steps (default 20)")
    parser.add_argument("--no-stop", action="store_true", help="run every image for all --steps (ignore --tol)")
    parser.add_argument("--prior", type=float, default=0.0, help="weight of mean(z^2) in the objective (default 0: off)")
    parser.add_argument("--scale", type=float, default=0.9, help="factor on the standardized code (default 0.9)")
    parser.add_argument("--batch-size", type=int, default=256, help="images optimised together (default 256)")
    parser.add_argument("--convert-channels", action="store_true",
                        help="convert grayscale/colour inputs to the checkpoint's channels instead of refusing them")
    parser.add_argument("--grid", type=int, default=40, help="images drawn in inversions.png (default 40)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_options(args: argparse.Namespace) -> None:
    def at_least(name: str, lo: int) -> None:
        v = getattr(args, name)
        if v is not None and v < lo:
            raise CommandError(f"--{name.replace('_', '-')} must be >= {lo}, got {v}")

    for name, lo in (("steps", 0), ("patience", 1), ("batch_size", 1), ("grid", 1), ("threads", 1)):
        at_least(name, lo)
    for name in ("lr", "scale"):
        v = getattr(args, name)
        if not (v > 0 and np.isfinite(v)):
            raise CommandError(f"--{name} must be a finite number > 0, got {v}")
    for name in ("tol", "prior"):
        v = getattr(args, name)
        if not (v >= 0 and np.isfinite(v)):
            raise CommandError(f"--{name} must be a finite number >= 0, got {v}")


def _load_inputs(inputs: list[str], channels: int, size: int, convert: bool) -> tuple[torch.Tensor, list[str]]:
    """Every input as (N, C, size, size) in [-1, 1] and one name per image."""
    from ogan_plugin.demo.data import load_path

    xs, names = [], []
    for path in inputs:
        try:
            data = load_path(path, channels if convert else None, size)
        except (ValueError, TypeError, OSError) as exc:  # the loaders' messages name the file
            raise CommandError(f"input {path!r}: {exc}") from exc
        c = data.x.shape[1]
        if c != channels:
            raise CommandError(
                f"input {path!r} has {c}-channel images but the checkpoint's generator makes {channels}-channel "
                f"images; convert them or pass --convert-channels"
            )
        xs.append(data.x)
        names += data.names or [f"{data.source}[{i}]" for i in range(len(data))]
    return torch.cat(xs), names


def run(args: argparse.Namespace) -> int:
    """``ogan-plugin invert``: load, check, invert, then write every file."""
    from ogan_plugin.demo.train import CheckpointError, Progress, load_pair

    _check_options(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {str(out)!r} is a file; give a folder (it is created if missing)")
    try:
        device = parse_device(args.device, "--device")
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        pair = load_pair(Path(args.checkpoint), device)
    except CheckpointError as exc:
        raise CommandError(f"--checkpoint: {exc}") from exc
    channels, size, _ = pair.image_shape
    x, names = _load_inputs(args.inputs, channels, size, args.convert_channels)
    print(f"{len(names)} images {tuple(x.shape[1:])} from {len(args.inputs)} input(s); checkpoint {args.checkpoint} "
          f"(step {pair.step}); device {device}", flush=True)

    import ogan_plugin

    batches = -(-x.shape[0] // args.batch_size)
    bar = Progress(args.steps * batches, 0, "invert", args.steps > 0 and not args.no_progress)

    def advance(step: int, z: torch.Tensor) -> None:
        if step:
            bar.update(step, 10)

    t0 = time.perf_counter()
    try:
        result = ogan_plugin.invert(
            pair.generator, pair.discriminator, x, steps=args.steps, lr=args.lr, loss=args.loss, scale=args.scale,
            tol=None if args.no_stop else args.tol, patience=args.patience, prior=args.prior,
            batch_size=args.batch_size, callback=advance,
        )
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    write_outputs(out, pair.generator, x, names, result, args.grid, draw_refined=args.steps > 0)
    enc, ref = result.history[0].double().mean(), result.loss.double().mean()
    print(f"mean {args.loss}: encoder {enc:.5f}, refined {ref:.5f}; {result.steps.double().mean():.0f} steps per image "
          f"on average; {seconds:.1f} s")
    print(f"wrote inversions.png, codes.npz, losses.csv to {out}/")
    return 0


def write_outputs(out: Path, generator: Any, x: torch.Tensor, names: list[str], result: Any, grid: int,
                  draw_refined: bool = True) -> None:
    """Write ``inversions.png``, ``codes.npz`` and ``losses.csv`` for ``result`` (an
    :class:`ogan_plugin.Inversion` of ``x``) into ``out``: each file is written to a
    temporary name first and moved in place, so a failure leaves no half-written file."""
    from ogan_plugin.images import image_grid
    from ogan_plugin.networks import eval_mode

    n = min(grid, x.shape[0])
    with torch.no_grad(), eval_mode(generator):
        encoder_rec = generator(result.start[:n]).float().cpu()
    rows = [x[:n].float().cpu(), encoder_rec] + ([result.reconstruction[:n].float().cpu()] if draw_refined else [])
    cols = min(10, n)
    cells = []
    for i in range(0, n, cols):
        for r in rows:
            chunk = r[i : i + cols]
            cells.append(torch.cat([chunk, chunk.new_ones(cols - chunk.shape[0], *chunk.shape[1:])]))  # white fill
    picture = image_grid(torch.cat(cells), cols)
    png = io.BytesIO()
    picture.save(png, format="PNG", optimize=True)

    codes = io.BytesIO()
    np.savez(codes, z=result.z.flatten(1).float().cpu().numpy(), encoder=result.start.flatten(1).float().cpu().numpy(),
             names=np.array(names))

    table = io.StringIO()
    w = csv.writer(table, lineterminator="\n")
    w.writerow(["index", "name", "encoder_loss", "refined_loss", "steps"])
    first = result.history[0].double().cpu().tolist()
    for i, (name, e, r, s) in enumerate(zip(names, first, result.loss.double().cpu().tolist(), result.steps.cpu().tolist())):
        w.writerow([i, name, f"{e:.6g}", f"{r:.6g}", s])

    out.mkdir(parents=True, exist_ok=True)
    for name, payload in (("inversions.png", png.getvalue()), ("codes.npz", codes.getvalue()),
                          ("losses.csv", table.getvalue().encode())):
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(payload)
        os.replace(tmp, out / name)
