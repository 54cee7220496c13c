"""Adapter for 1-output Linear/ConvNd heads under spectral norm.

Both forms are handled: ``torch.nn.utils.parametrizations.spectral_norm`` and the older
hook-based ``torch.nn.utils.spectral_norm``.  Spectral norm divides a weight by its
largest singular value, so a widened matrix cannot simply copy the old row.  With the
old effective row ``w`` (norm ``r``) the new weight is ``W = 1 w^T + D`` where the rows of
``D`` sum to zero, are orthogonal to ``w`` and have spectral norm below ``sqrt(z) r / 2``.
Then ``sigma(W) = sqrt(z) r`` exactly, with singular vectors ``1/sqrt(z)`` and ``w/r`` (set
as the power iteration's vectors, a fixed point of the iteration), and the head's
``output_scale = sqrt(z) r`` makes ``mean(raw) = w . h + b``: the old score, and the same
Lipschitz bound for the score.  The new layer keeps the same kind of spectral norm.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from ogan_plugin.head import Adaptation, OGANHead
from ogan_plugin.hookspecs import hookimpl
from ogan_plugin.layers import (
    CONV_TYPES,
    centered_rows,
    find_scalar_head,
    has_plain_forward,
    is_spectral_normed,
    new_layer_like,
    out_features,
    spectral_norm_of,
)

#: the former name (tests and plugins may use it)
_spectral_norm_of = spectral_norm_of


def effective_weight(layer: nn.Module) -> torch.Tensor:
    """The weight the layer uses in eval mode: ``W_orig / (u^T W_orig v)`` (no iteration)."""
    style, sn = spectral_norm_of(layer)
    if style == "parametrization":
        w_orig = layer.parametrizations.weight.original
        u, v = sn._u, sn._v
    else:
        w_orig = getattr(layer, sn.name + "_orig")
        u, v = getattr(layer, sn.name + "_u"), getattr(layer, sn.name + "_v")
    w = w_orig.detach().double()
    sigma = torch.dot(u.double(), w.flatten(1).mv(v.double()))
    return w / sigma


def widen_spectral_normed(layer: nn.Module, z_dim: int) -> OGANHead:
    """Build the widened, spectral-normed head described in the module docstring."""
    style, sn = spectral_norm_of(layer)
    w_eff = effective_weight(layer)  # (1, ...) float64
    row = w_eff.flatten()
    r = row.norm()
    unit = row / r
    delta = centered_rows(z_dim, w_eff).flatten(1)
    delta = delta - torch.outer(delta.mv(unit), unit)  # rows orthogonal to w (still sum to zero)
    limit = 0.5 * math.sqrt(z_dim) * r
    dnorm = torch.linalg.matrix_norm(delta, ord=2)
    if dnorm > limit:
        delta = delta * (limit / dnorm)
    scale = float(math.sqrt(z_dim) * r)
    new = new_layer_like(layer, z_dim)
    with torch.no_grad():
        new.weight.copy_((row.unsqueeze(0) + delta).view_as(new.weight))
        if layer.bias is not None:
            new.bias.copy_((layer.bias.detach().double() / scale).expand(z_dim))
    u = torch.full((z_dim,), 1.0 / math.sqrt(z_dim), dtype=torch.float64)
    if style == "parametrization":
        from torch.nn.utils.parametrizations import spectral_norm

        new = spectral_norm(new, n_power_iterations=sn.n_power_iterations, eps=sn.eps, dim=sn.dim)
        snp = new.parametrizations.weight[0]
        snp._u.copy_(u)
        snp._v.copy_(unit)
    else:
        from torch.nn.utils import spectral_norm

        new = spectral_norm(new, n_power_iterations=sn.n_power_iterations, eps=sn.eps, dim=sn.dim)
        getattr(new, "weight_u").copy_(u)
        getattr(new, "weight_v").copy_(unit)
    return OGANHead(new, z_dim, output_scale=scale)


@hookimpl(tryfirst=True)
def ogan_adapt_discriminator(discriminator: nn.Module, z_dim: int, head: Optional[str]) -> Optional[Adaptation]:
    try:
        path, layer = find_scalar_head(discriminator, head)
    except LookupError:
        return None
    if (
        not isinstance(layer, (nn.Linear, *CONV_TYPES))
        or out_features(layer) != 1
        or not is_spectral_normed(layer)
        or not has_plain_forward(layer)
    ):
        return None
    return Adaptation(path, widen_spectral_normed(layer, z_dim))
