"""Running the user's networks: eval mode for a block, where they compute, a device by name.

- :func:`eval_mode`: every module in eval mode inside a ``with`` block, each submodule's own
  train flag restored afterwards (evaluation, inversion, pictures, Lightning's samples);
- :func:`device_dtype`: the device and dtype of a network's parameters (where its inputs go);
- :func:`parse_device`: a device named by the user (``--device cuda:1``, ``"auto"``).

Generators and discriminators may be any callables: what is not an ``nn.Module`` is left
alone by :func:`eval_mode` and skipped by :func:`device_dtype`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn as nn

__all__ = ["eval_mode", "device_dtype", "parse_device"]

_CPU = torch.device("cpu")


@contextlib.contextmanager
def eval_mode(*modules: Any) -> Iterator[None]:
    """Put every ``nn.Module`` among ``modules`` (and its children) in eval mode; restore
    each submodule's own train flag on exit (also on an exception).

    Args:
        *modules: networks; anything that is not an ``nn.Module`` is ignored.
    """
    saved = [(m, m.training) for mod in modules if isinstance(mod, nn.Module) for m in mod.modules()]
    try:
        for mod in modules:
            if isinstance(mod, nn.Module):
                mod.eval()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def device_dtype(
    *modules: Any, default: tuple[torch.device, torch.dtype] = (_CPU, torch.float32)
) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of the first floating-point parameter of the first
    ``nn.Module`` among ``modules`` that has one.

    Args:
        *modules: networks, in order of preference; non-modules are skipped.
        default: the answer when none has a floating-point parameter (plain callables).

    Returns:
        ``(device, dtype)``.
    """
    for mod in modules:
        if isinstance(mod, nn.Module):
            p = next((p for p in mod.parameters() if p.is_floating_point()), None)
            if p is not None:
                return p.device, p.dtype
    return default


def parse_device(text: str, name: str = "device", types: Optional[Sequence[str]] = None) -> torch.device:
    """The device named by ``text``: ``"auto"`` (CUDA when torch sees a GPU, else the CPU)
    or anything ``torch.device`` reads (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    Args:
        text: the name given.
        name: the option or argument it came from, for the messages (``"--device"``).
        types: the device types allowed (e.g. ``("cpu", "cuda")``); default: any.

    Returns:
        The ``torch.device``.

    Raises:
        ValueError: naming ``name``: ``text`` is not a device, not of an allowed type, or a
            CUDA device while torch sees no GPU.
    """
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{name} {text!r} is not a device: {exc}") from None
    if types is not None and dev.type not in types:
        allowed = " or ".join(repr(t) for t in types)
        raise ValueError(f"{name} must be {allowed} (or 'auto'), got {text!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {text!r} was asked for but torch sees no CUDA device")
    return dev
