"""``ogan-plugin bench --check``: the first-contact check of the kernels on a GPU.

One command, meant to run in under a minute on one GPU the first time the project gets
one (``ogan-plugin bench --check``; ``--csv PATH`` also writes the benchmark rows).  It
prints the environment (torch, CUDA, Triton, driver, device), then runs each check and
prints ``PASS``/``FAIL``/``SKIP`` with the measured errors, then the kernel benchmark
table, and exits 1 if any check failed:

* forward, backward and loss of the correlation against float64 on 9 cases: a 1 x 2 row,
  short and long rows, 100000 x 128 (many programs), the chunked path (n > 4096),
  bfloat16, float16, mixed dtypes and a transposed (strided) input;
* the fused objective (qp and hinge) against its float64 reference;
* bitwise determinism of the loss over repeated launches, and the ticket back at 0;
* a side stream (same bits as the default stream, its own ticket back at 0);
* tensors on a second GPU while the first is current (with two GPUs or more);
* CUDA-graph capture of forward + backward + objective, replayed on new data.

Error bounds (max |error| over max(max |reference|, natural scale), the rule of the
kernel tests): 1e-5 for float32 results (float32 accumulation over at most a few
thousand terms in tree order stays near 1e-6); gradients written in float16 1e-3 (half an
ulp is 4.9e-4), in bfloat16 8e-3 (half an ulp is 3.9e-3); rho and the losses are float32
whatever the inputs.

``--dry`` runs the same checks under Triton's CPU interpreter with tiny sizes (the GPU-only
checks are skipped): what CI runs, so the script itself cannot rot.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

__all__ = ["CheckResult", "Case", "run_check", "relative_error", "cases"]


@dataclass
class CheckResult:
    """One check: its name, ``PASS``/``FAIL``/``SKIP``, what it measured or why, and its time."""

    name: str
    status: str
    detail: str
    seconds: float


@dataclass(frozen=True)
class Case:
    """One correlation case: shape, dtypes of z and e, and whether the inputs are transposed views."""

    B: int
    n: int
    z_dtype: torch.dtype = torch.float32
    e_dtype: torch.dtype = torch.float32
    transposed: bool = False

    def __str__(self) -> str:
        names = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
        dt = names[self.e_dtype] if self.z_dtype == self.e_dtype else f"z {names[self.z_dtype]}, e {names[self.e_dtype]}"
        return f"{self.B}x{self.n} {dt}" + (" transposed" if self.transposed else "")


class _Skip(Exception):
    """A check that cannot run here (the message says why)."""


#: gradient bounds by output dtype (see the module docstring)
_GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
#: bound on rho, the losses and float32 gradients
_RTOL = 1e-5


def cases(dry: bool) -> list[Case]:
    """The correlation cases: GPU sizes, or tiny ones for the interpreter (same structure)."""
    bf16, f16 = torch.bfloat16, torch.float16
    if dry:
        return [Case(1, 2), Case(7, 33), Case(5, 130), Case(300, 16), Case(2, 4100),
                Case(5, 64, bf16, bf16), Case(5, 64, f16, f16), Case(3, 100, torch.float32, bf16), Case(9, 40, transposed=True)]
    return [Case(1, 2), Case(64, 128), Case(256, 512), Case(100000, 128), Case(7, 5000),
            Case(256, 512, bf16, bf16), Case(256, 512, f16, f16), Case(64, 1000, torch.float32, bf16),
            Case(512, 256, transposed=True)]


def relative_error(actual: torch.Tensor, expected: torch.Tensor, scale: float = 0.0) -> float:
    """``max|actual - expected| / max(max|expected|, scale)`` in float64 (inf if ``actual`` is not finite)."""
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    a, b = actual.detach().double(), expected.detach().double().to(actual.device)
    if not bool(torch.isfinite(a).all()):
        return float("inf")
    ref = max(b.abs().max().item(), scale)
    return (a - b).abs().max().item() / ref if ref else 0.0


def _expect(errors: dict[str, tuple[float, float]]) -> str:
    """Raise AssertionError listing every error above its bound; else the errors as text."""
    bad = [f"{k} {v:.2e} > {bound:g}" for k, (v, bound) in errors.items() if not v <= bound]
    if bad:
        raise AssertionError("; ".join(bad))
    return ", ".join(f"{k} {v:.1e}" for k, (v, _) in errors.items())


def _data(case: Case, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows with correlations of every sign, offsets and scales that vary per row (made on the CPU)."""
    g = torch.Generator().manual_seed(seed)
    B, n = case.B, case.n
    z = torch.randn(B, n, generator=g)
    mix = torch.rand(B, 1, generator=g) * 2 - 1
    e = mix * z + (1 - mix.abs()) * torch.randn(B, n, generator=g)
    e = e * 10 ** (torch.rand(B, 1, generator=g) * 2 - 1) + torch.randn(B, 1, generator=g)
    z, e = z.to(case.z_dtype), e.to(case.e_dtype)
    if case.transposed:  # same values, column-major storage: strided loads
        z, e = z.t().contiguous().t(), e.t().contiguous().t()
    return z.to(device), e.to(device)


