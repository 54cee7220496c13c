"""Per-row Pearson correlation and the O-GAN correlation loss.

Math (METHOD.md section 2), per row of z and e (B, n):

    zc = z - mean(z),  ec = e - mean(e)
    rho = <zc, ec> / (max(||zc||, eps) * max(||ec||, eps))

``eps`` (default :data:`EPS` = 1e-6, the norm floor of Keras' ``l2_normalize`` used by the
official code) keeps constant rows finite: such a row gives rho = 0 and a gradient of at
most ~1/eps.  Rows are divided by their largest magnitude before the sums (rho does not
change) so inputs up to float32's range (1e30 and beyond) do not overflow.
Reductions run in float32 (float64 when an input is float64).

Gradient, with u = zc / max(||zc||, eps), v = ec / max(||ec||, eps), rho = <u, v>:

    d rho / d e = (u - [||ec|| >= eps] * rho * v) / max(||ec||, eps)     (and z <-> e)

The file reads top to bottom: the Triton kernels, their launchers, the autograd glue, the
torch reference, and the ``ogan_backends`` hook registering three backends per operation:

* ``triton`` (priority 10): fused kernels, one launch for the forward and one for the
  backward.  Automatic on CUDA tensors once a one-time probe (:func:`triton_probe`) has
  compiled and launched a tiny kernel there; on CPU only when asked for by name and
  ``TRITON_INTERPRET=1`` (Triton's interpreter: how the kernels are tested without a GPU).
  An eager call is one plain autograd function around the two launchers (the least host
  time per call); under ``torch.compile`` the ``torch.library`` operators of
  :mod:`ogan_plugin.kernels.ops` are traced instead, without a graph break.
* ``compiled`` (priority 5, only on request): ``torch.compile`` of the reference.  It is
  never picked automatically: on CUDA the fused kernels are preferred, and on CPU the
  compile warm-up (seconds per new shape) costs more than it saves at O-GAN sizes.
* ``reference`` (priority 0): torch ops with the closed-form backward (:func:`pearson_torch`,
  one autograd node; what CPU users run), everywhere.  :func:`pearson_reference`, the
  formula in plain autograd, is the ground truth the tests and ``compiled`` use.

Kernel design.  A program handles ``ROWS`` rows at once (several rows per program when rows
are short, so a program always sees ~``TILE`` elements, 8 per thread) as a (ROWS, BLOCK_N)
tile.  When a row fits in one block (n <= ``MAX_BLOCK``) the tile is loaded once and every
statistic is computed from registers.  Longer rows loop over column chunks in three passes
(max-abs scale, approximate mean, centred moments; see :func:`_pair_stats_chunked`).  Loads
are strided (non-contiguous inputs are read in place, with 64-bit offsets) and converted to
float32; gradients are written in the inputs' dtypes.  The backward recomputes the row
statistics from z and e instead of storing them: for rows of one block this reads exactly
what a saved-statistics backward would read (z and e once) and it keeps the forward free of
extra outputs.  The loss (a mean over rows) is finished inside the forward launch: the grid
is capped (:data:`~ogan_plugin.kernels.launch.MAX_PROGRAMS`) and each program loops over
row blocks, every program writes its partial sum, and the last program to finish (an acq_rel
atomic ticket)
adds the partials in a fixed order and resets the ticket, so the loss is deterministic and
costs no second launch.  Centring subtracts an approximate mean before scaling and corrects
it exactly afterwards, so rows of near-constant values keep float32 accuracy.

Launches.  Every constant of a launch but the grid depends on the row length alone
(:func:`launch_config`), and the batch size, the mode flags (rho or loss; which gradients)
and the gradient's stride are runtime arguments Triton does not specialise on: one compiled
kernel per row-length bucket and dtype serves every batch size (no recompile for the last
partial batch) and every mode.  A launch runs under a guard for its tensors' device, so it
uses that device and its current stream.  Floating-point fusion (FMA) is set explicitly
(:data:`FP_FUSION`).  ``ogan-plugin bench --compile`` builds every configuration for a GPU
target without a GPU and reports registers and spills (docs/kernels.md).

Triton is imported lazily (``import ogan_plugin`` never imports it) and the kernels are
decorated with ``triton.jit`` on their first launch, which also fixes whether they run in
the interpreter (``TRITON_INTERPRET`` read at that moment) for the rest of the process.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from ogan_plugin.hookspecs import hookimpl
from ogan_plugin.kernels.launch import (  # noqa: F401  (re-exported: the launch machinery's old home)
    ELEMENTS_PER_THREAD,
    FP_FUSION,
    MAX_BLOCK,
    MAX_PROGRAMS,
    MAX_ROWS,
    MAX_WARPS,
    MIN_BLOCK,
    RBLOCK,
    TILE,
    Launch,
    _LazyTriton,
    _alloc,
    _launched,
    _options,
    _ticket,
    launch_config,
    programs,
    tile_for,
    triton_problem,
    triton_serves,
)
from ogan_plugin.registry import NOT_PROBED, Backend

#: Norm floor of the correlation (see the module docstring).
EPS = 1e-6

#: ``triton.language`` once :meth:`_LazyTriton.build` has run; the kernels below use ``tl``
#: only inside their bodies (their annotations are strings), so this file imports without Triton.
tl: Any = None

_TRITON = _LazyTriton(globals())


def triton_probe(device_type: str) -> Optional[str]:
    """The ``triton`` backends' one-time probe: compile and launch a tiny kernel on CUDA.

    ``triton_problem`` only tells that Triton imports.  A GPU environment can still be
    unable to run it: a driver too old for the ptxas in the Triton wheel, no C compiler
    for Triton's launcher, no ``libcuda.so``.  The registry runs this probe once per
    process (see :meth:`ogan_plugin.registry.Registry.problem`) before it first picks the
    backend for CUDA tensors; when it fails, the reference is used with a one-time
    warning and ``ogan-plugin plugins`` shows the reason.  It launches the forward kernel
    on a perfectly correlated 1 x 2 row on the current device and checks rho == 1.

    During CUDA-graph capture nothing can be launched and read back, so a call made while
    capturing answers :data:`~ogan_plugin.registry.NOT_PROBED`: the backend counts as
    available for that call, nothing is cached, and the next call outside capture probes.
    """
    if device_type != "cuda":
        return None
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    if torch.cuda.is_current_stream_capturing():
        return NOT_PROBED
    try:
        value = _probe_launch(torch.device("cuda", torch.cuda.current_device()))
    except Exception as exc:  # what a broken environment raises varies: report it, do not crash
        text = str(exc).strip().splitlines()
        return (f"a test compile-and-launch of the Triton kernel on CUDA failed "
                f"({type(exc).__name__}: {text[0] if text else ''})")
    if not abs(value - 1.0) <= 1e-6:
        return f"a test launch of the Triton kernel on CUDA returned rho = {value!r} for a perfectly correlated row"
    return None


def _probe_launch(device: torch.device) -> float:
    """rho of the row pair ([0, 1], [0, 2]) through the forward kernel on ``device`` (synchronises)."""
    z = torch.tensor([[0.0, 1.0]], device=device)
    e = torch.tensor([[0.0, 2.0]], device=device)
    return float(pearson_forward(z, e).item())


# --- Triton kernels ----------------------------------------------------------------------
# Per-row scalars (means, norms, their ratios) are divided and square-rooted with the
# IEEE-rounded ``tl.div_rn`` / ``tl.sqrt_rn``: plain ``/`` and ``tl.sqrt`` compile to the
# approximate ``div.full.f32`` / ``sqrt.approx.f32`` on NVIDIA GPUs (2 ulp), while the
# interpreter rounds correctly.  They run once per row, never per element, so they cost
# nothing, and the kernels round the same way on a GPU as in the tests.
@_TRITON.kernel
def _load_tile(ptr, rows, row_mask, cols, n, stride_b, stride_n):
    """(ROWS, BLOCK_N) tile of a (B, n) tensor as float32 (0 outside), and its mask.

    Offsets are 64-bit for rows and columns: a column-strided view (a transposed or
    sliced tensor) can reach (n - 1) * stride_n >= 2**31 elements.
    """
    mask = row_mask[:, None] & (cols[None, :] < n)
    offs = rows[:, None].to(tl.int64) * stride_b + cols[None, :].to(tl.int64) * stride_n
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32), mask


@_TRITON.kernel
def _shifted(x, mask, m1, inv):
    """``(x - m1) / scale`` per row, overflow-safe (halves first), 0 outside the mask."""
    return tl.where(mask, (0.5 * x - 0.5 * m1[:, None]) * (2.0 * inv)[:, None], 0.0)


@_TRITON.kernel
def _centre_tile(x, mask, n):
    """Rows of one block: ``(x - mean) / scale`` with scale = max|x|; returns it, scale, mean.

    The mean is taken in two steps: an approximate mean ``m1`` (of x / scale) is
    subtracted first (exactly, for values close to it), then the small remaining mean of
    the shifted values; this keeps near-constant rows accurate in float32.
    """
    scale = tl.maximum(tl.max(tl.abs(x), axis=1), 1.1754943508222875e-38)
    inv = tl.div_rn(tl.full(scale.shape, 1.0, tl.float32), scale)
    nf = n.to(tl.float32)
    m1 = tl.div_rn(tl.sum(x * inv[:, None], axis=1), nf) * scale
    y = _shifted(x, mask, m1, inv)
    c = tl.div_rn(tl.sum(y, axis=1), nf)
    return tl.where(mask, y - c[:, None], 0.0), scale, m1 + c * scale


@_TRITON.kernel
def _norm_factor(ss, scale, eps):
    """From the centred sum of squares (in units of scale): u-factor, max(norm, eps), norm >= eps."""
    norm = tl.sqrt_rn(tl.maximum(ss, 0.0)) * scale
    denom = tl.maximum(norm, eps)
    return tl.div_rn(scale, denom), denom, (norm >= eps).to(tl.float32)


@_TRITON.kernel
def _pair_tiles(z_ptr, e_ptr, rows, row_mask, n, szb, szn, seb, sen, eps, BLOCK_N: tl.constexpr):
    """Rows of one block: unit rows u (of z), v (of e), their floors, flags, rho, mean(e)."""
    cols = tl.arange(0, BLOCK_N)
    z, mask = _load_tile(z_ptr, rows, row_mask, cols, n, szb, szn)
    e, _ = _load_tile(e_ptr, rows, row_mask, cols, n, seb, sen)
    yz, scale_z, _ = _centre_tile(z, mask, n)
    ye, scale_e, mean_e = _centre_tile(e, mask, n)
    fz, dz, az = _norm_factor(tl.sum(yz * yz, axis=1), scale_z, eps)
    fe, de, ae = _norm_factor(tl.sum(ye * ye, axis=1), scale_e, eps)
    u = yz * fz[:, None]
    v = ye * fe[:, None]
    rho = tl.sum(yz * ye, axis=1) * fz * fe
    return u, v, dz, de, az, ae, rho, mean_e, mask


@_TRITON.kernel
def _scale_and_mean(ptr, rows, row_mask, n, stride_b, stride_n, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    """Chunked rows, passes 1 and 2: scale = max|x|, 1/scale, approximate mean m1."""
    cols = tl.arange(0, BLOCK_N)
    amax = tl.zeros([ROWS], dtype=tl.float32)
    for start in range(0, n, BLOCK_N):
        x, _ = _load_tile(ptr, rows, row_mask, start + cols, n, stride_b, stride_n)
        amax = tl.maximum(amax, tl.max(tl.abs(x), axis=1))
    scale = tl.maximum(amax, 1.1754943508222875e-38)
    inv = tl.div_rn(tl.full(scale.shape, 1.0, tl.float32), scale)
    total = tl.zeros([ROWS], dtype=tl.float32)
    for start in range(0, n, BLOCK_N):
        x, _ = _load_tile(ptr, rows, row_mask, start + cols, n, stride_b, stride_n)
        total += tl.sum(x * inv[:, None], axis=1)
    return scale, inv, tl.div_rn(total, n.to(tl.float32)) * scale


@_TRITON.kernel
def _pair_stats_chunked(
    z_ptr, e_ptr, rows, row_mask, n, szb, szn, seb, sen, eps, ROWS: tl.constexpr, BLOCK_N: tl.constexpr
):
    """Chunked rows: per-row statistics of z and e, three passes over the columns.

    With y = (x - m1) / scale (m1 an approximate mean) and c = mean(y), the centred unit
    row is (y - c) * f; pass 3 accumulates sum(y), sum(y^2) and sum(y_z * y_e) and the
    centred moments follow exactly (S2 - n c^2, Sze - n cz ce) since c is tiny.
    Returns (m1z, invz, cz, fz, dz, az, m1e, inve, ce, fe, de, ae, rho, mean_e).
    """
    scale_z, inv_z, m1z = _scale_and_mean(z_ptr, rows, row_mask, n, szb, szn, ROWS, BLOCK_N)
    scale_e, inv_e, m1e = _scale_and_mean(e_ptr, rows, row_mask, n, seb, sen, ROWS, BLOCK_N)
    cols = tl.arange(0, BLOCK_N)
    sz = tl.zeros([ROWS], dtype=tl.float32)
    se = tl.zeros([ROWS], dtype=tl.float32)
    szz = tl.zeros([ROWS], dtype=tl.float32)
    see = tl.zeros([ROWS], dtype=tl.float32)
    sze = tl.zeros([ROWS], dtype=tl.float32)
    for start in range(0, n, BLOCK_N):
        z, mask = _load_tile(z_ptr, rows, row_mask, start + cols, n, szb, szn)
        e, _ = _load_tile(e_ptr, rows, row_mask, start + cols, n, seb, sen)
        yz = _shifted(z, mask, m1z, inv_z)
        ye = _shifted(e, mask, m1e, inv_e)
        sz += tl.sum(yz, axis=1)
        se += tl.sum(ye, axis=1)
        szz += tl.sum(yz * yz, axis=1)
        see += tl.sum(ye * ye, axis=1)
        sze += tl.sum(yz * ye, axis=1)
    nf = n.to(tl.float32)
    cz = tl.div_rn(sz, nf)
    ce = tl.div_rn(se, nf)
    fz, dz, az = _norm_factor(szz - nf * cz * cz, scale_z, eps)
    fe, de, ae = _norm_factor(see - nf * ce * ce, scale_e, eps)
    rho = (sze - nf * cz * ce) * fz * fe
    return m1z, inv_z, cz, fz, dz, az, m1e, inv_e, ce, fe, de, ae, rho, m1e + ce * scale_e


@_TRITON.kernel
def _unit_chunk(x, mask, m1, inv, c, f):
    """Chunked rows: the centred unit row on one chunk, 0 outside the mask."""
    return tl.where(mask, (_shifted(x, mask, m1, inv) - c[:, None]) * f[:, None], 0.0)


@_TRITON.kernel
def _finish_sums(part_ptr, count_ptr, out0_ptr, out1_ptr, scale, K: tl.constexpr, RBLOCK: tl.constexpr):
    """Last-program reduction: the last program to arrive sums the K partials of every program.

    Each program has written its K partial sums to part_ptr[pid * K + k] before calling
    this.  The acq_rel ticket orders those writes before the last program's (volatile)
    reads; the last program writes ``scale * sum`` to out0 (and out1 when K == 2) and
    resets the ticket to 0 for the next launch on the stream.  RBLOCK is a fixed constant
    (not derived from the grid), so the grid size never causes a recompile.
    """
    num = tl.num_programs(0)
    tl.debug_barrier()
    ticket = tl.atomic_add(count_ptr, 1, sem="acq_rel")
    if ticket == num - 1:
        offs = tl.arange(0, RBLOCK)
        acc0 = tl.zeros([RBLOCK], dtype=tl.float32)
        acc1 = tl.zeros([RBLOCK], dtype=tl.float32)
        for start in range(0, num, RBLOCK):
            idx = start + offs
            acc0 += tl.load(part_ptr + idx * K, mask=idx < num, other=0.0, volatile=True)
            if K == 2:
                acc1 += tl.load(part_ptr + idx * K + 1, mask=idx < num, other=0.0, volatile=True)
        tl.store(out0_ptr, tl.sum(acc0, axis=0) * scale)
        if K == 2:
            tl.store(out1_ptr, tl.sum(acc1, axis=0) * scale)
        tl.atomic_xchg(count_ptr, 0)


@_TRITON.kernel(do_not_specialize=("B", "store_rho", "loss"))
def _pearson_fwd_kernel(
    z_ptr, e_ptr, rho_ptr, part_ptr, count_ptr, loss_ptr,
    B, n, szb, szn, seb, sen, eps, loss_scale, store_rho, loss,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr, ONE_BLOCK: tl.constexpr, RBLOCK: tl.constexpr,
):
    """rho per row (``store_rho``) and/or loss = loss_scale * sum(rho) (``loss``), one launch.

    ``store_rho`` and ``loss`` are runtime flags, so one compiled kernel serves
    ``pearson`` and ``correlation_loss``.  For rows of one block each program takes every
    ``num_programs``-th block of ROWS rows (the grid is capped, see
    :func:`~ogan_plugin.kernels.launch.programs`), so a large batch has few partial sums and
    few tickets; longer rows take one block per program.
    """
    pid = tl.program_id(0)
    if ONE_BLOCK:
        total = tl.zeros([ROWS], dtype=tl.float32)
        for block in range(pid, tl.cdiv(B, ROWS), tl.num_programs(0)):
            rows = block * ROWS + tl.arange(0, ROWS)
            row_mask = rows < B
            _u, _v, _dz, _de, _az, _ae, rho, _me, _mask = _pair_tiles(
                z_ptr, e_ptr, rows, row_mask, n, szb, szn, seb, sen, eps, BLOCK_N
            )
            if store_rho:
                tl.store(rho_ptr + rows, rho, mask=row_mask)
            total += tl.where(row_mask, rho, 0.0)
    else:  # long rows: one block per program (a loop over blocks around the chunk loops spills)
        rows = pid * ROWS + tl.arange(0, ROWS)
        row_mask = rows < B
        _a, _b, _c, _d, _e, _f, _g, _h, _i, _j, _k, _l, rho, _m = _pair_stats_chunked(
            z_ptr, e_ptr, rows, row_mask, n, szb, szn, seb, sen, eps, ROWS, BLOCK_N
        )
        if store_rho:
            tl.store(rho_ptr + rows, rho, mask=row_mask)
        total = tl.where(row_mask, rho, 0.0)
    if loss:
        tl.store(part_ptr + pid, tl.sum(total, axis=0))
        _finish_sums(part_ptr, count_ptr, loss_ptr, loss_ptr, loss_scale, 1, RBLOCK)


@_TRITON.kernel(do_not_specialize=("stride_g", "B", "need_z", "need_e"))
def _pearson_bwd_kernel(
    g_ptr, stride_g, z_ptr, e_ptr, gz_ptr, ge_ptr,
    B, n, szb, szn, seb, sen, eps, g_scale, need_z, need_e,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr, ONE_BLOCK: tl.constexpr,
):
    """Gradients of sum(g * g_scale * rho) w.r.t. z (``need_z``) and e (``need_e``), one launch.

    Outputs are contiguous.  ``need_z``/``need_e`` are runtime flags and ``stride_g`` is
    not specialised (0 for the loss's expanded scalar, 1 for rho's gradient): one compiled
    kernel serves every case.
    """
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_mask = rows < B
    g = tl.load(g_ptr + rows.to(tl.int64) * stride_g, mask=row_mask, other=0.0).to(tl.float32) * g_scale
    cols = tl.arange(0, BLOCK_N)
    if ONE_BLOCK:
        u, v, dz, de, az, ae, rho, _me, mask = _pair_tiles(
            z_ptr, e_ptr, rows, row_mask, n, szb, szn, seb, sen, eps, BLOCK_N
        )
        out = rows[:, None].to(tl.int64) * n + cols[None, :]
        if need_z:
            tl.store(gz_ptr + out, tl.div_rn(g, dz)[:, None] * (v - (az * rho)[:, None] * u), mask=mask)
        if need_e:
            tl.store(ge_ptr + out, tl.div_rn(g, de)[:, None] * (u - (ae * rho)[:, None] * v), mask=mask)
    else:
        m1z, inv_z, cz, fz, dz, az, m1e, inv_e, ce, fe, de, ae, rho, _me = _pair_stats_chunked(
            z_ptr, e_ptr, rows, row_mask, n, szb, szn, seb, sen, eps, ROWS, BLOCK_N
        )
        for start in range(0, n, BLOCK_N):
            z, mask = _load_tile(z_ptr, rows, row_mask, start + cols, n, szb, szn)
            e, _ = _load_tile(e_ptr, rows, row_mask, start + cols, n, seb, sen)
            u = _unit_chunk(z, mask, m1z, inv_z, cz, fz)
            v = _unit_chunk(e, mask, m1e, inv_e, ce, fe)
            out = rows[:, None].to(tl.int64) * n + (start + cols)[None, :]
            if need_z:
                tl.store(gz_ptr + out, tl.div_rn(g, dz)[:, None] * (v - (az * rho)[:, None] * u), mask=mask)
            if need_e:
                tl.store(ge_ptr + out, tl.div_rn(g, de)[:, None] * (u - (ae * rho)[:, None] * v), mask=mask)


# --- launchers ---------------------------------------------------------------------------
def forward_launch(
    z: Tensor, e: Tensor, eps: float = EPS, *, loss_weight: Optional[float] = None, max_block: Optional[int] = None
) -> tuple[Launch, Tensor]:
    """The forward launch for (z, e) and its output (allocated, not yet written)."""
    _TRITON.build()
    B, n = z.shape
    cfg, options = tile_for(n, max_block)
    grid = programs(B, cfg["ROWS"]) if cfg["ONE_BLOCK"] else -(-B // cfg["ROWS"])
    loss = loss_weight is not None
    # the ticket is passed in both modes: the same pointer types keep one compiled kernel
    count = _ticket(z.device)
    if loss:  # rho is not stored; the programs' partial sums and the ticket finish the mean
        out = rho = _alloc((), torch.float32, z.device)
        parts = _alloc(grid, torch.float32, z.device)
    else:  # only rho is written (the other pointers are unused)
        rho = _alloc(B, torch.float32, z.device)
        out = parts = rho
    args = (
        z, e, rho, parts, count, out,
        B, n, z.stride(0), z.stride(1), e.stride(0), e.stride(1),
        float(eps), -float(loss_weight) / B if loss else 0.0, int(not loss), int(loss),
    )
    return Launch(_pearson_fwd_kernel, grid, args, {**options, "RBLOCK": RBLOCK}), out


def pearson_forward(
    z: Tensor, e: Tensor, eps: float = EPS, *, loss_weight: Optional[float] = None, max_block: Optional[int] = None
) -> Tensor:
    """Launch the forward kernel: rho (B,) float32, or ``-loss_weight * mean(rho)`` (a scalar).

    Inputs are float32/float16/bfloat16 (B, n) tensors with any strides; nothing is copied.
    The launch runs on the inputs' device and its current stream.
    """
    return _launched(z.device, forward_launch, z, e, eps, loss_weight=loss_weight, max_block=max_block)[0]


def backward_launch(
    grad: Tensor,
    z: Tensor,
    e: Tensor,
    eps: float = EPS,
    scale: float = 1.0,
    need_z: bool = True,
    need_e: bool = True,
    *,
    max_block: Optional[int] = None,
) -> tuple[Optional[Launch], Optional[Tensor], Optional[Tensor]]:
    """The backward launch (``None`` when no gradient is needed) and its outputs."""
    _TRITON.build()
    B, n = z.shape
    cfg, options = tile_for(n, max_block)
    gz = _alloc((B, n), z.dtype, z.device) if need_z else None
    ge = _alloc((B, n), e.dtype, e.device) if need_e else None
    if not (need_z or need_e):
        return None, gz, ge
    args = (
        grad, grad.stride(0) if grad.dim() else 0, z, e,
        gz if need_z else ge, ge if need_e else gz,
        B, n, z.stride(0), z.stride(1), e.stride(0), e.stride(1), float(eps), float(scale),
        int(need_z), int(need_e),
    )
    return Launch(_pearson_bwd_kernel, -(-B // cfg["ROWS"]), args, options), gz, ge


def pearson_backward(
    grad: Tensor,
    z: Tensor,
    e: Tensor,
    eps: float = EPS,
    scale: float = 1.0,
    need_z: bool = True,
    need_e: bool = True,
    *,
    max_block: Optional[int] = None,
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Launch the backward kernel: gradients of ``sum(scale * grad * rho)`` w.r.t. z and e.

    ``grad`` has B elements (a stride-0 expansion of a scalar is fine: the correlation
    loss passes ``grad_loss.expand(B)`` with ``scale = -weight / B``).  Gradients are
    contiguous, in the dtypes of z and e; ``None`` where not needed.  The launch runs on
    the inputs' device and its current stream.
    """
    gz, ge = _launched(z.device, backward_launch, grad, z, e, eps, scale, need_z, need_e, max_block=max_block)
    return gz, ge


