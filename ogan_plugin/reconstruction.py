"""Using the encoder: reconstructions and interpolations through the generator."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

from ogan_plugin.head import OGANDiscriminator, as_wrapped
from ogan_plugin.labels import check_labels, check_takes_labels, label_args

__all__ = ["reconstruct", "interpolate"]


def check_wrapped(discriminator: object) -> OGANDiscriminator:
    """The :class:`OGANDiscriminator` to run (DDP around one: a view through DDP, see
    :func:`~ogan_plugin.head.as_wrapped`), else a ``TypeError`` naming
    ``wrapped_discriminator``."""
    return as_wrapped(discriminator, "wrapped_discriminator")


def _check(discriminator: object, scale: float) -> OGANDiscriminator:
    d = check_wrapped(discriminator)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    return d


def check_conditional(generator: Any, discriminator: OGANDiscriminator, y: Any, batch: int, name: str = "y") -> None:
    """For labels ``y`` given to a function that runs both networks: a batch of ``batch``
    labels, and both networks' forwards take them (errors name ``name``)."""
    if y is not None:
        check_labels(y, batch, name)
        check_takes_labels(discriminator, "discriminator", name)
        check_takes_labels(generator, "generator", name)


@torch.no_grad()
def reconstruct(
    generator: Callable[..., Tensor],
    wrapped_discriminator: OGANDiscriminator,
    x: Tensor,
    scale: float = 0.9,
    *,
    y: Optional[Tensor] = None,
) -> Tensor:
    """``G(scale * encode(x))``: images rebuilt from their codes (METHOD.md section 5).

    Runs without gradients and does not change the modules' train/eval mode (put them in
    eval mode first when they use BatchNorm or Dropout).

    Args:
        generator: the generator.
        wrapped_discriminator: ``ogan_plugin.wrap(D, z_dim)`` (or DDP around it).
        x: images (B, ...).
        scale: factor on the standardized code.
        y: class labels of ``x`` for a conditional GAN: ``G(scale * encode(x, y), y)``.

    Returns:
        The reconstructions, as the generator returns them.
    """
    d = _check(wrapped_discriminator, scale)
    check_conditional(generator, d, y, x.shape[0])
    labels = label_args(y)
    code = d.encode(x, *labels)
    return generator(scale * code.to(_param_dtype(generator, code.dtype)), *labels)


@torch.no_grad()
def interpolate(
    generator: Callable[..., Tensor],
    wrapped_discriminator: OGANDiscriminator,
    x_a: Tensor,
    x_b: Tensor,
    steps: int = 8,
    scale: float = 0.9,
    *,
    y: Optional[Tensor] = None,
    y_b: Optional[Tensor] = None,
) -> Tensor:
    """Decode codes on the line from ``encode(x_a)`` to ``encode(x_b)``.

    Args:
        generator: the generator.
        wrapped_discriminator: ``ogan_plugin.wrap(D, z_dim)`` (or DDP around it).
        x_a: the images the paths start from (B, ...).
        x_b: the images the paths end at, of ``x_a``'s shape.
        steps: points on each line (>= 2), both ends included.
        scale: factor on the standardized codes.
        y: class labels of ``x_a`` (conditional GANs; also of ``x_b`` unless ``y_b``).
        y_b: class labels of ``x_b``.  Where they differ from ``y``, floating-point
            (one-hot) labels are interpolated along with the codes; integer labels must
            then be equal (``ValueError``).

    Returns:
        A tensor (B, steps, *image_shape): row i morphs x_a[i] into x_b[i]; the first and
        last columns are the two reconstructions.
    """
    d = _check(wrapped_discriminator, scale)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    if y is None and y_b is not None:
        raise ValueError("y_b was given without y: give the labels of x_a as y")
    B = x_a.shape[0]
    check_conditional(generator, d, y, B)
    if y_b is not None:
        check_labels(y_b, B, "y_b")
        if y_b.shape != y.shape or y_b.dtype != y.dtype:
            raise ValueError(f"y_b must have y's shape and dtype, got {tuple(y_b.shape)} {y_b.dtype} "
                             f"and {tuple(y.shape)} {y.dtype}")
        if not y.is_floating_point() and not torch.equal(y, y_b):
            raise ValueError("y_b: integer class labels cannot be interpolated; pass one-hot float labels, "
                             "or equal labels")
    ca, cb = d.encode(x_a, *label_args(y)), d.encode(x_b, *label_args(y if y_b is None else y_b))
    t = torch.linspace(0, 1, steps, device=ca.device, dtype=ca.dtype).view(1, steps, 1)
    codes = (1 - t) * ca[:, None] + t * cb[:, None]  # (B, steps, z)
    labels: tuple = ()
    if y is not None:
        if y_b is None or not y.is_floating_point():
            labels = (y.repeat_interleave(steps, dim=0),)
        else:
            tl = t.view(1, steps, *([1] * (y.dim() - 1))).to(y.dtype)
            labels = (((1 - tl) * y[:, None] + tl * y_b[:, None]).flatten(0, 1),)
    out = generator(scale * codes.flatten(0, 1).to(_param_dtype(generator, codes.dtype)), *labels)
    return out.view(B, steps, *out.shape[1:])


def _param_dtype(module: object, default: torch.dtype) -> torch.dtype:
    if isinstance(module, torch.nn.Module):
        p = next(module.parameters(), None)
        if p is not None and p.is_floating_point():
            return p.dtype
    return default
