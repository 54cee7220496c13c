"""``ogan-plugin bench --compile``: compile every kernel configuration for a GPU, without a GPU.

For a target such as ``sm_90a`` (H100/H200) or ``sm_80`` (A100) it compiles, with Triton's
own compiler, every configuration that :func:`ogan_plugin.kernels.pearson.launch_config`
can choose for rows 2 to 8192 wide, for the three kernels (``forward``: rho and the
correlation loss; ``backward``; ``objective``: the fused single loss) and three input
dtypes (float32, bfloat16, float16).  Then it runs the ``ptxas`` that ships inside the
Triton wheel with ``-v`` on each kernel's PTX, with the flags Triton itself passes, and
reports registers per thread, spilled bytes and shared memory.  No GPU, no driver.

Which configurations exist.  Everything the launcher passes to a kernel except the grid
depends on the row length alone, and many row lengths share one tile shape (a row of
300 and a row of 512 both use the 512-wide block), so widths 2..8192 compile to a small
set of tile shapes: :func:`configurations` groups the widths, and each group compiles
once per kernel and dtype.  The batch size, the flags that choose between ``pearson``
and ``correlation_loss``, the loss of the objective and the stride of the incoming
gradient are runtime arguments that Triton does not specialise on, so they never add a
compile.  Each build runs the kernel's real launch description
(:class:`~ogan_plugin.kernels.pearson.Launch`, built from CPU tensors of the group's
widest row, contiguous) through Triton's own launch binder, so the signature, constants
and alignment attributes are those of a real launch; Triton's on-disk cache keeps each
compiled configuration, so a second run only reruns ``ptxas``.

Builds run in worker processes (one per CPU core by default): the kernels must be
compiled, not interpreted, whatever ``TRITON_INTERPRET`` says in the calling process.

The CSV has one row per compiled configuration, with the columns
``kernel, width, rows, dtype, num_warps, registers, spills, shared_bytes``; ``width`` is
the widest row the configuration serves (8192 for the chunked loop, which serves every
longer row), ``spills`` the bytes ptxas spills (spill stores + spill loads) and
``shared_bytes`` the shared memory a launch requests (Triton's dynamic shared memory plus
any static shared memory ptxas reports).
"""

from __future__ import annotations

import csv as csv_module
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

__all__ = [
    "KERNELS", "DTYPES", "CompileRow", "PtxasMissing", "parse_target", "configurations", "find_ptxas",
    "compile_report", "compile_key", "format_report", "write_csv", "run_compile_command", "CSV_COLUMNS", "LAYOUTS",
]

#: the three kernels, by report name
KERNELS = ("forward", "backward", "objective")
#: input dtypes compiled (every input of a launch in that dtype)
DTYPES = ("float32", "bfloat16", "float16")
#: input layouts the report can compile (see :func:`_launch_for`)
LAYOUTS = ("contiguous", "strided")
#: row lengths covered
WIDTHS = range(2, 8193)
#: the CSV's columns, in order
CSV_COLUMNS = ("kernel", "width", "rows", "dtype", "num_warps", "registers", "spills", "shared_bytes")


@dataclass
class CompileRow:
    """One compiled configuration and what ptxas reports for it."""

    kernel: str
    width: int
    rows: int
    dtype: str
    num_warps: int
    registers: int
    spills: int
    shared_bytes: int
    min_width: int = 0
    block_n: int = 0
    chunked: bool = False
    seconds: float = 0.0
    error: str = ""


class PtxasMissing(RuntimeError):
    """The Triton wheel has no ptxas for the target (the message says where it looked)."""


