"""lucidrains' lightweight-gan (pip install --no-deps lightweight-gan): a patch discriminator
(5x5 logits from `to_logits.2`) with a competing auxiliary 1-output head and a tuple output,
wrapped with head= and trained with the single-loss step against the package's generator.

Runs against the real lightweight_gan; torchvision and the import-time GPU check may be
stand-ins (see conftest.py)."""

from __future__ import annotations

import math

import pytest
import torch

import ogan_plugin

Z = 32
SMALL = {"image_size": 32, "fmap_max": 16, "fmap_inverse_coef": 8}  # narrow channels: a fast test


def test_automatic_detection_lists_the_competing_heads(lightweight_gan):
    D = lightweight_gan.Discriminator(**SMALL)
    with pytest.raises(ValueError, match=r"several 1-output layers.*'to_logits.2', 'to_shape_disc_out.5'.*head="):
        ogan_plugin.wrap(D, z_dim=Z)


def test_patch_discriminator_wraps_keeps_every_output_and_trains(lightweight_gan):
    torch.manual_seed(0)
    D = lightweight_gan.Discriminator(**SMALL)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    before = D(x)
    wrapped = ogan_plugin.wrap(D, z_dim=Z, head="to_logits.2")
    after = wrapped(x)
    assert isinstance(after, tuple) and len(after) == 3 and after[2] is None
    assert after[0].shape == (2, 25)  # the 5x5 patch logits, flattened by its forward
    for a, b in zip(after[:2], before[:2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    dec = wrapped.decompose(x, calc_aux_loss=True)  # extra arguments reach D's forward
    assert dec.code.shape == (2, Z) and dec.output[2].dim() == 0  # its auxiliary reconstruction loss
    G = lightweight_gan.Generator(latent_dim=Z, **SMALL)
    step = ogan_plugin.SingleLossStep(G, wrapped, loss="hinge", corr_weight=1.0)
    for _ in range(2):
        r = step.step(x)
    assert r.step == 2 and torch.isfinite(r.loss)


# --- ogan_plugin.enable(trainer) and the package's own training loop -------------------------
import random  # noqa: E402

from torch.autograd import grad as torch_grad  # noqa: E402

from ogan_plugin.integrations import trainers  # noqa: E402

TRAINER = {"image_size": 32, "latent_dim": Z, "fmap_inverse_coef": 8, "batch_size": 4,
           "aug_prob": 1.0, "aug_types": ["translation", "cutout", "color"], "use_aim": False}


@pytest.fixture
def cpu_trainer(lightweight_gan, tmp_path, monkeypatch):
    """A real ``lightweight_gan.Trainer`` whose GAN is built on the CPU: the package moves its
    networks with ``.cuda(rank)`` itself, made a no-op here (the only change)."""
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, device=None: self)

    def make(seed: int = 0):
        trainer = lightweight_gan.Trainer(name="t", base_dir=str(tmp_path), **TRAINER)
        torch.manual_seed(seed)
        trainer.init_GAN()
        trainer.GAN.double()
        return trainer

    return make


def lightweight_gan_step(lg, trainer, images, seed, gradient_penalty, explicit=None):
    """One ``Trainer.train()`` step of lightweight-gan 1.2.1, written out for the CPU (the
    package's own method calls ``.cuda()``): gradient accumulation 1, no amp, no DDP, hinge
    losses.  With ``explicit`` the correlation term is added by hand to both losses (the
    raw outputs D's head gave for the fakes, ``decompose(d_input).raw``).  Returns D's
    gradients after its step and G's after its step."""
    GAN = trainer.GAN
    G, D_aug, head = GAN.G, GAN.D_aug, GAN.D.get_submodule("to_logits.2")
    aug_kwargs = {"prob": trainer.aug_prob, "types": trainer.aug_types}
    batch_size = images.shape[0]
    torch.manual_seed(seed)
    random.seed(seed)
    # train discriminator
    GAN.D_opt.zero_grad()
    latents = torch.randn(batch_size, GAN.latent_dim, dtype=torch.float64)
    image_batch = images.clone()
    with torch.no_grad():
        generated_images = G(latents)
    if gradient_penalty:
        image_batch.requires_grad_()
    generated_images, (fake_output, fake_output_32x32, _) = D_aug(
        generated_images, detach=True, input_requires_grad=gradient_penalty, return_discr_input=True, **aug_kwargs
    )
    fake_raw = head.last_raw
    real_output, real_output_32x32, real_aux_loss = D_aug(image_batch, calc_aux_loss=True, **aug_kwargs)
    divergence = lg.hinge_loss(real_output, fake_output)
    disc_loss = divergence + lg.hinge_loss(real_output_32x32, fake_output_32x32) + real_aux_loss
    if explicit is not None:
        disc_loss = disc_loss + ogan_plugin.correlation_loss(latents, fake_raw, explicit)
    if gradient_penalty:
        real_gradients = torch_grad(outputs=[real_output, real_output_32x32], inputs=image_batch,
                                    grad_outputs=[torch.ones_like(t) for t in (real_output, real_output_32x32)],
                                    create_graph=True, retain_graph=True, only_inputs=True)[0]
        fake_gradients = torch_grad(outputs=[fake_output, fake_output_32x32], inputs=generated_images,
                                    grad_outputs=[torch.ones_like(t) for t in (fake_output, fake_output_32x32)],
                                    create_graph=True, retain_graph=True, only_inputs=True)[0]
        gradients = torch.cat((real_gradients, fake_gradients)).reshape(2 * batch_size, -1)
        disc_loss = disc_loss + trainer.gp_weight * (gradients.norm(2, dim=1) ** 2).mean()
    disc_loss.backward()
    d_grads = [p.grad.clone() for p in GAN.D.parameters() if p.grad is not None]
    GAN.D_opt.step()
    # train generator
    GAN.G_opt.zero_grad()
    latents = torch.randn(batch_size, GAN.latent_dim, dtype=torch.float64)
    generated_images = G(latents)
    fake_output, fake_output_32x32, _ = D_aug(generated_images, **aug_kwargs)
    gen_loss = lg.gen_hinge_loss(fake_output, None) + lg.gen_hinge_loss(fake_output_32x32, None)
    if explicit is not None:
        gen_loss = gen_loss + ogan_plugin.correlation_loss(latents, head.last_raw, explicit)
    gen_loss.backward()
    g_grads = [p.grad.clone() for p in G.parameters() if p.grad is not None]
    GAN.G_opt.step()
    return d_grads, g_grads, float(divergence.detach())


def test_enable_wraps_the_patch_head_keeps_every_output_and_hooks_the_generator(lightweight_gan, cpu_trainer):
    trainer = cpu_trainer()
    D = trainer.GAN.D
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2 - 1
    before = D(x, calc_aux_loss=True)
    old_head = list(D.to_logits[2].parameters())
    torch.manual_seed(1)
    hook = ogan_plugin.enable(trainer)
    assert hook.discriminator.head_path == "to_logits.2" and hook.discriminator.z_dim == Z
    assert hook.generator is trainer.GAN.G and trainer.GAN.D_aug.D is D  # AugWrapper calls the wrapped D
    after = D(x, calc_aux_loss=True)
    for a, b in zip(after, before):  # logits, 32x32 logits, auxiliary reconstruction loss
        torch.testing.assert_close(a, b)
    params = trainer.GAN.D_opt.param_groups[0]["params"]
    assert not any(p is q for p in params for q in old_head)
    assert {id(p) for p in params} == {id(p) for p in D.parameters()}
    # enabling again, or through the package module: the same hook, D not wrapped twice
    from ogan_plugin.integrations import lightweight_gan as integration

    assert ogan_plugin.enable(trainer) is hook and integration.enable(trainer) is hook
    assert sum(isinstance(m, ogan_plugin.OGANHead) for m in D.modules()) == 1
    with pytest.raises(TypeError, match="trainer must be a lightweight_gan.Trainer"):
        integration.enable(object())


def test_the_trainers_loop_gets_the_by_hand_term_and_trains(lightweight_gan, cpu_trainer):
    """The package's D and G steps (AugWrapper with DiffAugment's three policies, the
    gradient penalty on augmented fakes) with the one call equal the by-hand reference."""
    hooked, by_hand = cpu_trainer(), cpu_trainer()
    torch.manual_seed(1)
    hook = ogan_plugin.enable(hooked, corr_weight=0.5)
    torch.manual_seed(1)
    wrapped, old = trainers.wrap_once(by_hand.GAN.D, Z, "to_logits.2")
    trainers.swap_parameters(by_hand.GAN.D_opt, old, list(wrapped.head.parameters()))
    torch.manual_seed(2)
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2 - 1
    for step in range(2):  # step 0 with the gradient penalty, step 1 without (float64: slow on a CPU)
        got_d, got_g, loss = lightweight_gan_step(lightweight_gan, hooked, images, seed=step, gradient_penalty=step % 4 == 0)
        want_d, want_g, _ = lightweight_gan_step(lightweight_gan, by_hand, images, seed=step, gradient_penalty=step % 4 == 0, explicit=0.5)
        for a, b in zip(got_d + got_g, want_d + want_g):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
        assert math.isfinite(loss)
    assert hook.calls == 4  # D's call on the augmented fakes and G's, each step; never the reals
    assert math.isfinite(float(hook.last_rho))


def test_load_rebuilds_the_gan_and_enables_it_again(lightweight_gan, cpu_trainer):
    trainer = cpu_trainer()
    hook = ogan_plugin.enable(trainer)
    trainer.save(0)
    saved = trainer.GAN.D.to_logits[2].layer.weight.detach().clone()
    trainer.load(0, print_version=False)  # the package's load: init_GAN() again, then load_state_dict
    head = trainer.GAN.D.get_submodule("to_logits.2")
    assert isinstance(head, ogan_plugin.OGANHead) and not hook.active
    torch.testing.assert_close(head.layer.weight.detach().double(), saved)
    again = trainers.attached_hook(trainer.GAN.D)
    assert again is not None and again.generator is trainer.GAN.G
