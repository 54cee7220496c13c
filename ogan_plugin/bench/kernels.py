"""The kernel benchmark (``ogan-plugin bench``): time forward+backward of the fused operations for every backend.

For each operation (``pearson``, ``correlation_loss``, ``ogan_objective``), each backend
that can run on the device, and each (B, n) of the sweep, it times one training use of the
operation: the forward and the backward w.r.t. the encodings ``e`` (the noise ``z`` needs
no gradient), or for ``ogan_objective`` (which returns gradients) one call with the QP loss.

Timing: median over ``iters`` repetitions after ``warmup`` calls.  On the CPU one call per
repetition, wall clock (``time.perf_counter``).  On a GPU each repetition is
:data:`CUDA_CALLS` back-to-back calls between one pair of CUDA events (time per call =
elapsed / calls), after the L2 cache was flushed: a single call between two events would
mostly time the events and the launch gaps at small sizes.  The calls include what a
training step pays per use: Python, autograd and launch overhead, which bounds the time of
small problems (a CUDA graph would remove it).

Effective bandwidth: ``effective GB/s`` divides the bytes the fused Triton kernels must
move by the median time per call: ``pearson``/``correlation_loss`` read z and e in the
forward and again in the backward and write the gradient of e (5 * B * n * itemsize);
``ogan_objective`` reads e_real, e_fake and z and writes three gradients
(6 * B * n * itemsize).  The same byte count is used for every backend, so the column
compares like with like.  It is not a measure of DRAM traffic: the L2 cache is flushed
before each repetition only, so a working set smaller than L2 (about 50 MB on an H100) is
read from L2 by the calls after the first, and the backward's re-read of z and e can hit
L2 at any size; the effective bandwidth can then exceed the copy bandwidth printed in the
header (2 * bytes of a large ``Tensor.copy_`` / its time).

The training-step benchmark is :mod:`ogan_plugin.bench.step` (``ogan-plugin bench --step``).
"""

from __future__ import annotations

import csv as csv_module
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch

from ogan_plugin.bench.timing import device_name, median_seconds, sig
from ogan_plugin.checks import check_int
from ogan_plugin.networks import parse_device

__all__ = ["BenchRow", "parse_sizes", "copy_bandwidth", "run_kernel_benchmark", "format_table", "write_csv", "plot"]

