"""The built-in adapter for 1-output convolutions yielding a 1x1 map (DCGAN heads)."""

from __future__ import annotations

import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.adapters import conv


def test_dcgan_head_with_sigmoid_keeps_probabilities():
    torch.manual_seed(0)
    d = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 1, 4, 1, 0), nn.Sigmoid())
    x = torch.randn(6, 3, 8, 8)
    before = d(x).detach()
    wrapped = ogan_plugin.wrap(d, z_dim=10)
    out = wrapped(x)
    assert out.shape == (6, 1, 1, 1) and ((out > 0) & (out < 1)).all()
    torch.testing.assert_close(out, before, rtol=1e-6, atol=1e-6)
    dec = wrapped.decompose(x)
    torch.testing.assert_close(torch.sigmoid(dec.score), out.view(-1))


def test_widened_kernel_keeps_geometry():
    old = nn.Conv2d(8, 1, 4, stride=2, padding=1, dilation=1, bias=False)
    adaptation = conv.ogan_adapt_discriminator(discriminator=nn.Sequential(old), z_dim=6, head=None)
    new = adaptation.head.layer
    assert isinstance(new, nn.Conv2d) and new.out_channels == 6 and new.bias is None
    assert (new.kernel_size, new.stride, new.padding) == (old.kernel_size, old.stride, old.padding)
    torch.testing.assert_close(new.weight.double().mean(dim=0, keepdim=True), old.weight.double(), rtol=0, atol=1e-7)


def test_conv3d_head():
    d = nn.Sequential(nn.Conv3d(2, 4, 3, 2, 1), nn.ReLU(), nn.Conv3d(4, 1, 2))
    x = torch.randn(2, 2, 4, 4, 4)
    before = d(x).detach()
    wrapped = ogan_plugin.wrap(d, z_dim=3)
    torch.testing.assert_close(wrapped(x), before, rtol=1e-5, atol=1e-6)
    assert wrapped.decompose(x).code.shape == (2, 3)
