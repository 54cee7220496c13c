"""The fused O-GAN objective kernel (qp, hinge) against the float64 reference, and the
reference against autograd of the two losses.

Error bounds as in test_pearson.py: 1e-5 of the largest reference magnitude for float32
inputs (the correlation gradient measured against its natural scale 1 / B / ||e - mean||,
the slopes against 1 / B); the correlation gradient written in bfloat16 within 8e-3.
"""

from __future__ import annotations

import pytest
import torch

from ogan_plugin.kernels import pearson as P
from ogan_plugin.kernels import single_loss as S
from ogan_plugin.registry import get_registry

CASES = [(1, 2), (7, 3), (64, 17), (7, 128), (64, 1000), (7, 4096)]


def _inputs(B: int, n: int, seed: int, loss: str):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, n, generator=g)
    e_fake = 0.4 * z + torch.randn(B, n, generator=g) + torch.randn(B, 1, generator=g)
    e_real = torch.randn(B, n, generator=g) * 0.5
    if loss == "hinge":  # real scores on both sides of the hinge's kink at 1, away from it
        e_real += torch.where(torch.arange(B) % 2 == 0, 0.2, 1.7).unsqueeze(1) - e_real.mean(1, keepdim=True)
        e_fake += torch.where(torch.arange(B) % 3 == 0, -1.8, 0.1).unsqueeze(1) - e_fake.mean(1, keepdim=True)
    dist = torch.rand(B, generator=g) + 0.05
    return e_real, e_fake, z, dist


def _natural(e_fake: torch.Tensor, B: int, w: float = 1.0) -> float:
    x = e_fake.double().cpu()
    return w / B / (x - x.mean(1, keepdim=True)).norm(dim=1).clamp_min(P.EPS).min().item()


def _compare(out: S.ObjectiveOutput, ref: S.ObjectiveOutput, check, rtol: float, scale: float, grad_rtol: float) -> None:
    B = out.rho.shape[0]
    check(out.loss_d, ref.loss_d, 1e-5, 1.0, "loss_d")
    check(out.loss_g, ref.loss_g, 1e-5, 1.0, "loss_g")
    check(out.rho, ref.rho, 1e-5, 1.0, "rho")
    check(out.slope_real, ref.slope_real, rtol, 1.0 / B, "slope_real")
    check(out.slope_fake_d, ref.slope_fake_d, rtol, 1.0 / B, "slope_fake_d")
    check(out.slope_fake_g, ref.slope_fake_g, rtol, 1.0 / B, "slope_fake_g")
    check(out.corr, ref.corr, grad_rtol, scale, "corr")


def _autograd_gradients(e_real, e_fake, z, dist, loss, w, wg):
    """dL_D/de_real, dL_D/de_fake, dL_G/de_fake by autograd of the two losses (float64)."""
    from ogan_plugin.losses import get_loss

    adv = get_loss(loss)
    er, ef = e_real.double().requires_grad_(True), e_fake.double().requires_grad_(True)
    rho = P.pearson_reference(z.double(), ef)
    loss_d = adv.d_loss(er.mean(1), ef.mean(1), None if dist is None else dist.double()).mean() - w * rho.mean()
    loss_g = adv.g_loss(ef.mean(1)).mean() - wg * rho.mean()
    grad_real, grad_d = torch.autograd.grad(loss_d, (er, ef), retain_graph=True)
    (grad_g,) = torch.autograd.grad(loss_g, ef)
    return loss_d.detach(), loss_g.detach(), grad_real, grad_d, grad_g


@pytest.mark.parametrize("loss", ["qp", "hinge"])
@pytest.mark.parametrize("B,n", CASES)
def test_fused_objective_matches_float64_reference(loss, B, n, triton_device, check):
    e_real, e_fake, z, dist = _inputs(B, n, seed=B * 1000 + n, loss=loss)
    fn = get_registry().resolve("ogan_objective", triton_device, backend="triton").fn
    out = fn(e_real.to(triton_device), e_fake.to(triton_device), z.to(triton_device), dist.to(triton_device), loss, 0.5, 1.5, P.EPS)
    assert [t.dtype for t in out] == [torch.float32] * 7
    ref = S.ogan_objective_reference(e_real.double(), e_fake.double(), z.double(), dist.double(), loss, 0.5, 1.5, P.EPS)
    _compare(out, ref, check, 1e-5, _natural(e_fake, B), 1e-5)


