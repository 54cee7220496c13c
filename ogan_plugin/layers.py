"""Layer plumbing: find a discriminator's scalar head and build widened layers.

What the adapters (:mod:`ogan_plugin.adapters`) and :func:`ogan_plugin.wrap` use to
recognise a head and to widen it: the head search (:func:`find_scalar_head`), what counts
as a linear or convolution layer, spectral-norm introspection, and fresh or widened layers
of a head's kind.  Nothing here knows about the wrapped discriminator; the names are also
importable from :mod:`ogan_plugin.head`, where plugins written for 0.2 import them.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Optional

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "CONV_TYPES",
    "OUTPUT_COUNT_ATTRIBUTES",
    "centered_rows",
    "conv_spatial_dims",
    "custom_linear_rows",
    "find_scalar_head",
    "has_plain_forward",
    "is_spectral_normed",
    "new_layer_like",
    "out_features",
    "set_submodule",
    "spectral_norm_of",
    "widen_layer",
]

#: Convolution types a head may be (with one output channel yielding a 1x1 map).
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def conv_spatial_dims(layer: nn.Module) -> Optional[int]:
    """Spatial dimensions of a ``nn.ConvNd`` layer (1, 2, 3); None for other layers."""
    for n, t in enumerate(CONV_TYPES, start=1):
        if isinstance(layer, t):
            return n
    return None


def is_spectral_normed(layer: nn.Module) -> bool:
    """True when ``layer.weight`` carries spectral norm (parametrization or old hook)."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import _SpectralNorm
    from torch.nn.utils.spectral_norm import SpectralNorm

    if parametrize.is_parametrized(layer, "weight"):
        return any(isinstance(p, _SpectralNorm) for p in layer.parametrizations.weight)
    return any(isinstance(h, SpectralNorm) for h in layer._forward_pre_hooks.values())


def out_features(m: nn.Module) -> Optional[int]:
    """Outputs of a Linear / ConvNd layer or of a custom linear module (None for others).

    A custom linear module (StyleGAN2-ADA's ``FullyConnectedLayer``, rosinality's
    ``EqualLinear``, ...) is recognised by its parameters alone (see
    :func:`custom_linear_rows`); whether its forward is affine is probed by
    :mod:`ogan_plugin.adapters.custom_linear`.
    """
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, CONV_TYPES):
        return m.out_channels
    return custom_linear_rows(m)


def has_plain_forward(layer: nn.Module) -> bool:
    """True when ``layer`` is an ``nn.Linear`` / ``nn.ConvNd`` computing what that class
    computes: a subclass that overrides ``forward`` (or a convolution's
    ``_conv_forward``), e.g. one normalising its weight on the fly, is not plain."""
    if isinstance(layer, nn.Linear):
        return type(layer).forward is nn.Linear.forward
    for t in CONV_TYPES:
        if isinstance(layer, t):
            return type(layer).forward is t.forward and type(layer)._conv_forward is t._conv_forward
    return False


def custom_linear_rows(m: nn.Module) -> Optional[int]:
    """Rows of ``m.weight`` when ``m`` looks like a custom linear layer, else None.

    That is: its own parameters are a 2-D ``weight`` (rows = outputs) and optionally a
    1-D ``bias`` with one entry per row, and its submodules hold no parameters.  A plain
    ``nn.Linear`` (see :func:`has_plain_forward`) and an ``nn.Embedding`` (its weight is
    a lookup table) are not custom; an ``nn.Linear`` subclass with its own forward is.
    """
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) or has_plain_forward(m):
        return None
    own = dict(m.named_parameters(recurse=False))
    weight, bias = own.pop("weight", None), own.pop("bias", None)
    if own or weight is None or weight.dim() != 2:
        return None
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        return None
    if any(True for c in m.children() for _ in c.parameters()):
        return None
    return int(weight.shape[0])


