"""torch.library operators, backend selection, torch.compile tracing, and the kernels' GPU build."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import ogan_plugin
from ogan_plugin.kernels import ops
from ogan_plugin.kernels import pearson as P
from ogan_plugin.kernels import single_loss as S
from ogan_plugin.registry import ENV_BACKEND, NOT_PROBED, BackendUnavailableError, Registry

OPS = ("pearson", "correlation_loss", "ogan_objective")


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_operators_pass_opcheck(layout, device):
    """opcheck (schema, fake/real agreement including strides, autograd registration), also
    with transposed inputs: the real outputs are contiguous, as the fakes declare.  On CUDA
    the operators run the Triton kernels, on the CPU the reference."""

    def x(*shape, grad=False):
        t = torch.randn(*shape, device=device) if layout == "contiguous" else torch.randn(*reversed(shape), device=device).t()
        return t.requires_grad_(grad)

    def r(*shape):
        return torch.randn(*shape, device=device)

    z, e = x(4, 6), x(4, 6, grad=True)
    assert z.is_contiguous() == (layout == "contiguous")
    cases = [
        (torch.ops.ogan_plugin.pearson.default, (z, e, 1e-6)),
        (torch.ops.ogan_plugin.correlation_loss.default, (x(4, 6, grad=True), e, 0.5, 1e-6)),
        (torch.ops.ogan_plugin.pearson_backward.default, (r(4), z.detach(), e.detach(), 1e-6, 2.0, False, True)),
        (torch.ops.ogan_plugin.pearson_backward.default, (r(4), z.detach(), e.detach(), 1e-6, 2.0, True, True)),
        (torch.ops.ogan_plugin.ogan_objective.default, (x(4, 6), x(4, 6), x(4, 6), r(4).abs() + 0.1, "qp", 0.5, 1.5, 1e-6)),
        (torch.ops.ogan_plugin.ogan_objective.default, (x(4, 6), x(4, 6), x(4, 6), None, "hinge", 0.5, 0.0, 1e-6)),
    ]
    for op, args in cases:
        result = torch.library.opcheck(op, args)
        assert set(result.values()) == {"SUCCESS"}, (op, result)
    for t in torch.ops.ogan_plugin.ogan_objective(x(4, 6), x(4, 6), x(4, 6), None, "hinge", 0.5, 0.0, 1e-6):
        assert t.is_contiguous()
    for t in torch.ops.ogan_plugin.pearson_backward(r(4), z.detach(), e.detach(), 1e-6, 1.0, True, True):
        assert t.is_contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_operators_are_the_reference(dtype):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 9, generator=g, dtype=dtype, requires_grad=True)
    e = torch.randn(5, 9, generator=g, dtype=dtype, requires_grad=True)
    assert torch.equal(ops.pearson(z, e, 1e-6), P.pearson_reference(z, e, 1e-6))
    assert torch.equal(ops.correlation_loss(z, e, 0.5, 1e-6), P.correlation_loss_reference(z, e, 0.5, 1e-6))
    grad = torch.randn(5, generator=g, dtype=dtype)
    want = torch.autograd.grad(P.pearson_reference(z, e, 1e-6), (z, e), grad)
    got = torch.autograd.grad(ops.pearson(z, e, 1e-6), (z, e), grad)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    got = torch.autograd.grad(ops.correlation_loss(z, e, 0.5, 1e-6), (e,))
    want = torch.autograd.grad(P.correlation_loss_reference(z, e, 0.5, 1e-6), (e,))
    torch.testing.assert_close(got[0], want[0], rtol=tol, atol=tol)


def _step(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """A piece of a training step: an adversarial term plus the public correlation loss."""
    score = e.mean(dim=1)
    return torch.nn.functional.softplus(-score).mean() + ogan_plugin.correlation_loss(z, e, 0.5, check_finite=False)


@pytest.mark.parametrize("backend", [None, "triton"])
def test_torch_compile_traces_without_graph_break(backend, device, triton_device, monkeypatch):
    """Automatic choice (the reference on CPU, Triton on CUDA), and the triton backend's
    function, which under torch.compile traces the ``ogan_plugin::correlation_loss``
    operator.  Forced on a device it cannot serve (CPU tensors on a GPU machine, where
    Triton is compiled for CUDA, not interpreted) it raises, naming the backend and device."""
    torch._dynamo.reset()
    if backend is not None:
        monkeypatch.setenv(ENV_BACKEND, backend)
    fn = _step
    from torch._dynamo.testing import CompileCounterWithBackend

    if backend == "triton" and device != triton_device:
        with pytest.raises(BackendUnavailableError, match="backend='triton'.*'cpu'"):
            fn(torch.randn(6, 8, device=device), torch.randn(6, 8, device=device))
        return
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(fn, fullgraph=True, backend=counter)  # fullgraph: a break raises
    z = torch.randn(6, 8, device=device)
    e1 = torch.randn(6, 8, device=device, requires_grad=True)
    e2 = e1.detach().clone().requires_grad_(True)
    loss = compiled(z, e1)
    loss.backward()
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    want = fn(z, e2)
    want.backward()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(e1.grad, e2.grad)
    assert counter.frame_count == 1
    graph = str(counter.graphs[0].code)
    assert ("ogan_plugin.correlation_loss" in graph) == (backend == "triton" or device == "cuda"), graph
    torch._dynamo.reset()


def _pretend_cuda(monkeypatch, launch):
    """Make the Triton probe see a CUDA device whose test launch is ``launch(device)``."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(P, "_probe_launch", launch)


