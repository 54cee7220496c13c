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

It returns the values and the gradients in their parts (no autograd graph; the caller
feeds them to the networks' backward), :class:`ObjectiveOutput`:

* ``corr`` (B, n) = d(-mean rho)/de_fake, zero-mean per row: the correlation part of both
  fake streams (times ``corr_weight`` in L_D's, ``corr_weight_g`` in L_G's);
* ``slope_real``, ``slope_fake_d``, ``slope_fake_g`` (B,) = dL_D/ds_real, the adversarial
  dL_D/ds_fake and dL_G/ds_fake: the score parts.

The dense gradients follow (:meth:`ObjectiveOutput.gradients`): dL_D/de_real =
slope_real / n on every column; dL_D/de_fake = corr_weight * corr + slope_fake_d / n;
dL_G/de_fake = corr_weight_g * corr + slope_fake_g / n.  Parts are what the routings feed
(the scores and the raw outputs separately), so no split of dense gradients is needed, and
the kernel writes one (B, n) tensor instead of three.  The "split" routing sends L_D's parts
to D's parameters and L_G's to D's input; "three_forward" sends L_G's into E(x_fake) and the
difference into E(sg(x_fake)) (the t2 cancellation).  ``corr`` has the dtype of ``e_fake``;
values and slopes are float32 (float64 for float64 inputs).

Backends (see :mod:`ogan_plugin.kernels.pearson` for the kernel design they share):

* ``triton`` (priority 10): one launch computes the scores, rho, both adversarial terms,
  the two losses (finished by the last program, as the correlation loss is), ``corr`` and
  the slopes, for the ``"qp"`` and ``"hinge"`` losses; other losses, and float64 inputs,
  use the reference.  Automatic on CUDA; on CPU only on request under
  ``TRITON_INTERPRET=1``.  Under ``torch.compile`` the ``ogan_plugin::ogan_objective``
  operator is traced.
* ``reference`` (priority 0): torch ops in closed form (:func:`ogan_objective_reference`):
  the correlation from :func:`~ogan_plugin.kernels.pearson.unit_pair`, the adversarial
  slopes from the loss's own closed form (every built-in loss) or one autograd pass over
  the (B,) scores (a plugin's loss without one); any loss, any device.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

from ogan_plugin.hookspecs import hookimpl
from ogan_plugin.kernels import pearson as _pearson
from ogan_plugin.kernels.pearson_torch import numpy_rows, numpy_unit_grad, numpy_unit_pair
from ogan_plugin.kernels.pearson import (
    _finish_sums,
    _load_tile,
    _pair_stats_chunked,
    _pair_tiles,
    _unit_chunk,
    tile_for,
    triton_serves,
    unit_pair,
    unit_pair_grad,
)
from ogan_plugin.registry import Backend

#: see :mod:`ogan_plugin.kernels.pearson`: ``tl`` is bound when the kernels are built.
tl: Any = None
_TRITON = _pearson._LazyTriton(globals(), depends=(_pearson._TRITON,))

#: losses fused by the Triton kernel -> the kernel's LOSS constant
FUSED_LOSSES = {"qp": 0, "hinge": 1}


class ObjectiveOutput(NamedTuple):
    """Values and gradient parts of the objective (module docstring)."""

    loss_d: Tensor
    loss_g: Tensor
    rho: Tensor
    corr: Tensor
    slope_real: Tensor
    slope_fake_d: Tensor
    slope_fake_g: Tensor

    def gradients(self, corr_weight: float, corr_weight_g: float) -> tuple[Tensor, Tensor, Tensor]:
        """The dense gradients (dL_D/de_real, dL_D/de_fake, dL_G/de_fake), in the dtype of ``corr``."""
        B, n = self.corr.shape
        dtype = torch.promote_types(self.corr.dtype, self.slope_real.dtype)
        corr = self.corr.to(dtype)
        grad_real = (self.slope_real.to(dtype) / n).unsqueeze(1).expand(B, n)
        grad_d = corr_weight * corr + (self.slope_fake_d.to(dtype) / n).unsqueeze(1)
        grad_g = corr_weight_g * corr + (self.slope_fake_g.to(dtype) / n).unsqueeze(1)
        return tuple(t.to(self.corr.dtype).contiguous() for t in (grad_real, grad_d, grad_g))  # type: ignore[return-value]


# --- Triton kernel ----------------------------------------------------------------------
@_TRITON.kernel(do_not_specialize=("B", "s_dist", "loss_kind"))
def _objective_kernel(
    er_ptr, ef_ptr, z_ptr, dist_ptr, rho_ptr, corr_ptr, sr_ptr, sfd_ptr, sfg_ptr, part_ptr, count_ptr, loss_d_ptr,
    loss_g_ptr, B, n, srb, srn, sfb, sfn, szb, szn, s_dist, eps, corr_weight, corr_weight_g, inv_b, loss_kind,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr, ONE_BLOCK: tl.constexpr, RBLOCK: tl.constexpr,
):
    """The whole objective: scores, rho, the losses (last program), the correlation gradient and 3 slopes.

    ``loss_kind`` (a :data:`FUSED_LOSSES` value) is a runtime argument: one compiled
    kernel serves qp and hinge.  One block of ROWS rows per program (GAN batches are small;
    a loop over blocks would add registers, and spills, to the long-row form).
    """
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    nf = n.to(tl.float32)
    rows = pid * ROWS + tl.arange(0, ROWS)
    row_mask = rows < B
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
    g_row = -s_fake  # generator side of both: -s_fake, slope -1
    tl.store(rho_ptr + rows, rho, mask=row_mask)
    tl.store(sr_ptr + rows, slope_real * inv_b, mask=row_mask)
    tl.store(sfd_ptr + rows, slope_fake * inv_b, mask=row_mask)
    tl.store(sfg_ptr + rows, tl.zeros_like(slope_fake) - inv_b, mask=row_mask)
    c = tl.div_rn(-inv_b + tl.zeros_like(de), de)  # d(-mean rho)/de = c * (u - [||ec|| >= eps] rho v)
    if ONE_BLOCK:
        out = rows[:, None].to(tl.int64) * n + cols[None, :]
        tl.store(corr_ptr + out, c[:, None] * (u - (ae * rho)[:, None] * v), mask=mask)
    else:
        for start in range(0, n, BLOCK_N):
            z, mask = _load_tile(z_ptr, rows, row_mask, start + cols, n, szb, szn)
            ef, _ = _load_tile(ef_ptr, rows, row_mask, start + cols, n, sfb, sfn)
            u = _unit_chunk(z, mask, m1z, inv_z, cz, fz)
            v = _unit_chunk(ef, mask, m1e, inv_e, ce, fe)
            out = rows[:, None].to(tl.int64) * n + (start + cols)[None, :]
            tl.store(corr_ptr + out, c[:, None] * (u - (ae * rho)[:, None] * v), mask=mask)
    tot_d = tl.where(row_mask, d_row - corr_weight * rho, 0.0)
    tot_g = tl.where(row_mask, g_row - corr_weight_g * rho, 0.0)
    tl.store(part_ptr + pid * 2, tl.sum(tot_d, axis=0))
    tl.store(part_ptr + pid * 2 + 1, tl.sum(tot_g, axis=0))
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
    cfg, options = tile_for(n, max_block)
    grid = -(-B // cfg["ROWS"])
    dev = e_fake.device
    alloc = _pearson._alloc
    rho = alloc(B, torch.float32, dev)
    corr = alloc((B, n), e_fake.dtype, dev)
    # three rows 16-byte aligned whatever B (Triton specialises pointers on alignment: an
    # unaligned row would compile another kernel for some batch sizes)
    slopes = alloc((3, -(-B // 4) * 4), torch.float32, dev)[:, :B]
    losses = alloc(2, torch.float32, dev)
    parts = alloc(2 * grid, torch.float32, dev)
    count = _pearson._ticket(dev)
    args = (
        e_real, e_fake, z, dist if dist is not None else rho, rho, corr, slopes[0], slopes[1], slopes[2],
        parts, count, losses[0], losses[1],
        B, n, e_real.stride(0), e_real.stride(1), e_fake.stride(0), e_fake.stride(1), z.stride(0), z.stride(1),
        dist.stride(0) if dist is not None else 0,
        float(eps), float(corr_weight), float(corr_weight_g), 1.0 / B, FUSED_LOSSES[loss],
    )
    launch = _pearson.Launch(_objective_kernel, grid, args, {**options, "RBLOCK": _pearson.RBLOCK})
    return launch, ObjectiveOutput(losses[0], losses[1], rho, corr, slopes[0], slopes[1], slopes[2])


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


# --- backend functions -----------------------------------------------------------------------
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

    Eager calls launch the kernel directly (on CUDA, or on CPU in Triton's interpreter);
    under ``torch.compile`` the ``ogan_plugin::ogan_objective`` operator is traced (its CPU
    implementation is the reference).
    """
    if not is_fused(loss, dist, e_real, e_fake, z):
        return ogan_objective_reference(e_real, e_fake, z, dist, loss, corr_weight, corr_weight_g, eps)
    e_real, e_fake, z = e_real.detach(), e_fake.detach(), z.detach()
    dist = dist.detach() if dist is not None else None
    weights = float(corr_weight), float(corr_weight_g)
    if torch.compiler.is_compiling():
        return ObjectiveOutput(
            *torch.ops.ogan_plugin.ogan_objective(e_real, e_fake, z, dist, loss, *weights, float(eps))
        )
    return ogan_objective_forward(e_real, e_fake, z, dist, loss, *weights, float(eps))


# --- torch reference ---------------------------------------------------------------------
def ogan_objective_reference(
    e_real: Tensor,
    e_fake: Tensor,
    z: Tensor,
    dist: Optional[Tensor],
    loss: Any,
    corr_weight: float,
    corr_weight_g: float,
    eps: float,
) -> ObjectiveOutput:
    """Reference implementation: torch ops in closed form, any loss (a name or an
    :class:`~ogan_plugin.losses.AdversarialLoss`), any device; computes in float32 (float64
    for float64 inputs; the correlation in float64 on the CPU)."""
    from ogan_plugin.losses import get_loss, loss_slopes

    adv = get_loss(loss)
    dtype = torch.float64 if torch.float64 in (e_real.dtype, e_fake.dtype) else torch.float32
    B = e_fake.shape[0]
    if _pearson._numpy_path(z, e_fake) and _pearson._numpy_path(z, e_real) and (dist is None or dist.device.type == "cpu"):
        return _objective_numpy(e_real, e_fake, z, dist, adv, corr_weight, corr_weight_g, eps)
    s_real = e_real.detach().to(dtype).mean(dim=1)
    s_fake = e_fake.detach().to(dtype).mean(dim=1)
    U, denom, flag, rho = unit_pair(z.detach(), e_fake.detach(), eps)
    _, corr = unit_pair_grad(torch.full_like(rho, -1.0 / B), U, denom, flag, rho, False, True)
    d = dist.detach().to(dtype) if dist is not None else None
    slopes = loss_slopes(adv, s_real, s_fake, d)
    mean_rho = rho.mean().to(dtype)
    inv_b = 1.0 / B
    return ObjectiveOutput(
        slopes.d.mean().to(dtype) - corr_weight * mean_rho,
        slopes.g.mean().to(dtype) - corr_weight_g * mean_rho,
        rho.to(dtype),
        corr if corr.dtype == e_fake.dtype else corr.to(e_fake.dtype),
        slopes.d_real.to(dtype) * inv_b,
        slopes.d_fake.to(dtype) * inv_b,
        slopes.g_fake.to(dtype) * inv_b,
    )


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


#: the built-in losses' slopes in NumPy: (real, fake, dist) -> (d, g, d_real, d_fake, g_fake)
_NUMPY_SLOPES = {
    "qp": lambda r, f, dist: (lambda t: (t + 0.25 * t * t / dist, -f, -(1 + 0.5 * t / dist), 1 + 0.5 * t / dist,
                                          -np.ones_like(f)))(f - r),
    "hinge": lambda r, f, dist: (np.maximum(1 - r, 0) + np.maximum(1 + f, 0), -f, (r < 1) * -1.0, (f > -1) * 1.0,
                                 np.full_like(f, -1.0)),
    "bce": lambda r, f, dist: (_softplus(-r) + _softplus(f), _softplus(-f), -_sigmoid(-r), _sigmoid(f), -_sigmoid(-f)),
    "wgan": lambda r, f, dist: (f - r, -f, -np.ones_like(r), np.ones_like(f), -np.ones_like(f)),
}


def _numpy_parts(
    e_real: Tensor, e_fake: Tensor, z: Tensor, dist: Optional[Tensor], adv: Any, eps: float
) -> tuple[np.ndarray, ...]:
    """The objective in float64 NumPy: ``(d, g, d_real, d_fake, g_fake, rho, corr)`` with ``d``,
    ``g`` the per-row adversarial terms, the three slopes per row (not divided by B),
    ``rho`` (B,) and ``corr`` (B, n) = d(-mean rho)/de_fake.  z, e_fake and e_real sit in
    one array (no row scaling is needed there, see
    :func:`~ogan_plugin.kernels.pearson.unit_pair`), each step one op for all three; a
    built-in loss's slopes in NumPy too, any other loss's through
    :func:`~ogan_plugin.losses.loss_slopes`."""
    from ogan_plugin.losses import QPLoss, HingeLoss, BCELoss, WGANLoss, loss_slopes

    B = e_fake.shape[0]
    X = numpy_rows(z, e_fake, e_real)
    means, norm, denom, rho = numpy_unit_pair(X, eps)
    corr = numpy_unit_grad(X, norm, denom, rho, eps, 1, np.full(B, -1.0 / B))
    f, r = means[1], means[2]
    if type(adv) in (QPLoss, HingeLoss, BCELoss, WGANLoss):
        if adv.needs_dist and dist is None:
            raise ValueError("the QP loss needs dist = pixel_distance(x_real, x_fake)")
        d_np = None if dist is None else dist.detach().double().numpy()
        slopes = _NUMPY_SLOPES[adv.name](r, f, d_np)
    else:
        t = loss_slopes(adv, torch.from_numpy(r.astype(np.float32)), torch.from_numpy(f.astype(np.float32)),
                        None if dist is None else dist.detach().float())
        slopes = tuple(x.double().numpy() for x in t)
    return (*slopes, rho, corr)


def _loss_values(
    d: np.ndarray, g: np.ndarray, rho: np.ndarray, corr_weight: float, corr_weight_g: float
) -> tuple[float, float]:
    """``(L_D, L_G)`` from :func:`_numpy_parts`' per-row terms: their means minus the weighted
    mean rho (``np.add.reduce``: ``ndarray.mean``'s Python wrapper costs more than the sum)."""
    mean_rho = np.add.reduce(rho) / rho.size
    return (
        np.add.reduce(d, axis=None) / d.size - corr_weight * mean_rho,
        np.add.reduce(g, axis=None) / g.size - corr_weight_g * mean_rho,
    )


def _float32_tensors(*arrays: Any) -> list[Tensor]:
    """Float32 tensors of NumPy arrays or scalars (one copy each, none for float32 arrays)."""
    return [torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in arrays]


def _objective_numpy(
    e_real: Tensor, e_fake: Tensor, z: Tensor, dist: Optional[Tensor], adv: Any, corr_weight: float,
    corr_weight_g: float, eps: float,
) -> ObjectiveOutput:
    """The CPU's reference (:func:`_numpy_parts`): outputs in float32 (``corr`` in e_fake's dtype)."""
    d, g, d_real, d_fake, g_fake, rho, corr = _numpy_parts(e_real, e_fake, z, dist, adv, eps)
    B = rho.shape[0]
    loss_d, loss_g = _loss_values(d, g, rho, corr_weight, corr_weight_g)
    t = _float32_tensors(loss_d, loss_g, rho, corr, d_real / B, d_fake / B, g_fake / B)
    if e_fake.dtype != torch.float32:
        t[3] = t[3].to(e_fake.dtype)
    return ObjectiveOutput(*t)


class DenseObjective(NamedTuple):
    """The objective with dense gradients (:func:`objective_dense`): the two loss values,
    rho (B,) and ``grads``: (dL_D/de_real, dL_D/de_fake, dL_G/de_fake), each (B, n)."""

    loss_d: Tensor
    loss_g: Tensor
    rho: Tensor
    grads: tuple[Tensor, Tensor, Tensor]


def dense_available(*tensors: Tensor) -> bool:
    """Whether :func:`objective_dense` runs on these inputs: eager float32 CPU tensors
    (the reference backend's NumPy path)."""
    return all(t.dtype == torch.float32 and _pearson._numpy_path(t, t) for t in tensors)


def objective_dense(
    e_real: Tensor, e_fake: Tensor, z: Tensor, dist: Optional[Tensor], loss: Any, corr_weight: float,
    corr_weight_g: float, eps: float,
) -> DenseObjective:
    """``ogan_objective`` with its gradients dense (what :meth:`ObjectiveOutput.gradients`
    gives), on the CPU's NumPy path (:func:`dense_available`): one pass, float32 outputs.
    For a caller whose scores are the row means of ``e_real`` and ``e_fake`` (the head's):
    their gradients are then the rows themselves, and no separate score stream is needed."""
    from ogan_plugin.losses import get_loss

    d, g, d_real, d_fake, g_fake, rho, corr = _numpy_parts(e_real, e_fake, z, dist, get_loss(loss), eps)
    B, n = corr.shape
    scale = 1.0 / (B * n)
    loss_d, loss_g = _loss_values(d, g, rho, corr_weight, corr_weight_g)
    grad_real = np.empty((B, n), dtype=np.float32)
    grad_real[...] = (d_real * scale)[:, None]
    t = _float32_tensors(
        loss_d, loss_g, rho, grad_real,
        corr_weight * corr + (d_fake * scale)[..., None], corr_weight_g * corr + (g_fake * scale)[..., None],
    )
    return DenseObjective(t[0], t[1], t[2], (t[3], t[4], t[5]))


#: the closed form is the reference (kept under this name for the operator's CPU implementation)
ogan_objective_closed_form = ogan_objective_reference


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
            description="torch ops in closed form (losses without one: one autograd pass over the scores), any device",
        )
    ]
