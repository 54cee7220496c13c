"""Hook mode's weight rule: a correlation term balanced against the adversarial gradient.

A fixed weight ``lambda`` on ``-lambda * mean(rho)`` gives the correlation gradient a size
that does not follow the host GAN's loss: with BCE on a Sigmoid the adversarial gradient at
D's output shrinks as D grows confident, while the correlation gradient does not, so the
same number is too weak at one setting and overrides the GAN at another.  :class:`Balanced`
ties the two together, per discriminator call:

    g_corr = grad of -mean(rho(z, raw)) w.r.t. raw          (B, z_dim), unit weight
    g_adv  = grad of the user's loss w.r.t. raw through the score = mean(raw):
             every one of the z_dim entries of a row gets grad_score / z_dim, so
             ||g_adv|| = ||grad_score|| / sqrt(z_dim)
    added  = g_corr * ratio * ||g_adv|| / ||g_corr||        (Frobenius norms over the call)

The correlation gradient is orthogonal to the all-ones direction of each row (``rho``
ignores a row's mean) and the adversarial one lies along it, so ``ratio`` is the tangent of
the angle the total gradient at the head's outputs makes with the adversarial gradient.
The rule is scale-free: multiplying the loss (gradient accumulation, a ``GradScaler``)
multiplies the added gradient alike.  Where no adversarial gradient reaches the call it
adds nothing.

:func:`resolve_hook_weights` reads hook mode's ``corr_weight`` / ``corr_weight_g``
arguments: a number is the fixed weight (exactly as before this rule existed), a
:class:`Balanced` the rule, ``"auto"`` the default (:data:`AUTO`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from torch import Tensor

from ogan_plugin.losses import check_corr_weights

__all__ = ["AUTO", "Balanced", "HookWeight", "balanced_grad", "resolve_hook_weights"]


@dataclass(frozen=True)
class Balanced:
    """Weight the correlation gradient at ``ratio`` times the adversarial gradient's norm.

    Used as hook mode's ``corr_weight`` (or ``corr_weight_g``): per discriminator call,
    the gradient added to the head's outputs is the gradient of ``-mean(rho)`` rescaled to
    ``ratio * ||grad_score|| / sqrt(z_dim)`` (see the module doc).

    Args:
        ratio: the target ratio of the two norms (> 0).
    """

    ratio: float

    def __post_init__(self) -> None:
        r = self.ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (r > 0 and math.isfinite(r)):
            raise ValueError(f"Balanced ratio must be a finite number > 0, got {r!r}")
        object.__setattr__(self, "ratio", float(r))


#: what hook mode's ``corr_weight`` defaults to (``"auto"``)
AUTO = Balanced(1.0)

#: a hook-mode weight as resolved: a fixed number or the balanced rule
HookWeight = Union[float, Balanced]


def _one(name: str, w: Any) -> Optional[HookWeight]:
    if isinstance(w, Balanced):
        return w
    if isinstance(w, str):
        if w != "auto":
            raise ValueError(f"{name} must be a number >= 0, 'auto' or ogan_plugin.Balanced(ratio), got {w!r}")
        return AUTO
    return None


def resolve_hook_weights(corr_weight: Any, corr_weight_g: Any = None) -> tuple[HookWeight, HookWeight]:
    """Hook mode's ``(corr_weight, corr_weight_g)``: numbers as :func:`check_corr_weights`
    checks them (floats, exactly the fixed-weight behaviour), ``"auto"`` as :data:`AUTO`,
    a :class:`Balanced` as it is; ``corr_weight_g=None`` takes ``corr_weight``'s rule.

    Raises:
        ValueError: naming the argument, for anything else (a negative number, another
            string).
    """
    w = _one("corr_weight", corr_weight)
    if w is None:
        w = check_corr_weights(corr_weight)[0]
    if corr_weight_g is None:
        return w, w
    wg = _one("corr_weight_g", corr_weight_g)
    if wg is None:
        wg = check_corr_weights(0.0, corr_weight_g)[1]
    return w, wg


def balanced_grad(grad_corr: Tensor, grad_score: Tensor, ratio: float, z_dim: int) -> Tensor:
    """``grad_corr`` rescaled to ``ratio * ||grad_score|| / sqrt(z_dim)`` (Frobenius norms).

    Args:
        grad_corr: the gradient of ``-mean(rho)`` w.r.t. the head's raw outputs (B, z_dim).
        grad_score: the gradient arriving at the head's output (the score) in the backward.
        ratio: :attr:`Balanced.ratio`.
        z_dim: the head's outputs per row (the score is their mean).

    Returns:
        The gradient to add to the raw outputs, in ``grad_corr``'s dtype; zero where
        ``grad_score`` is zero.  No host synchronisation.
    """
    acc = torch.float64 if grad_corr.dtype == torch.float64 else torch.float32
    adv = torch.linalg.vector_norm(grad_score.to(acc)) / math.sqrt(z_dim)
    corr = torch.linalg.vector_norm(grad_corr.to(acc))
    factor = ratio * adv / corr.clamp_min(torch.finfo(acc).tiny)
    return (grad_corr.to(acc) * factor).to(grad_corr.dtype)
