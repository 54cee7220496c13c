"""Plumbing of :mod:`ogan_plugin.evaluate`: data in any form, batches, fresh noise, samples."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor

from ogan_plugin.checks import check_int
from ogan_plugin.labels import check_conditional, label_args
from ogan_plugin.layout import generator_feed
from ogan_plugin.networks import device_dtype, eval_mode

__all__ = ["DataLike", "collect", "generate"]

#: a tensor of images (N, ...), or an iterable of image tensors or (images, labels) pairs
DataLike = Union[Tensor, Iterable[Any]]


# --- plumbing ----------------------------------------------------------------------------
def collect(data: DataLike, limit: Optional[int] = None) -> tuple[Tensor, Optional[Tensor]]:
    """Concatenate ``data`` into ``(images, labels)`` (labels None when absent).

    ``data`` is a tensor, a ``(images, labels)`` tuple of tensors, or an iterable (e.g. a
    ``DataLoader``) yielding tensors or ``(images, labels, ...)`` tuples/lists.  At most
    ``limit`` images are kept.
    """
    if isinstance(data, Tensor):
        x = data if limit is None else data[:limit]
        return x, None
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"images and labels differ in length: {x.shape[0]} and {y.shape[0]}")
        return (x, y) if limit is None else (x[:limit], y[:limit])
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be a tensor or an iterable of batches, got {type(data).__name__}")
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    n = 0
    for batch in data:
        if isinstance(batch, Tensor):
            bx, by = batch, None
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
            bx = batch[0]
            by = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        else:
            raise TypeError(
                f"each batch must be a tensor or an (images, labels) pair, got {type(batch).__name__}"
            )
        if ys and by is None or (xs and not ys and by is not None):
            raise ValueError("some batches have labels and some do not")
        xs.append(bx)
        if by is not None:
            ys.append(by)
        n += bx.shape[0]
        if limit is not None and n >= limit:
            break
    if not xs:
        raise ValueError("data is empty: no batches")
    x = torch.cat(xs)
    y = torch.cat(ys) if ys else None
    if limit is not None:
        x = x[:limit]
        y = None if y is None else y[:limit]
    return x, y


def _batches(x: Tensor, batch_size: int) -> Iterator[Tensor]:
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size]


def _labelled_batches(x: Tensor, y: Optional[Tensor], batch_size: int) -> Iterator[tuple[Tensor, tuple]]:
    """``(images, label_args)`` per batch: ``label_args`` is ``()`` or ``(labels,)``."""
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size], label_args(None if y is None else y[i : i + batch_size])


def _require_labels(y: Optional[Tensor], name: str) -> None:
    if y is None:
        raise ValueError(
            f"conditional=True needs labelled {name}: (images, labels) pairs or a loader of them, "
            "so the labels can reach D(x, y) and G(z, y)"
        )


def _data(data: DataLike, conditional: bool, name: str = "images") -> tuple[Tensor, Optional[Tensor]]:
    """``collect(data)``; with ``conditional`` the labels are required (else dropped)."""
    x, y = collect(data)
    if conditional:
        _require_labels(y, name)
    return x, (y if conditional else None)


def _draw_labels(y: Tensor, n: int, seed: int) -> Tensor:
    """``n`` labels drawn with replacement from ``y`` (seeded CPU RNG): the class mix of ``y``."""
    return y.cpu()[torch.randint(len(y), (n,), generator=torch.Generator().manual_seed(seed))]


def _noise(n: int, z_dim: int, seed: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, z_dim, generator=g).to(device=device, dtype=dtype)


@torch.no_grad()
def generate(
    generator: Callable[..., Tensor],
    z_dim: int,
    n_samples: int = 1000,
    *,
    seed: int = 0,
    batch_size: int = 256,
    y: Optional[Tensor] = None,
    z_shape: Optional[Sequence[int]] = None,
) -> Tensor:
    """``n_samples`` images ``G(z)``, z ~ N(0, I) drawn from ``seed`` (CPU RNG, so the
    same on every device), in eval mode; returned on the generator's device.  With labels
    ``y`` (``n_samples`` of them): ``G(z, y)``.  ``z_shape``: the per-sample shape G takes
    its noise in, e.g. ``(z_dim, 1, 1)`` (default: the layout hook mode saw or a
    ``SingleLossStep`` was built with, else ``(z_dim,)``; :mod:`ogan_plugin.layout`); the
    draws are the same whatever the layout."""
    check_int("z_dim", z_dim, 1)
    check_int("n_samples", n_samples, 1)
    check_int("batch_size", batch_size, 1)
    check_conditional(generator, None, y, n_samples)
    feed = generator_feed(generator, z_shape, z_dim)
    device, dtype = device_dtype(generator)
    z = _noise(n_samples, z_dim, seed, device, dtype)
    y = None if y is None else y.to(device)
    with eval_mode(generator):
        return torch.cat([feed(b, *labels).float() for b, labels in _labelled_batches(z, y, batch_size)])
