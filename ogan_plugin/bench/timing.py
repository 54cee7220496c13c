"""Timing helpers shared by the benchmarks: device parsing, synchronisation, medians.

Wall clock (``time.perf_counter``) on the CPU; CUDA events on a GPU.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch

__all__ = ["sync", "median_seconds", "parse_device", "device_name", "sig"]


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so wall-clock times are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, iters: int, warmup: int) -> float:
    """Median seconds of ``fn()`` over ``iters`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    if device.type == "cuda":
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sig(x: float) -> float:
    """``x`` rounded to 4 significant digits (for tables and CSV files)."""
    return float(f"{x:.4g}")


def parse_device(text: str) -> torch.device:
    """``text`` as a cpu/cuda ``torch.device``; ``ValueError`` for anything else or a missing GPU."""
    try:
        dev = torch.device(text)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {text!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device")
    return dev


def device_name(dev: torch.device) -> str:
    """A one-line description of ``dev`` for benchmark headers (GPU name, or CPU and threads)."""
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


