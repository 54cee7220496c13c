"""Class labels for conditional GANs: the checks every public function that takes ``y=`` runs.

Labels reach the networks as their second positional argument: ``G(z, y)`` and
``D(x, y)`` (BigGAN, SNGAN-projection, StudioGAN, StyleGAN2-ADA's ``c``).  They are a
tensor whose first dimension is the batch: integer class indices ``(B,)`` or
floating-point conditioning vectors such as one-hot rows ``(B, n_classes)``.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["check_labels", "check_takes_labels", "label_args"]


def check_labels(y: Any, batch: int, name: str = "y") -> Tensor:
    """``y`` if it is a batch of ``batch`` labels, else an error naming ``name``.

    Raises:
        TypeError: ``y`` is not a tensor, or its dtype is neither integer (class indices)
            nor floating point (one-hot / embedding rows); ``bool`` and complex are refused.
        ValueError: ``y`` is a scalar or its first dimension is not ``batch``.
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of labels, got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(
            f"{name} must hold integer class indices or floating-point (one-hot / embedding) labels, "
            f"got dtype {y.dtype}"
        )
    if y.dim() == 0 or y.shape[0] != batch:
        got = "a scalar" if y.dim() == 0 else f"{y.shape[0]} labels (shape {tuple(y.shape)})"
        raise ValueError(f"{name} must have one label per sample: the batch has {batch} samples, {name} has {got}")
    return y


def _network(module: Any) -> Any:
    """The user's own network under DDP / DataParallel / OGANDiscriminator wrappers."""
    from ogan_plugin.head import OGANDiscriminator

    seen = 0
    while seen < 8:
        seen += 1
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif isinstance(module, OGANDiscriminator):
            module = module.discriminator
        else:
            break
    return module


@torch.compiler.disable
def check_takes_labels(network: Any, what: str, name: str = "y") -> None:
    """Raise ``ValueError`` naming ``name`` when ``network``'s forward cannot take ``(x, labels)``.

    Args:
        network: the generator or the (wrapped) discriminator; wrappers (DDP,
            :class:`~ogan_plugin.OGANDiscriminator`) are looked through.
        what: "generator" or "discriminator", for the message.
        name: the argument the labels came from.
    """
    net = _network(network)
    fn = net.forward if isinstance(net, nn.Module) else net
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and C callables: nothing to check
        return
    try:
        sig.bind(object(), object())
    except TypeError:
        raise ValueError(
            f"{name}= was given but the {what}'s forward{sig} takes no labels: class labels reach the "
            f"networks as their second argument, G(z, y) and D(x, y). Leave {name} out for an "
            "unconditional GAN"
        ) from None


def label_args(y: Optional[Tensor]) -> tuple:
    """The extra positional arguments of a network call: ``()`` or ``(y,)``."""
    return () if y is None else (y,)