def parse_target(text: str) -> int:
    """``"sm_90a"`` -> 90, ``"sm_80"`` -> 80; ``ValueError`` naming ``--target`` otherwise.

    Triton builds ``sm_NNa`` (architecture-specific features) for capability 90 and up
    and plain ``sm_NN`` below, so the spelling must match what Triton compiles.
    """
    m = re.fullmatch(r"sm_(\d+)(a?)", text.strip())
    if not m:
        raise ValueError(f"--target must look like sm_90a or sm_80, got {text!r}")
    capability = int(m.group(1))
    if capability < 70:
        raise ValueError(f"--target {text}: Triton needs compute capability >= 7.0")
    want = _arch(capability)
    if text.strip() != want:
        raise ValueError(f"--target {text}: Triton compiles capability {capability} as {want}; use --target {want}")
    return capability


def configurations(widths: Sequence[int] = WIDTHS) -> list[dict[str, int]]:
    """The distinct tile shapes ``launch_config`` chooses for ``widths``, each with the widths it serves.

    Each entry has ``BLOCK_N``, ``ROWS``, ``ONE_BLOCK``, ``num_warps``, ``min_width`` and
    ``width`` (the widest row it serves).
    """
    from ogan_plugin.kernels.pearson import launch_config

    groups: dict[tuple[int, int, int, int], list[int]] = {}
    for w in widths:
        cfg = launch_config(1, w)
        key = (cfg["BLOCK_N"], cfg["ROWS"], cfg["ONE_BLOCK"], cfg["num_warps"])
        groups.setdefault(key, []).append(w)
    return [
        {"BLOCK_N": k[0], "ROWS": k[1], "ONE_BLOCK": k[2], "num_warps": k[3], "min_width": min(ws), "width": max(ws)}
        for k, ws in sorted(groups.items(), key=lambda item: min(item[1]))
    ]


def find_ptxas(capability: int) -> tuple[str, str]:
    """Path and version line of the ptxas Triton uses for ``capability`` (:class:`PtxasMissing` if absent)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except Exception as exc:  # no triton, or a triton without the NVIDIA backend
        raise PtxasMissing(f"Triton's NVIDIA backend cannot be imported ({type(exc).__name__}: {exc})") from None
    try:
        tool = get_ptxas(capability)
    except RuntimeError as exc:
        import triton

        where = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
        raise PtxasMissing(
            f"the Triton wheel has no ptxas for sm_{capability} ({exc}; looked in {where}, "
            "or set TRITON_PTXAS_PATH / TRITON_PTXAS_BLACKWELL_PATH)"
        ) from None
    return tool.path, str(tool.version)


# --- one build (runs in a worker process) ------------------------------------------------
def _launch_for(kernel: str, width: int, dtype: str, layout: str = "contiguous"):  # -> pearson.Launch
    """The real launch description of ``kernel`` for one row ``width`` wide in ``layout``.

    ``"contiguous"``: rows of consecutive elements (Triton specialises the column stride
    1 and vectorises the loads); ``"strided"``: a column stride of 2 (a sliced or
    transposed view: element-wise loads).  The batch size is not specialised, so one row
    stands for any batch.
    """
    import torch

    from ogan_plugin.kernels import pearson as P
    from ogan_plugin.kernels import single_loss as S

    P._TRITON.build()
    S._TRITON.build()
    dt = getattr(torch, dtype)
    if layout == "contiguous":
        x = lambda: torch.zeros(1, width, dtype=dt)  # noqa: E731
    elif layout == "strided":
        x = lambda: torch.zeros(1, 2 * width, dtype=dt)[:, ::2]  # noqa: E731
    else:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if kernel == "forward":
        return P.forward_launch(x(), x(), loss_weight=0.5)[0]
    if kernel == "backward":
        return P.backward_launch(torch.ones(1), x(), x())[0]
    if kernel == "objective":
        return S.objective_launch(x(), x(), x(), torch.ones(1), "qp", 0.5, 0.5, P.EPS)[0]
    raise ValueError(f"unknown kernel {kernel!r}; known: {list(KERNELS)}")


def _binding(launch, capability: int):
    """Triton's launch binder applied to ``launch`` for ``capability``.

    Returns (jit function, target, backend, bound args, specialization, options), what
    ``JITFunction.run`` computes before it looks up or compiles a kernel.  Uses Triton
    internals (``create_function_from_signature``; Triton 3.x).  An interpreted kernel
    (``TRITON_INTERPRET=1``) is bound through a plain ``JITFunction`` of the same function
    and options, so keys can be computed in the test process too.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    fn = launch.kernel
    if not isinstance(fn, JITFunction):
        fn = JITFunction(fn.fn, **getattr(fn, "kwargs", {}))
    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.options)
    return fn, target, backend, bound, specialization, options


