"""Adapter for discriminators ending in a 1-output ``nn.Conv1d/2d/3d`` that yields a 1x1 map.

The DCGAN discriminator is the typical case: ``Conv2d(8 * ndf, 1, 4, 1, 0)`` on a 4x4
feature map, often followed by a Sigmoid.  A convolution that yields a larger map (a
patch discriminator) is widened here too; :mod:`ogan_plugin.adapters.patch` gives its
head the reduction from the map to the per-sample code.  Subclasses that override
``forward`` (they may compute something else) are left to adapter plugins.
"""

from __future__ import annotations

from typing import Optional

import torch.nn as nn

from ogan_plugin.head import Adaptation, OGANHead
from ogan_plugin.layers import CONV_TYPES, find_scalar_head, has_plain_forward, is_spectral_normed, widen_layer
from ogan_plugin.hookspecs import hookimpl


@hookimpl
def ogan_adapt_discriminator(discriminator: nn.Module, z_dim: int, head: Optional[str]) -> Optional[Adaptation]:
    try:
        path, layer = find_scalar_head(discriminator, head)
    except LookupError:
        return None
    plain = isinstance(layer, CONV_TYPES) and has_plain_forward(layer) and not is_spectral_normed(layer)
    if not plain or layer.out_channels != 1:
        return None
    return Adaptation(path, OGANHead(widen_layer(layer, z_dim), z_dim))
