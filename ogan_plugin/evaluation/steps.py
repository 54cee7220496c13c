"""Steps to quality: how many fewer inversion steps the encoder's start needs
(:func:`steps_to_quality`, re-exported by :mod:`ogan_plugin.evaluate`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from ogan_plugin.checks import check_int
from ogan_plugin.evaluation.data import DataLike, _data
from ogan_plugin.head import OGANDiscriminator, as_wrapped
from ogan_plugin.networks import device_dtype
from ogan_plugin.reconstruction import DEFAULT_LR, invert

__all__ = ["Clock", "QualityMatch", "StepsToQuality", "steps_to_quality"]

# --- inversion: steps to quality -----------------------------------------------------------
class QualityMatch(NamedTuple):
    """The encoder start against the best baseline start cut at ``steps`` steps.

    ``target``: the lowest mean loss a baseline start reached in ``steps`` steps, by
    ``baseline``; ``encoder_steps``: the first step at which the encoder start's mean loss
    is ``<= target`` (None: not within its run); ``ratio``: ``steps / encoder_steps``
    (``inf`` when the encoder's start alone is as good); ``seconds``: the baseline's wall
    time for its ``steps``; ``encoder_seconds``: the encoder start's to ``encoder_steps``
    (encoding included); ``time_ratio``: ``seconds / encoder_seconds``.

    This is the package's one definition of the time ratio.  The times come from the
    clock given to :meth:`StepsToQuality.at`: by default the per-step times
    :func:`steps_to_quality` measured in its own runs (:attr:`StepsToQuality.times`);
    ``ogan-plugin bench --invert`` passes the costs of interleaved runs instead
    (:func:`ogan_plugin.bench.invert.interleaved_costs`: time to start plus time per step,
    medians over rounds that run every start in turn), which a change of the machine's
    load between runs minutes apart skews less (docs/inversion.md).
    """

    steps: int
    target: float
    baseline: str
    encoder_steps: Optional[int]
    ratio: Optional[float]
    seconds: float
    encoder_seconds: Optional[float]
    time_ratio: Optional[float]


#: a clock for :meth:`StepsToQuality.at`: ``clock(start, steps)`` -> seconds that ``steps``
#: steps from ``start`` take
Clock = Callable[[str, int], float]


@dataclass
class StepsToQuality:
    """What :func:`steps_to_quality` measured: every start's loss and wall time after each step.

    Attributes:
        budget: the steps every start ran.
        curves: per start (``"encoder"`` and the baselines), the mean loss over the images
            of their best codes so far after each step (``budget + 1`` values; index 0 is
            the start).
        times: per start, the wall time in seconds at which each of those values was known
            (time spent in the caller's ``callback`` excluded).
        match: :meth:`at` the full budget, timed by :attr:`times`: the goal's figures.
    """

    budget: int
    curves: dict[str, list[float]]
    times: dict[str, list[float]]
    match: QualityMatch = field(init=False)

    def __post_init__(self) -> None:
        self.match = self.at(self.budget)

    def at(self, steps: int, clock: Optional[Clock] = None) -> QualityMatch:
        """The step ratio at equal quality when the baselines stop after ``steps`` steps.

        Args:
            steps: where the baselines stop (``0 <= steps <= budget``).
            clock: ``clock(start, k)``, the seconds ``k`` steps from ``start`` take, for the
                time figures (default: :attr:`times`, this run's own clock).

        Returns:
            The :class:`QualityMatch`.
        """
        check_int("steps", steps, 0)
        if steps > self.budget:
            raise ValueError(f"steps must be <= the budget {self.budget}, got {steps}")
        if clock is None:
            clock = self._measured
        baseline = min((k for k in self.curves if k != "encoder"), key=lambda k: self.curves[k][steps])
        target = self.curves[baseline][steps]
        enc = next((t for t, v in enumerate(self.curves["encoder"]) if v <= target), None)
        seconds = clock(baseline, steps)
        enc_seconds = None if enc is None else clock("encoder", enc)
        return QualityMatch(
            steps, target, baseline, enc,
            None if enc is None else (math.inf if enc == 0 else steps / enc),
            seconds, enc_seconds, None if enc_seconds is None else seconds / enc_seconds,
        )

    def _measured(self, start: str, steps: int) -> float:
        return self.times[start][steps]


def steps_to_quality(
    generator: Callable[..., Tensor],
    wrapped_discriminator: OGANDiscriminator,
    images: DataLike,
    *,
    steps: int = 1000,
    baselines: Sequence[str] = ("random", "mean"),
    restarts: int = 4,
    lr: float = DEFAULT_LR,
    loss: Union[str, Callable[[Tensor, Tensor], Tensor]] = "mse",
    optimizer: Any = "adam",
    conditional: bool = False,
    scale: float = 0.9,
    batch_size: Optional[int] = None,
    seed: int = 0,
    callback: Optional[Callable[[str, int, Tensor], None]] = None,
    z_shape: Optional[Sequence[int]] = None,
) -> StepsToQuality:
    """How many times fewer inversion steps the encoder's start needs for the same loss.

    Runs :func:`ogan_plugin.invert` on ``images`` for ``steps`` steps from the encoder's
    code and from each baseline start (``"random"`` with ``restarts`` random codes per
    image, the best kept; ``"mean"``: z = 0), every start with the same optimizer, learning
    rate and loss, and no early stop.  The target is the mean loss the best baseline
    reaches in ``steps`` steps; the ratio is ``steps`` over the steps the encoder's start
    needs to reach it.  Wall times are measured per step (CUDA is synchronised at every
    step, so the times are honest but the runs a little slower than :func:`invert` alone).

    Args:
        generator: the generator (as in :func:`ogan_plugin.invert`).
        wrapped_discriminator: ``ogan_plugin.wrap(D, z_dim)`` (or DDP around it).
        images: held-out images (a tensor, or batches as in :func:`collect`).
        conditional: the data's labels go to both networks (``G(z, y)``,
            ``D.encode(x, y)``), as :func:`ogan_plugin.invert`'s ``y``.
        steps: the budget of every start.
        baselines: the non-encoder starts to compare with (``"random"``, ``"mean"``).
        restarts: random codes per image for ``"random"``.
        lr: the learning rate, as in :func:`ogan_plugin.invert`.
        loss: the loss, as in :func:`ogan_plugin.invert`.
        optimizer: the optimizer, as in :func:`ogan_plugin.invert`.
        scale: the encoder start's factor, as in :func:`ogan_plugin.invert`.
        batch_size: images optimised together, as in :func:`ogan_plugin.invert`.
        seed: seed of the random starts, as in :func:`ogan_plugin.invert`.
        callback: called as ``callback(start, step, z)`` after each step of each run with
            the best codes so far (e.g. to classify snapshots); its time is not counted.
        z_shape: the per-sample shape the generator takes its noise in, as in
            :func:`ogan_plugin.invert` (the callback's ``z`` comes in that layout).

    Returns:
        :class:`StepsToQuality`: the curves, the times, and ``match``, the goal's figures
        (``.match.ratio``, ``.match.time_ratio``); ``.at(k)`` gives the same figures with
        the baselines cut at ``k`` steps (``.at(k, clock)``: timed by another clock).

    Raises:
        ValueError: an unknown or repeated baseline, ``steps < 1``, or what
            :func:`ogan_plugin.invert` refuses.
    """
    d = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
    check_int("steps", steps, 1)
    baselines = list(baselines)
    if not baselines or any(b not in ("random", "mean") for b in baselines) or len(set(baselines)) != len(baselines):
        raise ValueError(f"baselines must be distinct names among 'random' and 'mean', got {baselines!r}")
    x, y = _data(images, conditional)
    device, _ = device_dtype(generator, d)
    curves: dict[str, list[float]] = {}
    times: dict[str, list[float]] = {}
    for start in ["encoder", *baselines]:
        stamps: list[float] = []
        spent = [0.0]

        def on_step(step: int, z: Tensor, start: str = start, stamps: list = stamps, spent: list = spent) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter() - t0 - spent[0])
            if callback is not None:
                s = time.perf_counter()
                callback(start, step, z)
                spent[0] += time.perf_counter() - s

        t0 = time.perf_counter()
        result = invert(
            generator, d, x, steps=steps, lr=lr, loss=loss, y=y, init=start, scale=scale,
            restarts=restarts if start == "random" else 1, optimizer=optimizer, batch_size=batch_size, seed=seed,
            callback=on_step, z_shape=z_shape,
        )
        curves[start] = result.history.double().mean(1).tolist()
        times[start] = stamps if len(stamps) == steps + 1 else _merge_batches(stamps, steps + 1)
    return StepsToQuality(steps, curves, times)


def _merge_batches(stamps: list[float], per_batch: int) -> list[float]:
    """Per-step times of a run in batches (one after another, ``per_batch`` stamps each):
    the time at step ``t`` is the sum over batches of the time each took to reach it."""
    runs = [stamps[i : i + per_batch] for i in range(0, len(stamps), per_batch)]
    began = [0.0] + [r[-1] for r in runs[:-1]]
    return [sum(r[t] - b for r, b in zip(runs, began)) for t in range(per_batch)]
