"""Patch discriminators: a head convolution whose output is a map of patch scores.

PatchGAN and lightweight-gan end in a 1-output convolution that yields a map larger
than 1x1: one score per patch (METHOD.md section 7).  Widened to ``z_dim`` channels,
each patch ``p`` gets an output vector ``E_p(x)``; the head returns its mean at every
place, so **D's output map keeps its shape and values** (each patch's score is the mean
over the ``z_dim`` channels there).  The per-sample raw output ``(B, z_dim)`` that the
code and the correlation term use comes from the widened map through a *reduction*
over the patches.  The default, ``"positional"``, splits the patches among the code's
channels (channel ``i`` reads channel ``i`` of its own patches), so the code keeps where
things are.  The plain mean over the patches, ``E(x) = (1/P) sum_p E_p(x)``, averages
that away: on the digits its codes reconstructed held-out images far worse
(docs/wrapping.md, "How the default reduction was chosen", has the measurements;
``benchmarks/patch_encoder.py`` reproduces them).

This plugin does not widen layers itself: it is a *wrapper* around the other adapters
(``@hookimpl(wrapper=True)``).  Whichever adapter recognised the head (the plain
convolution adapter, the spectral-norm adapter, or a third-party one), when the new
head's layer is an ``nn.ConvNd`` this wrapper gives it the patch reduction, so patch
heads work with and without spectral norm exactly as 1x1 heads do.  A 1x1 map is not
reduced (its one position is the sample's row), so DCGAN heads are unaffected.

To use another reduction on a wrapped discriminator::

    from ogan_plugin.adapters.patch import set_patch_reduction
    set_patch_reduction(D, "mean")

The reduction is saved with the head: ``state_dict()`` names it (:func:`reduction_name`),
``load_state_dict`` restores it (:func:`reduction_named`); a function of your own cannot be
saved, so set it again before loading such a checkpoint.

A reduction is any function ``(B, z_dim, *spatial) -> (B, z_dim)``.  It only chooses
what the code reads: the head shifts each reduced row so that its mean is the mean of
the patch scores, so the score the adversarial losses see (``decompose(x).score``) and
D's output map are the same whatever the reduction.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Generator, Optional, Union

import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin.checks import named_or_callable
from ogan_plugin.head import CONV_TYPES, Adaptation, OGANHead, as_wrapped
from ogan_plugin.hookspecs import hookimpl
from ogan_plugin.scores import _accumulate

__all__ = [
    "DEFAULT_REDUCTION",
    "REDUCTIONS",
    "patch_max",
    "patch_mean",
    "patch_positional",
    "positional_weights",
    "reduction_name",
    "reduction_named",
    "set_patch_reduction",
]


def patch_mean(out: Tensor) -> Tensor:
    """The mean over the patches: ``(B, z, *spatial) -> (B, z)`` (reduced in float32)."""
    return _accumulate(out.flatten(2)).mean(dim=2).to(out.dtype)


def patch_max(out: Tensor) -> Tensor:
    """The largest value over the patches, per channel: ``(B, z, *spatial) -> (B, z)``."""
    return out.flatten(2).amax(dim=2)


def positional_weights(z_dim: int, patches: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(z_dim, patches)`` weights of :func:`patch_positional`; each row sums to 1.

    The patches, in raster order, are split among the channels: channel ``i`` covers the
    positions ``[floor(i P / z), floor((i + 1) P / z))`` (at least one).  With fewer patches
    than channels several channels read the same patch; with more, each channel averages a
    contiguous run of patches.
    """
    start = torch.arange(z_dim, dtype=torch.float64) * patches / z_dim
    lo = start.floor().long()
    hi = torch.maximum(((torch.arange(z_dim, dtype=torch.float64) + 1) * patches / z_dim).floor().long(), lo + 1)
    p = torch.arange(patches)[None, :]
    w = ((p >= lo[:, None]) & (p < hi[:, None])).to(torch.float64)
    return (w / w.sum(dim=1, keepdim=True)).to(device=device, dtype=dtype)


def patch_positional(out: Tensor) -> Tensor:
    """Each channel reads its own patches: ``(B, z, *spatial) -> (B, z)``.

    Channel ``i`` of the code is the (mean) value of channel ``i`` at the patches
    :func:`positional_weights` assigns to it, so the code keeps *where* things are in the
    image, which the mean over all patches averages away (reduced in float32).
    """
    flat = _accumulate(out.flatten(2))
    weights = (positional_weights if torch.compiler.is_compiling() else _cached_weights)(
        flat.shape[1], flat.shape[2], flat.device, flat.dtype
    )
    return torch.einsum("bzp,zp->bz", flat, weights).to(out.dtype)


#: eager calls reuse the weights per (z_dim, patches, device, dtype); compiled code builds
#: them inside the traced graph (Dynamo does not honour an lru_cache)
_cached_weights = functools.lru_cache(maxsize=64)(positional_weights)