def compile_key(launch, capability: int = 90) -> str:
    """The key Triton's launch cache files ``launch`` under on a GPU of ``capability``.

    Two launches with equal keys run one compiled kernel: the test of "no recompile for
    the last partial batch" compares these keys across batch sizes.
    """
    from triton.runtime.jit import compute_cache_key

    _, _, _, _, specialization, options = _binding(launch, capability)
    return compute_cache_key({}, specialization, options)


def _compile(launch, capability: int):  # -> (triton CompiledKernel, ptxas log or "")
    """Compile ``launch`` for ``capability`` exactly as ``kernel[grid](*args)`` would on such a GPU.

    The signature, constants and alignment attributes come from Triton's own binder
    (:func:`_binding`).  Returns the compiled kernel and Triton's ``ptxas -v`` log (""
    when Triton's cache already held the kernel and ptxas did not run).
    """
    import contextlib
    import io

    import triton
    from triton import knobs
    from triton.compiler import ASTSource

    fn, target, backend, bound, specialization, rest = _binding(launch, capability)
    options, signature, constexprs, attrs = fn._pack_args(backend, dict(launch.options), bound, specialization, rest)
    log = io.StringIO()
    with knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.nvidia.dump_ptxas_log = True  # Triton prints its own ptxas -v output
        compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    return compiled, log.getvalue()


_PTXAS_LINE = {
    "registers": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "smem": re.compile(r"(\d+) bytes smem"),
}


def parse_ptxas(log: str) -> dict[str, int]:
    """Registers, spilled bytes (stores + loads) and static shared memory from ``ptxas -v``."""
    found = {k: [int(v) for v in rx.findall(log)] for k, rx in _PTXAS_LINE.items()}
    if not found["registers"]:
        raise ValueError(f"no register count in the ptxas output:\n{log}")
    return {
        "registers": max(found["registers"]),
        "spills": sum(found["spill_stores"]) + sum(found["spill_loads"]),
        "smem": sum(found["smem"]),
    }


def _ptxas(ptx: str, capability: int, fp_fusion: bool) -> str:
    """``ptxas -v`` on ``ptx`` with the flags Triton uses for its cubin; returns the log."""
    from triton.backends.nvidia.compiler import sm_arch_from_capability

    path, _ = find_ptxas(capability)
    with tempfile.TemporaryDirectory(prefix="ogan-ptxas-") as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as fh:
            fh.write(ptx)
        cmd = [path, "-lineinfo", "-v", "--regAllocOptLevel=2", *([] if fp_fusion else ["--fmad=false"]),
               f"--gpu-name={sm_arch_from_capability(capability)}", src, "-o", os.path.join(tmp, "kernel.cubin")]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ptxas failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    return res.stdout + res.stderr


