"""Triton device functions shared by the fused kernels: tiles, row statistics, last-program sums.

The building blocks of :mod:`ogan_plugin.kernels.pearson` and
:mod:`ogan_plugin.kernels.single_loss` (the design is in pearson's docstring): loading a
strided tile as float32, centring and scaling rows, the norm floor, the unit rows of a
(z, e) pair for rows of one block or in chunks, and the deterministic sum finished by the
last program to arrive.  Like the kernels, they are decorated with ``triton.jit`` when a
kernel module first builds (this module's :data:`_TRITON`), so importing this file needs no
Triton.
"""

from __future__ import annotations

from typing import Any

from ogan_plugin.kernels.launch import _LazyTriton

#: ``triton.language`` once :data:`_TRITON` has built; used only inside the function bodies.
tl: Any = None
_TRITON = _LazyTriton(globals())


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
