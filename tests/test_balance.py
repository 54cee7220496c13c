"""Hook mode's balanced weight (ogan_plugin.balance): its math, in hook mode and alone.

In a constructed float64 case the gradient that reaches the head's z_dim outputs splits
exactly into the adversarial part (the row mean: the score is the mean of the outputs) and
the correlation part (zero-mean rows); the balanced rule makes the ratio of their norms the
target, in each step, while an explicit number still gives exactly the old gradients.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.balance import AUTO, Balanced, balanced_grad, resolve_hook_weights

NZ = 6


def pair():
    torch.manual_seed(4)
    G = nn.Sequential(nn.Linear(NZ, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    D = nn.Sequential(nn.Linear(10, 12), nn.LeakyReLU(0.2), nn.Linear(12, 1), nn.Sigmoid()).double()
    return G, ogan_plugin.wrap(D, z_dim=NZ)


class RawGrad:
    """Keeps the gradient that reaches the head layer's outputs (= raw: no output scale) per call."""

    def __init__(self, D: ogan_plugin.OGANDiscriminator) -> None:
        self.grads: list[torch.Tensor] = []
        D.head.layer.register_forward_hook(self._keep)

    def _keep(self, module, args, out) -> None:
        if out.requires_grad:
            out.register_hook(lambda g: self.grads.append(g.detach().clone()))


