"""The built-in adapter for final nn.Linear(in, 1) heads."""

from __future__ import annotations

import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.adapters import linear
from ogan_plugin.head import OGANHead


def test_widened_rows_average_to_the_old_row_exactly():
    torch.manual_seed(0)
    d = nn.Sequential(nn.Linear(5, 9), nn.ReLU(), nn.Linear(9, 1))
    w_old, b_old = d[2].weight.detach().clone(), d[2].bias.detach().clone()
    adaptation = linear.ogan_adapt_discriminator(discriminator=d, z_dim=7, head=None)
    assert adaptation.path == "2" and isinstance(adaptation.head, OGANHead)
    layer = adaptation.head.layer
    assert layer.weight.shape == (7, 9)
    torch.testing.assert_close(layer.weight.double().mean(dim=0, keepdim=True), w_old.double(), rtol=0, atol=1e-7)
    torch.testing.assert_close(layer.bias, b_old.expand(7))
    # the code part is not degenerate: rows differ from each other
    assert layer.weight.std(dim=0).min() > 0
    assert isinstance(d[2], nn.Linear)  # the adapter does not modify the discriminator


def test_declines_other_heads():
    assert linear.ogan_adapt_discriminator(discriminator=nn.Sequential(nn.Conv2d(3, 1, 4)), z_dim=4, head=None) is None
    assert linear.ogan_adapt_discriminator(discriminator=nn.Sequential(nn.Linear(3, 2)), z_dim=4, head=None) is None


def test_float64_discriminator_keeps_its_dtype():
    d = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    before = d(x).detach()
    wrapped = ogan_plugin.wrap(d, z_dim=5)
    assert wrapped.head.layer.weight.dtype == torch.float64
    torch.testing.assert_close(wrapped(x), before, rtol=1e-12, atol=1e-12)
