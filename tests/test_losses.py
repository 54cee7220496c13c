"""Adversarial losses (functional and registered objects) and OGANLoss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ogan_plugin
from ogan_plugin import losses as L


@pytest.fixture
def scores(device):
    """(real scores, fake scores) in float64 on ``device``."""
    g = torch.Generator().manual_seed(0)
    r, f = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    return r.to(device), f.to(device)


def test_functional_values(scores):
    """float64 scores give float64 losses (exact); lower precisions reduce in float32."""
    r, f = scores
    dist = torch.rand(6, dtype=torch.float64, device=r.device) + 0.1
    t = f - r
    torch.testing.assert_close(L.qp_d_loss(r, f, dist), (t + 0.25 * t**2 / dist).mean(), rtol=1e-15, atol=0)
    torch.testing.assert_close(L.qp_g_loss(f), -f.mean(), rtol=1e-15, atol=0)
    torch.testing.assert_close(L.hinge_d_loss(r, f), (torch.relu(1 - r) + torch.relu(1 + f)).mean(), rtol=1e-15, atol=0)
    torch.testing.assert_close(L.bce_d_loss(r, f), (F.softplus(-r) + F.softplus(f)).mean(), rtol=1e-15, atol=0)
    torch.testing.assert_close(L.bce_g_loss(f), F.softplus(-f).mean(), rtol=1e-15, atol=0)
    # BCE on logits equals torch's binary cross-entropy with targets 1 (real) and 0 (fake)
    bce = F.binary_cross_entropy_with_logits(r, torch.ones_like(r)) + F.binary_cross_entropy_with_logits(
        f, torch.zeros_like(f)
    )
    torch.testing.assert_close(L.bce_d_loss(r, f), bce)
    torch.testing.assert_close(L.wgan_d_loss(r, f), (f - r).mean(), rtol=1e-15, atol=0)
    torch.testing.assert_close(L.wgan_g_loss(f, reduction="sum"), -f.sum(), rtol=1e-15, atol=0)
    assert L.hinge_g_loss(f, reduction="none").shape == (6,)
    for fn in (L.qp_g_loss, L.hinge_g_loss, L.bce_g_loss, L.wgan_g_loss):
        assert fn(f).dtype == torch.float64 and fn(f.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("name", ["qp", "hinge", "bce", "wgan"])
def test_closed_form_slopes_equal_autograd(scores, name):
    """Each built-in loss's closed-form slopes (what the single loss uses instead of an
    autograd pass) equal the derivatives of its d_loss/g_loss, in float64."""
    r, f = scores
    r = torch.cat([r, torch.tensor([0.999, -1.001], dtype=torch.float64)])  # near the hinge's kinks, not on them
    f = torch.cat([f, torch.tensor([-1.001, 0.5], dtype=torch.float64)])
    dist = torch.rand(8, dtype=torch.float64) + 0.1
    adv = L.get_loss(name)
    closed = adv.slopes(r, f, dist)
    assert closed is not None

    class Plain(L.AdversarialLoss):  # the same loss without its closed form: loss_slopes differentiates
        needs_dist = adv.needs_dist
        d_loss, g_loss = adv.d_loss, adv.g_loss

    auto = L.loss_slopes(Plain(), r, f, dist)
    for field, a, b in zip(L.LossSlopes._fields, closed, auto):
        torch.testing.assert_close(a.to(torch.float64), b.to(torch.float64), rtol=1e-12, atol=1e-14, msg=field)


def test_qp_matches_method_md_up_to_the_score_sign(scores):
    # METHOD.md: t1 = s_real - s_fake minimized by D (real pushed down). Ours: score -> -score.
    r, f = scores
    dist = torch.rand(6, dtype=torch.float64, device=r.device) + 0.1
    t1 = (-r) - (-f)
    torch.testing.assert_close(L.qp_d_loss(r, f, dist).double(), (t1 + 0.25 * t1**2 / dist).mean(), rtol=1e-6, atol=1e-7)


def test_reduction_is_checked(scores):
    with pytest.raises(ValueError, match="reduction"):
        L.wgan_g_loss(scores[0], reduction="avg")


def test_registered_losses_and_lookup():
    assert {"qp", "hinge", "bce", "wgan"} <= set(ogan_plugin.get_registry().losses())
    assert L.get_loss("hinge").name == "hinge"
    with pytest.raises(ValueError, match="loss must be one of"):
        L.get_loss("lsgan-typo")


def test_pixel_distance(device):
    a, b = torch.zeros(2, 1, 2, 2, device=device), torch.ones(2, 1, 2, 2, device=device)
    b[1] = 3
    torch.testing.assert_close(L.pixel_distance(a, b), torch.tensor([1.0, 9.0], device=device))
    assert L.pixel_distance(a, a).min() > 0  # floored: the QP division stays finite
    with pytest.raises(ValueError, match="x_real and x_fake must have the same shape"):
        L.pixel_distance(a, torch.zeros(2, 4, device=device))


@pytest.mark.parametrize("name", ["qp", "hinge", "bce", "wgan"])
def test_ogan_loss_is_adversarial_plus_correlation(name, device):
    g = torch.Generator().manual_seed(1)
    er, ef, z = (torch.randn(5, 8, generator=g).to(device) for _ in range(3))
    xr, xf = torch.randn(5, 3, 4, 4, generator=g).to(device), torch.randn(5, 3, 4, 4, generator=g).to(device)
    crit = ogan_plugin.OGANLoss(name, corr_weight=0.5)
    adv = L.get_loss(name)
    dist = L.pixel_distance(xr, xf) if adv.needs_dist else None
    corr = -0.5 * ogan_plugin.pearson_correlation(z, ef).mean()
    d = crit.discriminator_loss(er, ef, z, x_real=xr, x_fake=xf)
    torch.testing.assert_close(d, adv.d_loss(er.mean(1), ef.mean(1), dist).mean() + corr)
    torch.testing.assert_close(crit.generator_loss(ef, z), adv.g_loss(ef.mean(1)).mean() + corr)
    terms = crit(er, ef, z, x_real=xr, x_fake=xf)
    torch.testing.assert_close(terms.discriminator, d)
    # a separate generator weight changes the generator's loss only
    two = ogan_plugin.OGANLoss(name, corr_weight=0.5, corr_weight_g=2.0)
    torch.testing.assert_close(two.discriminator_loss(er, ef, z, x_real=xr, x_fake=xf), d)
    torch.testing.assert_close(two.generator_loss(ef, z), adv.g_loss(ef.mean(1)).mean() + 4 * corr)


def test_check_corr_weights_resolves_the_generators_weight():
    from ogan_plugin.losses import check_corr_weights

    assert check_corr_weights(2) == (2.0, 2.0)  # None: the same as corr_weight
    got = check_corr_weights(3, 0)
    assert got == (3.0, 0.0) and all(type(w) is float for w in got)
    assert ogan_plugin.OGANLoss("qp", 1.5).corr_weight_g == 1.5
    assert ogan_plugin.OGANLoss("qp", 1.5, corr_weight_g=0).corr_weight_g == 0.0


def test_ogan_loss_bad_arguments():
    with pytest.raises(ValueError, match="corr_weight must be"):
        ogan_plugin.OGANLoss("qp", corr_weight=-1)
    with pytest.raises(ValueError, match="corr_weight_g must be a number >= 0 or None"):
        ogan_plugin.OGANLoss("qp", corr_weight_g=float("nan"))
    with pytest.raises(ValueError, match="needs x_real and x_fake"):
        ogan_plugin.OGANLoss("qp").discriminator_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3))
