"""lucidrains' lightweight-gan (pip install --no-deps lightweight-gan): a patch discriminator
(5x5 logits from `to_logits.2`) with a competing auxiliary 1-output head and a tuple output,
wrapped with head= and trained with the single-loss step against the package's generator.

Runs against the real lightweight_gan; torchvision and the import-time GPU check may be
stand-ins (see conftest.py)."""

from __future__ import annotations

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
