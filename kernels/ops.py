"""The fused operations as PyTorch custom operators (``torch.ops.ogan_plugin.*``).

One name per operation, with a CPU implementation (the torch reference; any device
without its own kernel uses it too) and a CUDA implementation (the Triton launchers of
:mod:`ogan_plugin.kernels.pearson` and :mod:`ogan_plugin.kernels.single_loss`):

* ``ogan_plugin::pearson(z, e, eps) -> rho``                        (differentiable)
* ``ogan_plugin::correlation_loss(z, e, weight, eps) -> loss``       (differentiable)
* ``ogan_plugin::pearson_backward(grad, z, e, eps, scale, need_z, need_e) -> (gz, ge)``:
  the backward of both (gradients of ``sum(scale * grad * rho)``; a tensor of shape (0,)
  stands for a gradient that was not asked for);
* ``ogan_plugin::ogan_objective(e_real, e_fake, z, dist, loss, corr_weight, corr_weight_g, eps)
  -> (loss_d, loss_g, rho, corr, slope_real, slope_fake_d, slope_fake_g)`` for ``loss`` in
  ``("qp", "hinge")`` (no autograd: its outputs are gradient parts, see
  :mod:`ogan_plugin.kernels.single_loss`).

Each has a fake (meta) implementation, so ``torch.compile`` traces calls to them as single
graph nodes, with the backward formula registered through ``register_autograd``: no graph
break, and the same names on every device.  Eager calls do not go through them (the
backends call the launchers from plain autograd functions: the operators' dispatch costs
more host time than the kernels take at GAN sizes); they are what ``torch.compile`` traces.  Every implementation returns contiguous
tensors, as the fakes declare and as the kernels write them, whatever the inputs'
layout (a transposed input keeps its layout through the torch reference, so the
reference's results are made contiguous here).  The ``triton`` backends call these operators
for CUDA tensors.  Importing :mod:`ogan_plugin.kernels` registers them (Triton itself is
imported only when a CUDA implementation first runs).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from ogan_plugin.kernels import pearson as _pearson
from ogan_plugin.kernels import single_loss as _single_loss

__all__ = ["pearson", "correlation_loss", "pearson_backward", "ogan_objective"]


def _rho_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _empty_grad(like: Tensor) -> Tensor:
    return like.new_empty(0)


def _grad_pair(gz: Optional[Tensor], ge: Optional[Tensor], z: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
    """The operator's (gz, ge): contiguous, an empty tensor where a gradient was not asked for."""
    return (gz.contiguous() if gz is not None else _empty_grad(z)), (ge.contiguous() if ge is not None else _empty_grad(e))


# --- pearson_backward (shared by pearson and correlation_loss) ---------------------------
@torch.library.custom_op("ogan_plugin::pearson_backward", mutates_args=())
def pearson_backward(
    grad: Tensor, z: Tensor, e: Tensor, eps: float, scale: float, need_z: bool, need_e: bool
) -> tuple[Tensor, Tensor]:
    """Gradients of ``sum(scale * grad * rho(z, e))`` (CPU: closed form in torch)."""
    return _grad_pair(*_pearson.pearson_grad_reference(grad, z, e, eps, scale, need_z, need_e), z, e)


@pearson_backward.register_kernel("cuda")
def _pearson_backward_cuda(
    grad: Tensor, z: Tensor, e: Tensor, eps: float, scale: float, need_z: bool, need_e: bool
) -> tuple[Tensor, Tensor]:
    if z.dtype == torch.float64 or e.dtype == torch.float64:
        gz, ge = _pearson.pearson_grad_reference(grad, z, e, eps, scale, need_z, need_e)
    else:
        gz, ge = _pearson.pearson_backward(grad, z, e, eps, scale, need_z, need_e)
    return _grad_pair(gz, ge, z, e)


@pearson_backward.register_fake
def _pearson_backward_fake(
    grad: Tensor, z: Tensor, e: Tensor, eps: float, scale: float, need_z: bool, need_e: bool
) -> tuple[Tensor, Tensor]:
    gz = torch.empty(z.shape, dtype=z.dtype, device=z.device) if need_z else _empty_grad(z)
    ge = torch.empty(e.shape, dtype=e.dtype, device=e.device) if need_e else _empty_grad(e)
    return gz, ge


def _grads(ctx: Any, gz: Tensor, ge: Tensor) -> tuple[Optional[Tensor], Optional[Tensor]]:
    return (gz if ctx.needs_input_grad[0] else None), (ge if ctx.needs_input_grad[1] else None)


# --- pearson -------------------------------------------------------------------------------
@torch.library.custom_op("ogan_plugin::pearson", mutates_args=())
def pearson(z: Tensor, e: Tensor, eps: float) -> Tensor:
    """Per-row Pearson correlation (B,) (CPU: :func:`~ogan_plugin.kernels.pearson.pearson_reference`)."""
    return _pearson.pearson_reference(z, e, eps)


@pearson.register_kernel("cuda")
def _pearson_cuda(z: Tensor, e: Tensor, eps: float) -> Tensor:
    if z.dtype == torch.float64 or e.dtype == torch.float64:
        return _pearson.pearson_reference(z, e, eps)
    return _pearson.pearson_forward(z, e, eps)