def build_one(kernel: str, cfg: dict[str, int], dtype: str, capability: int, layout: str = "contiguous") -> CompileRow:
    """Compile one configuration and measure it (errors are returned in ``error``, not raised)."""
    row = CompileRow(kernel, cfg["width"], cfg["ROWS"], dtype, cfg["num_warps"], -1, -1, -1,
                     min_width=cfg["min_width"], block_n=cfg["BLOCK_N"], chunked=not cfg["ONE_BLOCK"])
    t0 = time.perf_counter()
    try:
        launch = _launch_for(kernel, cfg["width"], dtype, layout)
        got = (launch.options["BLOCK_N"], launch.options["ROWS"], launch.options["num_warps"])
        if got != (cfg["BLOCK_N"], cfg["ROWS"], cfg["num_warps"]):  # the report must compile what runs
            raise RuntimeError(f"launch for width {cfg['width']} has (BLOCK_N, ROWS, num_warps) = {got}, "
                               f"expected {(cfg['BLOCK_N'], cfg['ROWS'], cfg['num_warps'])}")
        compiled, log = _compile(launch, capability)
        if "Used" not in log:  # Triton's cache held the kernel: run ptxas -v on its PTX ourselves
            log = _ptxas(compiled.asm["ptx"], capability, bool(launch.options["enable_fp_fusion"]))
        stats = parse_ptxas(log)
        row.registers, row.spills = stats["registers"], stats["spills"]
        row.shared_bytes = int(getattr(compiled.metadata, "shared", 0) or 0) + stats["smem"]
    except Exception as exc:  # a failed build is a result of the report, not a crash
        row.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    row.seconds = round(time.perf_counter() - t0, 2)
    return row


def _worker_init() -> None:
    os.environ.pop("TRITON_INTERPRET", None)  # (spawned workers inherit the parent's environment)


# --- the report --------------------------------------------------------------------------
def compile_report(
    capability: int,
    *,
    kernels: Sequence[str] = KERNELS,
    dtypes: Sequence[str] = DTYPES,
    widths: Sequence[int] = WIDTHS,
    layout: str = "contiguous",
    jobs: Optional[int] = None,
    progress: bool = True,
) -> list[CompileRow]:
    """Compile every (configuration, kernel, dtype) for ``capability``; one :class:`CompileRow` each.

    Args:
        capability: compute capability, e.g. 90 (built as sm_90a) or 80.
        kernels: names from :data:`KERNELS`.
        dtypes: names from :data:`DTYPES`.
        widths: row lengths whose configurations are compiled.
        layout: ``"contiguous"`` inputs (the usual case) or ``"strided"`` (column stride 2).
        jobs: worker processes (default: the machine's CPU count).
        progress: show a tqdm progress bar (when tqdm is installed).

    Returns:
        The rows, ordered by kernel, configuration and dtype; failed builds have ``error`` set.

    Raises:
        PtxasMissing: the Triton wheel has no ptxas for this target.
        ValueError: an unknown kernel or dtype.
    """
    import multiprocessing

    bad = [k for k in kernels if k not in KERNELS] + [d for d in dtypes if d not in DTYPES]
    if bad:
        raise ValueError(f"unknown kernels/dtypes {bad}; known: {list(KERNELS)}, {list(DTYPES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"--layout must be one of {list(LAYOUTS)}, got {layout!r}")
    find_ptxas(capability)
    tasks = [(k, cfg, d) for k in kernels for cfg in configurations(widths) for d in dtypes]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    bar = _progress(len(tasks), f"compiling for {_arch(capability)}", progress)
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init) as pool:
            # widest (slowest) builds first, so the workers finish together
            order = sorted(range(len(tasks)), key=lambda i: -tasks[i][1]["width"])
            futures = {i: pool.submit(build_one, *tasks[i], capability, layout) for i in order}
            rows: dict[int, CompileRow] = {}
            for i in order:
                rows[i] = futures[i].result()
                bar(1)
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved
        bar(None)
    return [rows[i] for i in range(len(tasks))]


def _progress(total: int, text: str, enabled: bool) -> Callable[[Optional[int]], None]:
    """``update(k)`` advances a tqdm bar by k; ``update(None)`` closes it (no-ops without tqdm)."""
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if not enabled:
        return lambda k: None
    bar = tqdm(total=total, desc=text, unit="build", file=sys.stderr)
    return lambda k: bar.close() if k is None else bar.update(k)


