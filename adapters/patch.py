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

from typing import Any, Callable, Generator, Optional, Union

import torch.nn as nn
from torch import Tensor

from ogan_plugin.checks import named_or_callable
from ogan_plugin.head import Adaptation, OGANHead, as_wrapped
from ogan_plugin.hookspecs import hookimpl
from ogan_plugin.layers import CONV_TYPES
from ogan_plugin.reductions import (  # the reductions live in the core (the head saves their names)
    DEFAULT_REDUCTION,
    REDUCTIONS,
    patch_max,
    patch_mean,
    patch_positional,
    positional_weights,
    reduction_name,
    reduction_named,
)

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
