"""ogan_plugin.demo.models: the demo's generator and discriminator."""

from __future__ import annotations

import pytest
import torch

import ogan_plugin
from ogan_plugin.demo.models import DISCRIMINATOR_NORMS, Discriminator, Generator


@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_range(size, channels):
    G = Generator(z_dim=10, image_size=size, channels=channels, width=8)
    x = G(torch.randn(4, 10))
    assert x.shape == (4, channels, size, size)
    assert x.abs().max() <= 1
    D = Discriminator(image_size=size, channels=channels, width=8)
    assert D(x).shape == (4, 1)


@pytest.mark.parametrize("norm", DISCRIMINATOR_NORMS)
def test_every_norm_wraps_and_keeps_its_score(norm):
    torch.manual_seed(0)
    D = Discriminator(width=8, norm=norm).eval()
    x = torch.randn(5, 1, 16, 16)
    before = D(x).detach()
    W = ogan_plugin.wrap(D, 12)
    dec = W.decompose(x)
    assert dec.code.shape == (5, 12)
    torch.testing.assert_close(dec.score, before.view(-1), rtol=1e-4, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="power of two"):
        Generator(image_size=12)
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(image_size=4)
    with pytest.raises(TypeError, match="image_size"):
        Generator(image_size=16.0)
    with pytest.raises(ValueError, match="norm"):
        Discriminator(norm="instance")
    with pytest.raises(ValueError, match="width"):
        Generator(width=0)
