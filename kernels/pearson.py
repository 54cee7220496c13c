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

The file reads top to bottom: the Triton kernels, their launchers, the autograd glue, and
the ``ogan_backends`` hook registering three backends per operation.  Beside it:
:mod:`~ogan_plugin.kernels.pearson_torch` (the torch reference and the CPU's fast path, re-
exported here), :mod:`~ogan_plugin.kernels.rowstats` (the Triton device functions this file
and the single-loss objective share) and :mod:`~ogan_plugin.kernels.launch` (tiles,
launches, tickets).

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
from ogan_plugin.kernels import rowstats as _rowstats
from ogan_plugin.kernels.rowstats import (  # noqa: F401  (single_loss imports them from here too)
    _finish_sums,
    _load_tile,
    _pair_stats_chunked,
    _pair_tiles,
    _unit_chunk,
)
from ogan_plugin.registry import NOT_PROBED, Backend

from ogan_plugin.kernels.pearson_torch import (  # noqa: E402,F401  (the torch implementations, re-exported)
    EPS,
    _as_numpy,
    _numpy_path,
    correlation_loss_reference,
    correlation_loss_torch,
    pearson_grad_reference,
    pearson_reference,
    pearson_torch,
    unit_pair,
    unit_pair_grad,
    unit_rows,
)

#: ``triton.language`` once :meth:`_LazyTriton.build` has run; the kernels below use ``tl``
#: only inside their bodies (their annotations are strings), so this file imports without Triton.
tl: Any = None

_TRITON = _LazyTriton(globals(), depends=(_rowstats._TRITON,))


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
