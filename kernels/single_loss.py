"""The fused O-GAN single-loss objective with gradient masking (METHOD.md section 4).

Operation ``ogan_objective(e_real, e_fake, z, dist, loss, corr_weight, corr_weight_g, eps)``:

* ``e_real`` (B, n): encoder outputs of the real batch;
* ``e_fake`` (B, n): encoder outputs of the fake batch (one forward serves both routings:
  the values of E(x_fake) and E(sg(x_fake)) are equal);
* ``z`` (B, n): the noise; ``dist`` (B,) or None: the QP pixel distance;
* ``loss``: a registered adversarial loss name; ``corr_weight``: lambda in L_D;
  ``corr_weight_g``: lambda in L_G (equal to ``corr_weight`` in the paper); ``eps``: see pearson.

With s = mean(e) (the score) and rho = rho(z, e_fake):

    L_D = mean(d_loss(s_real, s_fake, dist)) - corr_weight * mean(rho)
    L_G = mean(g_loss(s_fake))              - corr_weight_g * mean(rho)

It returns the values and the three gradient streams (no autograd graph; the caller
feeds them to the networks' backward):

* ``grad_real``   = dL_D / de_real     -> discriminator parameters (real forward)
* ``grad_fake_d`` = dL_D / de_fake     -> discriminator parameters (fake forward)
* ``grad_fake_g`` = dL_G / de_fake     -> generator, through the fake images

The "split" routing sends ``grad_fake_d`` to D's parameters and ``grad_fake_g`` to D's
input; the "three_forward" routing sends ``grad_fake_g`` into E(x_fake) and
``grad_fake_d - grad_fake_g`` into E(sg(x_fake)) (the t2 cancellation).
Gradients have the dtype of ``e_fake``; values are float32.

Backends (see :mod:`ogan_plugin.kernels.pearson` for the kernel design they share):

* ``triton`` (priority 10): one launch computes the scores, rho, both adversarial terms,
  the two losses (finished by the last program, as the correlation loss is) and writes the
  three gradient streams, for the ``"qp"`` and ``"hinge"`` losses; other losses, and
  float64 inputs, use the reference.  Automatic on CUDA (through the
  ``ogan_plugin::ogan_objective`` operator); on CPU only on request under
  ``TRITON_INTERPRET=1``.
* ``reference`` (priority 0): autograd on detached copies, any loss, any device.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

from ogan_plugin.hookspecs import hookimpl
from ogan_plugin.kernels import pearson as _pearson
from ogan_plugin.kernels.pearson import (
    _finish_sums,
    _load_tile,
    _pair_stats_chunked,
    _pair_tiles,
    _unit_chunk,
    launch_config,
    pearson_grad_reference,
    pearson_reference,
    triton_serves,
)
from ogan_plugin.registry import Backend

#: see :mod:`ogan_plugin.kernels.pearson`: ``tl`` is bound when the kernels are built.
tl: Any = None
_TRITON = _pearson._LazyTriton(globals(), depends=(_pearson._TRITON,))

#: losses fused by the Triton kernel -> the kernel's LOSS constant
FUSED_LOSSES = {"qp": 0, "hinge": 1}


class ObjectiveOutput(NamedTuple):
    """Values (float32) and gradient streams of the fused objective."""

    loss_d: Tensor
    loss_g: Tensor
    rho: Tensor
    grad_real: Tensor
    grad_fake_d: Tensor
    grad_fake_g: Tensor


# --- Triton kernel ----------------------------------------------------------------------
@_TRITON.kernel(do_not_specialize=("B", "s_dist", "loss_kind"))
def _objective_kernel(
    er_ptr, ef_ptr, z_ptr, dist_ptr, rho_ptr, gr_ptr, gfd_ptr, gfg_ptr, part_ptr, count_ptr, loss_d_ptr, loss_g_ptr,
    B, n, srb, srn, sfb, sfn, szb, szn, s_dist, eps, corr_weight, corr_weight_g, inv_b, inv_bn, loss_kind,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr, ONE_BLOCK: tl.constexpr, RBLOCK: tl.constexpr,
):
    """The whole objective for ROWS rows: scores, rho, losses (last program) and 3 gradients.

    ``loss_kind`` (a :data:`FUSED_LOSSES` value) is a runtime argument: one compiled
    kernel serves qp and hinge.
    """
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    row_mask = rows < B
    cols = tl.arange(0, BLOCK_N)
    nf = n.to(tl.float32)
    if ONE_BLOCK:
        er, _ = _load_tile(er_ptr, rows, row_mask, cols, n, srb, srn)
        s_real = tl.div_rn(tl.sum(er, axis=1), nf)
        u, v, _dz, de, _az, ae, rho, s_fake, mask = _pair_tiles(
            z_ptr, ef_ptr, rows, row_mask, n, szb, szn, sfb, sfn, eps, BLOCK_N
        )
    else:
        s_real = tl.zeros([ROWS], dtype=tl.float32)
        for start in range(0, n, BLOCK_N):
            er, _ = _load_tile(er_ptr, rows, row_mask, start + cols, n, srb, srn)
            s_real += tl.sum(er, axis=1)
        s_real = tl.div_rn(s_real, nf)
        m1z, inv_z, cz, fz, _dz, _az, m1e, inv_e, ce, fe, de, ae, rho, s_fake = _pair_stats_chunked(
            z_ptr, ef_ptr, rows, row_mask, n, szb, szn, sfb, sfn, eps, ROWS, BLOCK_N
        )
    # adversarial terms per row (higher score = more real) and their slopes in the scores
    if loss_kind == 0:  # qp: t + t^2 / (4 dist), t = s_fake - s_real
        dist = tl.load(dist_ptr + rows.to(tl.int64) * s_dist, mask=row_mask, other=1.0).to(tl.float32)
        t = s_fake - s_real
        t_over = tl.div_rn(t, dist)
        d_row = t + 0.25 * t * t_over
        slope_fake = 1.0 + 0.5 * t_over
        slope_real = -slope_fake
    else:  # hinge: relu(1 - s_real) + relu(1 + s_fake)
        a = 1.0 - s_real
        b = 1.0 + s_fake
        d_row = tl.maximum(a, 0.0) + tl.maximum(b, 0.0)
        slope_real = -(a > 0).to(tl.float32)
        slope_fake = (b > 0).to(tl.float32)
    g_row = -s_fake  # generator side of both: -s_fake
    tl.store(rho_ptr + rows, rho, mask=row_mask)
    c = tl.div_rn(-inv_b + tl.zeros_like(de), de)  # d(-w mean rho)/de = w * c * (u - [||ec|| >= eps] rho v)
    real_slope = (slope_real * inv_bn)[:, None]
    fake_slope = (slope_fake * inv_bn)[:, None]
    if ONE_BLOCK:
        corr = c[:, None] * (u - (ae * rho)[:, None] * v)
        out = rows[:, None].to(tl.int64) * n + cols[None, :]
        tl.store(gr_ptr + out, tl.zeros_like(corr) + real_slope, mask=mask)
        tl.store(gfd_ptr + out, corr_weight * corr + fake_slope, mask=mask)
        tl.store(gfg_ptr + out, corr_weight_g * corr - inv_bn, mask=mask)
    else:
        for start in range(0, n, BLOCK_N):
            z, mask = _load_tile(z_ptr, rows, row_mask, start + cols, n, szb, szn)
            ef, _ = _load_tile(ef_ptr, rows, row_mask, start + cols, n, sfb, sfn)
            u = _unit_chunk(z, mask, m1z, inv_z, cz, fz)
            v = _unit_chunk(ef, mask, m1e, inv_e, ce, fe)
            corr = c[:, None] * (u - (ae * rho)[:, None] * v)
            out = rows[:, None].to(tl.int64) * n + (start + cols)[None, :]
            tl.store(gr_ptr + out, tl.zeros_like(corr) + real_slope, mask=mask)
            tl.store(gfd_ptr + out, corr_weight * corr + fake_slope, mask=mask)
            tl.store(gfg_ptr + out, corr_weight_g * corr - inv_bn, mask=mask)
    tl.store(part_ptr + pid * 2, tl.sum(tl.where(row_mask, d_row - corr_weight * rho, 0.0), axis=0))
    tl.store(part_ptr + pid * 2 + 1, tl.sum(tl.where(row_mask, g_row - corr_weight_g * rho, 0.0), axis=0))
    _finish_sums(part_ptr, count_ptr, loss_d_ptr, loss_g_ptr, inv_b, 2, RBLOCK)


# --- launcher ----------------------------------------------------------------------------
def objective_launch(
    e_real: Tensor,
    e_fake: Tensor,
    z: Tensor,
    dist: Optional[Tensor],
    loss: str,
    corr_weight: float,
    corr_weight_g: float,
    eps: float,
    *,
    max_block: Optional[int] = None,
) -> tuple[_pearson.Launch, ObjectiveOutput]:
    """The fused objective's launch and its outputs (allocated, not yet written)."""
    _TRITON.build()
    B, n = e_fake.shape
    cfg = launch_config(B, n, max_block)
    dev = e_fake.device
    alloc = _pearson._alloc
    rho = alloc(B, torch.float32, dev)
    grad_real = alloc((B, n), e_real.dtype, dev)
    grad_fake_d = alloc((B, n), e_fake.dtype, dev)
    grad_fake_g = alloc((B, n), e_fake.dtype, dev)
    loss_d = alloc((), torch.float32, dev)
    loss_g = alloc((), torch.float32, dev)
    parts = alloc(2 * cfg["grid"], torch.float32, dev)
    count = _pearson._ticket(dev)
    args = (
        e_real, e_fake, z, dist if dist is not None else rho, rho, grad_real, grad_fake_d, grad_fake_g,
        parts, count, loss_d, loss_g,
        B, n, e_real.stride(0), e_real.stride(1), e_fake.stride(0), e_fake.stride(1), z.stride(0), z.stride(1),
        dist.stride(0) if dist is not None else 0,
        float(eps), float(corr_weight), float(corr_weight_g), 1.0 / B, 1.0 / (B * n), FUSED_LOSSES[loss],
    )
    launch = _pearson.Launch(_objective_kernel, cfg["grid"], args, {**_pearson._options(cfg), "RBLOCK": _pearson.RBLOCK})
    return launch, ObjectiveOutput(loss_d, loss_g, rho, grad_real, grad_fake_d, grad_fake_g)


