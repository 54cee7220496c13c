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
  On CUDA it calls the ``torch.library`` operators of :mod:`ogan_plugin.kernels.ops` so
  that ``torch.compile`` traces it without a graph break.
* ``compiled`` (priority 5, only on request): ``torch.compile`` of the reference.  It is
  never picked automatically: on CUDA the fused kernels are preferred, and on CPU the
  compile warm-up (seconds per new shape) costs more than it saves at O-GAN sizes.
* ``reference`` (priority 0): the torch reference with plain autograd, everywhere.

Kernel design.  A program handles ``ROWS`` rows at once (several rows per program when rows
are short, so a program always sees ~``TILE`` elements, 8 per thread) as a (ROWS, BLOCK_N)
tile.  When a row fits in one block (n <= ``MAX_BLOCK``) the tile is loaded once and every
statistic is computed from registers.  Longer rows loop over column chunks in three passes
(max-abs scale, approximate mean, centred moments; see :func:`_pair_stats_chunked`).  Loads
are strided (non-contiguous inputs are read in place, with 64-bit offsets) and converted to
float32; gradients are written in the inputs' dtypes.  The backward recomputes the row
statistics from z and e instead of storing them: for rows of one block this reads exactly
what a saved-statistics backward would read (z and e once) and it keeps the forward free of
extra outputs.  The loss (a mean over rows) is finished inside the forward launch: every
program writes its partial sum, and the last program to finish (an acq_rel atomic ticket)
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

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from ogan_plugin.hookspecs import hookimpl
from ogan_plugin.registry import NOT_PROBED, Backend

#: Norm floor of the correlation (see the module docstring).
EPS = 1e-6

#: Longest row processed as one block; longer rows are processed in chunks of this size.
MAX_BLOCK = 4096
#: Narrowest block: rows up to this long share one compiled configuration (masked columns).
MIN_BLOCK = 32
#: Target number of elements (per input) one program handles: rows per program = TILE // BLOCK_N.
TILE = 2048
#: Most rows one program handles.
MAX_ROWS = 64
#: Elements of each input tile per thread: num_warps = tile / (32 * this), at most MAX_WARPS.
#: 8 keeps every configuration well under 128 registers per thread, without spills, at
#: sm_90a and sm_80 (``ogan-plugin bench --compile``; the table is in docs/kernels.md).
ELEMENTS_PER_THREAD = 8
#: Most warps per program (the 4096-wide block uses 16).
MAX_WARPS = 16
#: Partial sums the last program adds per loop step (fixed: the grid never changes a constant).
RBLOCK = 256
#: Triton's floating-point fusion (FMA contraction), set on every launch and in the
#: ahead-of-time report: Triton 3.9 warns that its implicit default changes in 3.10.
FP_FUSION = True

#: ``triton.language`` once :meth:`_LazyTriton.build` has run; the kernels below use ``tl``
#: only inside their bodies (their annotations are strings), so this file imports without Triton.
tl: Any = None

#: plain kernel function -> its ``triton.jit`` version (shared by every kernel module).
_JITTED: dict[Callable[..., Any], Any] = {}
#: kernel function -> the arguments Triton must not specialise on (see ``_LazyTriton.kernel``)
_NO_SPECIALIZE: dict[Callable[..., Any], tuple[str, ...]] = {}
_BUILD_LOCK = threading.RLock()