# --- autograd glue -----------------------------------------------------------------------
# Eager calls (CUDA, and the CPU interpreter) go through these plain autograd functions: a
# forward launch and a backward launch, nothing else.  ``torch.library`` custom operators
# (:mod:`ogan_plugin.kernels.ops`) are what ``torch.compile`` traces, but an eager call through
# one costs tens of microseconds of dispatch on each side, which at GAN sizes is more than
# the kernels' own time; so they are used only while compiling.
class _PearsonFunction(torch.autograd.Function):
    """rho = pearson(z, e) through the Triton launchers."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, e: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, e)
        ctx.eps = eps
        return pearson_forward(z, e, eps)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None]:
        z, e = ctx.saved_tensors
        gz, ge = pearson_backward(grad, z, e, ctx.eps, 1.0, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return gz, ge, None


class _CorrelationLossFunction(torch.autograd.Function):
    """-weight * mean(rho) through the Triton launchers."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, e: Tensor, weight: float, eps: float) -> Tensor:
        ctx.save_for_backward(z, e)
        ctx.eps, ctx.weight = eps, weight
        return pearson_forward(z, e, eps, loss_weight=weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None, None]:
        z, e = ctx.saved_tensors
        B = z.shape[0]
        gz, ge = pearson_backward(
            grad.expand(B), z, e, ctx.eps, -ctx.weight / B, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        return gz, ge, None, None


def _has_float64(*tensors: Tensor) -> bool:
    """Whether an input is float64 (the kernels compute in float32: such inputs use torch)."""
    return any(t.dtype == torch.float64 for t in tensors)


def pearson_triton(z: Tensor, e: Tensor, eps: float = EPS) -> Tensor:
    """Backend ``triton`` of op ``pearson`` (float64 inputs use torch, in float64).

    Eager calls run the launchers through a plain autograd function (on CUDA, or on CPU in
    Triton's interpreter); under ``torch.compile`` the ``ogan_plugin::pearson`` operator is
    traced instead (on CPU its implementation is the reference).
    """
    if _has_float64(z, e):
        return pearson_torch(z, e, eps)
    if torch.compiler.is_compiling():
        return torch.ops.ogan_plugin.pearson(z, e, eps)
    return _PearsonFunction.apply(z, e, eps)


def correlation_loss_triton(z: Tensor, e: Tensor, weight: float = 0.5, eps: float = EPS) -> Tensor:
    """Backend ``triton`` of op ``correlation_loss`` (see :func:`pearson_triton`)."""
    if _has_float64(z, e):
        return correlation_loss_torch(z, e, weight, eps)
    if torch.compiler.is_compiling():
        return torch.ops.ogan_plugin.correlation_loss(z, e, weight, eps)
    return _CorrelationLossFunction.apply(z, e, weight, eps)


_COMPILED: dict[str, Callable[..., Tensor]] = {}


def _compiled(name: str) -> Callable[..., Tensor]:
    """``torch.compile`` of the reference function ``name`` (compiled on first use)."""
    fn = _COMPILED.get(name)
    if fn is None:
        fn = _COMPILED.setdefault(name, torch.compile(globals()[name], dynamic=None))
    return fn


def pearson_compiled(z: Tensor, e: Tensor, eps: float = EPS) -> Tensor:
    """Backend ``compiled`` of op ``pearson``: ``torch.compile(pearson_reference)``."""
    return _compiled("pearson_reference")(z, e, eps)


def correlation_loss_compiled(z: Tensor, e: Tensor, weight: float = 0.5, eps: float = EPS) -> Tensor:
    """Backend ``compiled`` of op ``correlation_loss``: ``torch.compile`` of the reference."""
    return _compiled("correlation_loss_reference")(z, e, weight, eps)


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


def _numpy_correlation(z: Tensor, e: Tensor, eps: float, weight: Optional[float]) -> Tensor:
    """rho (``weight`` None) or ``-weight * mean(rho)`` computed in NumPy (float64, no row
    scaling needed: it holds the squares of any float32 value), with the gradients of the
    inputs that require one, linearised into the result (:func:`_linearised`)."""
    X = np.stack((_as_numpy(z), _as_numpy(e))).astype(np.float64)
    X -= X.mean(axis=-1, keepdims=True)
    norm = np.sqrt(np.einsum("kbn,kbn->kb", X, X))[..., None]
    denom = np.maximum(norm, eps)
    X /= denom  # the unit rows u (of z) and v (of e)
    rho = np.einsum("bn,bn->b", X[0], X[1])
    B = rho.shape[0]
    scale = (np.ones(B) if weight is None else np.full(B, -weight / B))[:, None]
    grads = []
    for i, x in ((0, z), (1, e)):
        if x.requires_grad and torch.is_grad_enabled():
            g = (scale / denom[i]) * (X[1 - i] - ((norm[i] >= eps) * rho[:, None]) * X[i])
            grads.append((x, torch.from_numpy(g.astype(np.float32)).to(x.dtype)))
    if weight is None:
        value = torch.from_numpy(rho.astype(np.float32))
    else:
        value = torch.tensor(-weight * rho.mean(), dtype=torch.float32)
    return _linearised(value, grads, weight is None)


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


# --- registration ------------------------------------------------------------------------
@hookimpl
def ogan_backends() -> list[Backend]:
    triton_text = (
        "fused Triton kernels (1 launch forward, 1 backward); CUDA, or CPU on request "
        "under TRITON_INTERPRET=1"
    )
    compiled_text = "torch.compile of the reference; only on request (backend='compiled')"
    implementations = {
        "pearson": (pearson_triton, pearson_compiled, pearson_torch),
        "correlation_loss": (correlation_loss_triton, correlation_loss_compiled, correlation_loss_torch),
    }
    return [
        backend
        for op, (triton_fn, compiled_fn, reference_fn) in implementations.items()
        for backend in (
            Backend(op, "triton", triton_fn, 10, triton_serves, triton_problem, triton_text, probe=triton_probe),
            Backend(op, "compiled", compiled_fn, 5, _explicit_only, description=compiled_text),
            Backend(op, "reference", reference_fn, 0, description="torch ops with a closed-form backward, any device"),
        )
    ]


def _explicit_only(device_type: str, explicit: bool) -> bool:
    return explicit
