"""Hook mode's correlation weight: a fixed number, a ramp, or the default ``"auto"``.

Hook mode adds ``-w * mean(rho(z, E(fake)))`` to every loss whose backward passes through a
recognised discriminator call (:mod:`ogan_plugin.integrations.hook`).  ``w`` is given as
``corr_weight`` (the discriminator's step, calls on ``fake.detach()``) and ``corr_weight_g``
(the generator's step, calls on ``fake``):

- a number: that weight at every step, exactly as hook mode always did;
- :class:`Ramp` ``(weight, steps)``: ``weight * min(1, k / steps)`` for the fake of the
  generator's ``k``-th training call (``k = 0, 1, ...``; calls made with gradients, one per
  iteration in the DCGAN example's loop), so the term grows from zero while the GAN finds
  its feet;
- ``"auto"``, the default: ``Ramp(auto_weight(z_dim), AUTO_RAMP_STEPS)``, a weight that grows
  with the noise size (:func:`auto_weight`: ``0.5 * sqrt(z_dim)``), reached over the first
  200 generator steps.

Why: a fixed 0.5 (the official code's weight, with its QP loss) trains a weak encoder at the
DCGAN example's own settings (BCE on a Sigmoid, Adam 2e-4 / 0.5, ``nz = 100``), and a weight
large enough for a good encoder, applied from the first step, lets the discriminator win
early.  docs/training.md holds the measured search (``benchmarks/hook_defaults.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

from ogan_plugin.losses import check_corr_weights

__all__ = ["AUTO_RAMP_STEPS", "HookWeight", "Ramp", "auto_weight", "resolve_hook_weights", "weight_at"]

#: generator steps over which ``"auto"`` ramps its weight up from zero
AUTO_RAMP_STEPS = 200


@dataclass(frozen=True)
class Ramp:
    """A correlation weight that grows linearly from 0 to ``weight`` over ``steps`` steps.

    For the fake of the generator's ``k``-th call made with gradients (``k = 0, 1, ...``,
    counted by the hook since it was attached), the weight is
    ``weight * min(1, k / steps)``; both the discriminator's and the generator's calls on
    that fake use it.

    Args:
        weight: the weight reached (>= 0).
        steps: generator steps to reach it (>= 1).
    """

    weight: float
    steps: int

    def __post_init__(self) -> None:
        w, s = self.weight, self.steps
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (w >= 0 and math.isfinite(w)):
            raise ValueError(f"Ramp weight must be a finite number >= 0, got {w!r}")
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"Ramp steps must be an int >= 1, got {s!r}")
        object.__setattr__(self, "weight", float(w))

    def at(self, step: int) -> float:
        """The weight for the fake of generator step ``step`` (0-based)."""
        return self.weight * min(1.0, step / self.steps)


#: a hook-mode weight as resolved: a fixed number or a ramp
HookWeight = Union[float, Ramp]


def auto_weight(z_dim: int) -> float:
    """The weight ``"auto"`` ramps up to: ``0.5 * sqrt(z_dim)``, the official weight 0.5
    scaled by the square root of the noise size (5 at ``z_dim = 100``, 2.83 at 32, 2 at 16).

    A generator must spread more coordinates of ``z`` into its images as ``z_dim`` grows,
    while rho, a mean over the coordinates, pays each of them less; measured on the DCGAN
    example's settings, ``z_dim = 100`` needed about 5 and ``z_dim = 32`` took 1.6 to 2.8
    with samples as good as the plain GAN's (docs/training.md).  The square root grows more
    slowly than the coordinates, to stay clear of the weights (10 at ``z_dim = 100``) at which
    the generator gave up realism for the code.
    """
    return 0.5 * math.sqrt(z_dim)


def _one(name: str, w: Any, z_dim: int) -> Union[HookWeight, None]:
    if isinstance(w, Ramp):
        return w
    if isinstance(w, str):
        if w != "auto":
            raise ValueError(f"{name} must be a number >= 0, 'auto' or ogan_plugin.Ramp(weight, steps), got {w!r}")
        return Ramp(auto_weight(z_dim), AUTO_RAMP_STEPS)
    return None


def resolve_hook_weights(corr_weight: Any, corr_weight_g: Any, z_dim: int) -> tuple[HookWeight, HookWeight]:
    """Hook mode's ``(corr_weight, corr_weight_g)``: numbers as :func:`check_corr_weights`
    checks them (floats: exactly the fixed-weight behaviour), ``"auto"`` as
    ``Ramp(auto_weight(z_dim), AUTO_RAMP_STEPS)``, a :class:`Ramp` as it is;
    ``corr_weight_g=None`` takes ``corr_weight``'s rule.

    Raises:
        ValueError: naming the argument, for anything else (a negative number, another
            string).
    """
    w = _one("corr_weight", corr_weight, z_dim)
    if w is None:
        w = check_corr_weights(corr_weight)[0]
    if corr_weight_g is None:
        return w, w
    wg = _one("corr_weight_g", corr_weight_g, z_dim)
    if wg is None:
        wg = check_corr_weights(0.0, corr_weight_g)[1]
    return w, wg


def weight_at(rule: HookWeight, step: int) -> float:
    """The number ``rule`` gives for the fake of generator step ``step``."""
    return rule.at(step) if isinstance(rule, Ramp) else rule