class _LazyTriton:
    """Collects a module's Triton kernels and decorates them with ``triton.jit`` on first use.

    ``build()`` imports Triton, jits every collected function, and rebinds the module's
    globals (including helpers imported from another kernel module) to the jitted
    versions, so kernels call each other by name as in ordinary Triton code.
    """

    def __init__(self, module_globals: dict[str, Any], depends: tuple["_LazyTriton", ...] = ()) -> None:
        self._globals = module_globals
        self._depends = depends
        self._functions: list[Callable[..., Any]] = []
        self.built = False

    def kernel(self, fn: Optional[Callable[..., Any]] = None, *, do_not_specialize: tuple[str, ...] = ()) -> Any:
        """Decorator: mark ``fn`` as a Triton function of this module.

        ``do_not_specialize`` names integer arguments Triton must not specialise on (by
        default it compiles a separate variant for an argument equal to 1 and tracks
        divisibility by 16): the batch size and runtime flags, so that a new batch size
        (the last partial batch) or another flag value reuses the compiled kernel.
        """
        if fn is None:
            return lambda f: self.kernel(f, do_not_specialize=do_not_specialize)
        self._functions.append(fn)
        if do_not_specialize:
            _NO_SPECIALIZE[fn] = tuple(do_not_specialize)
        return fn

    def build(self) -> None:
        """Import Triton and jit the collected functions (once per process)."""
        if self.built:
            return
        with _BUILD_LOCK:
            if self.built:
                return
            for dep in self._depends:
                dep.build()
            import triton
            import triton.language as language

            _check_interpreter(language)
            for fn in self._functions:
                if fn not in _JITTED:
                    names = _NO_SPECIALIZE.get(fn)
                    _JITTED[fn] = triton.jit(fn, do_not_specialize=names) if names else triton.jit(fn)
            for name, value in list(self._globals.items()):
                if callable(value) and not isinstance(value, type):
                    try:
                        jitted = _JITTED.get(value)
                    except TypeError:  # unhashable callable
                        continue
                    if jitted is not None:
                        self._globals[name] = jitted
            self._globals["tl"] = language
            self.built = True


def _check_interpreter(language: Any) -> None:
    """Fail clearly when ``TRITON_INTERPRET=1`` was set after Triton was imported.

    Triton decides at import whether its own library functions (``tl.max``, ...) are
    interpreted; set the variable before anything imports triton (``import ogan_plugin``
    does, through ``torch._dynamo``).
    """
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(language.max, InterpretedFunction):
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after triton was imported, so Triton's interpreter cannot "
            "run the kernels; set it before importing ogan_plugin (e.g. in the environment)"
        )


_TRITON = _LazyTriton(globals())


def triton_problem() -> Optional[str]:
    """``None`` when Triton can be imported here, else the reason it cannot."""
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken installation raising anything
        return f"triton cannot be imported ({type(exc).__name__}: {exc})"
    major = str(getattr(triton, "__version__", "")).split(".")[0]
    if major.isdigit() and int(major) < 3:
        return f"triton {triton.__version__} is too old (need >= 3.0)"
    return None


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


