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
from ogan_plugin.registry import ENV_BACKEND, BackendUnavailableError, Registry

OPS = ("pearson", "correlation_loss", "ogan_objective")


def test_operators_pass_opcheck():
    z, e = torch.randn(4, 6), torch.randn(4, 6, requires_grad=True)
    cases = [
        (torch.ops.ogan_plugin.pearson.default, (z, e, 1e-6)),
        (torch.ops.ogan_plugin.correlation_loss.default, (z.requires_grad_(True), e, 0.5, 1e-6)),
        (torch.ops.ogan_plugin.pearson_backward.default, (torch.randn(4), z.detach(), e.detach(), 1e-6, 2.0, False, True)),
        (torch.ops.ogan_plugin.ogan_objective.default,
         (torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6), torch.rand(4) + 0.1, "qp", 0.5, 1.5, 1e-6)),
        (torch.ops.ogan_plugin.ogan_objective.default,
         (torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6), None, "hinge", 0.5, 0.0, 1e-6)),
    ]
    for op, args in cases:
        result = torch.library.opcheck(op, args)
        assert set(result.values()) == {"SUCCESS"}, (op, result)


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
def test_torch_compile_traces_without_graph_break(backend, monkeypatch):
    """Automatic choice (the reference on CPU), and the triton backend's function, which under
    torch.compile traces the ``ogan_plugin::correlation_loss`` operator (as on CUDA)."""
    torch._dynamo.reset()
    if backend is not None:
        monkeypatch.setenv(ENV_BACKEND, backend)
    fn = _step
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(fn, fullgraph=True, backend=counter)  # fullgraph: a break raises
    z = torch.randn(6, 8)
    e1 = torch.randn(6, 8, requires_grad=True)
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
    assert ("ogan_plugin.correlation_loss" in graph) == (backend == "triton"), graph
    torch._dynamo.reset()


def test_registry_picks_triton_on_cuda_and_the_reference_on_cpu(monkeypatch):
    monkeypatch.delenv(ENV_BACKEND, raising=False)
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


#: compiles every kernel for an H100 (sm_90) without a GPU: catches what the interpreter
#: accepts but the compiler rejects.  Runs in a subprocess: the kernels of this process
#: are interpreter kernels.
_GPU_BUILD = """
import os
os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from ogan_plugin.kernels import pearson as P, single_loss as S
P._TRITON.build(); S._TRITON.build()

def build(kernel, types, constexprs):
    sig = {a: "constexpr" if a in constexprs else types.get(a, "i32") for a in kernel.arg_names}
    src = ASTSource(fn=kernel, signature=sig, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8}).asm["cubin"]

f32 = lambda *names: {n: "*fp32" for n in names}
fwd = {**f32("z_ptr", "rho_ptr", "part_ptr", "loss_ptr"), "e_ptr": "*bf16", "count_ptr": "*i32",
       "eps": "fp32", "loss_scale": "fp32"}
assert build(P._pearson_fwd_kernel, fwd, dict(ROWS=8, BLOCK_N=512, ONE_BLOCK=0, STORE_RHO=0, LOSS=1, RBLOCK=64))
bwd = {**f32("g_ptr", "z_ptr", "e_ptr", "gz_ptr", "ge_ptr"), "eps": "fp32", "g_scale": "fp32"}
assert build(P._pearson_bwd_kernel, bwd, dict(ROWS=8, BLOCK_N=512, ONE_BLOCK=1, NEED_Z=1, NEED_E=1))
obj = {**f32("er_ptr", "ef_ptr", "z_ptr", "dist_ptr", "rho_ptr", "gr_ptr", "gfd_ptr", "gfg_ptr", "part_ptr",
             "loss_d_ptr", "loss_g_ptr"), "count_ptr": "*i32", "eps": "fp32", "corr_weight": "fp32",
       "inv_b": "fp32", "inv_bn": "fp32"}
assert build(S._objective_kernel, obj, dict(LOSS=0, ROWS=8, BLOCK_N=512, ONE_BLOCK=1, RBLOCK=64))
assert build(S._objective_kernel, obj, dict(LOSS=1, ROWS=1, BLOCK_N=1024, ONE_BLOCK=0, RBLOCK=64))
print("ok")
"""


def test_kernels_compile_for_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", _GPU_BUILD], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
