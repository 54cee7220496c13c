"""Timing helpers shared by the benchmarks: synchronisation, medians, headers.

Wall clock (``time.perf_counter``) on the CPU; CUDA events around several calls on a GPU,
optionally after flushing the L2 cache.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch

__all__ = ["sync", "median_seconds", "flush_l2_cache", "device_name", "sig"]


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so wall-clock times are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    fn: Callable[[], object], device: torch.device, iters: int, warmup: int, calls: int = 1, flush_l2: bool = False
) -> float:
    """Median seconds per call of ``fn()`` over ``iters`` timed repetitions after ``warmup`` untimed calls.

    Each repetition times ``calls`` back-to-back calls and divides by ``calls``: wall
    clock on the CPU; on a GPU one pair of CUDA events around the ``calls`` calls, so
    the events' own cost and the gaps between single timed calls are spread over
    ``calls``.  With ``flush_l2`` (GPU) the L2 cache is flushed before each repetition
    (a buffer twice its size is overwritten), so a repetition starts cold; within it, a
    working set smaller than L2 stays cached after the first call.

    Args:
        fn: the work to time.
        device: where it runs (``cuda`` devices are timed with events).
        iters: timed repetitions.
        warmup: untimed calls first.
        calls: calls per repetition.
        flush_l2: flush the GPU's L2 cache before each repetition.

    Returns:
        The median over repetitions of the time per call, in seconds.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    if device.type == "cuda":
        for _ in range(iters):
            if flush_l2:
                flush_l2_cache(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / calls)
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


_FLUSH: dict[torch.device, torch.Tensor] = {}


def flush_l2_cache(device: torch.device) -> None:
    """Evict the GPU's L2 cache: overwrite a buffer twice its size (allocated once per device)."""
    buf = _FLUSH.get(device)
    if buf is None:
        l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 64 * 2**20)
        buf = _FLUSH.setdefault(device, torch.empty(2 * l2 // 4, dtype=torch.float32, device=device))
    buf.zero_()


def sig(x: float) -> float:
    """``x`` rounded to 4 significant digits (for tables and CSV files)."""
    return float(f"{x:.4g}")


def device_name(dev: torch.device) -> str:
    """A one-line description of ``dev`` for benchmark headers (GPU name, or CPU and threads)."""
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


