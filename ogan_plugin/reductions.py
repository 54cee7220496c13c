"""Patch reductions: how a patch head's map of codes becomes one code per sample.

A widened patch head (:mod:`ogan_plugin.adapters.patch`) yields ``(B, z_dim, *spatial)``;
its reduction turns that into the per-sample ``(B, z_dim)`` the code and the correlation
term read.  The functions and their names live here, in the core, because the head saves
its reduction's name with its state (:meth:`ogan_plugin.head.OGANHead.get_extra_state`);
:mod:`ogan_plugin.adapters.patch` re-exports them with the adapter that installs them.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

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
    "encode_reduction",
    "decode_reduction",
    "EXTRA_STATE_BYTES",
]

#: the size of the tensor :func:`encode_reduction` makes (a custom reduction's name is cut
#: to its last 100 characters, so its JSON text always fits)
EXTRA_STATE_BYTES = 512


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


def encode_reduction(reduction: Optional[Callable[[Tensor], Tensor]]) -> Tensor:
    """A head's extra state: the UTF-8 JSON ``{"patch_reduction": NAME}`` (:func:`reduction_name`),
    zero-padded to :data:`EXTRA_STATE_BYTES`, as a 1-D ``uint8`` tensor (see
    :meth:`ogan_plugin.head.OGANHead.get_extra_state`)."""
    data = json.dumps({"patch_reduction": reduction_name(reduction)}, ensure_ascii=False).encode()
    return torch.tensor(list(data.ljust(EXTRA_STATE_BYTES, b"\0")), dtype=torch.uint8)


def decode_reduction(state: Any, current: Optional[Callable[[Tensor], Tensor]]) -> Optional[Callable[[Tensor], Tensor]]:
    """The reduction :func:`encode_reduction` saved in ``state`` (:func:`reduction_named`,
    ``current`` for a custom function); ``ValueError`` for anything else."""
    return reduction_named(_decode_state(state)["patch_reduction"], current)


def _decode_state(state: Any) -> dict[str, Any]:
    """The JSON object :func:`encode_reduction` encoded (``ValueError`` otherwise)."""
    try:
        if not (isinstance(state, Tensor) and state.dtype == torch.uint8 and state.dim() == 1):
            raise ValueError
        data = json.loads(bytes(state.tolist()).rstrip(b"\0").decode("utf-8"))
        if not isinstance(data, dict) or "patch_reduction" not in data:
            raise ValueError
    except ValueError:  # also UnicodeDecodeError and json.JSONDecodeError
        what = f"a {state.dtype} tensor of shape {tuple(state.shape)}" if isinstance(state, Tensor) else type(state).__name__
        raise ValueError(
            "the O-GAN head's '_extra_state' entry must be what OGANHead.get_extra_state() returns "
            f"(a 1-D uint8 tensor holding JSON text with a 'patch_reduction'), got {what}"
        ) from None
    return data
