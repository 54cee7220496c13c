"""The generator's input layout: the per-sample shape of the noise ``z`` it takes.

Codes come out of the encoder as rows ``(B, z_dim)``; many generators take them so, but
the PyTorch DCGAN example's takes ``(B, z_dim, 1, 1)``.  Every function here that feeds the
generator a code (:func:`ogan_plugin.reconstruct`, :func:`ogan_plugin.interpolate`,
:func:`ogan_plugin.invert`, the :mod:`ogan_plugin.evaluate` helpers) takes ``z_shape=``,
the per-sample shape (``(z_dim, 1, 1)`` for the DCGAN example), and resolves it with
:func:`resolve_z_shape`:

1. ``z_shape`` when given;
2. else the layout recorded for the generator (or, for a copy of it such as an EMA
   generator, for the wrapped discriminator): hook mode's
   :class:`~ogan_plugin.integrations.hook.OGANHook` records the shape of the last ``z``
   it saw the generator take (``hook.z_shape``; it stays recorded after ``detach``), a
   :class:`~ogan_plugin.step.SingleLossStep` or Lightning ``OGANModule`` built with
   ``z_shape=`` records that;
3. else flat rows ``(z_dim,)``.  A generator that rejects them then raises one
   ``ValueError`` naming ``z_shape`` (:class:`GeneratorFeed`), with the generator's own
   error chained.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["Layout", "GeneratorFeed", "generator_feed", "register_layout_source", "remember_layout", "resolve_z_shape"]

# module -> what knows its generator's layout: a per-sample shape, or a weak reference to an
# object whose ``z_shape`` attribute holds it (None while unknown); the last one recorded wins
_SOURCES: "weakref.WeakKeyDictionary[Any, Union[tuple[int, ...], weakref.ref]]" = weakref.WeakKeyDictionary()


class Layout(NamedTuple):
    """A resolved input layout: ``shape`` per sample, and whether it was ``known`` (given
    or registered) rather than the flat fallback ``(z_dim,)``."""

    shape: tuple[int, ...]
    known: bool


def _record(value: Any, modules: tuple) -> None:
    for m in modules:
        try:
            _SOURCES[m] = value
        except TypeError:  # not weak-referenceable: nothing to remember it by
            pass


def remember_layout(z_shape: Sequence[int], *modules: Any) -> None:
    """Record ``z_shape`` as the input layout of the generator behind ``modules`` (the
    generator, and the wrapped discriminator paired with it), for as long as they exist."""
    _record(tuple(int(s) for s in z_shape), modules)


def register_layout_source(source: Any, *modules: Any) -> None:
    """Record that ``source`` knows the input layout of the generator behind ``modules``.

    ``source.z_shape`` is read when a layout is resolved: a per-sample shape, or None while
    unknown (hook mode before the generator's first call).  Only a weak reference is kept:
    the source stops counting once it is gone.
    """
    _record(weakref.ref(source), modules)


def _check_shape(z_shape: Any, z_dim: int) -> tuple[int, ...]:
    if isinstance(z_shape, (str, bytes)) or not isinstance(z_shape, (Sequence, torch.Size)):
        raise TypeError(f"z_shape must be a sequence of ints such as ({z_dim}, 1, 1), got {type(z_shape).__name__}")
    if not z_shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in z_shape):
        raise ValueError(f"z_shape must be a non-empty sequence of positive ints, got {tuple(z_shape)!r}")
    shape = tuple(int(s) for s in z_shape)
    if int(torch.Size(shape).numel()) != z_dim:
        raise ValueError(f"z_shape={shape} must have z_dim={z_dim} elements, as the codes have")
    return shape


def resolve_z_shape(z_shape: Optional[Sequence[int]], z_dim: int, *modules: Any) -> Layout:
    """The layout to feed codes of ``z_dim`` values to the generator in (see the module doc).

    Args:
        z_shape: the per-sample shape given by the caller, or None.
        z_dim: the code's size.
        modules: where to look for a registered source, in order (the generator first).

    Raises:
        TypeError, ValueError: ``z_shape`` is not a sequence of positive ints with
            ``z_dim`` elements in all.
    """
    if z_shape is not None:
        return Layout(_check_shape(z_shape, z_dim), True)
    for m in modules:
        try:
            known = _SOURCES.get(m)
        except TypeError:
            continue
        if isinstance(known, weakref.ref):
            source = known()
            known = None if source is None else getattr(source, "z_shape", None)
        shape = known
        if shape is not None and int(torch.Size(shape).numel()) == z_dim:
            return Layout(tuple(shape), True)
    return Layout((z_dim,), False)


class GeneratorFeed:
    """Feeds codes ``(B, z_dim)`` to ``generator`` in ``layout``: ``generator(codes.view(B,
    *layout.shape), *labels)``.

    When the layout is the flat fallback (not given, nothing registered) and the first
    call raises, the error becomes one ``ValueError`` that names ``z_shape`` (the
    generator's own error chained as its cause); later calls run bare.
    """

    def __init__(self, generator: Callable[..., Tensor], layout: Layout) -> None:
        self.generator = generator
        self.layout = layout
        self._checked = layout.known

    def __call__(self, codes: Tensor, *labels: Any) -> Tensor:
        z = codes.reshape(codes.shape[0], *self.layout.shape)
        if self._checked:
            return self.generator(z, *labels)
        try:
            out = self.generator(z, *labels)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            z_dim = self.layout.shape[0]
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ValueError(
                f"the generator failed on codes of shape {tuple(z.shape)} (batch, z_dim) "
                f"({type(exc).__name__}: {first}). If it takes its noise in another layout, pass "
                f"z_shape= with the per-sample shape, e.g. z_shape=({z_dim}, 1, 1) for a DCGAN generator "
                f"fed torch.randn(B, {z_dim}, 1, 1); hook mode (after a training step) and a "
                "SingleLossStep built with z_shape= make it known without the argument"
            ) from exc
        self._checked = True
        return out


def generator_feed(
    generator: Callable[..., Tensor], z_shape: Optional[Sequence[int]], z_dim: int, *modules: Any
) -> GeneratorFeed:
    """:class:`GeneratorFeed` for ``generator`` with the layout :func:`resolve_z_shape`
    gives (looked up for ``generator``, then for ``modules``)."""
    return GeneratorFeed(generator, resolve_z_shape(z_shape, z_dim, generator, *modules))