def _natural(x: torch.Tensor, weights: torch.Tensor) -> float:
    """max |weight| / ||row - mean||: the size of the gradient's terms (they may cancel)."""
    x = x.detach().double()
    spread = (x - x.mean(1, keepdim=True)).norm(dim=1).clamp_min(1e-6)
    return (weights.double().abs().to(x.device) / spread).max().item()


# --- the checks --------------------------------------------------------------------------
def _check_correlation(case: Case, device: torch.device) -> str:
    """rho and its gradients (pearson), the loss and its gradients (correlation_loss) vs float64."""
    import ogan_plugin
    from ogan_plugin.kernels.pearson import pearson_reference

    z0, e0 = _data(case, device, seed=case.B * 7919 + case.n)
    z, e = z0.clone().requires_grad_(True), e0.clone().requires_grad_(True)
    if case.transposed:  # clone keeps the layout: still strided
        assert not z.is_contiguous()
    grad = torch.randn(case.B, generator=torch.Generator().manual_seed(1)).to(device)
    rho = ogan_plugin.pearson_correlation(z, e, backend="triton")
    gz, ge = torch.autograd.grad(rho, (z, e), grad)
    loss = ogan_plugin.correlation_loss(z, e, 0.7, backend="triton")
    lz, le = torch.autograd.grad(loss, (z, e))
    z64 = z0.double().requires_grad_(True)
    e64 = e0.double().requires_grad_(True)
    r64 = pearson_reference(z64, e64)
    rz, re_ = torch.autograd.grad(r64, (z64, e64), grad.double())
    lz64, le64 = _loss_grad(z0, e0, 0.7)
    w = torch.full((case.B,), 0.7 / case.B, dtype=torch.float64)
    if rho.dtype != torch.float32 or loss.dtype != torch.float32 or ge.dtype != case.e_dtype:
        raise AssertionError(f"dtypes: rho {rho.dtype}, loss {loss.dtype}, grad e {ge.dtype}")
    return _expect({
        "rho": (relative_error(rho, r64, 1.0), _RTOL),
        "grad z": (relative_error(gz, rz, _natural(z0, grad)), _GRAD_RTOL[case.z_dtype]),
        "grad e": (relative_error(ge, re_, _natural(e0, grad)), _GRAD_RTOL[case.e_dtype]),
        "loss": (relative_error(loss, -0.7 * r64.mean(), 0.7), _RTOL),
        "loss grad z": (relative_error(lz, lz64, _natural(z0, w)), _GRAD_RTOL[case.z_dtype]),
        "loss grad e": (relative_error(le, le64, _natural(e0, w)), _GRAD_RTOL[case.e_dtype]),
    })