def split(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial part: the row means, broadcast; correlation part: the centred rows)."""
    mean = g.mean(1, keepdim=True).expand_as(g)
    return mean, g - mean


def unit_corr_grad(z: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """The gradient of -mean(rho(z, raw)) w.r.t. raw, computed apart."""
    e = raw.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(-ogan_plugin.pearson_correlation(z, e).mean(), e)
    return g


def example_step(G, D, z, x, loss_scale: float = 1.0):
    """The DCGAN example's step, BCE on D's Sigmoid: returns (D's grads, G's grads)."""
    bce = nn.BCELoss()
    ones, zeros = torch.ones(len(x), dtype=x.dtype), torch.zeros(len(x), dtype=x.dtype)
    D.zero_grad()
    G.zero_grad()
    (loss_scale * bce(D(x).view(-1), ones)).backward()
    fake = G(z)
    (loss_scale * bce(D(fake.detach()).view(-1), zeros)).backward()
    d_grads = [p.grad.clone() for p in D.parameters()]
    D.zero_grad()
    (loss_scale * bce(D(fake).view(-1), ones)).backward()
    return d_grads, [p.grad.clone() for p in G.parameters()]


def test_balanced_grad_has_the_target_norm_and_the_correlation_direction() -> None:
    torch.manual_seed(0)
    g_corr, g_score = torch.randn(8, NZ, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    out = balanced_grad(g_corr, g_score, 2.5, NZ)
    assert out.dtype == torch.float64
    want_norm = 2.5 * g_score.norm() / math.sqrt(NZ)
    torch.testing.assert_close(out.norm(), want_norm, rtol=1e-13, atol=0)
    torch.testing.assert_close(out, g_corr * (want_norm / g_corr.norm()), rtol=1e-13, atol=0)
    assert torch.equal(balanced_grad(g_corr, torch.zeros_like(g_score), 2.5, NZ), torch.zeros_like(g_corr))
    assert torch.equal(balanced_grad(torch.zeros_like(g_corr), g_score, 2.5, NZ), torch.zeros_like(g_corr))  # no NaN
    half = balanced_grad(g_corr.float(), g_score.float(), 2.5, NZ)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.double(), out, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("ratio_d,ratio_g", [(1.0, 1.0), (4.0, 0.5)])
def test_hook_mode_balances_each_step_at_its_target(ratio_d: float, ratio_g: float) -> None:
    G, D = pair()
    z, x = torch.randn(9, NZ, dtype=torch.float64), torch.randn(9, 10, dtype=torch.float64)
    seen = RawGrad(D)
    ogan_plugin.attach(D, G, corr_weight=Balanced(ratio_d), corr_weight_g=Balanced(ratio_g))
    example_step(G, D, z, x)
    real, fake_d, fake_g = seen.grads  # netD(real), netD(fake.detach()), netD(fake)
    with torch.no_grad():
        raw = D.decompose(G(z)).raw
    assert split(real)[1].abs().max() < 1e-15  # a real batch gets no term
    for g, ratio in ((fake_d, ratio_d), (fake_g, ratio_g)):
        adv, corr = split(g)
        torch.testing.assert_close(corr.norm() / adv.norm(), torch.tensor(ratio, dtype=torch.float64), rtol=1e-12, atol=0)
        unit = unit_corr_grad(z, raw)  # the direction is the correlation's own
        torch.testing.assert_close(corr, unit * (corr.norm() / unit.norm()), rtol=1e-10, atol=1e-15)


def test_hook_mode_default_is_balanced_and_follows_the_scale_of_the_loss() -> None:
    G, D = pair()
    z, x = torch.randn(9, NZ, dtype=torch.float64), torch.randn(9, 10, dtype=torch.float64)
    seen = RawGrad(D)
    D = ogan_plugin.wrap(D, z_dim=NZ, generator=G)  # the one line
    hook = ogan_plugin.OGANHook.of(D)
    assert hook.corr_weight == hook.corr_weight_g == AUTO
    d1, g1 = example_step(G, D, z, x)
    adv, corr = split(seen.grads[1])
    torch.testing.assert_close(corr.norm() / adv.norm(), torch.tensor(AUTO.ratio, dtype=torch.float64), rtol=1e-12,
                               atol=0)
    d8, g8 = example_step(G, D, z, x, loss_scale=8.0)  # a scaled loss (accumulation, GradScaler): scaled alike
    for a, b in zip(d8 + g8, d1 + g1):
        torch.testing.assert_close(a, 8 * b, rtol=1e-12, atol=1e-15)
    assert ogan_plugin.attach(D, G, corr_weight="auto") is hook  # the same rule: the attached hook


def test_an_explicit_number_gives_exactly_the_fixed_weight_gradients() -> None:
    G, D = pair()
    z, x = torch.randn(9, NZ, dtype=torch.float64), torch.randn(9, 10, dtype=torch.float64)
    # the reference: the term added by hand to both losses, weight 0.5 (D) and 2 (G)
    bce = nn.BCELoss()
    ones, zeros = torch.ones(9, dtype=x.dtype), torch.zeros(9, dtype=x.dtype)
    D.zero_grad()
    bce(D(x).view(-1), ones).backward()
    fake = G(z)
    out = D.decompose(fake.detach())
    (bce(out.output.view(-1), zeros) + ogan_plugin.correlation_loss(z, out.raw, 0.5)).backward()
    want_d = [p.grad.clone() for p in D.parameters()]
    D.zero_grad()
    G.zero_grad()
    out = D.decompose(fake)
    (bce(out.output.view(-1), ones) + ogan_plugin.correlation_loss(z, out.raw, 2.0)).backward()
    want_g = [p.grad.clone() for p in G.parameters()]
    with ogan_plugin.attach(D, G, corr_weight=0.5, corr_weight_g=2) as hook:
        assert (hook.corr_weight, hook.corr_weight_g) == (0.5, 2.0)
        got_d, got_g = example_step(G, D, z, x)
    for a, b in zip(got_d + got_g, want_d + want_g):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    with ogan_plugin.attach(D, G) as hook:  # the balanced default: not the fixed 0.5
        auto_d, _ = example_step(G, D, z, x)
    assert not torch.allclose(auto_d[-1], got_d[-1])


def test_weights_mix_a_fixed_d_step_with_a_balanced_g_step() -> None:
    G, D = pair()
    z, x = torch.randn(9, NZ, dtype=torch.float64), torch.randn(9, 10, dtype=torch.float64)
    seen = RawGrad(D)
    ogan_plugin.attach(D, G, corr_weight=0.5, corr_weight_g=Balanced(3.0))
    example_step(G, D, z, x)
    with torch.no_grad():
        raw = D.decompose(G(z)).raw
    torch.testing.assert_close(split(seen.grads[1])[1], 0.5 * unit_corr_grad(z, raw), rtol=1e-10, atol=1e-15)
    adv, corr = split(seen.grads[2])
    torch.testing.assert_close(corr.norm() / adv.norm(), torch.tensor(3.0, dtype=torch.float64), rtol=1e-12, atol=0)


def test_resolve_hook_weights_and_bad_values() -> None:
    assert resolve_hook_weights("auto") == (AUTO, AUTO)
    assert resolve_hook_weights(0.5) == (0.5, 0.5) and isinstance(resolve_hook_weights(1)[0], float)
    assert resolve_hook_weights(0.5, "auto") == (0.5, AUTO)
    assert resolve_hook_weights(Balanced(2), 1) == (Balanced(2.0), 1.0)
    for bad in (-1, "strong", None, True, float("nan")):
        with pytest.raises(ValueError, match="corr_weight"):
            resolve_hook_weights(bad)
    with pytest.raises(ValueError, match="corr_weight_g"):
        resolve_hook_weights(0.5, -2)
    with pytest.raises(ValueError, match="corr_weight_g"):
        resolve_hook_weights(0.5, "x")
    for bad in (0, -1, float("inf"), "1", True):
        with pytest.raises(ValueError, match="ratio"):
            Balanced(bad)
    G, D = pair()
    with pytest.raises(ValueError, match="corr_weight"):
        ogan_plugin.attach(D, G, corr_weight="strong")
    hook = ogan_plugin.attach(D, G, corr_weight=Balanced(2))
    assert "Balanced(ratio=2.0)" in repr(hook)
    with pytest.raises(ValueError, match="already attached"):
        ogan_plugin.attach(D, G, corr_weight=Balanced(3))
