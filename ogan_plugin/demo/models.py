"""Small DCGAN-like generator and discriminator for square images (the demo's pair).

Both nets work for any square size that is a power of two >= 8 (16x16 for the digits
demo): the generator starts from a 4x4 map and doubles it with transposed convolutions;
the discriminator halves it with strided convolutions down to 4x4 and ends in a scalar
``nn.Linear`` head, which :func:`ogan_plugin.wrap` widens into the O-GAN encoder.

Images are expected in ``[-1, 1]`` (the generator ends in ``tanh``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["Generator", "Discriminator", "DISCRIMINATOR_NORMS"]

#: normalisations the discriminator can use between its convolutions
DISCRIMINATOR_NORMS = ("batch", "layer", "spectral", "none")


def _num_stages(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise TypeError(f"image_size must be an int, got {type(image_size).__name__}")
    stages = int(round(math.log2(image_size / 4))) if image_size >= 4 else -1
    if image_size < 8 or 4 * 2**stages != image_size:
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return stages


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


class Generator(nn.Module):
    """``z (B, z_dim) -> image (B, channels, image_size, image_size)`` in ``[-1, 1]``.

    Linear to a ``(width * 2**(stages-1), 4, 4)`` map, then ``stages = log2(size/4)``
    transposed convolutions (kernel 4, stride 2), each halving the channels; BatchNorm
    and ReLU between layers, ``tanh`` at the end.

    Args:
        z_dim: noise size.
        image_size: output side (power of two >= 8).
        channels: output channels (1 = grayscale, 3 = RGB).
        width: channels of the last hidden layer (the first has ``width * 2**(stages-1)``).
    """

    def __init__(self, z_dim: int = 32, image_size: int = 16, channels: int = 1, width: int = 64) -> None:
        super().__init__()
        stages = _num_stages(image_size)
        for name, v in (("z_dim", z_dim), ("channels", channels), ("width", width)):
            _check_positive(name, v)
        self.z_dim, self.image_size, self.channels = z_dim, image_size, channels
        c = width * 2 ** (stages - 1)
        self.project = nn.Sequential(nn.Linear(z_dim, c * 16, bias=False), nn.BatchNorm1d(c * 16), nn.ReLU(True))
        self.start_channels = c
        layers: list[nn.Module] = []
        for i in range(stages):
            last = i == stages - 1
            out = channels if last else c // 2
            layers.append(nn.ConvTranspose2d(c, out, 4, stride=2, padding=1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(out), nn.ReLU(True)]
            c = out
        layers.append(nn.Tanh())
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z).view(z.shape[0], self.start_channels, 4, 4)
        return self.body(h)


class Discriminator(nn.Module):
    """``image -> score (B, 1)``: strided convolutions down to 4x4, then ``nn.Linear(., 1)``.

    ``stages = log2(size/4)`` convolutions (kernel 4, stride 2), channels ``width``,
    ``2*width``, ...; LeakyReLU(0.2) after each, and the chosen normalisation after every
    convolution but the first.  The final ``head`` is the scalar layer that
    :func:`ogan_plugin.wrap` widens.

    Args:
        image_size: input side (power of two >= 8).
        channels: input channels.
        width: channels of the first convolution.
        norm: ``"batch"`` (BatchNorm2d), ``"layer"`` (GroupNorm with one group: per-sample,
            so real and fake batches never mix statistics and eval mode behaves like train
            mode), ``"spectral"`` (spectral norm on every convolution and on the head) or
            ``"none"``.
    """

    def __init__(self, image_size: int = 16, channels: int = 1, width: int = 64, norm: str = "spectral") -> None:
        super().__init__()
        stages = _num_stages(image_size)
        for name, v in (("channels", channels), ("width", width)):
            _check_positive(name, v)
        if norm not in DISCRIMINATOR_NORMS:
            raise ValueError(f"norm must be one of {DISCRIMINATOR_NORMS}, got {norm!r}")
        sn = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)
        layers: list[nn.Module] = []
        c_in, c = channels, width
        for i in range(stages):
            layers.append(sn(nn.Conv2d(c_in, c, 4, stride=2, padding=1, bias=(i == 0 or norm in ("none", "spectral")))))
            if i > 0 and norm == "batch":
                layers.append(nn.BatchNorm2d(c))
            elif i > 0 and norm == "layer":
                layers.append(nn.GroupNorm(1, c))
            layers.append(nn.LeakyReLU(0.2, True))
            c_in, c = c, c * 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = sn(nn.Linear(c_in * 16, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