def _loss_grad(z: torch.Tensor, e: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the float64 reference loss w.r.t. z and e."""
    from ogan_plugin.kernels.pearson import correlation_loss_reference

    z64 = z.detach().double().requires_grad_(True)
    e64 = e.detach().double().requires_grad_(True)
    gz, ge = torch.autograd.grad(correlation_loss_reference(z64, e64, weight), (z64, e64))
    return gz, ge


def _objective_fn(device: torch.device) -> Callable:
    from ogan_plugin.registry import get_registry

    return get_registry().resolve("ogan_objective", device.type, backend="triton").fn


def _objective_inputs(B: int, n: int, device: torch.device, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, n, generator=g)
    e_fake = 0.4 * z + torch.randn(B, n, generator=g) + torch.randn(B, 1, generator=g)
    e_real = torch.randn(B, n, generator=g) * 0.5
    # scores on both sides of the hinge's kinks, away from them
    e_real += torch.where(torch.arange(B) % 2 == 0, 0.2, 1.7).unsqueeze(1) - e_real.mean(1, keepdim=True)
    e_fake += torch.where(torch.arange(B) % 3 == 0, -1.8, 0.1).unsqueeze(1) - e_fake.mean(1, keepdim=True)
    dist = torch.rand(B, generator=g) + 0.05
    return (e_real.to(dtype).to(device), e_fake.to(dtype).to(device), z.to(device), dist.to(device))


def _check_objective(B: int, n: int, dtype: torch.dtype, device: torch.device) -> str:
    """The fused objective (qp and hinge) against its float64 reference."""
    from ogan_plugin.kernels.single_loss import ogan_objective_reference

    fn = _objective_fn(device)
    e_real, e_fake, z, dist = _objective_inputs(B, n, device, dtype, seed=B + n)
    scale = 1.5 / B / (e_fake.double() - e_fake.double().mean(1, keepdim=True)).norm(dim=1).clamp_min(1e-6).min().item()
    errors = {}
    for loss in ("qp", "hinge"):
        out = fn(e_real, e_fake, z, dist if loss == "qp" else None, loss, 0.5, 1.5, 1e-6)
        ref = ogan_objective_reference(e_real.double(), e_fake.double(), z.double(), dist.double(), loss, 0.5, 1.5, 1e-6)
        errors[f"{loss} loss_d"] = (relative_error(out.loss_d, ref.loss_d, 1.0), _RTOL)
        errors[f"{loss} loss_g"] = (relative_error(out.loss_g, ref.loss_g, 1.0), _RTOL)
        errors[f"{loss} rho"] = (relative_error(out.rho, ref.rho, 1.0), _RTOL)
        for name in ("slope_real", "slope_fake_d", "slope_fake_g"):
            errors[f"{loss} {name}"] = (relative_error(getattr(out, name), getattr(ref, name), 1.0 / B), _RTOL)
        errors[f"{loss} corr"] = (relative_error(out.corr, ref.corr, scale / 1.5), _GRAD_RTOL[dtype])
    return _expect(errors)


def _check_determinism(case: Case, device: torch.device) -> str:
    """The loss of many programs, launched 5 times: identical bits; the ticket ends at 0."""
    import ogan_plugin
    from ogan_plugin.kernels import pearson as P
    from ogan_plugin.kernels.pearson import launch_config

    z, e = _data(case, device, seed=3)
    grid = launch_config(case.B, case.n)["grid"]
    losses = [ogan_plugin.correlation_loss(z, e, backend="triton") for _ in range(5)]
    fn = _objective_fn(device)
    e_real, e_fake, zz, dist = _objective_inputs(case.B, case.n, device, torch.float32, seed=4)
    objectives = [fn(e_real, e_fake, zz, dist, "qp", 0.5, 0.5, 1e-6).loss_d for _ in range(3)]
    if not all(torch.equal(x, losses[0]) for x in losses):
        raise AssertionError(f"loss differs between launches: {[x.item() for x in losses]}")
    if not all(torch.equal(x, objectives[0]) for x in objectives):
        raise AssertionError(f"objective differs between launches: {[x.item() for x in objectives]}")
    ticket = int(P._ticket(z.device).item())
    if ticket != 0:
        raise AssertionError(f"the ticket is {ticket} after the launches, not 0")
    return f"{grid} programs, 5 + 3 launches bitwise equal, ticket 0"


def _check_side_stream(case: Case, device: torch.device) -> str:
    """Loss and gradient on a side stream: the same bits as on the default stream, its ticket back at 0."""
    import ogan_plugin
    from ogan_plugin.kernels import pearson as P

    if device.type != "cuda":
        raise _Skip("needs CUDA")
    z, e0 = _data(case, device, seed=5)

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        e = e0.clone().requires_grad_(True)
        loss = ogan_plugin.correlation_loss(z, e, backend="triton")
        return loss, torch.autograd.grad(loss, (e,))[0]

    want = step()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        got = step()
        ticket = int(P._ticket(device).item())
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    if not (torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])):
        raise AssertionError("the side stream's results differ from the default stream's")
    if ticket != 0:
        raise AssertionError(f"the side stream's ticket is {ticket}, not 0")
    return "bitwise equal to the default stream, ticket 0"


def _check_other_device(case: Case, device: torch.device) -> str:
    """Tensors on cuda:1 while cuda:0 is current: the launch follows the tensors."""
    import ogan_plugin
    from ogan_plugin.kernels.pearson import pearson_reference

    if device.type != "cuda":
        raise _Skip("needs CUDA")
    if torch.cuda.device_count() < 2:
        raise _Skip("needs two GPUs (this machine has one)")
    other = torch.device("cuda", 1)
    with torch.cuda.device(0):
        z, e = _data(case, other, seed=6)
        rho = ogan_plugin.pearson_correlation(z, e, backend="triton")
        torch.cuda.synchronize(other)
    return _expect({"rho on cuda:1": (relative_error(rho, pearson_reference(z.double(), e.double()), 1.0), _RTOL)})


def _check_cuda_graph(case: Case, device: torch.device) -> str:
    """Capture loss + gradient + fused objective in a CUDA graph; replay on new data; compare with eager."""
    import ogan_plugin

    if device.type != "cuda":
        raise _Skip("needs CUDA")
    fn = _objective_fn(device)
    z_s, e_in = _data(case, device, seed=7)
    e_s = e_in.clone().requires_grad_(True)
    er_s, ef_s, zo_s, d_s = _objective_inputs(case.B, case.n, device, torch.float32, seed=8)

    def step():
        loss = ogan_plugin.correlation_loss(z_s, e_s, backend="triton")
        (ge,) = torch.autograd.grad(loss, (e_s,))
        out = fn(er_s, ef_s, zo_s, d_s, "qp", 0.5, 0.5, 1e-6)
        return loss, ge, out.loss_d, out.corr

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up off the default stream, as torch.cuda.graph asks
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = step()
    worst = 0.0
    for seed in (11, 12):  # two replays: the captured ticket must reset itself
        z2, e2 = _data(case, device, seed=seed)
        er2, ef2, zo2, d2 = _objective_inputs(case.B, case.n, device, torch.float32, seed=seed + 100)
        with torch.no_grad():
            for dst, src in ((z_s, z2), (e_s, e2), (er_s, er2), (ef_s, ef2), (zo_s, zo2), (d_s, d2)):
                dst.copy_(src)
        graph.replay()
        torch.cuda.synchronize(device)
        e_eager = e2.clone().requires_grad_(True)
        loss = ogan_plugin.correlation_loss(z2, e_eager, backend="triton")
        (ge,) = torch.autograd.grad(loss, (e_eager,))
        out = fn(er2, ef2, zo2, d2, "qp", 0.5, 0.5, 1e-6)
        for a, b in zip(static, (loss, ge, out.loss_d, out.corr)):
            if not torch.equal(a, b):
                worst = max(worst, relative_error(a, b, 1e-30))
    if worst:
        raise AssertionError(f"replayed graph differs from eager (max relative difference {worst:.2e})")
    return "captured loss + gradient + objective, 2 replays on new data bitwise equal to eager"


# --- environment and driver --------------------------------------------------------------
def _driver_versions() -> str:
    """The CUDA driver API version (libcuda) and the kernel module's version, as far as found."""
    parts = []
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(v)) == 0:
            parts.append(f"CUDA driver API {v.value // 1000}.{v.value % 1000 // 10}")
    except OSError:
        parts.append("libcuda.so.1 not found")
    try:
        with open("/proc/driver/nvidia/version") as fh:
            line = fh.readline()
        words = line.split()
        version = next((w for w in words if w.count(".") >= 1 and w.replace(".", "").isdigit()), line.strip())
        parts.append(f"kernel module {version}")
    except OSError:
        pass
    return ", ".join(parts) or "unknown"


