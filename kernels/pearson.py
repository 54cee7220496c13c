"""Per-row Pearson correlation and the O-GAN correlation loss.

Math (METHOD.md section 2), per row of z and e (B, n):

    zc = z - mean(z),  ec = e - mean(e)
    rho = <zc, ec> / (max(||zc||, eps) * max(||ec||, eps))

``eps`` (default :data:`EPS` = 1e-6, the norm floor of Keras' ``l2_normalize`` used by the
official code) keeps constant rows finite: such a row gives rho = 0 and a gradient of at
most ~1/eps.  Rows are divided by their largest magnitude before the sums (rho does not
change) so inputs up to float32's range (1e30 and beyond) do not overflow.
Reductions run in float32 (float64 when an input is float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ogan_plugin.hookspecs import hookimpl
from ogan_plugin.registry import Backend

#: Norm floor of the correlation (see the module docstring).
EPS = 1e-6


# --- torch reference ---------------------------------------------------------------------
def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def unit_rows(x: Tensor, eps: float = EPS) -> Tensor:
    """Rows of ``x`` centered and divided by ``max(||row - mean||, eps)`` (overflow-safe)."""
    scale = x.detach().abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    xc = x / scale
    xc = xc - xc.mean(dim=1, keepdim=True)
    norm = torch.linalg.vector_norm(xc, dim=1, keepdim=True) * scale
    return xc * (scale / norm.clamp_min(eps))


def pearson_reference(z: Tensor, e: Tensor, eps: float = EPS) -> Tensor:
    """Per-row Pearson correlation of ``z`` and ``e`` (B, n) -> (B,), plain autograd."""
    dtype = _compute_dtype(z, e)
    return (unit_rows(z.to(dtype), eps) * unit_rows(e.to(dtype), eps)).sum(dim=1)


def correlation_loss_reference(z: Tensor, e: Tensor, weight: float = 0.5, eps: float = EPS) -> Tensor:
    """``-weight * mean(rho)`` with the reference correlation."""
    return -weight * pearson_reference(z, e, eps).mean()


# --- registration ------------------------------------------------------------------------
@hookimpl
def ogan_backends() -> list[Backend]:
    return [
        Backend(
            op="pearson",
            name="reference",
            fn=pearson_reference,
            priority=0,
            description="torch reference (autograd), any device",
        ),
        Backend(
            op="correlation_loss",
            name="reference",
            fn=correlation_loss_reference,
            priority=0,
            description="torch reference (autograd), any device",
        ),
    ]
