"""The demo's training loops: the O-GAN (single loss, checkpoints, Ctrl-C) and the plain GAN
that ``--compare-plain`` trains beside it with the same batches and noise."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

#: the checkpoint's file name inside the output folder
CHECKPOINT = "checkpoint.pt"

#: the demo's default output folder (``ogan-plugin demo --out``)
DEFAULT_OUT = "ogan-demo"

#: where ``ogan-plugin demo`` writes its checkpoint by default: the default ``--checkpoint``
#: of ``ogan-plugin invert`` and ``ogan-plugin bench --invert``
DEFAULT_CHECKPOINT = f"{DEFAULT_OUT}/{CHECKPOINT}"

#: the format of the checkpoints :func:`train_ogan` writes (``format_version`` entry).  Raise
#: it when a change makes older code misread new checkpoints; :func:`read_checkpoint` refuses
#: newer formats.  Checkpoints from before the field existed read as format 0.
CHECKPOINT_VERSION = 1

#: entries every demo checkpoint holds, whatever its version
_CHECKPOINT_KEYS = ("generator", "discriminator", "config", "step")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, not written by
    ``ogan-plugin demo``, or written by an incompatible version.  The message names the file."""


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The state saved by ``ogan-plugin demo`` at ``path``, checked; the one place that reads
    demo checkpoints (``--resume``, ``ogan-plugin invert``, ``ogan-plugin bench --invert``).

    Loads with ``weights_only=True`` (tensors, numbers, strings and containers only: a
    checkpoint cannot run code).

    Raises:
        CheckpointError: ``path`` is missing or not a file, cannot be unpickled, lacks the
            entries of a demo checkpoint, or has a ``format_version`` this code cannot read.
    """
    path = Path(path)
    if not path.is_file():
        kind = "a folder, not a checkpoint file" if path.is_dir() else "missing"
        raise CheckpointError(f"no checkpoint at {str(path)!r} ({kind})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch/pickle raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"cannot read the checkpoint {str(path)!r}: {type(exc).__name__}: {first}") from exc
    if not isinstance(state, dict) or any(k not in state for k in _CHECKPOINT_KEYS):
        got = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{str(path)!r} is not an ogan-plugin demo checkpoint: expected the entries {list(_CHECKPOINT_KEYS)}, got {got}"
        )
    version = state.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint format {version!r}, this ogan-plugin reads formats 0 to {CHECKPOINT_VERSION}: "
            "it was written by an incompatible (newer) version; upgrade ogan-plugin or retrain"
        )
    return state


@dataclass
class DemoPair:
    """A demo checkpoint's pair, ready to use (eval mode).

    Attributes:
        generator: the generator the demo evaluates (its EMA copy when the run kept one).
        discriminator: the wrapped discriminator (:class:`ogan_plugin.OGANDiscriminator`).
        config: the run's configuration (``metrics.json``'s ``config``).
        image_shape: ``(channels, height, width)`` of the generator's images.
        step: training steps the checkpoint holds.
    """

    generator: nn.Module
    discriminator: nn.Module
    config: dict[str, Any]
    image_shape: tuple[int, int, int]
    step: int


def _image_shape(generator_state: dict[str, Tensor]) -> tuple[int, int, int]:
    """(channels, size, size) of a :class:`~ogan_plugin.demo.models.Generator` from its
    state: one transposed convolution (a 4-d weight) per doubling of the 4x4 start."""
    convs = [v for k, v in generator_state.items() if k.startswith("body.") and k.endswith(".weight") and v.dim() == 4]
    if not convs:
        raise KeyError("the generator's state has no transposed convolutions (body.N.weight)")
    size = 4 * 2 ** len(convs)
    return int(convs[-1].shape[1]), size, size


def load_pair(path: Path, device: Any = "cpu") -> DemoPair:
    """Rebuild the generator and the wrapped discriminator of the demo checkpoint at ``path``
    on ``device`` (networks from the checkpoint's configuration, weights loaded), in eval mode.

    The caller's random state is left as it was: the networks are built under a fork of
    torch's CPU generator (building them seeds it, as training does, and wrapping draws
    the widened head's first weights from it).

    Raises:
        CheckpointError: as :func:`read_checkpoint`, or the weights do not fit the networks
            this version builds from the checkpoint's configuration.
    """
    import ogan_plugin

    state = read_checkpoint(path, map_location="cpu")
    cfg = state["config"]
    try:
        channels, size, _ = _image_shape(state["generator"])
        # building seeds torch's generator and widening the head draws from it: under a fork
        # (of the CPU generator only: the nets are built on the CPU) the caller's state is kept
        with torch.random.fork_rng(devices=[]):
            G, D = build_pair(cfg, size, channels, torch.device("cpu"))
            D = ogan_plugin.wrap(D, cfg["z_dim"])
        D.load_state_dict(state["discriminator"])
        ema = (state.get("trainer") or {}).get("ema")
        G.load_state_dict(ema["module"] if ema else state["generator"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"the checkpoint {str(path)!r} does not fit this version's demo networks "
            f"(written by an incompatible version?): {type(exc).__name__}: {first}"
        ) from exc
    return DemoPair(G.to(device).eval(), D.to(device).eval(), dict(cfg), (channels, size, size), int(state["step"]))


# --- models and training ----------------------------------------------------------------------
def build_pair(cfg: dict[str, Any], image_size: int, channels: int, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """The demo's generator and (unwrapped) discriminator for ``cfg``, initialised from
    ``cfg["seed"]``: this seeds torch's global generator (the training runs' reproducible
    start); :func:`load_pair` builds under a fork of it."""
    from ogan_plugin.demo.models import Discriminator, Generator

    torch.manual_seed(cfg["seed"])
    G = Generator(cfg["z_dim"], image_size, channels, cfg["width"])
    D = Discriminator(image_size, channels, cfg["width"], cfg["d_norm"])
    return G.to(device), D.to(device)


def _optimizer(params, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=cfg["lr"], alpha=0.99)


def _augment(cfg: dict[str, Any]):
    """The translation applied to D's inputs (None when ``--translate 0``)."""
    from ogan_plugin.augment import RandomTranslate

    # fill -1: the images are in [-1, 1] and the digits' background is -1 (repeating the
    # edge would smear the strokes that touch the border of the 8x8 scans)
    if not cfg["translate"]:
        return None
    return RandomTranslate(cfg["translate"], cfg["translate_p"], fill=-1.0, seed=cfg["seed"] + 7)