def _environment(device: torch.device, dry: bool) -> list[str]:
    import triton

    from ogan_plugin import __version__
    from ogan_plugin.registry import get_registry

    lines = [
        f"ogan-plugin {__version__}, torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}, "
        f"Python {sys.version.split()[0]}",
    ]
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        lines.append(f"device: {p.name} (sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
                     f"{p.total_memory / 2**30:.0f} GiB, L2 {getattr(p, 'L2_cache_size', 0) / 2**20:.0f} MiB), "
                     f"{torch.cuda.device_count()} GPU(s)")
        lines.append(f"driver: {_driver_versions()}")
        reg = get_registry()
        active = reg.active("cuda")
        lines.append("backends on cuda: " + ", ".join(f"{op} -> {name}" for op, name in active.items()))
        for b in reg.backends("pearson"):
            if b.name == "triton":
                lines.append(f"triton probe (compile and launch on CUDA): {reg.problem(b, 'cuda') or 'ok'}")
    else:
        lines.append("device: cpu, Triton's interpreter (--dry: tiny sizes, GPU-only checks skipped)")
    return lines


# --- the command -------------------------------------------------------------------------
def _interpreter_active() -> bool:
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    import triton.language as language
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(language.max, InterpretedFunction)


def run_check(dry: bool = False, device: Optional[str] = None, csv: Optional[str] = None,
              out: Callable[[str], None] = print) -> int:
    """Run the check; print everything; return 0 when every check passed, else 1.

    Args:
        dry: tiny sizes on the CPU under Triton's interpreter (re-runs itself in a fresh
            process with ``TRITON_INTERPRET=1`` when this process imported Triton without it).
        device: ``"cuda"`` or ``"cuda:N"`` (default ``cuda``); ignored with ``dry``.
        csv: also write the benchmark rows to this CSV file.
        out: where lines go.

    Returns:
        The exit status: 0 when no check failed, 1 otherwise (the ``--dry`` re-run's own
        status when it ran in a fresh process).

    Raises:
        ValueError: no CUDA device without ``dry``, a non-CUDA ``device``, or
            ``TRITON_INTERPRET=1`` on a GPU run.
    """
    if dry and not _interpreter_active():
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        cmd = [sys.executable, "-m", "ogan_plugin", "bench", "--check", "--dry"] + (["--csv", csv] if csv else [])
        return subprocess.run(cmd, env=env).returncode
    if dry:
        dev = torch.device("cpu")
    else:
        if os.environ.get("TRITON_INTERPRET") == "1":
            raise ValueError("--check on a GPU compiles the kernels: unset TRITON_INTERPRET (or use --dry)")
        if not torch.cuda.is_available():
            raise ValueError("--check needs a CUDA GPU (torch sees none); --dry runs it on the CPU under Triton's interpreter")
        dev = torch.device(device or "cuda")
        if dev.type != "cuda":
            raise ValueError(f"--device must be a CUDA device for --check, got {device!r} (or use --dry)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    t_start = time.perf_counter()
    for line in _environment(dev, dry):
        out(line)
    the_cases = cases(dry)
    big = the_cases[3]  # many programs
    checks: list[tuple[str, Callable[[], str]]] = [
        (f"correlation {c}", lambda c=c: _check_correlation(c, dev)) for c in the_cases
    ]
    n_obj = (130, 4100) if dry else (512, 5000)
    b_obj = (5, 2) if dry else (256, 7)
    checks += [
        (f"objective {b_obj[0]}x{n_obj[0]} float32", lambda: _check_objective(b_obj[0], n_obj[0], torch.float32, dev)),
        (f"objective {b_obj[1]}x{n_obj[1]} float32 (chunked)", lambda: _check_objective(b_obj[1], n_obj[1], torch.float32, dev)),
        (f"objective {b_obj[0]}x{n_obj[0]} bfloat16", lambda: _check_objective(b_obj[0], n_obj[0], torch.bfloat16, dev)),
        (f"determinism {big}", lambda: _check_determinism(big, dev)),
        (f"side stream {the_cases[2]}", lambda: _check_side_stream(the_cases[2], dev)),
        (f"second device {the_cases[2]}", lambda: _check_other_device(the_cases[2], dev)),
        (f"CUDA graph {the_cases[2]}", lambda: _check_cuda_graph(the_cases[2], dev)),
    ]
    results = []
    for name, fn in checks:
        t0 = time.perf_counter()
        try:
            status, detail = "PASS", fn()
        except _Skip as exc:
            status, detail = "SKIP", str(exc)
        except AssertionError as exc:
            status, detail = "FAIL", str(exc)
        except Exception as exc:  # a GPU check reports every failure, it does not stop at the first
            status, detail = "FAIL", f"{type(exc).__name__}: {str(exc).strip()[:500]}"
        results.append(CheckResult(name, status, detail, time.perf_counter() - t0))
        r = results[-1]
        out(f"{r.status}  {r.name}  ({r.seconds:.1f} s): {r.detail}")
    failed = [r for r in results if r.status == "FAIL"]
    out(f"checks: {sum(r.status == 'PASS' for r in results)} passed, {len(failed)} failed, "
        f"{sum(r.status == 'SKIP' for r in results)} skipped, {time.perf_counter() - t_start:.1f} s")
    _benchmark(dev, dry, csv, out)
    out(f"total {time.perf_counter() - t_start:.1f} s")
    return 1 if failed else 0


def _benchmark(dev: torch.device, dry: bool, csv: Optional[str], out: Callable[[str], None]) -> None:
    """The kernel benchmark table (triton and reference; the compiled backend's warm-up is too slow here)."""
    from ogan_plugin.bench.kernels import DEFAULT_SIZES, format_table, parse_sizes, run_kernel_benchmark, write_csv

    sizes = parse_sizes("4x8,16x32" if dry else DEFAULT_SIZES["cuda"])
    rows = run_kernel_benchmark(sizes, device=str(dev), backends=["triton", "reference"],
                                iters=2 if dry else 20, warmup=1 if dry else 3, out=out)
    out(format_table(rows))
    if csv:
        write_csv(rows, csv)
        out(f"wrote {csv}")