def triton_serves(device_type: str, explicit: bool) -> bool:
    """The Triton backends run on CUDA; on CPU only on request under ``TRITON_INTERPRET=1``."""
    if device_type == "cuda":
        return True
    return device_type == "cpu" and explicit and os.environ.get("TRITON_INTERPRET") == "1"


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
    ``pearson`` and ``correlation_loss``.
    """
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    row_mask = rows < B
    if ONE_BLOCK:
        _u, _v, _dz, _de, _az, _ae, rho, _me, _mask = _pair_tiles(
            z_ptr, e_ptr, rows, row_mask, n, szb, szn, seb, sen, eps, BLOCK_N
        )
    else:
        _a, _b, _c, _d, _e, _f, _g, _h, _i, _j, _k, _l, rho, _m = _pair_stats_chunked(
            z_ptr, e_ptr, rows, row_mask, n, szb, szn, seb, sen, eps, ROWS, BLOCK_N
        )
    if store_rho:
        tl.store(rho_ptr + rows, rho, mask=row_mask)
    if loss:
        tl.store(part_ptr + pid, tl.sum(tl.where(row_mask, rho, 0.0), axis=0))
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
def _next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def launch_config(B: int, n: int, max_block: Optional[int] = None) -> dict[str, int]:
    """Tile shape for (B, n) rows: BLOCK_N, ROWS, ONE_BLOCK, num_warps and the grid size.

    Everything but the grid depends on the row length ``n`` alone (see :data:`TILE`), so
    every batch size reuses one compiled kernel per row-length bucket.
    """
    max_block = MAX_BLOCK if max_block is None else max_block
    block_n = min(max(_next_pow2(n), MIN_BLOCK), _next_pow2(max_block))
    rows = max(1, min(TILE // block_n, MAX_ROWS))
    tile = rows * block_n
    # one-row programs (rows of TILE and longer) take the most warps: at 2048 x 1 with 8
    # warps, sm_80's ptxas spills in the strided forward; with 16 it builds clean
    num_warps = MAX_WARPS if rows == 1 else max(1, min(MAX_WARPS, tile // (32 * ELEMENTS_PER_THREAD)))
    return {
        "BLOCK_N": block_n,
        "ROWS": rows,
        "ONE_BLOCK": int(n <= block_n),
        "num_warps": num_warps,
        "grid": -(-B // rows),
    }


def _alloc(shape: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Output buffers of the launchers (uninitialised; the tests poison them through this)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _device_guard(device: torch.device) -> Any:
    """Make ``device`` the current CUDA device while a launch is prepared and made.

    Triton launches on the *current* device and on that device's current stream, not on
    the device of the tensors, and ``torch.library`` operators add no guard: with
    tensors on ``cuda:1`` while ``cuda:0`` is current, a launch would run on the wrong
    device.  Under this guard it runs on the tensors' device and its current stream.
    """
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Launch:
    """One kernel launch, fully described before it runs.

    The launchers run it; :mod:`ogan_plugin.bench.compile` compiles the same
    description for a GPU target without running it (the signature Triton derives from
    ``args`` is the one a real launch compiles).
    """

    kernel: Any
    grid: int
    args: tuple[Any, ...]
    options: dict[str, Any]

    def run(self) -> None:
        self.kernel[(self.grid,)](*self.args, **self.options)


_TICKETS: dict[Any, Tensor] = {}
_TICKETS_LOCK = threading.Lock()


def _ticket(device: torch.device) -> Tensor:
    """The zeroed int32 counter of :func:`_finish_sums` for this device and stream.

    Every launch leaves it at 0, so one counter per stream is reused (launches on one
    stream never overlap).  While a CUDA graph is being captured a fresh one is made
    (its zeroing is captured with the graph).  Called under :func:`_device_guard`.
    """
    if device.type == "cuda":
        if torch.cuda.is_current_stream_capturing():
            return torch.zeros(1, dtype=torch.int32, device=device)
        key: Any = ("cuda", device.index, torch.cuda.current_stream(device).cuda_stream)
    else:
        key = (device.type, device.index)
    found = _TICKETS.get(key)
    if found is None:
        with _TICKETS_LOCK:
            found = _TICKETS.setdefault(key, torch.zeros(1, dtype=torch.int32, device=device))
    return found


def _forget_ticket(device: torch.device) -> None:
    """Drop the cached counters of ``device`` (after a failed launch left one non-zero)."""
    with _TICKETS_LOCK:
        for key in [k for k in _TICKETS if k[0] == device.type and k[1] == device.index]:
            del _TICKETS[key]


def _launched(device: torch.device, describe: Callable[..., tuple[Any, ...]], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """Describe a launch (``describe(*args, **kwargs) -> (Launch or None, *outputs)``) and run it
    under the guard of ``device``; returns the outputs.  A failed launch may leave the ticket
    non-zero, so the device's cached tickets are dropped before the error propagates."""
    with _device_guard(device):
        launch, *outputs = describe(*args, **kwargs)
        if launch is not None:
            try:
                launch.run()
            except BaseException:
                _forget_ticket(device)
                raise
    return tuple(outputs)


def _options(cfg: dict[str, int]) -> dict[str, Any]:
    """Constexprs and compile options shared by every launch of a configuration."""
    return {
        "ROWS": cfg["ROWS"], "BLOCK_N": cfg["BLOCK_N"], "ONE_BLOCK": cfg["ONE_BLOCK"],
        "num_warps": cfg["num_warps"], "enable_fp_fusion": FP_FUSION,
    }