@dataclass
class _Batches:
    """Random training batches and noise from seeded generators (saved in checkpoints)."""

    x: Tensor
    z_dim: int
    batch_size: int
    device: torch.device
    seed: int

    def __post_init__(self) -> None:
        self.data_rng = torch.Generator().manual_seed(self.seed + 1)
        self.noise_rng = torch.Generator().manual_seed(self.seed + 2)

    def next(self) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, self.x.shape[0], (self.batch_size,), generator=self.data_rng)
        z = torch.randn(self.batch_size, self.z_dim, generator=self.noise_rng)
        return self.x[idx].to(self.device), z.to(self.device)

    def state_dict(self) -> dict[str, Tensor]:
        return {"data": self.data_rng.get_state(), "noise": self.noise_rng.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.data_rng.set_state(state["data"].cpu())  # RNG states are CPU byte tensors, whatever map_location did
        self.noise_rng.set_state(state["noise"].cpu())


class Progress:
    """A tqdm bar on stderr counting steps (the demo's tools share it), or nothing when
    not ``enabled``.

    Args:
        total: steps in all.
        initial: steps already done (a resumed run).
        desc: the bar's label.
        enabled: False: every method is a no-op (``--no-progress``; tqdm is not imported).
    """

    def __init__(self, total: int, initial: int, desc: str, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, step: int, every: int, **values: float) -> None:
        """Advance by one step; every ``every`` steps show ``values`` beside the bar."""
        if self.bar is None:
            return
        self.bar.update(1)
        if step % every == 0:
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Interrupted(Exception):
    """Training stopped at a step boundary after Ctrl-C (checkpoint saved)."""


class StopOnInterrupt:
    """While active (main thread only), the first Ctrl-C sets :attr:`requested` so that
    training stops cleanly after the current step; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def __enter__(self) -> "StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def save_checkpoint(path: Path, **state: Any) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_ogan(cfg, sp, out: Path, device: torch.device, resume: bool, progress: bool):
    """Train (or resume) the O-GAN; returns (G, wrapped D, trainer, history, seconds, steps run)."""
    import ogan_plugin

    channels, size = sp.train_x.shape[1], sp.train_x.shape[-1]
    G, D = build_pair(cfg, size, channels, device)
    D = ogan_plugin.wrap(D, cfg["z_dim"])
    opt = _optimizer(list(G.parameters()) + list(D.parameters()), cfg)
    trainer = ogan_plugin.SingleLossStep(
        G, D, loss=cfg["loss"], corr_weight=cfg["corr_weight"], corr_weight_g=cfg["corr_weight_g"], optimizer=opt,
        routing=cfg["routing"],
        ema_decay=cfg["ema_decay"] or None, augment=_augment(cfg),
    )
    batches = _Batches(sp.train_x, cfg["z_dim"], cfg["batch_size"], device, cfg["seed"])
    history: dict[str, list[float]] = {"loss_d": [], "loss_g": [], "rho": []}
    ckpt = out / CHECKPOINT
    if resume:
        state = read_checkpoint(ckpt, map_location=device)
        G.load_state_dict(state["generator"])
        D.load_state_dict(state["discriminator"])
        trainer.load_state_dict(state["trainer"])
        batches.load_state_dict(state["rng"]["batches"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        history = state["history"]

    def save() -> None:
        save_checkpoint(
            ckpt, format_version=CHECKPOINT_VERSION, generator=G.state_dict(), discriminator=D.state_dict(),
            trainer=trainer.state_dict(),
            step=trainer.step_count, config={k: v for k, v in cfg.items() if not k.startswith("_")},
            rng={"batches": batches.state_dict(), "torch": torch.get_rng_state()}, history=history,
        )

    start = trainer.step_count
    bar = Progress(cfg["steps"], start, "O-GAN", progress)
    t0 = time.perf_counter()
    with StopOnInterrupt() as stop:
        for _ in range(start, cfg["steps"]):
            x, z = batches.next()
            r = trainer.step(x, z)
            history["loss_d"].append(float(r.loss_d))
            history["loss_g"].append(float(r.loss_g))
            history["rho"].append(float(r.rho))
            bar.update(r.step, 10, loss_d=history["loss_d"][-1], loss_g=history["loss_g"][-1],
                       rho=sum(history["rho"][-50:]) / len(history["rho"][-50:]))
            if stop.requested:
                bar.close()
                save()
                raise Interrupted(r.step)
            if r.step % cfg["checkpoint_every"] == 0 and r.step < cfg["steps"]:
                save()
    bar.close()
    seconds = time.perf_counter() - t0
    save()
    return G, D, trainer, history, seconds, trainer.step_count - start


def train_plain(cfg, sp, device: torch.device, progress: bool):
    """The same pair as a plain GAN: 1-output head, same loss, alternating D and G updates,
    same steps, seed, batches and noise.  Returns (G for sampling, seconds)."""
    from ogan_plugin.ema import EMA
    from ogan_plugin.losses import get_loss, pixel_distance

    channels, size = sp.train_x.shape[1], sp.train_x.shape[-1]
    G, D = build_pair(cfg, size, channels, device)
    adv = get_loss(cfg["loss"])
    opt_g, opt_d = _optimizer(G.parameters(), cfg), _optimizer(D.parameters(), cfg)
    ema = EMA(G, cfg["ema_decay"]) if cfg["ema_decay"] else None
    aug = _augment(cfg) or (lambda x: x)
    batches = _Batches(sp.train_x, cfg["z_dim"], cfg["batch_size"], device, cfg["seed"])
    bar = Progress(cfg["steps"], 0, "plain GAN", progress)
    t0 = time.perf_counter()
    for step in range(1, cfg["steps"] + 1):
        x, z = batches.next()
        x, fake = aug(x), G(z)
        fake_d = aug(fake.detach())
        dist = pixel_distance(x, fake_d) if adv.needs_dist else None
        loss_d = adv.d_loss(D(x).view(-1), D(fake_d).view(-1), dist).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = adv.g_loss(D(aug(fake)).view(-1)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if ema is not None:
            ema.update()
        bar.update(step, 10, loss_d=loss_d.item(), loss_g=loss_g.item())
    bar.close()
    return (ema.module if ema is not None else G), time.perf_counter() - t0
