"""The adapter for spectral-normed heads (parametrization and old hook forms)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import spectral_norm as old_spectral_norm
from torch.nn.utils.parametrizations import spectral_norm

import ogan_plugin
from ogan_plugin.layers import is_spectral_normed


@pytest.mark.parametrize("style", ["parametrization", "hook"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_scores_preserved_and_spectral_norm_kept(style, kind):
    torch.manual_seed(0)
    apply = spectral_norm if style == "parametrization" else old_spectral_norm
    if kind == "linear":
        d, x = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), apply(nn.Linear(16, 1))), torch.randn(5, 12)
    else:
        d, x = nn.Sequential(nn.Conv2d(2, 4, 3, 2, 1), nn.ReLU(), apply(nn.Conv2d(4, 1, 4))), torch.randn(5, 2, 8, 8)
    d.train()
    d(x)  # the hook form needs one training forward to settle its vectors
    d.eval()
    before = d(x).detach()
    z = 9
    wrapped = ogan_plugin.wrap(d, z_dim=z)
    head = wrapped.head
    assert is_spectral_normed(head.layer)
    torch.testing.assert_close(wrapped(x), before, rtol=1e-5, atol=1e-5)
    # the power-iteration vectors are a fixed point: training-mode forwards keep the score
    wrapped.train()
    for _ in range(3):
        wrapped(x)
    wrapped.eval()
    torch.testing.assert_close(wrapped(x), before, rtol=1e-5, atol=1e-5)
    # the normalized widened weight has spectral norm 1; the score's Lipschitz bound is kept
    w = head.layer.weight.detach().flatten(1).double()
    torch.testing.assert_close(torch.linalg.matrix_norm(w, ord=2), torch.tensor(1.0, dtype=torch.float64), rtol=1e-5, atol=0)
    mean_row = (w * head.output_scale.double()).mean(dim=0)
    assert mean_row.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert head.output_scale.item() == pytest.approx(math.sqrt(z), rel=1e-4)
