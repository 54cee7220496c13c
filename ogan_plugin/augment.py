"""Differentiable augmentation of the discriminator's inputs (DiffAugment-style translation).

Small datasets let a discriminator memorise its training images.  DiffAugment (Zhao et
al., 2020, arXiv 2006.10738) augments *both* the real and the generated batch right
before the discriminator, with an operation the generator's gradient flows through, so
the generator never learns to produce augmented images.  With O-GAN the augmentation has
a second effect: the correlation term asks the encoder to recover ``z`` from
``augment(G(z))``, so the code becomes insensitive to what the augmentation changes (here
the exact position) and keeps what it does not (the shape): on the digits demo a random
one-pixel shift of half the images raises the held-out linear-probe accuracy of the codes
by about 1.4 points (mean of three seeds), at some cost in rho (README, "The demo").

Functional and module forms, as in ``torch.nn.functional`` / ``torch.nn``::

    x = ogan_plugin.augment.translate(x, max_shift=1, p=0.5)
    trainer = ogan_plugin.SingleLossStep(G, D, augment=ogan_plugin.RandomTranslate(1, p=0.5, seed=0))
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin.checks import check_int

__all__ = ["translate", "RandomTranslate"]


def _check_options(max_shift: Any, p: Any) -> None:
    check_int("max_shift", max_shift, 0)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")


def translate(
    x: Tensor,
    max_shift: int = 1,
    p: float = 1.0,
    *,
    fill: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Shift each image of a batch by its own random whole number of pixels.

    With probability ``p`` an image is moved by ``(dy, dx)``, each drawn uniformly from
    ``{-max_shift, ..., max_shift}`` (so (0, 0) is among the draws); otherwise it is left
    as is.  ``out[..., i, j] = x[..., i - dy, j - dx]``.  Pixels shifted in from outside
    repeat the nearest edge pixel (``fill=None``) or take the value ``fill``.  The result
    is a gather of ``x``: gradients flow back to ``x`` (to the generator, for fakes).

    Args:
        x: images ``(B, ..., H, W)``, any float dtype and device.
        max_shift: largest shift in pixels along each axis (0: identity).
        p: probability that an image is shifted at all.
        fill: value of the pixels shifted in (None: repeat the edge).
        generator: a CPU ``torch.Generator`` for the random draws (default: torch's global
            CPU RNG).  The draws are made on the CPU, so a seed gives the same shifts on
            every device.

    Returns:
        A tensor shaped and typed like ``x``.
    """
    if not isinstance(x, Tensor) or x.dim() < 3:
        got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a batch of images (B, ..., H, W) with at least 3 dims, got {got}")
    _check_options(max_shift, p)
    if max_shift == 0 or p == 0:
        return x
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    shift = torch.randint(-max_shift, max_shift + 1, (2, B), generator=generator)
    if p < 1:
        shift *= (torch.rand(B, generator=generator) < p).long()
    shift = shift.to(x.device)
    rows = torch.arange(H, device=x.device) - shift[0, :, None]  # (B, H): source row of each row
    cols = torch.arange(W, device=x.device) - shift[1, :, None]  # (B, W)
    flat = x.reshape(B, -1, H, W)
    C = flat.shape[1]
    out = flat.gather(2, rows.clamp(0, H - 1)[:, None, :, None].expand(B, C, H, W))
    out = out.gather(3, cols.clamp(0, W - 1)[:, None, None, :].expand(B, C, H, W))
    if fill is not None:
        outside = ((rows < 0) | (rows >= H))[:, None, :, None] | ((cols < 0) | (cols >= W))[:, None, None, :]
        out = out.masked_fill(outside, fill)
    return out.reshape(x.shape)


class RandomTranslate(nn.Module):
    """Module form of :func:`translate` with its own seeded random stream.

    The stream's state is part of :meth:`state_dict` (``_extra_state``), so a training run
    restored from a checkpoint draws the same shifts as one that never stopped;
    :class:`~ogan_plugin.SingleLossStep` saves it with its own state.

    Args:
        max_shift: largest shift in pixels along each axis.
        p: probability that an image is shifted.
        fill: value of the pixels shifted in (None: repeat the edge).
        seed: seed of the module's random stream (None: a seed drawn from torch's global RNG).
    """

    def __init__(self, max_shift: int = 1, p: float = 0.5, *, fill: Optional[float] = None, seed: Optional[int] = None) -> None:
        super().__init__()
        _check_options(max_shift, p)
        self.max_shift, self.p, self.fill = max_shift, float(p), fill
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        self.generator = torch.Generator().manual_seed(int(seed))

    def forward(self, x: Tensor) -> Tensor:
        return translate(x, self.max_shift, self.p, fill=self.fill, generator=self.generator)

    def get_extra_state(self) -> Tensor:
        return self.generator.get_state()

    def set_extra_state(self, state: Tensor) -> None:
        self.generator.set_state(state.cpu())  # a checkpoint loaded with map_location="cuda"

    def extra_repr(self) -> str:
        fill = "" if self.fill is None else f", fill={self.fill}"
        return f"max_shift={self.max_shift}, p={self.p}{fill}"
