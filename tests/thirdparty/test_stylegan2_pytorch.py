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
