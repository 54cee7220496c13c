"""Using the encoder: reconstructions and interpolations through the generator."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ogan_plugin.head import OGANDiscriminator

__all__ = ["reconstruct", "interpolate"]


def check_wrapped(discriminator: object) -> OGANDiscriminator:
    """``discriminator`` if it is an :class:`OGANDiscriminator`, else a ``TypeError``
    naming ``wrapped_discriminator``."""
    if not isinstance(discriminator, OGANDiscriminator):
        raise TypeError(
            f"wrapped_discriminator must be an OGANDiscriminator (from ogan_plugin.wrap), got "
            f"{type(discriminator).__name__}"
        )
    return discriminator


def _check(discriminator: OGANDiscriminator, scale: float) -> None:
    check_wrapped(discriminator)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")


@torch.no_grad()
def reconstruct(
    generator: Callable[[Tensor], Tensor], wrapped_discriminator: OGANDiscriminator, x: Tensor, scale: float = 0.9
) -> Tensor:
    """``G(scale * encode(x))``: images rebuilt from their codes (METHOD.md section 5).

    Runs without gradients and does not change the modules' train/eval mode (put them in
    eval mode first when they use BatchNorm or Dropout).
    """
    _check(wrapped_discriminator, scale)
    code = wrapped_discriminator.encode(x)
    return generator(scale * code.to(_param_dtype(generator, code.dtype)))


@torch.no_grad()
def interpolate(
    generator: Callable[[Tensor], Tensor],
    wrapped_discriminator: OGANDiscriminator,
    x_a: Tensor,
    x_b: Tensor,
    steps: int = 8,
    scale: float = 0.9,
) -> Tensor:
    """Decode codes on the line from ``encode(x_a)`` to ``encode(x_b)``.

    Returns a tensor (B, steps, *image_shape): row i morphs x_a[i] into x_b[i]; the first
    and last columns are the two reconstructions.
    """
    _check(wrapped_discriminator, scale)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    ca, cb = wrapped_discriminator.encode(x_a), wrapped_discriminator.encode(x_b)
    t = torch.linspace(0, 1, steps, device=ca.device, dtype=ca.dtype).view(1, steps, 1)
    codes = (1 - t) * ca[:, None] + t * cb[:, None]  # (B, steps, z)
    out = generator(scale * codes.flatten(0, 1).to(_param_dtype(generator, codes.dtype)))
    return out.view(x_a.shape[0], steps, *out.shape[1:])


def _param_dtype(module: object, default: torch.dtype) -> torch.dtype:
    if isinstance(module, torch.nn.Module):
        p = next(module.parameters(), None)
        if p is not None and p.is_floating_point():
            return p.dtype
    return default