def ogan_objective_forward(
    e_real: Tensor,
    e_fake: Tensor,
    z: Tensor,
    dist: Optional[Tensor],
    loss: str,
    corr_weight: float,
    corr_weight_g: float,
    eps: float,
    *,
    max_block: Optional[int] = None,
) -> ObjectiveOutput:
    """Launch the fused objective kernel (``loss`` in :data:`FUSED_LOSSES`; ``dist`` for qp).

    Inputs are float32/float16/bfloat16 (B, n) tensors with any strides (read in place).
    The launch runs on the inputs' device and its current stream.
    """
    args = (e_real, e_fake, z, dist, loss, corr_weight, corr_weight_g, eps)
    return _pearson._launched(e_fake.device, objective_launch, *args, max_block=max_block)[0]


# --- backend function --------------------------------------------------------------------
def is_fused(loss: Any, dist: Optional[Tensor], *tensors: Tensor) -> bool:
    """Whether the fused kernel computes this objective (else the reference does)."""
    return (
        isinstance(loss, str)
        and loss in FUSED_LOSSES
        and (dist is not None or loss != "qp")
        and not any(t.dtype == torch.float64 for t in tensors)
        and (dist is None or dist.dtype != torch.float64)
    )


def ogan_objective_triton(
    e_real: Tensor,
    e_fake: Tensor,
    z: Tensor,
    dist: Optional[Tensor],
    loss: str,
    corr_weight: float,
    corr_weight_g: float,
    eps: float,
) -> ObjectiveOutput:
    """Backend ``triton`` of op ``ogan_objective``: the fused kernel for qp/hinge, else the reference.

    CUDA tensors go through the ``ogan_plugin::ogan_objective`` operator (traced by
    ``torch.compile``); CPU tensors run the launcher in Triton's interpreter (under
    ``torch.compile``: the operator, whose CPU implementation is the closed form).
    """
    if not is_fused(loss, dist, e_real, e_fake, z):
        return ogan_objective_reference(e_real, e_fake, z, dist, loss, corr_weight, corr_weight_g, eps)
    e_real, e_fake, z = e_real.detach(), e_fake.detach(), z.detach()
    dist = dist.detach() if dist is not None else None
    weights = float(corr_weight), float(corr_weight_g)
    if e_fake.device.type == "cuda" or torch.compiler.is_compiling():
        return ObjectiveOutput(
            *torch.ops.ogan_plugin.ogan_objective(e_real, e_fake, z, dist, loss, *weights, float(eps))
        )
    return _interpreted_objective(e_real, e_fake, z, dist, loss, *weights, float(eps))


