"""The custom-linear adapter: one-row weight modules with their own forward, recognised by probing.

The layers below are written after the public sources they are named for (their
arithmetic, not their code): StyleGAN2-ADA's ``FullyConnectedLayer`` (NVlabs,
``training/networks.py``), rosinality's ``EqualLinear`` (``stylegan2-pytorch/model.py``)
and BigGAN-PyTorch's ``SNLinear`` (``layers.py``, its own power iteration).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

import ogan_plugin
from ogan_plugin.adapters import custom_linear
from ogan_plugin.head import OGANDiscriminator
from ogan_plugin.layers import find_scalar_head


class FullyConnectedLayer(nn.Module):
    """StyleGAN2-ADA: ``addmm(bias * bias_gain, x, (weight * weight_gain).T)``."""

    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return F.leaky_relu(x + b if b is not None else x, 0.2) * math.sqrt(2)


class EqualLinear(nn.Module):
    """rosinality: ``F.linear(x, weight * scale, bias * lr_mul)``, ``scale = lr_mul / sqrt(in)``."""

    def __init__(self, in_dim, out_dim, bias=True, bias_init=0.0, lr_mul=1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init)) if bias else None
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul if self.bias is not None else None)


class BigGANSNLinear(nn.Linear):
    """BigGAN-PyTorch's SNLinear: an nn.Linear that divides its weight by its own power-iteration
    estimate of the largest singular value (buffers u0, sv0)."""

    def __init__(self, in_features, out_features, bias=True, eps=1e-12):
        super().__init__(in_features, out_features, bias)
        self.eps = eps
        self.register_buffer("u0", torch.randn(1, out_features))
        self.register_buffer("sv0", torch.ones(1))

    def W_(self):
        W = self.weight.view(self.weight.size(0), -1)
        v = F.normalize(self.u0 @ W, eps=self.eps)
        u = F.normalize(v @ W.t(), eps=self.eps)
        if self.training:
            with torch.no_grad():
                self.u0[:] = u
        sv = (v @ W.t() @ u.t()).squeeze()
        return self.weight / sv

    def forward(self, x):
        return F.linear(x, self.W_(), self.bias)


class ScaledLinear(nn.Linear):
    """An nn.Linear subclass whose forward doubles the weight: the plain adapter must not take it."""

    def forward(self, x):
        return F.linear(x, 2 * self.weight, self.bias)


class Disc(nn.Module):
    def __init__(self, head: nn.Module, width: int = 24) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.LeakyReLU(0.2))
        self.out = head

    def forward(self, x):
        return self.out(self.features(x))


HEADS = {
    "stylegan2_ada_fc": lambda: FullyConnectedLayer(24, 1, lr_multiplier=0.01, bias_init=0.5),
    "rosinality_equal_linear": lambda: EqualLinear(24, 1, bias_init=0.2, lr_mul=0.1),
    "equal_linear_no_bias": lambda: EqualLinear(24, 1, bias=False),
    "linear_subclass_own_forward": lambda: ScaledLinear(24, 1),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_recognised_automatically_and_scores_kept(name):
    torch.manual_seed(0)
    head = HEADS[name]()
    d = Disc(head)
    x = torch.randn(9, 1, 8, 8)
    before = d(x).detach()
    wrapped = ogan_plugin.wrap(d, z_dim=16)  # no head=: found by structure, checked by probing
    assert wrapped.head_path == "out"
    layer = wrapped.head.layer
    assert type(layer) is type(head) and layer.weight.shape == (16, 24)  # the module's own forward, grown
    torch.testing.assert_close(wrapped(x), before, rtol=1e-5, atol=1e-5)
    dec = wrapped.decompose(x)
    assert dec.raw.shape == (9, 16)
    assert dec.code.abs().min() > 0  # the rows differ: the code part is not degenerate
    if isinstance(layer, FullyConnectedLayer):
        assert layer.out_features == 16 and layer.weight_gain == head.weight_gain


def test_widened_effective_rows_average_to_the_old_row_in_float64():
    torch.manual_seed(1)
    head = FullyConnectedLayer(24, 1, lr_multiplier=0.01, bias_init=0.3).double()
    wide = custom_linear.widen_custom_linear(head, 12).layer
    eye = torch.eye(24, dtype=torch.float64)
    zero = torch.zeros(1, 24, dtype=torch.float64)
    old_rows = head(eye) - head(zero)  # (24, 1): the effective row
    new_rows = wide(eye) - wide(zero)  # (24, 12)
    torch.testing.assert_close(new_rows.mean(dim=1, keepdim=True), old_rows, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(wide(zero), head(zero).expand(1, 12), rtol=1e-12, atol=1e-12)
    # the code part starts at a fresh layer's scale in effective units (uniform, bound 1/sqrt(in))
    spread = (new_rows - old_rows).abs().max()
    assert 0.5 / math.sqrt(24) < spread <= 2 / math.sqrt(24)


def test_gradients_flow_into_the_grown_rows():
    torch.manual_seed(2)
    wrapped = ogan_plugin.wrap(Disc(EqualLinear(24, 1, lr_mul=0.1)), z_dim=6)
    z = torch.randn(5, 6)
    loss = ogan_plugin.correlation_loss(z, wrapped.decompose(torch.randn(5, 1, 8, 8)).raw, 1.0)
    loss.backward()
    grad = wrapped.head.layer.weight.grad
    assert grad is not None and grad.shape == (6, 24) and grad.abs().sum() > 0


def test_a_head_that_normalises_its_own_weight_is_reported():
    d = Disc(BigGANSNLinear(24, 1))
    with pytest.raises(ValueError, match=r"'out' \(BigGANSNLinear\).*does not scale with its weight.*spectral"):
        ogan_plugin.wrap(d, z_dim=8)


def test_torch_spectral_norm_on_a_linear_subclass_goes_to_the_spectral_norm_adapter():
    class SNLinear(nn.Linear):  # StudioGAN-style: torch's spectral norm, nn.Linear's forward
        pass

    torch.manual_seed(3)
    d = Disc(spectral_norm(SNLinear(24, 1)))
    x = torch.randn(4, 1, 8, 8)
    d.train()
    d(x)
    d.eval()
    before = d(x).detach()
    wrapped = ogan_plugin.wrap(d, z_dim=8)
    assert float(wrapped.head.output_scale) != 1.0  # the spectral-norm construction
    torch.testing.assert_close(wrapped(x), before, rtol=1e-5, atol=1e-5)


def test_a_nonlinear_head_is_reported():
    with pytest.raises(ValueError, match=r"'out'.*not affine in its input"):
        ogan_plugin.wrap(Disc(FullyConnectedLayer(24, 1, activation="lrelu")), z_dim=8)


def test_a_head_whose_output_is_not_a_row_per_sample_is_reported():
    class Squeezed(EqualLinear):
        def forward(self, x):
            return super().forward(x).squeeze(1)

    with pytest.raises(ValueError, match=r"'out'.*\(4, 24\) input into \(4,\), not \(4, 1\)"):
        ogan_plugin.wrap(Disc(Squeezed(24, 1)), z_dim=8)


def test_a_forward_tied_to_one_row_is_reported():
    class OneRow(EqualLinear):
        def forward(self, x):
            return (x * (self.weight * self.scale)).sum(dim=1, keepdim=True) + self.bias  # only right for 1 row

    with pytest.raises(ValueError, match=r"cannot be widened by growing its rows"):
        ogan_plugin.wrap(Disc(OneRow(24, 1)), z_dim=8)


def test_structure_alone_makes_a_candidate_for_detection():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = EqualLinear(4, 1)
            self.b = nn.Linear(4, 1)
            self.c = nn.Linear(4, 3)

    with pytest.raises(LookupError, match=r"several 1-output layers.*\['a', 'b'\]"):
        find_scalar_head(Two())
    assert find_scalar_head(nn.Sequential(nn.Embedding(1, 4), EqualLinear(4, 1)))[0] == "1"


def test_checkpoints_unwrap_and_plain_checkpoints():
    torch.manual_seed(4)
    x = torch.randn(3, 1, 8, 8)
    d = Disc(FullyConnectedLayer(24, 1, lr_multiplier=0.01, bias_init=0.5))
    plain_state = {k: v.clone() for k, v in d.state_dict().items()}
    before = d(x).detach()
    wrapped = ogan_plugin.wrap(d, z_dim=10)
    restored = OGANDiscriminator.from_state_dict(Disc(FullyConnectedLayer(24, 1, lr_multiplier=0.01)), wrapped.state_dict())
    torch.testing.assert_close(restored.decompose(x).raw, wrapped.decompose(x).raw)
    other = ogan_plugin.wrap(Disc(FullyConnectedLayer(24, 1, lr_multiplier=0.01)), z_dim=10)
    other.load_unwrapped_state_dict(plain_state)
    torch.testing.assert_close(other(x), before, rtol=1e-5, atol=1e-5)
    plain = wrapped.unwrap()
    assert type(plain.out) is FullyConnectedLayer and plain.out.weight.shape == (1, 24) and plain.out.out_features == 1
    torch.testing.assert_close(plain(x), before, rtol=1e-5, atol=1e-5)
