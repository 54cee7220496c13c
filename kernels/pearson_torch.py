"""The torch implementations of the correlation: the reference and the CPU's fast path.

Beside the Triton kernels of :mod:`ogan_plugin.kernels.pearson` (whose docstring has the
math and the ``eps`` floor), this file holds

* :func:`pearson_reference` / :func:`correlation_loss_reference`: the formula in plain
  autograd, the ground truth the tests compare against, twice differentiable; the ``compiled``
  backend compiles it;
* :func:`pearson_torch` / :func:`correlation_loss_torch`: the ``reference`` backend, what CPU
  users run.  On the CPU (eager, no float64 input) the values and the gradient rows are
  computed together in NumPy, in float64, and the gradient is linearised into the result
  (:func:`_linearised`: no Python autograd node at all); elsewhere, and under
  ``torch.compile``, torch ops forward with a closed-form backward (:class:`_TorchCorrelation`,
  one autograd node);
* :func:`unit_pair` / :func:`unit_pair_grad`: the closed form both use, which the single-loss
  objective's reference reuses.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

#: Norm floor of the correlation (see :mod:`ogan_plugin.kernels.pearson`).
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


def pearson_grad_reference(
    grad: Tensor, z: Tensor, e: Tensor, eps: float = EPS, scale: float = 1.0, need_z: bool = True, need_e: bool = True
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Closed-form gradient of ``sum(scale * grad * pearson_reference(z, e))`` in torch.

    The same gradient autograd gives for :func:`pearson_reference` (see the module
    docstring); the CPU implementation of the ``ogan_plugin::pearson_backward`` operator.
    """
    dtype = _compute_dtype(z, e)

    def unit_floor_flag(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = x.to(dtype)
        s = x.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        xc = x / s
        xc = xc - xc.mean(dim=1, keepdim=True)
        norm = torch.linalg.vector_norm(xc, dim=1, keepdim=True) * s
        denom = norm.clamp_min(eps)
        return xc * (s / denom), denom, (norm >= eps).to(dtype)

    u, dz, az = unit_floor_flag(z)
    v, de, ae = unit_floor_flag(e)
    rho = (u * v).sum(dim=1, keepdim=True)
    g = grad.to(dtype).reshape(-1, 1) * scale
    gz = (g / dz * (v - az * rho * u)).to(z.dtype) if need_z else None
    ge = (g / de * (u - ae * rho * v)).to(e.dtype) if need_e else None
    return gz, ge


# --- the reference backend: torch ops, a hand-written backward ----------------------------
def unit_pair(z: Tensor, e: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The unit rows of z and e stacked, ``(U (2, B, n), denom (2, B, 1), floor flag (2, B, 1), rho (B,))``.

    ``U[0]`` is u = zc / max(||zc||, eps) and ``U[1]`` is v (module docstring); ``denom`` is
    max(||xc||, eps) and the flag ``||xc|| >= eps``.  Both inputs go through each op at once
    (one stacked tensor), so a call costs about ten torch ops whatever the sizes.

    Compute dtype: float64 on the CPU, where it costs no more than float32 at these sizes
    and holds the squares of any float32 value, so no row scaling is needed; elsewhere
    float32 (float64 for float64 inputs) with the rows divided by their largest magnitude
    first, as the kernels do, so that values up to the dtype's range do not overflow.
    """
    wide = z.dtype == torch.float64 or e.dtype == torch.float64
    cpu = z.device.type == "cpu"
    dtype = torch.float64 if (wide or cpu) else torch.float32
    X = torch.stack((z.to(dtype), e.to(dtype)))
    if wide or not cpu:  # squares could overflow the compute dtype: scale the rows
        s = X.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        Xc = X / s
        Xc = Xc - Xc.mean(dim=-1, keepdim=True)
        norm = torch.linalg.vector_norm(Xc, dim=-1, keepdim=True) * s
        denom = norm.clamp_min(eps)
        U = Xc * (s / denom)
    else:
        Xc = X - X.mean(dim=-1, keepdim=True)
        norm = torch.linalg.vector_norm(Xc, dim=-1, keepdim=True)
        denom = norm.clamp_min(eps)
        U = Xc / denom
    return U, denom, norm >= eps, (U[0] * U[1]).sum(dim=-1)


def unit_pair_grad(
    g: Tensor, U: Tensor, denom: Tensor, flag: Tensor, rho: Tensor, need_z: bool = True, need_e: bool = True
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Gradients of ``sum(g * rho)`` w.r.t. z and e from :func:`unit_pair`'s results (compute dtype).

    d rho / d e = (u - [||ec|| >= eps] rho v) / max(||ec||, eps), and z <-> e.
    """
    g = g.to(U.dtype).reshape(1, -1, 1) / denom  # (2, B, 1)
    coef = flag * rho.reshape(1, -1, 1)
    gz = g[0] * (U[1] - coef[0] * U[0]) if need_z else None
    ge = g[1] * (U[0] - coef[1] * U[1]) if need_e else None
    return gz, ge


class _TorchCorrelation(torch.autograd.Function):
    """rho (``weight`` None) or ``-weight * mean(rho)`` in torch ops, with the closed-form backward."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, e: Tensor, eps: float, weight: Optional[float]) -> Tensor:
        U, denom, flag, rho = unit_pair(z, e, eps)
        ctx.save_for_backward(U, denom, flag, rho)
        ctx.weight, ctx.dtypes = weight, (z.dtype, e.dtype)
        out_dtype = torch.float64 if torch.float64 in ctx.dtypes else torch.float32
        if weight is None:
            return rho.to(out_dtype)
        return (rho.mean() * -weight).to(out_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None, None]:
        U, denom, flag, rho = ctx.saved_tensors
        g = grad if ctx.weight is None else (grad * (-ctx.weight / rho.shape[0])).expand(rho.shape[0])
        gz, ge = unit_pair_grad(g, U, denom, flag, rho, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return (gz.to(ctx.dtypes[0]) if gz is not None else None), (ge.to(ctx.dtypes[1]) if ge is not None else None), None, None


def pearson_torch(z: Tensor, e: Tensor, eps: float = EPS) -> Tensor:
    """Backend ``reference`` of op ``pearson``: the closed form, at a fraction of the host cost
    of :func:`pearson_reference` (the same values and gradients, up to rounding).

    On the CPU (eager, no float64 input) it computes in NumPy, in float64, the values and
    the gradient rows together, and returns them through :func:`_linearised`: no Python
    autograd node at all.  Elsewhere, and under ``torch.compile``, torch ops forward with
    a closed-form backward (:class:`_TorchCorrelation`, one autograd node).  Not twice
    differentiable (use :func:`pearson_reference` for that).
    """
    if _numpy_path(z, e):
        return _numpy_correlation(z, e, eps, None)
    return _TorchCorrelation.apply(z, e, eps, None)


def correlation_loss_torch(z: Tensor, e: Tensor, weight: float = 0.5, eps: float = EPS) -> Tensor:
    """Backend ``reference`` of op ``correlation_loss`` (see :func:`pearson_torch`)."""
    if _numpy_path(z, e):
        return _numpy_correlation(z, e, eps, float(weight))
    return _TorchCorrelation.apply(z, e, eps, float(weight))


def _numpy_path(z: Tensor, e: Tensor) -> bool:
    """The CPU's path: eager CPU tensors (no float64: those keep the scaled torch path)."""
    return (
        z.device.type == "cpu"
        and e.device.type == "cpu"
        and z.dtype != torch.float64
        and e.dtype != torch.float64
        and not torch.compiler.is_compiling()
        and type(z) is Tensor
        and type(e) is Tensor
    )


def _as_numpy(x: Tensor) -> np.ndarray:
    x = x.detach()
    return (x if x.dtype == torch.float32 else x.float()).numpy()


def numpy_rows(z: Tensor, e: Tensor, *more: Tensor) -> np.ndarray:
    """``(z, e, *more)`` as one float64 array (k, B, n): the input of :func:`numpy_unit_pair`."""
    X = np.empty((2 + len(more), *z.shape))
    for i, t in enumerate((z, e, *more)):
        X[i] = _as_numpy(t)
    return X


def numpy_unit_pair(X: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The correlation of ``X[0]`` (z) and ``X[1]`` (e) in float64 NumPy (no row scaling is
    needed there: it holds the squares of any float32 value), :func:`unit_pair`'s math.

    ``X[:2]`` becomes the unit rows u and v in place.  Returns ``(means, norm, denom, rho)``:
    the row means of every row of X (k, B), the norms of the centred z and e rows (2, B),
    their floors ``max(norm, eps)`` and rho (B,).  Each step is one NumPy call for all rows
    (``ndarray.mean`` costs more host time than a sum and a division)."""
    means = np.add.reduce(X, axis=-1)
    means /= X.shape[-1]
    U = X[:2]
    U -= means[:2, :, None]
    norm = np.sqrt(np.einsum("kbn,kbn->kb", U, U))
    denom = np.maximum(norm, eps)
    U /= denom[..., None]
    return means, norm, denom, np.einsum("bn,bn->b", U[0], U[1])


def numpy_unit_grad(X: np.ndarray, norm: np.ndarray, denom: np.ndarray, rho: np.ndarray, eps: float, i: int,
                    scale: np.ndarray) -> np.ndarray:
    """d(sum_b scale_b rho_b) / d(input i) (i = 0: z, 1: e) from :func:`numpy_unit_pair`'s
    results: ``scale / denom_i * (other - rho * own)`` (zero for a row below the floor)."""
    g = X[1 - i] - ((norm[i] >= eps) * rho)[:, None] * X[i]
    g *= (scale / denom[i])[:, None]
    return g


def _numpy_correlation(z: Tensor, e: Tensor, eps: float, weight: Optional[float]) -> Tensor:
    """rho (``weight`` None) or ``-weight * mean(rho)`` computed in NumPy
    (:func:`numpy_unit_pair`), with the gradients of the inputs that require one,
    linearised into the result (:func:`_linearised`)."""
    X = numpy_rows(z, e)
    _, norm, denom, rho = numpy_unit_pair(X, eps)
    B = rho.shape[0]
    scale = np.ones(B) if weight is None else np.full(B, -weight / B)
    grads = []
    if torch.is_grad_enabled():
        for i, x in ((0, z), (1, e)):
            if x.requires_grad:
                g = numpy_unit_grad(X, norm, denom, rho, eps, i, scale)
                grads.append((x, torch.from_numpy(g.astype(np.float32)).to(x.dtype)))
    value = rho if weight is None else -weight * np.add.reduce(rho) / B
    return _linearised(torch.from_numpy(np.asarray(value, dtype=np.float32)), grads, weight is None)


def _linearised(value: Tensor, grads: list[tuple[Tensor, Tensor]], per_row: bool) -> Tensor:
    """``value`` with the gradient ``g`` w.r.t. each ``(x, g)`` of ``grads``: the value plus
    ``t - t.detach()``, where ``t = sum(x * g)`` (per row for a per-row value).

    ``t - t.detach()`` is exactly zero and its gradient in ``x`` is ``g``: the backward is
    two built-in autograd nodes per input (a product and a sum), no Python function.  Exact
    for the first derivative (rho of row i depends on row i only), not for a second.
    """
    if not grads:
        return value
    t = None
    for x, g in grads:
        term = (x * g).sum(dim=1) if per_row else (x * g).sum()
        t = term if t is None else t + term
    return t - t.detach() + value
