"""The Triton correlation kernels against a float64 reference (interpreter on CPU-only machines).

Error bounds (max error relative to the largest reference magnitude, see ``check``):
float32 inputs 1e-5; float16 inputs 1e-5 on rho and the loss (computed in float32 from
the same values), 1e-3 on gradients (written in float16: half an ulp is 4.9e-4);
bfloat16 inputs 1e-5 / 8e-3 (half a bfloat16 ulp is 3.9e-3).
"""

from __future__ import annotations

import math

import pytest
import torch

import ogan_plugin
from ogan_plugin.kernels import pearson as P

N_SIZES = (2, 3, 17, 128, 1000, 4096)
B_SIZES = (1, 7, 64)


def _data(B: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows with correlations of every size and sign, offsets and scales that vary per row."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, n, generator=g)
    mix = torch.rand(B, 1, generator=g) * 2 - 1
    e = mix * z + (1 - mix.abs()) * torch.randn(B, n, generator=g)
    e = e * 10 ** (torch.rand(B, 1, generator=g) * 4 - 2) + torch.randn(B, 1, generator=g) * 3
    return z, e


def _reference(z: torch.Tensor, e: torch.Tensor, grad: torch.Tensor, eps: float = P.EPS):
    """rho, d(sum grad*rho)/dz, d/de in float64 with autograd, and the gradients' natural scales."""
    z64 = z.detach().double().cpu().requires_grad_(True)
    e64 = e.detach().double().cpu().requires_grad_(True)
    rho = P.pearson_reference(z64, e64, eps)
    gz, ge = torch.autograd.grad(rho, (z64, e64), grad.double().cpu())

    def natural(x: torch.Tensor) -> float:
        spread = (x - x.mean(1, keepdim=True)).norm(dim=1).clamp_min(eps)
        return (grad.double().cpu().abs() / spread).max().item()

    return rho.detach(), gz, ge, natural(z64.detach()), natural(e64.detach())


def _run(z, e, backend="triton", grad=None, check_finite=True):
    z = z.detach().requires_grad_(True)
    e = e.detach().requires_grad_(True)
    rho = ogan_plugin.pearson_correlation(z, e, backend=backend, check_finite=check_finite)
    if grad is None:
        grad = torch.randn(rho.shape, generator=torch.Generator().manual_seed(1)).to(rho.device)
    gz, ge = torch.autograd.grad(rho, (z, e), grad)
    return rho, gz, ge, grad


@pytest.mark.parametrize("n", N_SIZES)
@pytest.mark.parametrize("B", B_SIZES)
def test_pearson_forward_backward_matches_float64(B, n, triton_device, check):
    z, e = (t.to(triton_device) for t in _data(B, n, seed=B * 10000 + n))
    rho, gz, ge, grad = _run(z, e)
    assert rho.dtype == torch.float32 and gz.dtype == ge.dtype == torch.float32
    r, rgz, rge, sz, se = _reference(z, e, grad)
    check(rho, r, 1e-5, 1.0, "rho")
    check(gz, rgz, 1e-5, sz, "grad z")
    check(ge, rge, 1e-5, se, "grad e")


@pytest.mark.parametrize("n", N_SIZES)
@pytest.mark.parametrize("B", B_SIZES)
def test_correlation_loss_matches_float64(B, n, triton_device, check):
    z, e = (t.to(triton_device) for t in _data(B, n, seed=7 + B * 10000 + n))
    z.requires_grad_(True)
    e.requires_grad_(True)
    loss = ogan_plugin.correlation_loss(z, e, 0.7, backend="triton")
    assert loss.shape == () and loss.dtype == torch.float32
    gz, ge = torch.autograd.grad(2.5 * loss, (z, e))
    grad = torch.full((B,), -0.7 * 2.5 / B, dtype=torch.float64)
    r, rgz, rge, sz, se = _reference(z, e, grad)
    check(loss, -0.7 * r.mean(), 1e-5, 0.7, "loss")
    check(gz, rgz, 1e-5, sz, "grad z")
    check(ge, rge, 1e-5, se, "grad e")


@pytest.mark.parametrize("n,max_block", [(1000, 256), (4096, 1024), (17, 4), (5000, P.MAX_BLOCK)])
def test_rows_longer_than_a_block_use_the_chunked_loop(n, max_block, triton_device, check, monkeypatch):
    assert not P.launch_config(7, n, max_block)["ONE_BLOCK"]
    monkeypatch.setattr(P, "MAX_BLOCK", max_block)
    z, e = (t.to(triton_device) for t in _data(7, n, seed=n))
    rho, gz, ge, grad = _run(z, e)
    r, rgz, rge, sz, se = _reference(z, e, grad)
    check(rho, r, 1e-5, 1.0, "rho")
    check(gz, rgz, 1e-5, sz, "grad z")
    check(ge, rge, 1e-5, se, "grad e")
    z.requires_grad_(True)
    loss = ogan_plugin.correlation_loss(z, e, backend="triton")
    check(loss, -0.5 * r.mean(), 1e-5, 0.5, "loss")


@pytest.mark.parametrize("dtype,grad_rtol", [(torch.float16, 1e-3), (torch.bfloat16, 8e-3)])
@pytest.mark.parametrize("n", (17, 1000))
def test_half_precision_inputs_accumulate_in_float32(dtype, grad_rtol, n, triton_device, check):
    z, e = _data(7, n, seed=3)
    for zt, et in ((z.to(dtype), e.to(dtype)), (z, e.to(dtype))):  # both half, and mixed
        zt, et = zt.to(triton_device), et.to(triton_device)
        rho, gz, ge, grad = _run(zt, et)
        assert rho.dtype == torch.float32 and gz.dtype == zt.dtype and ge.dtype == dtype
        r, rgz, rge, sz, se = _reference(zt, et, grad)
        check(rho, r, 1e-5, 1.0, "rho")
        check(gz, rgz, grad_rtol if zt.dtype == dtype else 1e-5, sz, "grad z")
        check(ge, rge, grad_rtol, se, "grad e")
        loss = ogan_plugin.correlation_loss(zt, et, backend="triton")
        check(loss, -0.5 * r.mean(), 1e-5, 0.5, "loss")


@pytest.mark.parametrize("max_block", [None, 256])
def test_near_constant_and_large_magnitude_rows(max_block, triton_device, check, monkeypatch):
    if max_block:
        monkeypatch.setattr(P, "MAX_BLOCK", max_block)
    g = torch.Generator().manual_seed(5)
    n = 1000
    z = torch.randn(6, n, generator=g)
    e = torch.stack(
        [
            5 + 1e-3 * torch.randn(n, generator=g),  # near-constant: float32 keeps ~4 digits of the deviations
            -7e4 + 0.05 * torch.randn(n, generator=g),
            1e30 * torch.randn(n, generator=g),  # large magnitude: no overflow
            -3e30 + 1e29 * torch.randn(n, generator=g),
            1e-30 * torch.randn(n, generator=g),  # norm below eps: the floor applies
            0.3 * z[5] + torch.randn(n, generator=g),
        ]
    )
    z[1] = 2e20 * z[1] + 1e30  # a large-magnitude z row too
    z, e = z.to(triton_device), e.to(triton_device)
    rho, gz, ge, grad = _run(z, e)
    r, rgz, rge, sz, se = _reference(z, e, grad)
    check(rho, r, 1e-5, 1.0, "rho")
    check(gz, rgz, 1e-5, sz, "grad z")
    check(ge, rge, 1e-5, se, "grad e")
    # The near-constant row keeps float32 accuracy in the kernel: subtracting the approximate
    # mean is exact (Sterbenz), the per-row divisions and square roots are correctly rounded
    # (tl.div_rn / tl.sqrt_rn, on a GPU too) and the sums run over centred values in a tree of
    # ~log2(n) = 10 levels; 32 ulp of rho bounds that with room for any summation order or FMA
    # contraction.  The float32 torch reference divides before centring and misses the same
    # bound by about 10x (it loses ~3 digits of the 1e-3 deviations on a base of 5).
    ulp = math.ldexp(1.0, math.frexp(abs(r[0].item()))[1] - 24)  # float32 ulp of rho[0]
    bound = 32 * ulp
    assert (rho[0].double().cpu() - r[0]).abs() <= bound
    assert (P.pearson_reference(z.cpu(), e.cpu())[0].double() - r[0]).abs() > 5 * bound


def test_constant_and_zero_rows_give_rho_zero_and_finite_gradients(triton_device, check):
    z = torch.randn(3, 17).to(triton_device)
    e = torch.stack([torch.full((17,), 3.25), torch.zeros(17), torch.randn(17)]).to(triton_device)
    rho, gz, ge, grad = _run(z, e)
    assert rho[0].item() == 0.0 and rho[1].item() == 0.0
    r, rgz, rge, sz, se = _reference(z, e, grad)
    check(gz, rgz, 1e-5, sz, "grad z")
    check(ge, rge, 1e-5, se, "grad e")  # u / eps on the constant rows: large, finite, exact


def test_non_contiguous_inputs_are_read_in_place(triton_device, check, count_launches):
    g = torch.Generator().manual_seed(11)
    z = torch.randn(40, 9, generator=g).to(triton_device).t()  # (9, 40), strides (1, 9)
    e = torch.randn(9, 80, generator=g).to(triton_device)[:, ::2]  # (9, 40), strides (80, 2)
    assert not z.is_contiguous() and not e.is_contiguous()
    grad = torch.randn(9).to(triton_device)
    with count_launches() as c:
        rho, gz, ge, grad = _run(z, e, grad=grad, check_finite=False)
    assert c.torch_ops == [] and len(c.triton) == 2, (c.triton, c.torch_ops)  # no .contiguous() copies
    r, rgz, rge, sz, se = _reference(z, e, grad)
    check(rho, r, 1e-5, 1.0, "rho")
    check(gz, rgz, 1e-5, sz, "grad z")
    check(ge, rge, 1e-5, se, "grad e")


def test_launch_budget_one_forward_one_backward(triton_device, count_launches):
    z = torch.randn(7, 33, device=triton_device)
    e = torch.randn(7, 33, device=triton_device, requires_grad=True)
    ogan_plugin.correlation_loss(z, e, backend="triton")  # first call allocates the cached ticket
    grad_rho = torch.ones(7, device=triton_device)
    grad_loss = torch.ones((), device=triton_device)
    with count_launches() as c:
        rho = ogan_plugin.pearson_correlation(z, e, backend="triton", check_finite=False)
        assert c.triton == ["_pearson_fwd_kernel"]
        (ge,) = torch.autograd.grad(rho, (e,), grad_rho)
    assert c.triton == ["_pearson_fwd_kernel", "_pearson_bwd_kernel"] and c.torch_ops == [], (c.triton, c.torch_ops)
    with count_launches() as c:
        loss = ogan_plugin.correlation_loss(z, e, backend="triton", check_finite=False)
        assert c.triton == ["_pearson_fwd_kernel"]
        torch.autograd.grad(loss, (e,), grad_loss)
    assert c.triton == ["_pearson_fwd_kernel", "_pearson_bwd_kernel"] and c.torch_ops == [], (c.triton, c.torch_ops)


def test_only_requested_gradients_are_computed(triton_device):
    z = torch.randn(4, 9, device=triton_device)
    e = torch.randn(4, 9, device=triton_device, requires_grad=True)
    ogan_plugin.correlation_loss(z, e, backend="triton").backward()
    assert z.grad is None and e.grad is not None and torch.isfinite(e.grad).all()
    gz, ge = P.pearson_backward(torch.ones(4, device=triton_device), z, e, need_z=False)
    assert gz is None and ge is not None


def test_loss_is_deterministic_and_the_ticket_is_reset(triton_device):
    z, e = (t.to(triton_device) for t in _data(64, 1000, seed=2))
    assert P.launch_config(64, 1000, 256)["grid"] == 8  # eight programs add their partial sums
    first = P.pearson_forward(z, e, loss_weight=0.5, max_block=256)
    for _ in range(2):
        assert torch.equal(P.pearson_forward(z, e, loss_weight=0.5, max_block=256), first)
    assert P._ticket(z.device).item() == 0


def test_float64_inputs_use_the_float64_reference(triton_device):
    z, e = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    rho = ogan_plugin.pearson_correlation(z.to(triton_device), e.to(triton_device), backend="triton")
    assert rho.dtype == torch.float64
    # On a GPU the float64 reference runs there, with CUDA's summation order: |rho| <= 1 and
    # each sum has n = 6 terms of size <= 1, so two orders differ by at most ~2 * 6 ulp per
    # sum and a few sums: 64 * n * eps64 (4e-14) is a safe bound; on the CPU it is exact.
    torch.testing.assert_close(rho.cpu(), P.pearson_reference(z, e), rtol=0, atol=64 * 6 * torch.finfo(torch.float64).eps)


def test_environment_variable_selects_triton(triton_device, monkeypatch, count_launches):
    monkeypatch.setenv("OGAN_PLUGIN_BACKEND", "triton")
    z, e = torch.randn(3, 6, device=triton_device), torch.randn(3, 6, device=triton_device)
    with count_launches() as c:
        rho = ogan_plugin.pearson_correlation(z, e)
    assert c.triton == ["_pearson_fwd_kernel"]
    torch.testing.assert_close(rho, P.pearson_reference(z, e), rtol=1e-5, atol=1e-6)


def test_column_offsets_beyond_int32_are_read_correctly(triton_device, check):
    """A column-strided view whose last column lies 2**31 elements past its first: the kernels'
    column offsets are 64-bit (a 32-bit ``cols * stride_n`` would wrap and read elsewhere).
    The 4 GiB float16 buffer is only reserved, never filled: 24 elements are written."""
    stride_n = 2**30
    try:
        buf = torch.empty(2 * stride_n + 8, dtype=torch.float16, device=triton_device)
    except (RuntimeError, MemoryError) as exc:  # an address space too small for 4 GiB
        pytest.skip(f"cannot reserve a 4 GiB buffer here: {exc}")
    z = buf.as_strided((4, 3), (1, stride_n), 0)
    e = buf.as_strided((4, 3), (1, stride_n), 4)
    assert (z.shape[1] - 1) * z.stride(1) >= 2**31
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        z.copy_(torch.randn(4, 3, generator=g))
        e.copy_(torch.randn(4, 3, generator=g))
    grad = torch.randn(4, generator=g).to(triton_device)
    rho, gz, ge, _ = _run(z, e, grad=grad)
    r, rgz, rge, sz, se = _reference(z.contiguous(), e.contiguous(), grad)
    check(rho, r, 1e-5, 1.0, "rho")
    check(gz, rgz, 1e-3, sz, "grad z")  # float16 gradients: half an ulp is 4.9e-4
    check(ge, rge, 1e-3, se, "grad e")
    loss = ogan_plugin.correlation_loss(z, e, backend="triton")
    check(loss, -0.5 * r.mean(), 1e-5, 0.5, "loss")
    from ogan_plugin.kernels import single_loss as S

    out = S.ogan_objective_triton(e, e, z, None, "hinge", 0.5, 0.5, P.EPS)
    check(out.rho, r, 1e-5, 1.0, "objective rho")
    del buf