#: operations timed by default
BENCH_OPS = ("pearson", "correlation_loss", "ogan_objective")
#: default (B, n) sweeps per device type
DEFAULT_SIZES = {
    "cpu": "64x128,256x512,1024x512",
    "cuda": "256x128,256x512,256x4096,4096x512,65536x512",
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: calls timed between one pair of CUDA events (one repetition)
CUDA_CALLS = 20


@dataclass
class BenchRow:
    """One timed (operation, backend, shape)."""

    device: str
    op: str
    backend: str
    B: int
    n: int
    dtype: str
    median_us: float
    effective_gbps: float
    speedup_vs_reference: Optional[float]


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"256x512,4096x512"`` -> ``[(256, 512), (4096, 512)]`` (B >= 1, n >= 2)."""
    sizes = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        try:
            b, n = (int(v) for v in item.split("x"))
        except ValueError:
            raise ValueError(f"--sizes: {item!r} is not of the form BxN (e.g. 256x512)") from None
        if b < 1 or n < 2:
            raise ValueError(f"--sizes: {item!r} needs B >= 1 and n >= 2")
        sizes.append((b, n))
    if not sizes:
        raise ValueError("--sizes is empty")
    return sizes


def copy_bandwidth(device: torch.device, megabytes: Optional[int] = None, iters: int = 10) -> float:
    """Measured copy bandwidth of ``device`` in GB/s (2 * bytes copied / median time)."""
    megabytes = megabytes or (1024 if device.type == "cuda" else 64)
    numel = megabytes * (1 << 20) // 4
    src = torch.ones(numel, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    calls = CUDA_CALLS if device.type == "cuda" else 1
    seconds = median_seconds(lambda: dst.copy_(src), device, iters, warmup=2, calls=calls)
    return 2 * src.numel() * 4 / seconds / 1e9


def _step(op: str, fn: Callable, B: int, n: int, dtype: torch.dtype, device: torch.device) -> tuple[Callable[[], object], int]:
    """A closure running ``op`` forward+backward once, and the bytes the fused kernels move."""
    from ogan_plugin.kernels.pearson import EPS

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(B, n, generator=gen).to(device=device, dtype=dtype)
    e = (0.5 * z.float().cpu() + torch.randn(B, n, generator=gen)).to(device=device, dtype=dtype)
    size = B * n * z.element_size()
    if op == "pearson":
        e.requires_grad_(True)
        grad = torch.ones(B, device=device)

        def run() -> object:
            return torch.autograd.grad(fn(z, e, EPS), (e,), grad)

        return run, 5 * size
    if op == "correlation_loss":
        e.requires_grad_(True)

        def run() -> object:
            return torch.autograd.grad(fn(z, e, 0.5, EPS), (e,))

        return run, 5 * size
    if op == "ogan_objective":
        e_real = torch.randn(B, n, generator=gen).to(device=device, dtype=dtype)
        dist = (torch.rand(B, generator=gen) + 0.1).to(device)

        def run() -> object:
            return fn(e_real, e, z, dist, "qp", 0.5, 0.5, EPS)

        return run, 6 * size
    raise ValueError(f"unknown op {op!r}; known: {list(BENCH_OPS)}")


def run_kernel_benchmark(
    sizes: Sequence[tuple[int, int]],
    device: str = "cpu",
    dtype: str = "float32",
    ops: Sequence[str] = BENCH_OPS,
    backends: Optional[Sequence[str]] = None,
    iters: int = 20,
    warmup: int = 3,
    out: Callable[[str], None] = print,
) -> list[BenchRow]:
    """Time every (op, backend, size); returns the rows (and reports skipped backends to ``out``).

    ``backends`` restricts the backends (default: every registered one that can run on
    ``device``).  On a CPU the ``triton`` rows are skipped with a note: the interpreter that
    runs the kernels on a CPU is for testing, not timing.
    """
    from ogan_plugin.registry import OPS, get_registry

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    check_int("iters", iters, 1)
    check_int("warmup", warmup, 0)
    dev = parse_device(device, "device", ("cpu", "cuda"))
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"unknown ops {unknown}; known: {list(BENCH_OPS)}")
    reg = get_registry()
    copy_gbps = copy_bandwidth(dev)
    out(f"device: {device_name(dev)}; measured copy bandwidth {copy_gbps:.1f} GB/s")
    rows: list[BenchRow] = []
    notes: set[str] = set()
    for op in ops:
        for b in reg.backends(op):
            if backends is not None and b.name not in backends:
                continue
            if b.name == "triton" and dev.type != "cuda":
                notes.add("triton: the Triton rows need a GPU (CUDA); this machine has none "
                          "(the CPU interpreter runs the kernels for testing, not for timing)")
                continue
            reason = b.check()
            if reason is None and not b.serves(dev.type, True):
                reason = f"does not run on {dev.type!r}"
            if reason is not None:
                notes.add(f"{b.name}: skipped for {op}: {reason}")
                continue
            for B, n in sizes:
                try:
                    run, nbytes = _step(op, b.fn, B, n, DTYPES[dtype], dev)
                    seconds = median_seconds(run, dev, iters, warmup, calls=CUDA_CALLS if dev.type == "cuda" else 1,
                                             flush_l2=dev.type == "cuda")
                except Exception as exc:  # a backend failing here (e.g. no C++ compiler for torch.compile)
                    notes.add(f"{b.name}: failed for {op} at {B}x{n}: {type(exc).__name__}: {exc}")
                    break
                gbps = nbytes / seconds / 1e9
                rows.append(BenchRow(str(dev), op, b.name, B, n, dtype, sig(seconds * 1e6), sig(gbps), None))
    reference = {(r.op, r.B, r.n): r.median_us for r in rows if r.backend == "reference"}
    for r in rows:
        base = reference.get((r.op, r.B, r.n))
        r.speedup_vs_reference = round(base / r.median_us, 2) if base else None
    for note in sorted(notes):
        out(note)
    return rows



def format_table(rows: Sequence[BenchRow]) -> str:
    """The rows as an aligned text table."""
    head = ("op", "backend", "B", "n", "dtype", "median us", "effective GB/s", "vs reference")
    body = [
        (r.op, r.backend, str(r.B), str(r.n), r.dtype, f"{r.median_us:.1f}", f"{r.effective_gbps:.3g}",
         "" if r.speedup_vs_reference is None else f"{r.speedup_vs_reference:.2f}x")
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i < 2 or i == 4 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*line) for line in body])


def write_csv(rows: Sequence[BenchRow], path: str) -> None:
    """Write the rows to ``path`` (one header line, one line per row)."""
    fields = list(BenchRow.__dataclass_fields__)
    with open(path, "w", newline="") as fh:
        writer = csv_module.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow(asdict(r))


_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def plot(rows: Sequence[BenchRow], path: str, title: str = "") -> None:
    """Draw a PNG chart of the rows with Pillow: one panel per op, log time per size and backend."""
    import math

    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:  # pragma: no cover - Pillow is in the demo and test extras
        raise ImportError("--plot needs Pillow: pip install 'ogan-plugin[demo]'") from None
    if not rows:
        raise ValueError("nothing to plot: no benchmark rows")
    ops = list(dict.fromkeys(r.op for r in rows))
    backends = list(dict.fromkeys(r.backend for r in rows))
    sizes = list(dict.fromkeys((r.B, r.n) for r in rows))
    pw, ph, left, top, bottom = 420, 340, 62, 46, 70
    img = Image.new("RGB", (pw * len(ops), ph + 28 * ((len(backends) + 2) // 3)), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((8, 4), title or "ogan-plugin bench: median forward+backward time (log scale)", fill="black", font=font)
    times = [r.median_us for r in rows]
    lo, hi = math.floor(math.log10(min(times))), math.ceil(math.log10(max(times)))
    hi = max(hi, lo + 1)
    for k, op in enumerate(ops):
        x0, x1, y0, y1 = k * pw + left, (k + 1) * pw - 16, top, ph - bottom
        draw.rectangle((x0, y0, x1, y1), outline="black")
        draw.text((x0, y0 - 16), op, fill="black", font=font)
        for d in range(lo, hi + 1):
            y = y1 - (d - lo) / (hi - lo) * (y1 - y0)
            draw.line((x0, y, x1, y), fill=(220, 220, 220))
            draw.text((k * pw + 4, y - 6), f"1e{d} us", fill="black", font=font)
        step = (x1 - x0) / max(len(sizes), 1)
        for i, (B, n) in enumerate(sizes):
            draw.text((x0 + step * (i + 0.5) - 20, y1 + 6 + 12 * (i % 2)), f"{B}x{n}", fill="black", font=font)
        for j, backend in enumerate(backends):
            colour = _COLOURS[j % len(_COLOURS)]
            pts = []
            for i, size in enumerate(sizes):
                hit = [r for r in rows if r.op == op and r.backend == backend and (r.B, r.n) == size]
                if hit:
                    y = y1 - (math.log10(hit[0].median_us) - lo) / (hi - lo) * (y1 - y0)
                    pts.append((x0 + step * (i + 0.5), y))
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=2)
            for x, y in pts:
                draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
    for j, backend in enumerate(backends):
        x, y = 12 + 140 * (j % 3), ph + 6 + 28 * (j // 3)
        draw.rectangle((x, y + 2, x + 14, y + 12), fill=_COLOURS[j % len(_COLOURS)])
        draw.text((x + 20, y), backend, fill="black", font=font)
    img.save(path, format="PNG")