#: reductions by name (``set_patch_reduction`` accepts these names or a function)
REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "mean": patch_mean,
    "positional": patch_positional,
    "max": patch_max,
}

#: the reduction new patch heads get (measured against the others: docs/wrapping.md)
DEFAULT_REDUCTION = "positional"


def set_patch_reduction(wrapped_discriminator: Any, reduction: Union[str, Callable[[Tensor], Tensor]]) -> None:
    """Choose how a wrapped patch discriminator's map becomes the per-sample raw output.

    The choice is saved with the head: ``state_dict()`` names it, ``load_state_dict``
    restores it (a custom function cannot be saved: set it again before loading, see
    :meth:`ogan_plugin.head.OGANHead.set_extra_state`).

    Args:
        wrapped_discriminator: from :func:`ogan_plugin.wrap`, with a convolution head; or
            ``DistributedDataParallel`` around one (``accelerator.prepare``'s result), or
            its view :func:`~ogan_plugin.head.as_wrapped`.
        reduction: a name of :data:`REDUCTIONS` (``"positional"``, ``"mean"``, ``"max"``) or a function
            ``(B, z_dim, *spatial) -> (B, z_dim)``.

    Raises:
        TypeError: not a wrapped discriminator, or ``reduction`` is neither a name nor callable.
        ValueError: unknown name, or the head is not a convolution.
    """
    wrapped = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
    head = wrapped.head
    if not isinstance(head.layer, CONV_TYPES):
        raise ValueError(
            f"the head {wrapped.head_path!r} is a {type(head.layer).__name__}, not a convolution: "
            "it yields one row per sample and has no patches to reduce"
        )
    head.patch_reduction = named_or_callable("reduction", reduction, REDUCTIONS, "a function (B, z, *spatial) -> (B, z)")


def reduction_name(reduction: Optional[Callable[[Tensor], Tensor]]) -> Union[None, str, dict[str, str]]:
    """How a head's ``state_dict()`` names its patch reduction.

    Args:
        reduction: a head's ``patch_reduction``.

    Returns:
        Its key in :data:`REDUCTIONS`; None for no reduction (a linear head); for any other
        function ``{"custom": "module.qualified_name"}`` (a state dict cannot hold a
        function; a name longer than 100 characters keeps its end, after ``"..."``).
    """
    if reduction is None:
        return None
    for name, fn in REDUCTIONS.items():
        if fn is reduction:
            return name
    module = getattr(reduction, "__module__", None) or "?"
    label = f"{module}.{getattr(reduction, '__qualname__', type(reduction).__name__)}"
    return {"custom": label if len(label) <= 100 else "..." + label[-97:]}


def reduction_named(
    name: Union[None, str, dict[str, str]], current: Optional[Callable[[Tensor], Tensor]]
) -> Optional[Callable[[Tensor], Tensor]]:
    """The patch reduction a state dict names (what :func:`reduction_name` returned).

    Args:
        name: a key of :data:`REDUCTIONS`, None, or ``{"custom": ...}``.
        current: the reduction the head has now; kept for a custom function, which a state
            dict cannot hold, when it is itself a custom function (set before loading).

    Returns:
        The reduction to use.

    Raises:
        ValueError: ``name`` is not a key of :data:`REDUCTIONS`, or names a custom function
            while ``current`` is not one.
    """
    if name is None:
        return None
    if isinstance(name, str):
        if name not in REDUCTIONS:
            raise ValueError(
                f"the state dict's patch reduction {name!r} is not one of REDUCTIONS {sorted(REDUCTIONS)}: add it "
                "to ogan_plugin.adapters.patch.REDUCTIONS (the same name, the same function) before loading"
            )
        return REDUCTIONS[name]
    if isinstance(name, dict) and isinstance(name.get("custom"), str):
        if isinstance(reduction_name(current), dict):
            return current  # the user set the function again before loading
        raise ValueError(
            f"the state dict was saved with the custom patch reduction {name['custom']}, which a state dict "
            "cannot hold: wrap the discriminator, call set_patch_reduction(D, that function), then "
            "load_state_dict (OGANDiscriminator.from_state_dict cannot restore it)"
        )
    raise ValueError(f"a patch reduction in a state dict is a name, None or {{'custom': ...}}, got {name!r}")


@hookimpl(wrapper=True)
def ogan_adapt_discriminator(
    discriminator: nn.Module, z_dim: int, head: Optional[str]
) -> Generator[None, Optional[Adaptation], Optional[Adaptation]]:
    adaptation = yield
    if (
        isinstance(adaptation, Adaptation)
        and isinstance(adaptation.head, OGANHead)
        and isinstance(adaptation.head.layer, CONV_TYPES)
        and adaptation.head.patch_reduction is None
    ):
        adaptation.head.patch_reduction = REDUCTIONS[DEFAULT_REDUCTION]
    return adaptation
