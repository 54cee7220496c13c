"""lucidrains' stylegan2-pytorch (pip install --no-deps stylegan2-pytorch): its discriminator,
which returns a tuple (logits, quantize_loss), wrapped and trained with the single-loss step
against the package's own style network and generator.

Runs against the real stylegan2_pytorch; torchvision, aim and the import-time GPU check may be
stand-ins (see conftest.py)."""

from __future__ import annotations

import torch
import torch.nn as nn

import ogan_plugin

Z = 32


class StyleGenerator(nn.Module):
    """z -> image with the package's StyleVectorizer and Generator (one style for all layers,
    no noise), so the single-loss step can call G(z)."""

    def __init__(self, sg2) -> None:
        super().__init__()
        self.S = sg2.StyleVectorizer(Z, 2, lr_mul=0.1)
        self.G = sg2.Generator(32, Z, network_capacity=2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        styles = self.S(z)[:, None].expand(-1, self.G.num_layers, -1)
        return self.G(styles, z.new_zeros(z.shape[0], 32, 32, 1))


def test_discriminator_with_a_tuple_output_wraps_keeps_every_output_and_trains(stylegan2_pytorch):
    torch.manual_seed(0)
    D = stylegan2_pytorch.Discriminator(32, network_capacity=2)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    before = D(x)
    wrapped = ogan_plugin.wrap(D, z_dim=Z)
    assert wrapped.head_path == "to_logit"
    after = wrapped(x)
    assert isinstance(after, tuple) and len(after) == len(before) == 2
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    dec = wrapped.decompose(x)
    assert dec.code.shape == (4, Z) and isinstance(dec.output, tuple)
    step = ogan_plugin.SingleLossStep(StyleGenerator(stylegan2_pytorch), wrapped, loss="hinge", corr_weight=1.0)
    for _ in range(3):
        r = step.step(x)
    assert r.step == 3 and torch.isfinite(r.loss)


# --- ogan_plugin.enable(trainer) and the package's own training loop -------------------------
import math  # noqa: E402
import random  # noqa: E402

import pytest  # noqa: E402

from ogan_plugin.integrations import trainers  # noqa: E402

TRAINER = {"image_size": 32, "network_capacity": 2, "batch_size": 4, "aug_prob": 1.0,
           "aug_types": ["translation", "cutout", "color"], "latent_dim": Z, "style_depth": 2}


@pytest.fixture
def cpu_trainer(stylegan2_pytorch, tmp_path, monkeypatch):
    """A real ``stylegan2_pytorch.Trainer`` whose GAN is built on the CPU: the package moves
    its networks with ``.cuda(rank)`` itself, made a no-op here (the only change)."""
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, device=None: self)

    def make(seed: int = 0):
        trainer = stylegan2_pytorch.Trainer(name="t", base_dir=str(tmp_path), **TRAINER)
        torch.manual_seed(seed)
        trainer.init_GAN()
        trainer.GAN.double()
        return trainer

    return make


def styles(sg2, n, layers, mixed):
    """``noise_list`` / ``mixed_list`` of stylegan2-pytorch 1.9.0 on the CPU (the package's call ``.cuda()``)."""
    if not mixed:
        return [(torch.randn(n, Z, dtype=torch.float64), layers)]
    tt = int(torch.rand(()).numpy() * layers)
    return [(torch.randn(n, Z, dtype=torch.float64), tt), (torch.randn(n, Z, dtype=torch.float64), layers - tt)]