@pearson.register_fake
def _pearson_fake(z: Tensor, e: Tensor, eps: float) -> Tensor:
    return z.new_empty(z.shape[0], dtype=_rho_dtype(z, e))


def _pearson_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    z, e, eps = inputs
    ctx.save_for_backward(z, e)
    ctx.eps = eps


def _pearson_autograd(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None]:
    z, e = ctx.saved_tensors
    gz, ge = pearson_backward(grad, z, e, ctx.eps, 1.0, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
    return (*_grads(ctx, gz, ge), None)


pearson.register_autograd(_pearson_autograd, setup_context=_pearson_setup)


# --- correlation_loss ----------------------------------------------------------------------
@torch.library.custom_op("ogan_plugin::correlation_loss", mutates_args=())
def correlation_loss(z: Tensor, e: Tensor, weight: float, eps: float) -> Tensor:
    """``-weight * mean(rho)`` (CPU: the torch reference)."""
    return _pearson.correlation_loss_reference(z, e, weight, eps)


@correlation_loss.register_kernel("cuda")
def _correlation_loss_cuda(z: Tensor, e: Tensor, weight: float, eps: float) -> Tensor:
    if z.dtype == torch.float64 or e.dtype == torch.float64:
        return _pearson.correlation_loss_reference(z, e, weight, eps)
    return _pearson.pearson_forward(z, e, eps, loss_weight=weight)


@correlation_loss.register_fake
def _correlation_loss_fake(z: Tensor, e: Tensor, weight: float, eps: float) -> Tensor:
    return z.new_empty((), dtype=_rho_dtype(z, e))


def _correlation_loss_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    z, e, weight, eps = inputs
    ctx.save_for_backward(z, e)
    ctx.eps, ctx.weight = eps, weight


def _correlation_loss_autograd(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None, None]:
    z, e = ctx.saved_tensors
    B = z.shape[0]
    gz, ge = pearson_backward(
        grad.expand(B), z, e, ctx.eps, -ctx.weight / B, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    )
    return (*_grads(ctx, gz, ge), None, None)


correlation_loss.register_autograd(_correlation_loss_autograd, setup_context=_correlation_loss_setup)


# --- ogan_objective ------------------------------------------------------------------------
_OBJECTIVE_OUT = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _own(outputs: Any) -> _OBJECTIVE_OUT:
    """Outputs as a custom operator must return them: contiguous, at the start of their
    memory, none sharing memory with another (the launcher and the CPU path hand out rows of
    one buffer for the losses and the slopes).  Compared by storage: under inference mode a
    view does not know it is one."""
    seen: set[int] = set()
    owned = []
    for t in outputs:
        ptr = t.untyped_storage().data_ptr()
        owned.append(t.clone() if ptr in seen or t.storage_offset() else t.contiguous())
        seen.add(ptr)
    return tuple(owned)  # type: ignore[return-value]


@torch.library.custom_op("ogan_plugin::ogan_objective", mutates_args=())
def ogan_objective(
    e_real: Tensor,
    e_fake: Tensor,
    z: Tensor,
    dist: Optional[Tensor],
    loss: str,
    corr_weight: float,
    corr_weight_g: float,
    eps: float,
) -> _OBJECTIVE_OUT:
    """The objective for ``loss`` in ``("qp", "hinge")`` (CPU: the torch reference in closed form)."""
    args = (e_real, e_fake, z, dist, loss, corr_weight, corr_weight_g, eps)
    return _own(_single_loss.ogan_objective_reference(*args))


@ogan_objective.register_kernel("cuda")
def _ogan_objective_cuda(
    e_real: Tensor,
    e_fake: Tensor,
    z: Tensor,
    dist: Optional[Tensor],
    loss: str,
    corr_weight: float,
    corr_weight_g: float,
    eps: float,
) -> _OBJECTIVE_OUT:
    args = (e_real, e_fake, z, dist, loss, corr_weight, corr_weight_g, eps)
    if not _single_loss.is_fused(loss, dist, e_real, e_fake, z):
        return _own(_single_loss.ogan_objective_reference(*args))
    return _own(_single_loss.ogan_objective_forward(*args))


@ogan_objective.register_fake
def _ogan_objective_fake(
    e_real: Tensor,
    e_fake: Tensor,
    z: Tensor,
    dist: Optional[Tensor],
    loss: str,
    corr_weight: float,
    corr_weight_g: float,
    eps: float,
) -> _OBJECTIVE_OUT:
    dtype = _rho_dtype(e_real, e_fake)
    B = e_fake.shape[0]
    return (
        e_fake.new_empty((), dtype=dtype),
        e_fake.new_empty((), dtype=dtype),
        e_fake.new_empty(B, dtype=dtype),
        torch.empty(e_fake.shape, dtype=e_fake.dtype, device=e_fake.device),
        e_fake.new_empty(B, dtype=dtype),
        e_fake.new_empty(B, dtype=dtype),
        e_fake.new_empty(B, dtype=dtype),
    )