@pytest.mark.parametrize("loss", ["qp", "hinge"])
def test_chunked_rows_and_non_contiguous_inputs(loss, triton_device, check, monkeypatch):
    monkeypatch.setattr(P, "MAX_BLOCK", 256)
    e_real, e_fake, z, dist = _inputs(7, 1000, seed=3, loss=loss)
    # the views are made on the device: .to(device) of a strided CPU view copies it contiguous
    nc = lambda t: t.to(triton_device).t().contiguous().t()  # noqa: E731 - same values, column-major
    args = (nc(e_real), nc(e_fake), nc(z), torch.stack([dist, dist], 1).to(triton_device)[:, 0])
    assert not any(t.is_contiguous() for t in args)
    out = S.ogan_objective_triton(*args, loss, 0.3, 0.8, P.EPS)
    ref = S.ogan_objective_reference(e_real.double(), e_fake.double(), z.double(), dist.double(), loss, 0.3, 0.8, P.EPS)
    _compare(out, ref, check, 1e-5, _natural(e_fake, 7), 1e-5)


def test_bfloat16_encodings(triton_device, check):
    e_real, e_fake, z, dist = _inputs(7, 128, seed=9, loss="qp")
    er, ef = e_real.bfloat16(), e_fake.bfloat16()
    out = S.ogan_objective_triton(er.to(triton_device), ef.to(triton_device), z.to(triton_device), dist.to(triton_device), "qp", 0.5, 1.5, P.EPS)
    assert out.corr.dtype == torch.bfloat16
    assert out.loss_d.dtype == out.rho.dtype == out.slope_fake_d.dtype == torch.float32
    ref = S.ogan_objective_reference(er.double(), ef.double(), z.double(), dist.double(), "qp", 0.5, 1.5, P.EPS)
    _compare(out, ref, check, 1e-5, _natural(ef, 7), 8e-3)


def test_one_launch_and_no_other_work(triton_device, count_launches):
    e_real, e_fake, z, dist = (t.to(triton_device) for t in _inputs(7, 33, seed=1, loss="qp"))
    S.ogan_objective_triton(e_real, e_fake, z, dist, "qp", 0.5, 1.5, P.EPS)  # allocates the cached ticket
    for loss in ("qp", "hinge"):
        with count_launches() as c:
            S.ogan_objective_triton(e_real, e_fake, z, dist, loss, 0.5, 1.5, P.EPS)
        assert c.triton == ["_objective_kernel"] and c.torch_ops == [], (c.triton, c.torch_ops)


def test_other_losses_and_float64_use_the_reference(triton_device, count_launches):
    e_real, e_fake, z, dist = (t.to(triton_device) for t in _inputs(5, 9, seed=2, loss="qp"))
    for loss in ("bce", "wgan"):
        with count_launches() as c:
            out = S.ogan_objective_triton(e_real, e_fake, z, None, loss, 0.5, 1.5, P.EPS)
        ref = S.ogan_objective_reference(e_real, e_fake, z, None, loss, 0.5, 1.5, P.EPS)
        assert c.triton == [] and all(torch.equal(a, b) for a, b in zip(out, ref))
    out = S.ogan_objective_triton(e_real.double(), e_fake.double(), z.double(), dist.double(), "qp", 0.5, 1.5, P.EPS)
    assert out.corr.dtype == out.slope_fake_d.dtype == torch.float64
    with pytest.raises(ValueError, match="QP loss needs dist"):
        S.ogan_objective_triton(e_real, e_fake, z, None, "qp", 0.5, 1.5, P.EPS)