def stylegan2_step(sg2, trainer, images, seed, gradient_penalty, explicit=None):
    """One ``Trainer.train()`` step of stylegan2-pytorch 1.9.0, written out for the CPU:
    gradient accumulation 1, no contrastive or path-length regularisation, no top-k, hinge
    losses, style mixing, the gradient penalty on the augmented fakes every 4 steps.  With
    ``explicit`` the correlation term is added by hand (against the first layer's style)."""
    GAN = trainer.GAN
    S, G, D_aug, head = GAN.S, GAN.G, GAN.D_aug, GAN.D.to_logit
    aug_kwargs = {"prob": trainer.aug_prob, "types": trainer.aug_types}
    n, size, layers = images.shape[0], GAN.G.image_size, GAN.G.num_layers
    torch.manual_seed(seed)
    random.seed(seed)
    mixed = random.random() < trainer.mixed_prob
    GAN.D_opt.zero_grad()
    w_styles = sg2.styles_def_to_tensor(sg2.latent_to_w(S, styles(sg2, n, layers, mixed)))
    noise = torch.rand(n, size, size, 1, dtype=torch.float64)
    generated_images = G(w_styles, noise)
    generated_images, (fake_output, _) = D_aug(generated_images.clone().detach(), return_aug_images=True,
                                               input_requires_grad=gradient_penalty, detach=True, **aug_kwargs)
    fake_raw = head.last_raw
    image_batch = images.clone()
    if gradient_penalty:
        image_batch.requires_grad_()
    real_output, _ = D_aug(image_batch, **aug_kwargs)
    divergence = sg2.hinge_loss(fake_output, real_output)
    disc_loss = divergence
    if explicit is not None:
        disc_loss = disc_loss + ogan_plugin.correlation_loss(w_styles[:, 0].detach(), fake_raw, explicit)
    if gradient_penalty:
        disc_loss = disc_loss + sg2.gradient_penalty(image_batch, real_output) + sg2.gradient_penalty(generated_images, fake_output)
    disc_loss.backward()
    d_grads = [p.grad.clone() for p in GAN.D.parameters() if p.grad is not None]
    GAN.D_opt.step()
    GAN.G_opt.zero_grad()
    w_styles = sg2.styles_def_to_tensor(sg2.latent_to_w(S, styles(sg2, n, layers, mixed)))
    noise = torch.rand(n, size, size, 1, dtype=torch.float64)
    generated_images = G(w_styles, noise)
    fake_output, _ = D_aug(generated_images, **aug_kwargs)
    gen_loss = sg2.gen_hinge_loss(fake_output, None)
    if explicit is not None:
        gen_loss = gen_loss + ogan_plugin.correlation_loss(w_styles[:, 0].detach(), head.last_raw, explicit)
    gen_loss.backward()
    g_grads = [p.grad.clone() for p in list(G.parameters()) + list(S.parameters()) if p.grad is not None]
    GAN.G_opt.step()
    return d_grads, g_grads, float(divergence.detach())


def test_enable_wraps_the_head_keeps_every_output_and_hooks_the_generator(stylegan2_pytorch, cpu_trainer):
    trainer = cpu_trainer()
    D = trainer.GAN.D
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2 - 1
    before = D(x)
    hook = ogan_plugin.enable(trainer)
    assert hook.discriminator.head_path == "to_logit" and hook.generator is trainer.GAN.G
    for a, b in zip(D(x), before):
        torch.testing.assert_close(a, b)
    assert {id(p) for p in trainer.GAN.D_opt.param_groups[0]["params"]} == {id(p) for p in D.parameters()}
    assert ogan_plugin.enable(trainer) is hook
    assert sum(isinstance(m, ogan_plugin.OGANHead) for m in D.modules()) == 1
    trainer.fp16 = True
    with pytest.raises(ValueError, match="fp16=True"):
        ogan_plugin.enable(trainer)


def test_the_trainers_loop_gets_the_by_hand_term_and_trains(stylegan2_pytorch, cpu_trainer):
    """The package's D and G steps (style mixing, AugWrapper with DiffAugment, the gradient
    penalty on augmented fakes) with the one call equal the by-hand reference; the code is
    paired with the first layer's style."""
    hooked, by_hand = cpu_trainer(), cpu_trainer()
    torch.manual_seed(1)
    hook = ogan_plugin.enable(hooked, corr_weight=0.5)
    torch.manual_seed(1)
    wrapped, old = trainers.wrap_once(by_hand.GAN.D, Z, "to_logit")
    trainers.swap_parameters(by_hand.GAN.D_opt, old, list(wrapped.head.parameters()))
    torch.manual_seed(2)
    images = torch.rand(4, 3, 32, 32, dtype=torch.float64) * 2 - 1
    for step in range(3):
        got_d, got_g, loss = stylegan2_step(stylegan2_pytorch, hooked, images, seed=step, gradient_penalty=step % 4 == 0)
        want_d, want_g, _ = stylegan2_step(stylegan2_pytorch, by_hand, images, seed=step, gradient_penalty=step % 4 == 0, explicit=0.5)
        for a, b in zip(got_d + got_g, want_d + want_g):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
        assert math.isfinite(loss)
    assert hook.calls == 6