def format_report(rows: Sequence[CompileRow]) -> str:
    """The rows as an aligned table (widths served, tile, warps, registers, spills, shared memory)."""
    head = ("kernel", "widths", "BLOCK_N", "rows", "dtype", "warps", "registers", "spills", "shared B", "s")
    body = []
    for r in rows:
        widths = f"{r.min_width}-{r.width}" + ("+" if r.chunked else "")
        if r.error:
            body.append((r.kernel, widths, str(r.block_n), str(r.rows), r.dtype, str(r.num_warps), "FAILED", "", "",
                         f"{r.seconds:.1f}"))
        else:
            body.append((r.kernel, widths, str(r.block_n), str(r.rows), r.dtype, str(r.num_warps), str(r.registers),
                         str(r.spills), str(r.shared_bytes), f"{r.seconds:.1f}"))
    widths_ = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i in (0, 1, 4) else '>'}{w}}}" for i, w in enumerate(widths_))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths_))] + [fmt.format(*b) for b in body]
    lines += [f"FAILED {r.kernel} width {r.width} {r.dtype}: {r.error}" for r in rows if r.error]
    return "\n".join(lines)


def write_csv(rows: Sequence[CompileRow], path: str) -> None:
    """Write the rows with exactly the columns :data:`CSV_COLUMNS` (failed builds: -1)."""
    with open(path, "w", newline="") as fh:
        writer = csv_module.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            d = asdict(r)
            writer.writerow([d[c] for c in CSV_COLUMNS])


def run_compile_command(
    target: str, csv: Optional[str] = None, layout: str = "contiguous", out: Callable[[str], None] = print
) -> int:
    """``ogan-plugin bench --compile``: build, print the table (and the CSV), judge.

    Args:
        target: ``sm_90a``, ``sm_80``, ... (see :func:`parse_target`).
        csv: also write the rows to this CSV file (columns :data:`CSV_COLUMNS`).
        layout: ``"contiguous"`` or ``"strided"`` inputs.
        out: where lines go.

    Returns:
        0 when every build succeeded without spills, else 1.

    Raises:
        ValueError: a malformed ``--target`` or an unknown ``--layout``.
        PtxasMissing: no ptxas for the target in the Triton wheel.
    """
    import triton

    capability = parse_target(target)
    path, version = find_ptxas(capability)
    version = version.strip().splitlines()[-1] if version.strip() else "unknown version"
    t0 = time.perf_counter()
    rows = compile_report(capability, layout=layout)
    seconds = time.perf_counter() - t0
    out(f"ahead-of-time build for {target}, {layout} inputs: triton {triton.__version__}, ptxas {version} ({path})")
    out(format_report(rows))
    failed = [r for r in rows if r.error]
    spilled = [r for r in rows if not r.error and r.spills > 0]
    ok = [r for r in rows if not r.error]
    n_cfg = len(configurations())
    out(f"{len(rows)} builds ({n_cfg} tile shapes for widths {WIDTHS.start}-{WIDTHS.stop - 1} x {len(KERNELS)} "
        f"kernels x {len(DTYPES)} dtypes) in {seconds:.0f} s")
    for limit in (512, WIDTHS.stop - 1):
        regs = [r.registers for r in ok if r.width <= limit]
        if regs:
            out(f"most registers per thread, widths up to {limit}: {max(regs)}")
    out(f"spills: {'none' if not spilled else ', '.join(f'{r.kernel}/{r.width}/{r.dtype}: {r.spills} B' for r in spilled)}"
        f"; failed builds: {len(failed)}")
    if csv:
        write_csv(rows, csv)
        out(f"wrote {csv}")
    return 1 if failed or spilled else 0


def _arch(capability: int) -> str:
    """Triton's name for the architecture it builds for ``capability`` (sm_90a, sm_80)."""
    return f"sm_{capability}" + ("a" if capability >= 90 else "")
