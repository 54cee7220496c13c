"""reconstruct() and interpolate()."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import ogan_plugin


@pytest.fixture
def pair():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(6, 12), nn.Unflatten(1, (3, 2, 2)))
    d = ogan_plugin.wrap(nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 1)), z_dim=6)
    return g, d


def test_reconstruct_is_generator_of_scaled_standardized_code(pair):
    g, d = pair
    x = torch.randn(5, 3, 2, 2)
    rec = ogan_plugin.reconstruct(g, d, x, scale=0.9)
    torch.testing.assert_close(rec, g(0.9 * d.encode(x)))
    assert not rec.requires_grad


def test_interpolate_endpoints_are_reconstructions(pair):
    g, d = pair
    a, b = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    out = ogan_plugin.interpolate(g, d, a, b, steps=5)
    assert out.shape == (4, 5, 3, 2, 2)
    torch.testing.assert_close(out[:, 0], ogan_plugin.reconstruct(g, d, a))
    torch.testing.assert_close(out[:, -1], ogan_plugin.reconstruct(g, d, b))
    # the middle column decodes the midpoint of the two codes
    mid = g(0.9 * 0.5 * (d.encode(a) + d.encode(b)))
    torch.testing.assert_close(out[:, 2], mid.detach())


def test_bad_arguments(pair):
    g, d = pair
    x = torch.randn(2, 3, 2, 2)
    with pytest.raises(TypeError, match="wrapped_discriminator must be an OGANDiscriminator"):
        ogan_plugin.reconstruct(g, d.discriminator, x)
    with pytest.raises(ValueError, match="scale"):
        ogan_plugin.reconstruct(g, d, x, scale=0)
    with pytest.raises(ValueError, match="steps"):
        ogan_plugin.interpolate(g, d, x, x, steps=1)
    with pytest.raises(ValueError, match="x_a and x_b"):
        ogan_plugin.interpolate(g, d, x, x[:1])