@torch.compiler.disable
def _interpreted_objective(*args: Any) -> ObjectiveOutput:
    return ogan_objective_forward(*args)


# --- torch reference ---------------------------------------------------------------------
def ogan_objective_reference(
    e_real: Tensor,
    e_fake: Tensor,
    z: Tensor,
    dist: Optional[Tensor],
    loss: str,
    corr_weight: float,
    corr_weight_g: float,
    eps: float,
) -> ObjectiveOutput:
    """Reference implementation: autograd on detached float32 (or float64) copies."""
    from ogan_plugin.losses import get_loss

    adv = get_loss(loss)
    dtype = torch.float64 if e_fake.dtype == torch.float64 else torch.float32
    with torch.enable_grad():
        er = e_real.detach().to(dtype).requires_grad_(True)
        ef = e_fake.detach().to(dtype).requires_grad_(True)
        s_real, s_fake = er.mean(dim=1), ef.mean(dim=1)
        rho = pearson_reference(z.detach(), ef, eps)
        loss_d = adv.d_loss(s_real, s_fake, dist).mean() - corr_weight * rho.mean()
        loss_g = adv.g_loss(s_fake).mean() - corr_weight_g * rho.mean()
        grad_real, grad_fake_d = torch.autograd.grad(loss_d, (er, ef), retain_graph=True)
        (grad_fake_g,) = torch.autograd.grad(loss_g, ef)
    return ObjectiveOutput(
        loss_d.detach(),
        loss_g.detach(),
        rho.detach(),
        grad_real.to(e_real.dtype),
        grad_fake_d.to(e_fake.dtype),
        grad_fake_g.to(e_fake.dtype),
    )