def _pretend_broken_cuda(monkeypatch, message: str) -> list:
    """A CUDA device whose test launch raises ``message``; returns the list of launches."""
    calls = []

    def broken_launch(device):
        calls.append(device)
        raise RuntimeError(message)

    monkeypatch.delenv(ENV_BACKEND, raising=False)
    _pretend_cuda(monkeypatch, broken_launch)
    return calls


def test_registry_picks_triton_on_cuda_and_the_reference_on_cpu(monkeypatch):
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    _pretend_cuda(monkeypatch, lambda device: 1.0)  # a GPU whose test launch works
    reg = Registry(load_entry_points=False)
    assert P.triton_problem() is None  # triton is installed in the test environment
    for op in OPS:
        assert reg.resolve(op, "cuda").name == "triton"
        assert reg.resolve(op, "cpu").name == "reference"  # also under TRITON_INTERPRET=1: explicit only
        assert {b.name for b in reg.backends(op)} >= {"triton", "reference"}
    assert reg.resolve("pearson", "cpu", backend="compiled").name == "compiled"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reg = Registry(load_entry_points=False)
    with pytest.raises(BackendUnavailableError, match="backend='triton'.*'cpu'"):
        reg.resolve("pearson", "cpu", backend="triton")


def test_broken_triton_falls_back_to_the_reference_with_one_warning(monkeypatch):
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    monkeypatch.setattr(P, "triton_problem", lambda: "triton cannot be imported (simulated)")
    reg = Registry(load_entry_points=False)
    for op in OPS:
        with pytest.warns(RuntimeWarning, match=f"'triton' for '{op}' is unavailable.*simulated.*'reference'"):
            assert reg.resolve(op, "cuda").name == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg._cache.clear()
        assert reg.resolve("pearson", "cuda").name == "reference"  # warned once only
    with pytest.raises(BackendUnavailableError, match="simulated"):
        reg.resolve("pearson", "cuda", backend="triton")


