"""``wrap()``: turn a discriminator into an O-GAN encoder (and rebuild one from a checkpoint).

The module that builds wrappers: it asks the adapters (``ogan_adapt_discriminator`` hook,
through :mod:`ogan_plugin.registry`) for D's head, installs the widened
:class:`~ogan_plugin.head.OGANHead` there, returns the
:class:`~ogan_plugin.head.OGANDiscriminator`, and turns on hook mode
(:mod:`ogan_plugin.hook`) when a generator is given.  It imports the head and the hook;
neither imports it.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn as nn

from ogan_plugin.head import OGANDiscriminator, OGANHead
from ogan_plugin.hook import attach
from ogan_plugin.layers import find_scalar_head, out_features, set_submodule
from ogan_plugin.registry import get_registry
from ogan_plugin.scores import ScoreChoice, check_score_choice

__all__ = ["from_state_dict", "wrap"]


def wrap(
    discriminator: nn.Module,
    z_dim: int,
    *,
    head: Optional[str] = None,
    generator: Optional[nn.Module] = None,
    score: Optional[ScoreChoice] = None,
) -> OGANDiscriminator:
    """Turn ``discriminator`` into an O-GAN encoder with ``z_dim`` outputs.

    Args:
        discriminator: any ``nn.Module`` whose score comes from a 1-output
            ``nn.Linear`` / ``nn.ConvNd`` (a 1x1 or a patch map, also under spectral norm)
            or a custom linear module with a ``(1, in)`` weight; other heads need an
            adapter plugin.  Its forward may return a tuple or dict: every output is kept.
        z_dim: the generator's noise size (>= 2).
        head: dotted path of the head layer, to skip automatic detection.
        generator: when given, turn on hook mode (:func:`ogan_plugin.attach` with its
            default weight, ``"auto"``: a ramp to ``0.5 * sqrt(z_dim)``): an unchanged alternating
            loop then gets the correlation term in both updates (see :mod:`ogan_plugin.hook`).
        score: which score the O-GAN losses train on (:mod:`ogan_plugin.scores`):
            ``"auto"`` (D's whole output, averaged per sample, so a projection
            discriminator's class term counts; the head's mean when D ends in a Sigmoid;
            for tuple/dict outputs the first element computed from the head), ``"head"``
            (the head's mean only), ``"output"`` (D's tensor output as it is), or the
            index / key of the element of a tuple / dict output.  None: ``"auto"``, or
            the rule an already wrapped discriminator has.

    Returns:
        :class:`OGANDiscriminator`.  The discriminator is modified in place (its head is
        replaced); its other parameters keep their identity and values, and its scores
        are unchanged at wrap time (the widened head's mean equals the old output).

    Wrapping an :class:`OGANDiscriminator` again with the same ``z_dim`` (and no ``head``,
    or its own head's path) returns it unchanged (its ``score`` rule set to ``score`` when
    given); with another ``z_dim`` or another ``head`` it raises ``ValueError``.

    Raises:
        TypeError: ``z_dim`` is not an int, ``score`` is not a str/int, or
            ``discriminator`` is not an ``nn.Module`` (or is already under DDP).
        ValueError: ``z_dim`` < 2, no adapter recognises the head, or ``discriminator``
            is already wrapped with another ``z_dim`` or at another ``head``.
    """
    if score is not None:
        check_score_choice(score)
    if isinstance(z_dim, bool) or not isinstance(z_dim, int):
        raise TypeError(f"z_dim must be an int, got {type(z_dim).__name__}")
    if z_dim < 2:
        raise ValueError(f"z_dim must be >= 2 (the code lives in z_dim - 1 dimensions), got {z_dim}")
    if isinstance(discriminator, OGANDiscriminator):
        if z_dim != discriminator.z_dim:
            raise ValueError(
                f"discriminator is already wrapped with z_dim={discriminator.z_dim}; "
                f"call .unwrap() first to wrap it with z_dim={z_dim}"
            )
        if head is not None and head != discriminator.head_path:
            raise ValueError(
                f"head={head!r}: the discriminator is already wrapped with its head at "
                f"{discriminator.head_path!r}, and head= cannot be changed on a wrapped discriminator; "
                "call .unwrap() first to wrap it at another head"
            )
        if score is not None:
            discriminator.score_from = score
        return _attach_hook(discriminator, generator)
    if not isinstance(discriminator, nn.Module):
        raise TypeError(f"discriminator must be an nn.Module, got {type(discriminator).__name__}")
    if isinstance(discriminator, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise TypeError(
            "wrap the discriminator before DataParallel/DistributedDataParallel (and before "
            "accelerator.prepare), not after"
        )
    if any(isinstance(m, OGANHead) for m in discriminator.modules()):
        raise ValueError("discriminator already contains an OGANHead (it was wrapped before)")

    reg = get_registry()
    adaptation = reg.pm.hook.ogan_adapt_discriminator(discriminator=discriminator, z_dim=z_dim, head=head)
    if adaptation is None:
        try:
            path, found = find_scalar_head(discriminator, head)
            what = f"its head candidate {path!r} is a {type(found).__name__}"
            if out_features(found) not in (None, 1):
                what += f" with {out_features(found)} outputs (an O-GAN head must have 1 output)"
        except LookupError as exc:
            what = str(exc)
        adapters = [n for n, p in reg.pm.list_name_plugin() if hasattr(p, "ogan_adapt_discriminator")]
        raise ValueError(
            f"no adapter recognised this discriminator's head: {what}. Adapters tried: {adapters}. "
            "Built-ins handle a 1-output nn.Linear or nn.ConvNd (1x1 or patch map; with or without spectral "
            "norm) and custom linear modules with a (1, in) weight. Register your own with the "
            "ogan_adapt_discriminator hook (docs/wrapping.md)."
        )
    old = discriminator.get_submodule(adaptation.path)
    device = next(old.parameters(), torch.empty(0)).device
    set_submodule(discriminator, adaptation.path, adaptation.head.to(device))
    return _attach_hook(OGANDiscriminator(discriminator, adaptation.path, z_dim, "auto" if score is None else score), generator)


def _attach_hook(wrapped: OGANDiscriminator, generator: Optional[nn.Module]) -> OGANDiscriminator:
    if generator is not None:
        attach(wrapped, generator)
    return wrapped


def from_state_dict(
    discriminator: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    generator: Optional[nn.Module] = None,
    score: Optional[ScoreChoice] = None,
) -> OGANDiscriminator:
    """Rebuild a wrapped discriminator from a plain one and a wrapped one's ``state_dict()``.

    Also reachable as ``OGANDiscriminator.from_state_dict(...)``.  ``discriminator`` is a
    freshly built discriminator of the same architecture (not wrapped); the head's path and
    ``z_dim`` are read from the state dict, the discriminator is wrapped (``generator`` and
    ``score`` as in :func:`wrap`) and the state loaded.

    Raises:
        TypeError: ``state_dict`` is not a mapping.
        ValueError: ``state_dict`` is not a wrapped discriminator's (no or several
            ``discriminator.<head>.output_scale`` entries, or no head weight).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    scales = [k for k in state_dict if k.startswith("discriminator.") and k.endswith(".output_scale")]
    if len(scales) != 1:
        raise ValueError(
            "state_dict is not a wrapped discriminator's state_dict(): expected one "
            f"'discriminator.<head>.output_scale' entry, found {len(scales)}"
            + (" (for a plain discriminator's checkpoint load it before wrap())" if not scales else "")
        )
    head_path = scales[0][len("discriminator.") : -len(".output_scale")]
    prefix = scales[0][: -len("output_scale")] + "layer."
    for name in ("weight", "weight_orig", "parametrizations.weight.original"):
        if prefix + name in state_dict:
            z_dim = int(state_dict[prefix + name].shape[0])
            break
    else:
        raise ValueError(f"state_dict has no weight for the head {head_path!r} (looked under {prefix!r})")
    wrapped = wrap(discriminator, z_dim, head=head_path, generator=generator, score=score)
    wrapped.load_state_dict(state_dict)
    return wrapped


# the class method form; head.py declares it (it cannot import this module, which imports it)
OGANDiscriminator.from_state_dict = staticmethod(from_state_dict)
