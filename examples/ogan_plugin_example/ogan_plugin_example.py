"""An example third-party plugin for ogan-plugin, installed through the entry point::

    [project.entry-points.ogan_plugin]
    example = "ogan_plugin_example"

It shows the three hooks:

* ``ogan_adapt_discriminator``: widens ``EqualLinear`` heads (StyleGAN-style linear layers
  with a runtime weight scale) by knowing the class.  The built-in custom-linear adapter
  would handle them too, by probing what they compute; a plugin that knows a module runs
  first (the built-in runs last) and shows how to write one for modules no probe can
  handle;
* ``ogan_backends``: a ``float64`` backend of the ``pearson`` op (explicit use only);
* ``ogan_losses``: the least-squares GAN loss under the name ``lsgan``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin import Backend, hookimpl
from ogan_plugin.head import Adaptation, OGANHead
from ogan_plugin.layers import centered_rows, find_scalar_head
from ogan_plugin.kernels.pearson import pearson_reference
from ogan_plugin.losses import AdversarialLoss


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: ``y = x @ (w * c).T + b``, c = 1/sqrt(in)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1.0 / math.sqrt(in_features)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.scale, self.bias)


@hookimpl
def ogan_adapt_discriminator(discriminator: nn.Module, z_dim: int, head: Optional[str]) -> Optional[Adaptation]:
    if head is None:
        heads = [(n, m) for n, m in discriminator.named_modules() if isinstance(m, EqualLinear) and m.weight.shape[0] == 1]
        if not heads:
            return None
        path, layer = heads[-1]
    else:
        path, layer = find_scalar_head(discriminator, head)
        if not isinstance(layer, EqualLinear):
            return None
    new = EqualLinear(layer.weight.shape[1], z_dim).to(layer.weight.device, layer.weight.dtype)
    with torch.no_grad():
        w = layer.weight.detach().double()
        new.weight.copy_(w + centered_rows(z_dim, w) / layer.scale)
        new.bias.copy_(layer.bias.detach().expand(z_dim))
    return Adaptation(path, OGANHead(new, z_dim))


def _pearson_float64(z: Tensor, e: Tensor, eps: float) -> Tensor:
    return pearson_reference(z.double(), e.double(), eps).float()


@hookimpl
def ogan_backends() -> list[Backend]:
    return [
        Backend(
            op="pearson",
            name="float64",
            fn=_pearson_float64,
            priority=-10,
            serves=lambda device_type, explicit: explicit,
            description="reference in float64 (explicit use only)",
        )
    ]


class LSGANLoss(AdversarialLoss):
    """Least squares GAN: D pushes real scores to 1 and fake to 0; G pushes fake to 1."""

    name = "lsgan"

    def d_loss(self, real_score: Tensor, fake_score: Tensor, dist: Optional[Tensor] = None) -> Tensor:
        return 0.5 * ((real_score.float() - 1) ** 2 + fake_score.float() ** 2)

    def g_loss(self, fake_score: Tensor) -> Tensor:
        return 0.5 * (fake_score.float() - 1) ** 2


@hookimpl
def ogan_losses() -> dict[str, AdversarialLoss]:
    return {"lsgan": LSGANLoss()}
