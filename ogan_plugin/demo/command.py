"""``ogan-plugin demo``: train an O-GAN on real data, draw what the encoder does, measure it.

With no arguments: scikit-learn's handwritten digits (1797 real 8x8 scans, shipped with
scikit-learn, no download) upsampled to 16x16, a held-out fifth (fixed seed, stratified)
never trained on, the DCGAN-like pair of :mod:`ogan_plugin.demo.models` with the
discriminator widened by :func:`ogan_plugin.wrap`, trained with
:class:`ogan_plugin.SingleLossStep` (QP loss, single loss, default routing) for 3000
steps of batch 64.  Four choices differ from the official recipe, each measured on this
data (README, "The demo"): spectral norm in the discriminator instead of BatchNorm; the
correlation weight 5 in the discriminator's loss and 1.5 in the generator's instead of 0.5
in both (the term in D's loss makes the encoder; a milder one in G's keeps the samples'
Fréchet distance level with a plain GAN's); RMSprop's learning rate 2e-4 instead of 1e-4; and a random
one-pixel shift of 40% of the discriminator's inputs, real and generated
(:class:`ogan_plugin.RandomTranslate`, DiffAugment-style, ``--translate``), which makes the
codes better features for a linear probe at some cost in rho.  The plain GAN of
``--compare-plain`` gets the same shifts.

Timing: about 100 s for the default run on 2 idle CPU cores (torch uses both).  Tiny
networks suffer badly from oversubscription: on a busy machine ``--threads 1`` is much
faster than two threads fighting for cores.

The output folder (``--out``, default ``./ogan-demo/``) receives:

``samples.png``         10 x 10 samples G(z), 342 x 342 pixels (16x16 images shown at 2x)
``plain_samples.png``   with --compare-plain: the plain GAN's samples for the same z
``reconstructions.png`` 4 pairs of rows: 10 held-out originals above their
                        reconstructions G(0.9 * encode(x)), 342 x 274 pixels
``interpolations.png``  8 rows of 10: held-out digit a morphing into held-out digit b
                        through the line between their codes, 342 x 274 pixels
``training.png``        loss and correlation curves, 800 x 300 pixels
``metrics.json``        every figure of :func:`ogan_plugin.evaluate.evaluate` plus timings
                        and the configuration (and the plain GAN's with --compare-plain)
``checkpoint.pt``       generator, wrapped discriminator, optimizer, EMA, step, RNG
                        states, configuration and history: ``--resume`` continues exactly

Pixel sizes hold for 16x16 images; in general see :func:`ogan_plugin.images.grid_size`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from ogan_plugin.checks import check_int
from ogan_plugin.cli import CommandError
from ogan_plugin.demo.train import CHECKPOINT, DEFAULT_OUT, CheckpointError, read_checkpoint
from ogan_plugin.networks import parse_device

__all__ = ["configure", "run", "DEFAULTS", "TRAINING_OPTIONS"]

#: default of every option (the parser's defaults are None so that --resume can tell
#: which options were given explicitly)
DEFAULTS: dict[str, Any] = {
    "steps": 3000,
    "batch_size": 64,
    "z_dim": 32,
    "loss": "qp",
    "routing": "split",
    "corr_weight": 5.0,
    "corr_weight_g": 1.5,  # None (checkpoints from before the option): the same as corr_weight
    "lr": 2e-4,
    "ema_decay": 0.0,
    "translate": 1,
    "translate_p": 0.4,
    "width": 64,
    "d_norm": "spectral",
    "seed": 0,
    "held_out": 0.2,
    "channels": 1,
    "image_size": None,  # 16 for the digits, the images' own size for --data
    "data": None,
    "device": "auto",
    "threads": None,
    "out": DEFAULT_OUT,
    "checkpoint_every": 500,
    "eval_samples": 1000,
}

#: options fixed by a checkpoint: --resume refuses different values for them
TRAINING_OPTIONS = (
    "batch_size", "z_dim", "loss", "routing", "corr_weight", "corr_weight_g", "lr", "ema_decay", "translate",
    "translate_p", "width", "d_norm", "seed", "held_out", "channels", "image_size", "data",
)


#: values of training options for checkpoints written before the option existed
_BEFORE_OPTION = {"translate": 0, "corr_weight_g": None}


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ogan-plugin demo``."""
    d = DEFAULTS
    t = parser.add_argument_group("training")
    t.add_argument("--steps", type=int, default=None, help=f"optimizer steps in all (default {d['steps']})")
    t.add_argument("--batch-size", type=int, default=None, help=f"batch size (default {d['batch_size']})")
    t.add_argument("--z-dim", type=int, default=None, help=f"noise size = code size (default {d['z_dim']})")
    t.add_argument("--loss", default=None, help=f"adversarial loss: qp, hinge, bce, wgan or a plugin's (default {d['loss']})")
    t.add_argument("--routing", default=None, help=f"single-loss routing: split or three_forward (default {d['routing']})")
    t.add_argument("--corr-weight", type=float, default=None,
                   help=f"weight of the correlation term in D's loss (default {d['corr_weight']})")
    t.add_argument("--corr-weight-g", type=float, default=None,
                   help=f"weight of the correlation term in G's loss (default {d['corr_weight_g']})")
    t.add_argument("--lr", type=float, default=None, help=f"RMSprop learning rate (default {d['lr']})")
    t.add_argument("--ema-decay", type=float, default=None,
                   help=f"EMA of the generator's weights used for evaluation, 0 = off (default {d['ema_decay']})")
    t.add_argument("--translate", type=int, default=None, metavar="PIXELS",
                   help="shift D's real and generated inputs by up to this many pixels, filling with -1 "
                        f"(DiffAugment; 0 = off; default {d['translate']})")
    t.add_argument("--translate-p", type=float, default=None, metavar="P",
                   help=f"probability that an image is shifted (default {d['translate_p']})")
    t.add_argument("--width", type=int, default=None, help=f"channels of the nets' first/last conv (default {d['width']})")
    t.add_argument("--d-norm", default=None, choices=("layer", "batch", "spectral", "none"),
                   help=f"normalisation inside the discriminator (default {d['d_norm']})")
    t.add_argument("--seed", type=int, default=None, help=f"seed of the split, the weights, the batches and z (default {d['seed']})")
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... or auto (default: cuda when available)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--resume", action="store_true", help=f"continue from OUT/{CHECKPOINT} up to --steps")
    t.add_argument("--checkpoint-every", type=int, default=None,
                   help=f"save OUT/{CHECKPOINT} every N steps (default {d['checkpoint_every']}; always at the end)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = parser.add_argument_group("data")
    g.add_argument("--data", default=None,
                   help="a folder of images (sub-folders = labels) or a .npy/.npz array instead of the digits")
    g.add_argument("--channels", type=int, default=None, choices=(1, 3), help="1 = grayscale, 3 = RGB (default 1)")
    g.add_argument("--image-size", type=int, default=None,
                   help="resize images to this side, a power of two >= 8 (default 16 for the digits, else the images' own)")
    g.add_argument("--held-out", type=float, default=None, help=f"held-out fraction, >= 0.15 (default {d['held_out']})")
    o = parser.add_argument_group("output")
    o.add_argument("--out", default=None, help=f"output folder (default ./{d['out']}/)")
    o.add_argument("--eval-samples", type=int, default=None, help=f"fresh z for the metrics (default {d['eval_samples']})")
    o.add_argument("--compare-plain", action="store_true",
                   help="also train the same pair as a plain GAN (1-output head, alternating updates), compare the samples' "
                        "figures and write its samples to OUT/plain_samples.png")


# --- configuration ------------------------------------------------------------------------
def _config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = {k: getattr(args, k, None) for k in DEFAULTS}
    given = {k for k, v in cfg.items() if v is not None}
    for k, v in DEFAULTS.items():
        if cfg[k] is None:
            cfg[k] = v
    cfg["_given"] = sorted(given)
    return cfg


def _validate(cfg: dict[str, Any]) -> None:
    def positive_int(name: str, lo: int = 1) -> None:
        check_int(f"--{name.replace('_', '-')}", cfg[name], lo)

    for name, lo in (("steps", 1), ("batch_size", 2), ("z_dim", 2), ("width", 1), ("checkpoint_every", 1),
                     ("eval_samples", 10), ("translate", 0)):
        positive_int(name, lo)
    if cfg["threads"] is not None:
        positive_int("threads")
    if not 0.15 <= cfg["held_out"] < 1:
        raise ValueError(f"--held-out must be in [0.15, 1), got {cfg['held_out']!r}")
    for name in ("corr_weight", "corr_weight_g"):
        if cfg[name] is not None and not cfg[name] >= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {cfg[name]!r}")
    if not cfg["lr"] > 0:
        raise ValueError(f"--lr must be > 0, got {cfg['lr']!r}")
    if not 0 <= cfg["translate_p"] <= 1:
        raise ValueError(f"--translate-p must be in [0, 1], got {cfg['translate_p']!r}")
    if not 0 <= cfg["ema_decay"] < 1:
        raise ValueError(f"--ema-decay must be in [0, 1), got {cfg['ema_decay']!r}")
    from ogan_plugin.losses import get_loss
    from ogan_plugin.training import ROUTINGS

    get_loss(cfg["loss"])
    if cfg["routing"] not in ROUTINGS:
        raise ValueError(f"--routing must be one of {ROUTINGS}, got {cfg['routing']!r}")


# --- data -----------------------------------------------------------------------------------
def _load_data(cfg: dict[str, Any]):
    from ogan_plugin.demo import data as datasets

    data = datasets.load_demo_data(cfg["data"], cfg["channels"], cfg["image_size"])
    h, w = data.x.shape[-2:]
    if h != w or h < 8 or h & (h - 1):
        raise ValueError(
            f"the demo's nets need square images with a power-of-two side >= 8, got {h}x{w}; pass --image-size"
        )
    sp = datasets.split(data, cfg["held_out"], cfg["seed"])
    if sp.train_x.shape[0] < cfg["batch_size"]:
        raise ValueError(
            f"only {sp.train_x.shape[0]} training images for --batch-size {cfg['batch_size']}; use a smaller batch"
        )
    return data, sp



# --- report -------------------------------------------------------------------------------------
_ROWS = (
    ("mean_rho", "mean rho(z, E(G(z))), fresh z", "{:.3f}"),
    ("reconstruction_mse", "reconstruction MSE (held-out)", "{:.4f}"),
    ("mean_image_mse", "  MSE of the mean image", "{:.4f}"),
    ("class_agreement", "reconstruction class agreement", "{:.1%}"),
    ("reconstruction_accuracy", "  reconstructions' true-label accuracy", "{:.1%}"),
    ("classifier_accuracy", "  classifier accuracy on originals", "{:.1%}"),
    ("probe_code_accuracy", "linear probe on codes", "{:.1%}"),
    ("probe_pixel_accuracy", "linear probe on pixels", "{:.1%}"),
    ("sample_confidence", "sample classifier confidence", "{:.3f}"),
    ("sample_classes_present", "classes among samples", "{}"),
    ("frechet", "Frechet distance (classifier logits)", "{:.2f}"),
    ("frechet_reference", "  held-out vs training images", "{:.2f}"),
    ("train_seconds", "training time (s)", "{:.1f}"),
    ("steps_per_second", "steps per second", "{:.1f}"),
)


def format_table(metrics: dict[str, Any]) -> str:
    """The printed metrics table (O-GAN column, plus the plain GAN's where measured)."""
    plain = metrics.get("plain") or {}
    lines = [f"{'metric':42s} {'O-GAN':>10s}" + (f" {'plain GAN':>10s}" if plain else "")]
    for key, label, fmt in _ROWS:
        v = metrics.get(key)
        if v is None:
            continue
        line = f"{label:42s} {fmt.format(v):>10s}"
        if plain:
            pv = plain.get(key)
            line += f" {fmt.format(pv) if pv is not None else '-':>10s}"
        lines.append(line)
    return "\n".join(lines)


def _json_ready(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# --- the command ----------------------------------------------------------------------------------
def _prepare(args: argparse.Namespace):
    """Options, checkpoint, device, data and output folder, checked before any training.

    Every expected failure here (a bad option, unreadable data, a missing or unreadable
    checkpoint, an output path that is a file) becomes a :class:`~ogan_plugin.cli.CommandError`:
    one line on stderr and exit status 2.
    """
    cfg = _config(args)
    out = Path(cfg["out"])
    resume = bool(getattr(args, "resume", False))
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {str(out)!r} is a file; give a folder (it is created if missing)")
    if resume:
        ckpt = out / CHECKPOINT
        if not ckpt.is_file():
            raise CommandError(f"--resume: no checkpoint at {str(ckpt)!r} (run without --resume first)")
        try:
            saved = read_checkpoint(ckpt)["config"]
        except CheckpointError as exc:
            raise CommandError(f"--resume: {exc}") from exc
        for k in TRAINING_OPTIONS:
            if k in cfg["_given"] and cfg[k] != saved.get(k):
                raise CommandError(
                    f"--resume: --{k.replace('_', '-')} {cfg[k]!r} differs from the checkpoint's {saved.get(k)!r}; "
                    "a resumed run keeps the checkpoint's training options"
                )
            cfg[k] = saved.get(k, _BEFORE_OPTION.get(k, cfg[k]))
    try:
        _validate(cfg)
        device = parse_device(cfg["device"], "--device")
        data, sp = _load_data(cfg)
        out.mkdir(parents=True, exist_ok=True)
    except (ValueError, TypeError, OSError) as exc:  # bad options or data: the messages name them
        raise CommandError(str(exc)) from exc
    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    return cfg, out, resume, device, data, sp


def run(args: argparse.Namespace) -> int:
    """``ogan-plugin demo``: train, evaluate, draw, save."""
    cfg, out, resume, device, data, sp = _prepare(args)
    print(
        f"data: {data.source}: {len(data)} images {tuple(data.x.shape[1:])}, {sp.train_x.shape[0]} for training, "
        f"{sp.test_x.shape[0]} held out; device {device}, {torch.get_num_threads()} CPU threads",
        flush=True,
    )
    progress = not getattr(args, "no_progress", False)
    from ogan_plugin.demo.pictures import save_pictures, save_samples
    from ogan_plugin.demo.train import Interrupted, train_ogan, train_plain

    try:
        G, D, trainer, history, seconds, ran = train_ogan(cfg, sp, out, device, resume, progress)
    except Interrupted as stopped:
        print(f"interrupted after step {stopped}: checkpoint saved to {out / CHECKPOINT}; continue with --resume",
              file=sys.stderr)
        return 130

    from ogan_plugin.evaluate import PixelClassifier, evaluate, sample_quality

    G_eval = trainer.ema.module if trainer.ema is not None else G
    t0 = time.perf_counter()
    labelled = sp.train_y is not None and sp.test_y is not None
    train = (sp.train_x, sp.train_y) if labelled else sp.train_x
    test = (sp.test_x, sp.test_y) if labelled else sp.test_x
    clf = PixelClassifier().fit(sp.train_x, sp.train_y) if labelled else None
    report = evaluate(G_eval, D, train, test, n_samples=cfg["eval_samples"], seed=cfg["seed"], classifier=clf)
    metrics: dict[str, Any] = report.as_dict()
    metrics.update(
        steps=trainer.step_count,
        train_seconds=seconds,
        steps_per_second=ran / seconds if seconds > 0 and ran else None,
        eval_seconds=time.perf_counter() - t0,
        device=str(device),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        data=data.source,
        train_images=int(sp.train_x.shape[0]),
        held_out_images=int(sp.test_x.shape[0]),
        config={k: v for k, v in cfg.items() if not k.startswith("_")},
    )
    if ran == 0:
        metrics.pop("steps_per_second")
    save_pictures(G_eval, D, sp, history, out, cfg["z_dim"], cfg["seed"])

    written = ["samples.png", "reconstructions.png", "interpolations.png", "training.png"]
    if getattr(args, "compare_plain", False):
        G_plain, plain_seconds = train_plain(cfg, sp, device, progress)
        save_samples(G_plain, out / "plain_samples.png", cfg["z_dim"], cfg["seed"])
        written.append("plain_samples.png")
        plain: dict[str, Any] = {"train_seconds": plain_seconds, "steps_per_second": cfg["steps"] / plain_seconds}
        if clf is not None:
            sq = sample_quality(G_plain, clf, sp.train_x, cfg["z_dim"], cfg["eval_samples"], seed=cfg["seed"] + 1)
            plain.update(sample_confidence=sq.confidence, sample_classes_present=sq.classes_present,
                         sample_class_counts=sq.class_counts, frechet=sq.frechet)
        metrics["plain"] = plain
    metrics = _json_ready(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(format_table(metrics))
    print(f"wrote {', '.join(written)}, metrics.json, {CHECKPOINT} to {out}/")
    return 0