def ogan_objective_closed_form(
    e_real: Tensor,
    e_fake: Tensor,
    z: Tensor,
    dist: Optional[Tensor],
    loss: str,
    corr_weight: float,
    corr_weight_g: float,
    eps: float,
) -> ObjectiveOutput:
    """The fused losses (``"qp"``, ``"hinge"``) in closed form with torch ops (no autograd).

    Same values as :func:`ogan_objective_reference`; the CPU implementation of the
    ``ogan_plugin::ogan_objective`` operator (whose implementations cannot run autograd).
    """
    if loss not in FUSED_LOSSES:
        raise ValueError(f"the closed form covers the losses {sorted(FUSED_LOSSES)}, got {loss!r}")
    if loss == "qp" and dist is None:
        raise ValueError("the QP loss needs dist = pixel_distance(x_real, x_fake)")
    dtype = torch.float64 if e_fake.dtype == torch.float64 else torch.float32
    B, n = e_fake.shape
    er, ef = e_real.detach().to(dtype), e_fake.detach().to(dtype)
    s_real, s_fake = er.mean(dim=1), ef.mean(dim=1)
    if loss == "qp":
        d = dist.detach().to(dtype)
        t = s_fake - s_real
        d_row = t + 0.25 * t * t / d
        slope_fake = 1 + 0.5 * t / d
        slope_real = -slope_fake
    else:
        a, b = 1 - s_real, 1 + s_fake
        d_row = a.clamp_min(0) + b.clamp_min(0)
        slope_real, slope_fake = -(a > 0).to(dtype), (b > 0).to(dtype)
    rho = pearson_reference(z.detach(), ef, eps)
    _, corr = pearson_grad_reference(torch.ones_like(s_fake), z.detach(), ef, eps, -1.0 / B, False, True)
    grad_real = (slope_real / (B * n)).unsqueeze(1).expand(B, n)
    mean_rho = rho.mean()
    return ObjectiveOutput(
        (d_row.mean() - corr_weight * mean_rho).to(rho.dtype),
        (-s_fake.mean() - corr_weight_g * mean_rho).to(rho.dtype),
        rho,
        grad_real.to(e_real.dtype).contiguous(),
        (corr_weight * corr + (slope_fake / (B * n)).unsqueeze(1)).to(e_fake.dtype),
        (corr_weight_g * corr - 1.0 / (B * n)).to(e_fake.dtype),
    )


# --- registration ------------------------------------------------------------------------
@hookimpl
def ogan_backends() -> list[Backend]:
    return [
        Backend(
            op="ogan_objective",
            name="triton",
            fn=ogan_objective_triton,
            priority=10,
            serves=triton_serves,
            check=lambda: _pearson.triton_problem(),
            probe=_pearson.triton_probe,
            description="fused Triton kernel for qp and hinge (1 launch, other losses: reference); "
            "CUDA, or CPU on request under TRITON_INTERPRET=1",
        ),
        Backend(
            op="ogan_objective",
            name="reference",
            fn=ogan_objective_reference,
            priority=0,
            description="torch reference (autograd on detached copies), any device",
        )
    ]
