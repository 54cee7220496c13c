"""Adapter for discriminators whose score comes from a final ``nn.Linear(in, 1)``.

Covers MLPs, conv + flatten + linear discriminators, ``nn.Sequential`` endings and custom
forwards with a final linear attribute (found by :func:`ogan_plugin.layers.find_scalar_head`).
"""

from __future__ import annotations

from typing import Optional

import torch.nn as nn

from ogan_plugin.head import Adaptation, OGANHead
from ogan_plugin.layers import find_scalar_head, has_plain_forward, is_spectral_normed, widen_layer
from ogan_plugin.hookspecs import hookimpl


@hookimpl
def ogan_adapt_discriminator(discriminator: nn.Module, z_dim: int, head: Optional[str]) -> Optional[Adaptation]:
    try:
        path, layer = find_scalar_head(discriminator, head)
    except LookupError:
        return None
    plain = isinstance(layer, nn.Linear) and has_plain_forward(layer) and not is_spectral_normed(layer)
    if not plain or layer.out_features != 1:
        return None
    return Adaptation(path, OGANHead(widen_layer(layer, z_dim), z_dim))
