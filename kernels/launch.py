"""Launch machinery shared by the fused kernels of :mod:`ogan_plugin.kernels`.

What every kernel file needs besides its own kernels: the tile constants and
:func:`launch_config` (the tile shape of a row length), Triton's lazy import and jitting
(:class:`_LazyTriton`), whether Triton can run here (:func:`triton_problem`,
:func:`triton_serves`), the output allocator, the device guard, the per-stream ticket of
the last-program reductions, and :class:`Launch` (one launch, described before it runs,
which ``ogan-plugin bench --compile`` also compiles ahead of time).

Host cost.  At the sizes GANs use, a fused call is host time, so everything here that
does not change between calls is computed once: :func:`launch_config` and the launch
options are cached per row length, the ticket of a stream is found by the stream's raw
handle, and the device guard is a no-op context when the tensors' device is already the
current one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor

#: Longest row processed as one block; longer rows are processed in chunks of this size.  2048
#: (not 4096): the 4096-wide tiles spilled with Triton 3.6's ptxas (8 to 32 bytes), and a chunk
#: of 4096 in the loop over row blocks spilled with 3.9's.
MAX_BLOCK = 2048
#: Narrowest block: rows up to this long share one compiled configuration (masked columns).
MIN_BLOCK = 32
#: Target number of elements (per input) one program handles: rows per program = TILE // BLOCK_N.
TILE = 2048
#: Most rows one program handles.
MAX_ROWS = 64
#: Elements of each input tile per thread: num_warps = tile / (32 * this), at most MAX_WARPS.
#: 8 keeps every configuration well under 128 registers per thread, without spills, at
#: sm_90a and sm_80 (``ogan-plugin bench --compile``; the table is in docs/kernels.md).
ELEMENTS_PER_THREAD = 4
#: Most warps per program (the one-row programs, 2048 wide, use 16: 4 elements per thread).
MAX_WARPS = 16
#: Partial sums the last program adds per loop step (fixed: the grid never changes a constant).
RBLOCK = 256
#: Triton's floating-point fusion (FMA contraction), set on every launch and in the
#: ahead-of-time report: Triton 3.9 warns that its implicit default changes in 3.10.
FP_FUSION = True
#: Most programs of a launch that finishes a sum in its last program (the forward's loss,
#: the objective): each program loops over row blocks, so the partial sums, and the atomic
#: tickets that order them, stay few at any batch size (1 program per 1 to 4 SMs' worth of
#: resident tiles on current GPUs).
MAX_PROGRAMS = 1024

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


def triton_serves(device_type: str, explicit: bool) -> bool:
    """The Triton backends run on CUDA; on CPU only on request under ``TRITON_INTERPRET=1``."""
    if device_type == "cuda":
        return True
    return device_type == "cpu" and explicit and os.environ.get("TRITON_INTERPRET") == "1"

# --- launches ------------------------------------------------------------------------------
def _next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def launch_config(B: int, n: int, max_block: Optional[int] = None) -> dict[str, int]:
    """Tile shape for (B, n) rows: BLOCK_N, ROWS, ONE_BLOCK, num_warps and the grid size.

    Everything but the grid depends on the row length ``n`` alone (see :data:`TILE`), so
    every batch size reuses one compiled kernel per row-length bucket.  ``grid`` is the
    number of row blocks (a program each); launches that finish a sum in their last program
    cap it at :data:`MAX_PROGRAMS` (:func:`tile_for` and :func:`programs`).
    """
    cfg, _ = tile_for(n, max_block)
    return {**cfg, "grid": -(-B // cfg["ROWS"])}


def tile_for(n: int, max_block: Optional[int] = None) -> tuple[dict[str, int], dict[str, Any]]:
    """(the tile of rows of length ``n``, the launch options of that tile); cached.

    The options are the constexprs and compile options every launch of the tile passes.
    The cache key includes the module's tile constants, so changing one (the tests, the
    benchmark's sweeps) gives the new tile.
    """
    return _tile(int(n), MAX_BLOCK if max_block is None else int(max_block), MIN_BLOCK, TILE, MAX_ROWS,
                 ELEMENTS_PER_THREAD, MAX_WARPS, FP_FUSION)


@functools.lru_cache(maxsize=None)
def _tile(n: int, max_block: int, min_block: int, tile_elems: int, max_rows: int, per_thread: int, max_warps: int,
          fp_fusion: bool) -> tuple[dict[str, int], dict[str, Any]]:
    block_n = min(max(_next_pow2(n), min_block), _next_pow2(max_block))
    rows = max(1, min(tile_elems // block_n, max_rows))
    tile = rows * block_n
    # one-row programs (rows of TILE and longer): the one-block tile takes the most warps (at
    # 2048 x 1 with 8 warps sm_80's ptxas spilled in the strided forward); the chunk of a
    # longer row takes 4 warps, 16 elements per thread: with 16 or 8 warps ptxas (Triton 3.6
    # and 3.9, sm_80 and sm_90a) spilled the chunk loops' per-row state, with 4 none does
    if rows == 1:
        num_warps = max_warps if n <= block_n else max(1, min(max_warps, tile // (32 * 16)))
    else:
        num_warps = max(1, min(max_warps, tile // (32 * per_thread)))
    cfg = {"BLOCK_N": block_n, "ROWS": rows, "ONE_BLOCK": int(n <= block_n), "num_warps": num_warps}
    options = {"ROWS": rows, "BLOCK_N": block_n, "ONE_BLOCK": cfg["ONE_BLOCK"], "num_warps": num_warps,
               "enable_fp_fusion": fp_fusion}
    return cfg, options


def programs(B: int, rows: int) -> int:
    """Programs of a launch whose programs loop over row blocks: one per block, at most
    :data:`MAX_PROGRAMS` (each program then takes every ``grid``-th block)."""
    return max(1, min(-(-B // rows), MAX_PROGRAMS))


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
        key: Any = ("cuda", device.index, _raw_stream(device))
    else:
        key = (device.type, device.index)
    found = _TICKETS.get(key)
    if found is None:
        with _TICKETS_LOCK:
            found = _TICKETS.setdefault(key, torch.zeros(1, dtype=torch.int32, device=device))
    return found


def _raw_stream(device: torch.device) -> int:
    """The handle of ``device``'s current CUDA stream (what Triton launches on)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if _GET_RAW_STREAM is not None:
        return _GET_RAW_STREAM(index)
    return torch.cuda.current_stream(index).cuda_stream


#: torch's C getter of the current stream's handle (what inductor's generated code calls);
#: None in CPU-only builds of torch, where no CUDA stream exists anyway.
_GET_RAW_STREAM: Optional[Callable[[int], int]] = getattr(torch._C, "_cuda_getCurrentRawStream", None)


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