def forward_launch(
    z: Tensor, e: Tensor, eps: float = EPS, *, loss_weight: Optional[float] = None, max_block: Optional[int] = None
) -> tuple[Launch, Tensor]:
    """The forward launch for (z, e) and its output (allocated, not yet written)."""
    _TRITON.build()
    B, n = z.shape
    cfg = launch_config(B, n, max_block)
    loss = loss_weight is not None
    # the ticket is passed in both modes: the same pointer types keep one compiled kernel
    count = _ticket(z.device)
    if loss:  # rho is not stored; the programs' partial sums and the ticket finish the mean
        out = rho = _alloc((), torch.float32, z.device)
        parts = _alloc(cfg["grid"], torch.float32, z.device)
    else:  # only rho is written (the other pointers are unused)
        rho = _alloc(B, torch.float32, z.device)
        out = parts = rho
    args = (
        z, e, rho, parts, count, out,
        B, n, z.stride(0), z.stride(1), e.stride(0), e.stride(1),
        float(eps), -float(loss_weight) / B if loss else 0.0, int(not loss), int(loss),
    )
    return Launch(_pearson_fwd_kernel, cfg["grid"], args, {**_options(cfg), "RBLOCK": RBLOCK}), out


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
    cfg = launch_config(B, n, max_block)
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
    return Launch(_pearson_bwd_kernel, cfg["grid"], args, _options(cfg)), gz, ge


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
class _PearsonFunction(torch.autograd.Function):
    """rho = pearson(z, e) through the Triton launchers (the CPU-interpreter path)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, e: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, e)
        ctx.eps = eps
        return pearson_forward(z, e, eps)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None]:
        z, e = ctx.saved_tensors
        gz, ge = pearson_backward(grad, z, e, ctx.eps, 1.0, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return gz, ge, None


class _CorrelationLossFunction(torch.autograd.Function):
    """-weight * mean(rho) through the Triton launchers (the CPU-interpreter path)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, e: Tensor, weight: float, eps: float) -> Tensor:
        ctx.save_for_backward(z, e)
        ctx.eps, ctx.weight = eps, weight
        return pearson_forward(z, e, eps, loss_weight=weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None, None]:
        z, e = ctx.saved_tensors
        B = z.shape[0]
        gz, ge = pearson_backward(
            grad.expand(B), z, e, ctx.eps, -ctx.weight / B, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        return gz, ge, None, None


@torch.compiler.disable
def _interpreted(function: type[torch.autograd.Function], *args: Any) -> Tensor:
    return function.apply(*args)


def _has_float64(*tensors: Tensor) -> bool:
    return any(t.dtype == torch.float64 for t in tensors)


def pearson_triton(z: Tensor, e: Tensor, eps: float = EPS) -> Tensor:
    """Backend ``triton`` of op ``pearson`` (float64 inputs use the reference, in float64).

    CUDA tensors go through the ``ogan_plugin::pearson`` operator (traced by
    ``torch.compile``); CPU tensors run the same launchers in Triton's interpreter, except
    under ``torch.compile``, which traces the operator on every device (on CPU its
    implementation is the reference).
    """
    if _has_float64(z, e):
        return pearson_reference(z, e, eps)
    if z.device.type == "cuda" or torch.compiler.is_compiling():
        return torch.ops.ogan_plugin.pearson(z, e, eps)
    return _interpreted(_PearsonFunction, z, e, eps)


def correlation_loss_triton(z: Tensor, e: Tensor, weight: float = 0.5, eps: float = EPS) -> Tensor:
    """Backend ``triton`` of op ``correlation_loss`` (see :func:`pearson_triton`)."""
    if _has_float64(z, e):
        return correlation_loss_reference(z, e, weight, eps)
    if z.device.type == "cuda" or torch.compiler.is_compiling():
        return torch.ops.ogan_plugin.correlation_loss(z, e, weight, eps)
    return _interpreted(_CorrelationLossFunction, z, e, weight, eps)


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


# --- registration ------------------------------------------------------------------------
@hookimpl
def ogan_backends() -> list[Backend]:
    triton_text = (
        "fused Triton kernels (1 launch forward, 1 backward); CUDA, or CPU on request "
        "under TRITON_INTERPRET=1"
    )
    compiled_text = "torch.compile of the reference; only on request (backend='compiled')"
    implementations = {
        "pearson": (pearson_triton, pearson_compiled, pearson_reference),
        "correlation_loss": (correlation_loss_triton, correlation_loss_compiled, correlation_loss_reference),
    }
    return [
        backend
        for op, (triton_fn, compiled_fn, reference_fn) in implementations.items()
        for backend in (
            Backend(op, "triton", triton_fn, 10, triton_serves, triton_problem, triton_text, probe=triton_probe),
            Backend(op, "compiled", compiled_fn, 5, _explicit_only, description=compiled_text),
            Backend(op, "reference", reference_fn, 0, description="torch reference (autograd), any device"),
        )
    ]


def _explicit_only(device_type: str, explicit: bool) -> bool:
    return explicit