def test_without_triton_importable_everything_falls_back():
    code = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["triton"] = None  # `import triton` raises ImportError
        import torch, ogan_plugin
        from ogan_plugin.kernels import pearson
        reg = ogan_plugin.get_registry()
        assert "cannot be imported" in pearson.triton_problem()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert reg.resolve("pearson", "cuda").name == "reference"
        assert any("triton" in str(w.message) for w in caught)
        z, e = torch.randn(3, 5), torch.randn(3, 5, requires_grad=True)
        ogan_plugin.correlation_loss(z, e).backward()
        assert e.grad is not None
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in (ENV_BACKEND, "TRITON_INTERPRET")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_compiled_backend_matches_the_reference():
    torch._dynamo.reset()
    z, e = torch.randn(4, 8), torch.randn(4, 8, requires_grad=True)
    loss = ogan_plugin.correlation_loss(z, e, backend="compiled")
    (ge,) = torch.autograd.grad(loss, (e,))
    e2 = e.detach().requires_grad_(True)
    (want,) = torch.autograd.grad(P.correlation_loss_reference(z, e2), (e2,))
    torch.testing.assert_close(loss, P.correlation_loss_reference(z, e))
    torch.testing.assert_close(ge, want)
    torch._dynamo.reset()


def test_the_cuda_probe_runs_once_and_its_failure_falls_back_with_one_warning(monkeypatch, capsys):
    """A GPU environment where Triton imports but cannot compile or launch (driver too old for
    the wheel's ptxas, no C compiler, no libcuda): the one-time probe fails, the reference is
    used with one warning per op, an explicit request names the reason, and so does
    ``ogan-plugin plugins``."""
    from ogan_plugin import cli, registry

    calls = _pretend_broken_cuda(monkeypatch, "simulated: libcuda.so cannot be found\nmore detail")
    reg = Registry(load_entry_points=False)
    for op in OPS:
        with pytest.warns(RuntimeWarning, match=f"'triton' for '{op}' is unavailable.*test compile-and-launch.*"
                                                "simulated: libcuda.so cannot be found.*'reference'"):
            assert reg.resolve(op, "cuda").name == "reference"
    assert calls == [torch.device("cuda", 0)]  # one probe for the three operations
    assert reg.resolve("pearson", "cpu").name == "reference" and len(calls) == 1  # no probe for the CPU
    with pytest.raises(BackendUnavailableError, match="backend='triton'.*simulated: libcuda.so"):
        reg.resolve("pearson", "cuda", backend="triton")
    monkeypatch.setattr(registry, "_REGISTRY", reg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["plugins", "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "triton       priority  10" in out and "unavailable on cuda: a test compile-and-launch" in out
    assert "simulated: libcuda.so cannot be found" in out and "more detail" not in out
    assert out.count("<- active on cuda") == 3 and len(calls) == 1


def test_the_cuda_probe_checks_the_value_and_needs_a_gpu(monkeypatch):
    _pretend_cuda(monkeypatch, lambda device: 0.5)  # launches, but computes garbage
    assert "returned rho = 0.5" in P.triton_probe("cuda")
    assert P.triton_probe("cpu") is None  # the CPU needs no probe (interpreter on request only)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert P.triton_probe("cuda") == "torch sees no CUDA device"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert P.triton_probe("cuda") is NOT_PROBED  # nothing can be read back during graph capture

    def raises(device_type):
        raise OSError("probe bug")

    reg = Registry(load_entry_points=False)
    backend = reg.backends("pearson")[0]
    assert backend.name == "triton"
    import dataclasses

    assert "its probe raised OSError: probe bug" in reg.problem(dataclasses.replace(backend, probe=raises), "cuda")


def test_a_probe_skipped_during_graph_capture_is_not_remembered(monkeypatch):
    """During CUDA-graph capture the probe cannot launch and read back: the Triton backend
    counts as available for those calls, and the first call outside capture probes (here a
    broken GPU: it then falls back to the reference with the usual warning)."""
    calls = _pretend_broken_cuda(monkeypatch, "simulated: no C compiler")
    capturing = [True]
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing[0])
    reg = Registry(load_entry_points=False)
    triton = next(b for b in reg.backends("pearson") if b.name == "triton")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning while capturing
        for _ in range(2):
            assert reg.resolve("pearson", "cuda").name == "triton"
            assert reg.resolve("pearson", "cuda", backend="triton").name == "triton"
            assert reg.problem(triton, "cuda") is None
    assert calls == [] and reg._cache == {} and reg._probed == {}
    capturing[0] = False
    with pytest.warns(RuntimeWarning, match="'triton' for 'pearson' is unavailable.*no C compiler.*'reference'"):
        assert reg.resolve("pearson", "cuda").name == "reference"
    assert calls == [torch.device("cuda", 0)]
    with pytest.raises(BackendUnavailableError, match="no C compiler"):
        reg.resolve("pearson", "cuda", backend="triton")
    capturing[0] = True  # the probe's answer is known now: capture changes nothing any more
    assert reg.resolve("pearson", "cuda").name == "reference" and len(calls) == 1


def test_launches_run_under_a_guard_for_the_tensors_device(monkeypatch, triton_device):
    """Triton launches on the current device and its current stream: every launcher enters
    the guard for its tensors' device before it allocates the ticket and launches."""
    events = []
    inside = []  # the devices whose guard is active
    from ogan_plugin.kernels import launch as L

    real_guard = L._device_guard

    class Guard:
        def __init__(self, dev):
            self.dev = dev

        def __enter__(self):
            events.append(("enter", self.dev))
            inside.append(self.dev)

        def __exit__(self, *exc):
            inside.pop()
            events.append(("exit", self.dev))

    class Kernel:
        def __init__(self, kernel, name):
            self.kernel, self.name = kernel, name

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                assert inside == [args[0].device], f"{self.name} launched outside the guard of its tensors' device"
                events.append(("launch", self.name))
                return self.kernel[grid](*args, **kwargs)

            return launch

    P._TRITON.build()
    S._TRITON.build()
    monkeypatch.setattr(L, "_device_guard", Guard)
    monkeypatch.setattr(P, "_pearson_fwd_kernel", Kernel(P._pearson_fwd_kernel, "fwd"))
    monkeypatch.setattr(P, "_pearson_bwd_kernel", Kernel(P._pearson_bwd_kernel, "bwd"))
    monkeypatch.setattr(S, "_objective_kernel", Kernel(S._objective_kernel, "objective"))
    real_ticket = P._ticket

    def ticket(dev):
        assert inside == [dev], "the ticket is looked up outside the device guard"
        events.append(("ticket", dev))
        return real_ticket(dev)

    monkeypatch.setattr(P, "_ticket", ticket)
    z, e = torch.randn(3, 5, device=triton_device), torch.randn(3, 5, device=triton_device)
    dev = z.device
    P.pearson_forward(z, e)
    P.pearson_forward(z, e, loss_weight=0.5)
    P.pearson_backward(torch.ones(3, device=triton_device), z, e)
    S.ogan_objective_forward(e, e, z, torch.ones(3, device=triton_device), "qp", 0.5, 0.5, P.EPS)
    assert events == [
        ("enter", dev), ("ticket", dev), ("launch", "fwd"), ("exit", dev),
        ("enter", dev), ("ticket", dev), ("launch", "fwd"), ("exit", dev),
        ("enter", dev), ("launch", "bwd"), ("exit", dev),
        ("enter", dev), ("ticket", dev), ("launch", "objective"), ("exit", dev),
    ]
    # the guard itself: a CUDA device becomes the current one (torch.cuda.device also makes
    # its current stream the one Triton launches on); other devices need none
    entered = []

    class FakeCudaDevice:
        def __init__(self, d):
            self.d = d

        def __enter__(self):
            entered.append(self.d)

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(torch.cuda, "device", FakeCudaDevice)
    with real_guard(torch.device("cuda", 1)):
        pass
    assert entered == [torch.device("cuda", 1)]
    with real_guard(torch.device("cpu")):
        pass
    assert entered == [torch.device("cuda", 1)]
