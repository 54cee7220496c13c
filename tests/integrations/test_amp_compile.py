"""Mixed precision (bfloat16 autocast on CPU) and torch.compile of the O-GAN pieces.

Documented bounds for bfloat16 autocast (8-bit mantissa, relative rounding ~4e-3): the
losses and rho are float32 tensors computed in float32 from the bf16 network outputs;
rho is within 0.01 of the float32 run, and each parameter's gradient is within 8%
(relative L2 norm) of the float32 gradient (measured: <= 4.2% on these nets).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.step import SingleLossStep
from ogan_plugin.training import single_loss

Z = 8
GRAD_RTOL_BF16 = 0.08
RHO_ATOL_BF16 = 0.01




def nets() -> tuple[nn.Module, ogan_plugin.OGANDiscriminator]:
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(Z, 3 * 64), nn.Tanh(), nn.Unflatten(1, (3, 8, 8)))
    D = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(16, 1, 4, 1, 0))
    return G, ogan_plugin.wrap(D, z_dim=Z)


def batch(b: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, 8, 8, generator=g), torch.randn(b, Z, generator=g)


def grads(*modules: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for m in modules for p in m.parameters()]


def assert_grads_close_bf16(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and torch.isfinite(g).all()
        assert float((g - w).norm() / w.norm()) < GRAD_RTOL_BF16


# --- autocast bfloat16 ------------------------------------------------------------------------
def test_decompose_and_correlation_under_bf16_autocast() -> None:
    G, D = nets()
    x, z = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = D.decompose(x)
        loss = ogan_plugin.correlation_loss(z, out.raw)
    assert out.raw.dtype == torch.bfloat16  # the network runs in bf16 ...
    assert out.score.dtype == out.code.dtype == loss.dtype == torch.float32  # ... the O-GAN parts in float32
    want = ogan_plugin.correlation_loss(z, D.decompose(x).raw)
    assert torch.isfinite(loss) and abs(float((loss - want).detach())) < 0.5 * RHO_ATOL_BF16


@pytest.mark.parametrize("loss, routing", [("qp", "split"), ("bce", "three_forward")])
def test_single_loss_under_bf16_autocast_matches_float32(loss: str, routing: str) -> None:
    x, z = batch()
    results = []
    for amp in (False, True):
        G, D = nets()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = single_loss(G, D, x, z, loss=loss, routing=routing, return_terms=True)
        out.loss.backward()
        results.append((out, grads(G, D)))
    (o32, g32), (o16, g16) = results
    for t in (o16.loss, o16.loss_d, o16.loss_g, o16.rho):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()
    assert abs(float(o16.rho.mean() - o32.rho.mean())) < RHO_ATOL_BF16
    assert_grads_close_bf16(g16, g32)


def test_hook_mode_under_bf16_autocast_matches_float32() -> None:
    x, z = batch()
    results = []
    for amp in (False, True):
        G, D = nets()
        with ogan_plugin.attach(D, G, 0.5) as hook:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                fake = G(z)
                loss = nn.functional.softplus(-D(fake).float()).mean()  # a non-saturating G loss
            loss.backward()
            assert hook.calls == 1 and hook.last_rho.dtype == torch.float32
            results.append((float(hook.last_rho), grads(G, D)))
    (r32, g32), (r16, g16) = results
    assert abs(r16 - r32) < RHO_ATOL_BF16
    assert_grads_close_bf16(g16, g32)


# --- torch.compile --------------------------------------------------------------------------------
def test_compile_wrapped_discriminator_fullgraph() -> None:
    G, D = nets()
    x, _ = batch(8)
    want = D.decompose(x)
    want.raw.sum().backward()
    want_grads = grads(D)
    D.zero_grad()
    got = torch.compile(D.decompose, fullgraph=True)(x)
    got.raw.sum().backward()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads(D), want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.compile(D, fullgraph=True)(x), D(x), rtol=1e-5, atol=1e-6)


def test_compile_correlation_loss_fullgraph_matches_eager() -> None:
    g = torch.Generator().manual_seed(2)
    z, e = torch.randn(8, Z, generator=g), torch.randn(8, Z, generator=g)
    fn = torch.compile(lambda z, e: ogan_plugin.correlation_loss(z, e, 0.5), fullgraph=True)
    e1, e2 = e.clone().requires_grad_(True), e.clone().requires_grad_(True)
    got, want = fn(z, e1), ogan_plugin.correlation_loss(z, e2, 0.5)
    got.backward()
    want.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(e1.grad, e2.grad)


@pytest.mark.parametrize("loss", ["qp", "hinge"])
def test_compile_fused_objective_operator_fullgraph_matches_reference(loss: str) -> None:
    import ogan_plugin.kernels  # noqa: F401  (registers torch.ops.ogan_plugin.*)
    from ogan_plugin.kernels.single_loss import ogan_objective_reference

    g = torch.Generator().manual_seed(3)
    e_real, e_fake, z = (torch.randn(8, Z, generator=g) for _ in range(3))
    dist = torch.rand(8, generator=g) + 0.1 if loss == "qp" else None

    def objective(e_real, e_fake, z, dist):
        return torch.ops.ogan_plugin.ogan_objective(e_real, e_fake, z, dist, loss, 0.5, 1.5, ogan_plugin.EPS)

    got = torch.compile(objective, fullgraph=True)(e_real, e_fake, z, dist)
    want = ogan_objective_reference(e_real, e_fake, z, dist, loss, 0.5, 1.5, ogan_plugin.EPS)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("routing", ["split", "three_forward"])
def test_compiled_single_loss_training_step_matches_eager(routing: str) -> None:
    x, z = batch(16)
    params = []
    for compiled in (False, True):
        G, D = nets()
        opt = torch.optim.SGD([*G.parameters(), *D.parameters()], lr=0.1)
        trainer = SingleLossStep(G, D, loss="qp", routing=routing, optimizer=opt)
        step = torch.compile(trainer.step) if compiled else trainer.step
        results = [step(x, z) for _ in range(2)]
        assert [r.step for r in results] == [1, 2]
        params.append(([p.detach().clone() for p in [*G.parameters(), *D.parameters()]], results))
    (p_eager, r_eager), (p_comp, r_comp) = params
    for a, b in zip(p_comp, p_eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(r_comp, r_eager):
        torch.testing.assert_close(a.rho, b.rho, rtol=1e-5, atol=1e-6)


def test_compile_alternating_losses_fullgraph_matches_eager() -> None:
    """The alternating form compiles without a graph break (fullgraph): D.decompose, OGANLoss's
    adversarial terms and the correlation term; the compiled loss and D's gradients equal eager."""
    G, D = nets()
    x, z = batch(8)
    fake = G(z).detach()
    crit = ogan_plugin.OGANLoss("hinge", 0.5)

    def d_loss(x, fake, z):
        return crit.discriminator_loss(D.decompose(x), D.decompose(fake), z)

    want = d_loss(x, fake, z)
    want.backward()
    want_grads = grads(D)
    D.zero_grad()
    got = torch.compile(d_loss, fullgraph=True)(x, fake, z)
    got.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads(D), want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