def test_gradient_streams_route_as_documented(triton_device):
    """The parts: corr is zero-mean per row (the code's part), the slopes carry the scores'
    part; with one weight the two fake streams differ by their adversarial slopes only."""
    B, n = 6, 10
    e_real, e_fake, z, dist = (t.to(triton_device) for t in _inputs(B, n, seed=4, loss="qp"))
    out = S.ogan_objective_triton(e_real, e_fake, z, dist, "qp", 0.5, 0.5, P.EPS)
    torch.testing.assert_close(out.corr.double().sum(1).cpu(), torch.zeros(B, dtype=torch.float64), atol=1e-6 * _natural(e_fake, B), rtol=0)
    _, grad_d, grad_g = out.gradients(0.5, 0.5)
    diff = (grad_d - grad_g).double()
    torch.testing.assert_close(diff, diff[:, :1].expand(B, n))  # constant along each row
    t = e_fake.double().mean(1) - e_real.double().mean(1)
    expected = (2 + 0.5 * t / dist.double()) / (B * n)  # slope_fake + 1, over B * n
    torch.testing.assert_close(diff[:, 0].cpu(), expected.cpu(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loss", ["qp", "hinge", "bce", "wgan"])
def test_reference_gradients_equal_autograd_of_both_losses(loss, dtype):
    """The reference's closed form, put together by ObjectiveOutput.gradients, is the
    gradient of L_D and L_G (autograd in float64), for every built-in loss."""
    e_real, e_fake, z, dist = (t.to(dtype) for t in _inputs(5, 12, seed=6, loss=loss))
    d = dist if loss == "qp" else None
    out = S.ogan_objective_reference(e_real, e_fake, z, d, loss, 0.5, 1.5, P.EPS)
    assert out.corr.dtype == dtype and out.loss_d.dtype == out.slope_real.dtype == dtype
    loss_d, loss_g, *want = _autograd_gradients(e_real, e_fake, z, d, loss, 0.5, 1.5)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(out.loss_d.double(), loss_d, rtol=tol, atol=tol)
    torch.testing.assert_close(out.loss_g.double(), loss_g, rtol=tol, atol=tol)
    for name, got, ref in zip(("grad_real", "grad_fake_d", "grad_fake_g"), out.gradients(0.5, 1.5), want):
        assert got.dtype == dtype and got.shape == ref.shape, name
        torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol * ref.abs().max().item(), msg=name)


@pytest.mark.parametrize("loss", ["qp", "hinge"])
def test_each_weight_reaches_only_its_own_loss(loss, triton_device):
    """corr_weight shapes L_D only, corr_weight_g L_G only; the parts carry no weight."""
    B, n = 7, 40
    e_real, e_fake, z, dist = (t.to(triton_device) for t in _inputs(B, n, seed=5, loss=loss))
    two = S.ogan_objective_triton(e_real, e_fake, z, dist, loss, 0.5, 2.0, P.EPS)
    d_only = S.ogan_objective_triton(e_real, e_fake, z, dist, loss, 0.5, 0.5, P.EPS)
    g_only = S.ogan_objective_triton(e_real, e_fake, z, dist, loss, 2.0, 2.0, P.EPS)
    for name in ("loss_d", "rho", "corr", "slope_real", "slope_fake_d", "slope_fake_g"):
        torch.testing.assert_close(getattr(two, name), getattr(d_only, name), rtol=1e-6, atol=1e-9, msg=name)
    for name in ("loss_g",):
        torch.testing.assert_close(getattr(two, name), getattr(g_only, name), rtol=1e-6, atol=1e-9, msg=name)
    # no correlation in L_G: its gradient is the adversarial -1 / (B n) everywhere
    none = S.ogan_objective_triton(e_real, e_fake, z, dist, loss, 0.5, 0.0, P.EPS)
    assert torch.equal(none.slope_fake_g, torch.full((B,), -1.0 / B, device=triton_device))
    torch.testing.assert_close(none.gradients(0.5, 0.0)[2], torch.full((B, n), -1.0 / (B * n), device=triton_device))
    torch.testing.assert_close(none.loss_g, -e_fake.float().mean(), rtol=1e-6, atol=1e-7)
