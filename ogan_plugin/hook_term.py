"""Hook mode's correlation term: its gradient, computed in the forward, and the autograd
function that adds it in the backward (:mod:`ogan_plugin.hook` attaches them).

``HOST_GRADIENT`` picks the CPU's path: the closed form written for this one case, from z's
unit rows made once per generator call (its D step and G step reuse them), since a small
network's step is host time there; ``False`` runs the ``ogan_plugin::pearson_backward``
operator, as on a GPU (the tests use it to run that path on the CPU).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["HOST_GRADIENT"]


#: on the CPU, the term's gradient in closed form here (False: the operator, as on a GPU;
#: the tests use it to run the operator path on the CPU)
HOST_GRADIENT = True


class _CorrelationTerm(torch.autograd.Function):
    """Identity on the score; its backward adds ``grad_raw``, the correlation term's gradient
    computed in the forward (it depends on ``raw``'s value and ``z`` only), to ``raw``'s
    gradient, times the loss scale if any.  A backward with ``create_graph=True`` (a
    gradient penalty's input-gradient pass) adds nothing."""

    @staticmethod
    def forward(ctx: Any, score: Tensor, raw: Tensor, grad_raw: Tensor, scaler: Any) -> Tensor:
        ctx.grad_raw, ctx.scaler = grad_raw, scaler
        return score.clone()

    @staticmethod
    def backward(ctx: Any, grad_score: Tensor) -> tuple[Optional[Tensor], ...]:
        if torch.is_grad_enabled():
            return grad_score, None, None, None
        grad_raw = ctx.grad_raw
        if ctx.scaler is not None:
            grad_raw = grad_raw * _loss_scale(ctx.scaler).to(grad_raw.dtype)
        return grad_score, grad_raw, None, None


def _correlation_grad(calls: tuple, index: Optional[Tensor], weights: Optional[Tensor], raw: Tensor, scale: float, eps: float) -> Tensor:
    """``d(scale * sum(w * rho(z_rows, raw))) / d raw``, without autograd.

    On a GPU (and under ``torch.compile``) the ``ogan_plugin::pearson_backward`` operator
    (one fused kernel).  On the CPU the same closed form written for this one case
    (:func:`_grad_raw_host`, from z's unit rows made once per generator call), as the host
    cost of a small network's step is what counts there.
    """
    if HOST_GRADIENT and raw.device.type == "cpu" and not torch.compiler.is_compiling():
        u = _units(calls, raw, eps)
        return _grad_raw_host(u if index is None else u.index_select(0, index), raw, weights, scale, eps)
    z = _noise(calls) if index is None else _noise(calls).index_select(0, index)
    w = weights if weights is not None else raw.new_ones(()).expand(raw.shape[0])
    return torch.ops.ogan_plugin.pearson_backward(w, z, raw, eps, scale, False, True)[1]


def _grad_raw_host(u: Tensor, raw: Tensor, weights: Optional[Tensor], scale: float, eps: float) -> Tensor:
    """``d(scale * sum(w * rho(z, raw))) / d raw`` from z's unit rows ``u``: the closed form of
    :func:`~ogan_plugin.kernels.pearson.pearson_grad_reference` (need_e only), in ``u``'s
    dtype, with ``raw``'s rows centred and normalised without the reference's overflow guard
    (raw outputs are far from float32's range)."""
    e = raw if raw.dtype == u.dtype else raw.to(u.dtype)
    ec = e - e.mean(dim=1, keepdim=True)
    norm = torch.linalg.vector_norm(ec, dim=1, keepdim=True)
    denom = norm.clamp_min(eps)
    v = ec.div_(denom)
    rho = (u * v).sum(dim=1, keepdim=True).mul_(norm >= eps)
    g = denom.reciprocal_().mul_(scale)
    if weights is not None:
        g = g.mul_(weights.to(g.dtype).view(-1, 1))
    return torch.addcmul(u, rho, v, value=-1).mul_(g).to(raw.dtype)


def _loss_scale(scaler: Any) -> Tensor:
    """The GradScaler's current scale as a tensor (its ``_scale``: no host synchronisation)."""
    scale = getattr(scaler, "_scale", None)
    return scale if isinstance(scale, Tensor) else torch.tensor(float(scaler.get_scale()))


def _noise(calls: tuple) -> Tensor:
    """The noise of the generator calls a row map points into, one after the other."""
    return calls[0].z if len(calls) == 1 else torch.cat([c.z for c in calls])


def _units(calls: tuple, raw: Tensor, eps: float) -> Tensor:
    """Their unit rows (centred, norm floored at ``eps``) in the correlation's compute dtype,
    computed once per generator call: its D step and G step reuse them."""
    dtype = torch.float64 if raw.dtype == torch.float64 or calls[0].z.dtype == torch.float64 else torch.float32
    parts = []
    for c in calls:
        u = c.units.get((dtype, eps))
        if u is None:
            zc = c.z.to(dtype)
            zc = zc - zc.mean(dim=1, keepdim=True)  # (noise: no overflow guard needed)
            u = c.units[(dtype, eps)] = zc.div_(torch.linalg.vector_norm(zc, dim=1, keepdim=True).clamp_min_(eps))
        parts.append(u)
    return parts[0] if len(parts) == 1 else torch.cat(parts)
