"""Class labels for conditional GANs: the checks every public function that takes ``y=`` runs.

Labels reach the networks as their second positional argument: ``G(z, y)`` and
``D(x, y)`` (BigGAN, SNGAN-projection, StudioGAN, StyleGAN2-ADA's ``c``).  They are a
tensor whose first dimension is the batch: integer class indices ``(B,)`` or
floating-point conditioning vectors such as one-hot rows ``(B, n_classes)``.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any, Optional

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["check_labels", "check_takes_labels", "check_conditional", "label_args"]


def check_labels(y: Any, batch: int, name: str = "y", device: Optional[torch.device] = None) -> Tensor:
    """``y`` if it is a batch of ``batch`` labels, else an error naming ``name``.

    Args:
        y: the labels.
        batch: the number of samples they must label.
        name: the argument they came from, for the messages.
        device: the batch's device, when known: the labels must be on it too (a CPU label
            tensor with a CUDA batch would otherwise fail inside the network).

    Raises:
        TypeError: ``y`` is not a tensor, or its dtype is neither integer (class indices)
            nor floating point (one-hot / embedding rows); ``bool`` and complex are refused.
        ValueError: ``y`` is a scalar, its first dimension is not ``batch``, or it is on
            another device than the batch.
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
    if device is not None and y.device != torch.device(device):
        raise ValueError(f"{name} is on {y.device} but the batch is on {device}; put the labels on the batch's device")
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


# the answer of check_takes_labels per forward function: None (takes labels) or the
# signature text for the message; methods are keyed by their function (every instance of a
# class shares it), other callables by themselves.  Weak keys: no network is kept alive.
_PLAIN: "weakref.WeakKeyDictionary[Any, Optional[str]]" = weakref.WeakKeyDictionary()
_METHODS: "weakref.WeakKeyDictionary[Any, Optional[str]]" = weakref.WeakKeyDictionary()


def _refusal(fn: Any) -> Optional[str]:
    """``None`` when ``fn`` can be called as ``fn(x, labels)``, else its signature as text
    (cached per function: ``inspect.signature`` is slow next to a training step)."""
    table, key = (_METHODS, fn.__func__) if inspect.ismethod(fn) else (_PLAIN, fn)
    try:
        return table[key]
    except (KeyError, TypeError):  # TypeError: a callable that takes no weak reference
        pass
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and C callables: nothing to check
        answer = None
    else:
        try:
            sig.bind(object(), object())
            answer = None
        except TypeError:
            answer = str(sig)
    try:
        table[key] = answer
    except TypeError:
        pass
    return answer


@torch.compiler.disable
def check_takes_labels(network: Any, what: str, name: str = "y") -> None:
    """Raise ``ValueError`` naming ``name`` when ``network``'s forward cannot take ``(x, labels)``.

    The answer is remembered per forward function, so checking every training step costs
    a dictionary look-up.

    Args:
        network: the generator or the (wrapped) discriminator; wrappers (DDP,
            :class:`~ogan_plugin.OGANDiscriminator`) are looked through.
        what: "generator" or "discriminator", for the message.
        name: the argument the labels came from.
    """
    net = _network(network)
    sig = _refusal(net.forward if isinstance(net, nn.Module) else net)
    if sig is not None:
        raise ValueError(
            f"{name}= was given but the {what}'s forward{sig} takes no labels: class labels reach the "
            f"networks as their second argument, G(z, y) and D(x, y). Leave {name} out for an "
            "unconditional GAN"
        )


def check_conditional(
    generator: Any, discriminator: Any, y: Any, batch: int, name: str = "y", device: Optional[torch.device] = None
) -> Optional[Tensor]:
    """The checks of labels ``y`` given to a function that runs the networks: a batch of
    ``batch`` labels (:func:`check_labels`), and every network given takes them
    (:func:`check_takes_labels`).  Nothing is checked when ``y`` is None.

    Args:
        generator: the generator that will get the labels, or None (not run).
        discriminator: the (wrapped) discriminator that will get them, or None (not run).
        y: the labels, or None (an unconditional call).
        batch: the number of samples they must label.
        name: the argument they came from, for the messages.
        device: the batch's device, when known (see :func:`check_labels`).

    Returns:
        ``y``.

    Raises:
        TypeError: ``y`` is not a tensor of labels.
        ValueError: ``y`` does not hold ``batch`` labels, is on another device than the
            batch, or a network's forward takes none.
    """
    if y is not None:
        check_labels(y, batch, name, device)
        if discriminator is not None:
            check_takes_labels(discriminator, "discriminator", name)
        if generator is not None:
            check_takes_labels(generator, "generator", name)
    return y


def label_args(y: Optional[Tensor]) -> tuple:
    """The extra positional arguments of a network call: ``()`` or ``(y,)``."""
    return () if y is None else (y,)