def find_scalar_head(discriminator: nn.Module, head: Optional[str] = None) -> tuple[str, nn.Module]:
    """Locate the candidate scalar head of ``discriminator``: (dotted path, module).

    With ``head`` given, that submodule.  Otherwise the single layer with one output
    (``nn.Linear``, ``nn.ConvNd`` or a custom linear module, see :func:`out_features`);
    when there are several, the last registered one is
    the head only if it is also the last layer with parameters (a Sequential ending);
    anything else is ambiguous and raises, asking for ``head=``.
    """
    if head is not None:
        if not isinstance(head, str) or not head:
            raise TypeError(f"head must be a dotted submodule path (str), got {head!r}")
        try:
            return head, discriminator.get_submodule(head)
        except AttributeError:
            names = [n for n, _ in discriminator.named_modules() if n and "parametrizations" not in n]
            raise ValueError(f"head={head!r} is not a submodule of the discriminator; submodules: {names}") from None
    ones = [(n, m) for n, m in discriminator.named_modules() if n and out_features(m) == 1]
    if len(ones) == 1:
        return ones[0]
    layers = [
        (n, m)
        for n, m in discriminator.named_modules()
        if n and "parametrizations" not in n and (any(True for _ in m.parameters(recurse=False)) or out_features(m))
    ]
    if ones and layers and layers[-1][0] == ones[-1][0]:
        return ones[-1]
    if not ones and out_features(discriminator) == 1:
        raise LookupError(
            "the discriminator is itself a single 1-output layer; wrap a module that contains it, "
            "e.g. nn.Sequential(layer)"
        )
    if not ones:
        raise LookupError(
            "no scalar head found: looked for an nn.Linear(in, 1) or nn.ConvNd(in, 1, ...) "
            f"(last layers seen: {[f'{n}: {type(m).__name__}' for n, m in layers[-3:]]}). "
            "Pass wrap(D, z_dim, head='path.to.layer') or register an adapter plugin "
            "(hook ogan_adapt_discriminator, entry-point group 'ogan_plugin')"
        )
    raise LookupError(
        f"several 1-output layers could be the head: {[n for n, _ in ones]}; "
        "pass wrap(D, z_dim, head='path.to.layer')"
    )


def centered_rows(z_dim: int, like: Tensor) -> Tensor:
    """``z_dim`` random perturbations shaped like ``like`` (1, ...) whose sum is zero.

    Drawn like a fresh layer's default init (uniform, fan-in scaled), so the code part
    of the widened head starts as a freshly initialised layer would.
    """
    fan_in = like[0].numel()
    bound = 1.0 / math.sqrt(fan_in)
    d = torch.empty((z_dim, *like.shape[1:]), dtype=torch.float64, device=like.device).uniform_(-bound, bound)
    return d - d.mean(dim=0, keepdim=True)


#: integer attributes naming a custom linear module's output count, kept in step with its rows
OUTPUT_COUNT_ATTRIBUTES = ("out_features", "out_dim", "out_channels", "output_dim")


def new_layer_like(layer: nn.Module, out_features: int) -> nn.Module:
    """A fresh layer of ``layer``'s type and input geometry with ``out_features`` outputs
    (no spectral norm), on ``layer``'s device and dtype.

    For a custom linear module (:func:`custom_linear_rows`): a deep copy whose ``weight``
    has ``out_features`` rows and whose ``bias`` (if any) as many entries, all zero (the
    caller fills them), with integer :data:`OUTPUT_COUNT_ATTRIBUTES` that held the old row
    count updated; its own forward is kept.
    """
    if has_plain_forward(layer) and isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, out_features, bias=layer.bias is not None)
    elif has_plain_forward(layer):
        conv_type = next(t for t in CONV_TYPES if isinstance(layer, t))
        new = conv_type(
            layer.in_channels,
            out_features,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
        )
    else:
        rows = custom_linear_rows(layer)
        if rows is None:
            raise TypeError(f"cannot build a layer like {type(layer).__name__}: not a Linear, ConvNd or custom linear module")
        new = copy.deepcopy(layer)
        weight, bias = layer.weight, getattr(layer, "bias", None)
        new.weight = nn.Parameter(weight.new_zeros(out_features, weight.shape[1]), requires_grad=weight.requires_grad)
        if isinstance(bias, Tensor):
            new.bias = nn.Parameter(bias.new_zeros(out_features), requires_grad=bias.requires_grad)
        for attr in OUTPUT_COUNT_ATTRIBUTES:
            if type(getattr(new, attr, None)) is int and getattr(new, attr) == rows:
                setattr(new, attr, out_features)
        return new
    return new.to(device=layer.weight.device, dtype=layer.weight.dtype)


def widen_layer(layer: nn.Module, z_dim: int) -> nn.Module:
    """A 1-output Linear/ConvNd widened to ``z_dim`` outputs whose mean output equals the
    old output: each new weight row is the old row plus a perturbation, the perturbations
    summing to zero; every new bias equals the old bias."""
    new = new_layer_like(layer, z_dim)
    with torch.no_grad():
        w = layer.weight.detach().double()
        new.weight.copy_(w + centered_rows(z_dim, w))
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach().expand(z_dim))
    return new


def spectral_norm_of(layer: nn.Module) -> tuple[str, Any]:
    """``(style, object)`` of the layer's spectral norm: ``("parametrization", the
    ``_SpectralNorm`` parametrization)`` or ``("hook", the old ``SpectralNorm`` hook)``.

    Raises:
        ValueError: the layer has no spectral norm.
    """
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import _SpectralNorm
    from torch.nn.utils.spectral_norm import SpectralNorm

    if parametrize.is_parametrized(layer, "weight"):
        for p in layer.parametrizations.weight:
            if isinstance(p, _SpectralNorm):
                return "parametrization", p
    for h in layer._forward_pre_hooks.values():
        if isinstance(h, SpectralNorm):
            return "hook", h
    raise ValueError("layer has no spectral norm")


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``path`` inside ``root`` (replacing what is there)."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)
