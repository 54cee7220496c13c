"""Custom linear heads: a module with a ``(1, in)`` weight that its own forward uses affinely.

StyleGAN2-ADA's ``FullyConnectedLayer`` (``addmm`` with ``weight_gain`` and
``bias_gain``), rosinality's ``EqualLinear`` (``scale`` and ``lr_mul``) and the like scale
their parameters at run time, so copying the weight into an ``nn.Linear`` would change
the score.  This adapter keeps the module and its forward, and grows its rows:

1. **Recognise by structure** (:func:`ogan_plugin.layers.custom_linear_rows`): the module's
   own parameters are a 2-D ``weight`` with one row and optionally a ``bias`` of shape
   ``(1,)``; its submodules hold no parameters.  The class name plays no part.
2. **Probe what it computes**, on a float64 copy (the module itself is not touched):
   the output for a batch ``(B, in)`` must be ``(B, 1)`` and affine in the input,
   ``x . w_eff + b_eff``; and ``w_eff`` must scale with the weight (doubling the weight
   doubles it).  A module that normalises its weight inside its forward (its own
   spectral norm) fails this test and is reported, not widened.
3. **Widen**: a copy of the module whose weight has ``z_dim`` rows, the old row plus
   perturbations that sum to zero (scaled by the measured gain, so that the code part
   starts at a fresh layer's scale), and whose bias repeats the old one
   (:func:`ogan_plugin.layers.new_layer_like`, which also updates an ``out_features``-like
   integer attribute).
4. **Check**: on random inputs the widened copy's outputs have shape ``(B, z_dim)`` and
   their mean equals the old output (relative 1e-9 for float64 layers, 1e-5 for float32).

Built-in ``nn.Linear`` heads (and subclasses that keep its forward) go to
:mod:`ogan_plugin.adapters.linear`; this adapter runs last (``trylast``), so a plugin
that knows a module better wins.  ``examples/ogan_plugin_example`` shows such a plugin.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin.head import Adaptation, OGANHead
from ogan_plugin.layers import centered_rows, custom_linear_rows, find_scalar_head, new_layer_like
from ogan_plugin.hookspecs import hookimpl

__all__ = ["widen_custom_linear"]

_PROBE_BATCH = 4


def _copy_in(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    m = copy.deepcopy(module)
    return m.to(dtype)


def _affine(module: nn.Module, x: Tensor, name: str) -> tuple[Tensor, Tensor, Tensor]:
    """(w_eff (in,), b_eff (), outputs (B,)) of a one-output module (detached)."""
    with torch.no_grad():
        out = module(x)
    if not isinstance(out, Tensor) or tuple(out.shape) != (x.shape[0], 1):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"the head {name} looks like a custom linear layer (a (1, {x.shape[1]}) weight) but its forward "
            f"turns a ({x.shape[0]}, {x.shape[1]}) input into {got}, not ({x.shape[0]}, 1)"
        )
    x1 = x[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (w,) = torch.autograd.grad(module(x1).sum(), x1)
    with torch.no_grad():
        b = module(torch.zeros_like(x[:1]))[0, 0]
    return w[0], b, out[:, 0]


def _tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of exact relations computed in (or stored in) ``dtype``."""
    return {torch.float64: 1e-9, torch.float32: 1e-5}.get(dtype, 1e-2)


def _close(a: Tensor, b: Tensor, tol: float) -> bool:
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-30)
    return float((a - b).abs().max()) <= tol * scale


def widen_custom_linear(layer: nn.Module, z_dim: int, name: str = "head") -> OGANHead:
    """The widened head for a custom linear module (see the module docstring).

    Args:
        layer: the one-output module (``weight`` of shape ``(1, in)``, optional ``bias``).
        z_dim: outputs of the widened copy.
        name: the head's path, for error messages.

    Returns:
        An :class:`~ogan_plugin.head.OGANHead` around a widened copy of ``layer``.

    Raises:
        ValueError: the module is not affine in its input, does not scale with its
            weight, or its forward does not accept ``z_dim`` rows (the message says which).
    """
    name = repr(name)
    weight = layer.weight
    in_features = weight.shape[1]
    dtype = torch.float64
    probe = _copy_in(layer, dtype)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(_PROBE_BATCH, in_features, generator=gen, dtype=dtype).to(weight.device)
    try:
        w_eff, b_eff, out = _affine(probe, x, name)
    except (RuntimeError, TypeError):  # a forward that insists on its own dtype
        dtype = weight.dtype
        probe = _copy_in(layer, dtype)
        x = x.to(dtype)
        w_eff, b_eff, out = _affine(probe, x, name)
    tol = _tolerance(dtype)
    if not _close(out, x @ w_eff + b_eff, tol):
        raise ValueError(
            f"the head {name} ({type(layer).__name__}) has a (1, {in_features}) weight but its output is not "
            "affine in its input (an activation inside its forward?): an O-GAN head must be linear before "
            "D's final nonlinearity; pass wrap(..., head=...) on the linear part or write an adapter"
        )
    # does the effective row scale with the weight (a gain), or is the weight normalised?
    doubled = _copy_in(layer, dtype)
    unit = _copy_in(layer, dtype)
    with torch.no_grad():
        doubled.weight.mul_(2)
        unit.weight.fill_(1)
    w2, b2, _ = _affine(doubled, x, name)
    w1, _, _ = _affine(unit, x, name)
    if not (_close(w2, 2 * w_eff, tol) and _close(b2, b_eff, tol)) or float(w1.abs().max()) == 0:
        raise ValueError(
            f"the head {name} ({type(layer).__name__}) is affine, but its output does not scale with its weight "
            "(it normalises the weight inside its forward, e.g. its own spectral norm): growing its rows would "
            "change the score. Use torch.nn.utils.parametrizations.spectral_norm on an nn.Linear (handled built "
            "in), or write an adapter plugin for this module (docs/wrapping.md)"
        )
    gain = float(w1.mean())

    wide = new_layer_like(layer, z_dim)
    with torch.no_grad():
        w = weight.detach().double()
        wide.weight.copy_(w + centered_rows(z_dim, w) / gain)
        bias = getattr(layer, "bias", None)
        if isinstance(bias, Tensor):
            wide.bias.copy_(bias.detach().expand(z_dim))

    check = _copy_in(wide, dtype)
    tol = max(tol, _tolerance(weight.dtype))  # the widened rows are stored in the layer's dtype
    try:
        with torch.no_grad():
            wide_out = check(x)
    except Exception as exc:  # its forward's own error, reported with what we tried
        raise ValueError(
            f"the head {name} ({type(layer).__name__}) cannot be widened by growing its rows: its forward fails "
            f"with a ({z_dim}, {in_features}) weight ({type(exc).__name__}: {exc}); write an adapter plugin"
        ) from exc
    if not isinstance(wide_out, Tensor) or tuple(wide_out.shape) != (x.shape[0], z_dim) or not _close(
        wide_out.mean(dim=1), out, tol
    ):
        got = tuple(wide_out.shape) if isinstance(wide_out, Tensor) else type(wide_out).__name__
        raise ValueError(
            f"the head {name} ({type(layer).__name__}) cannot be widened by growing its rows: with {z_dim} rows "
            f"its forward gives {got} whose mean over outputs is not the old output; write an adapter plugin"
        )
    return OGANHead(wide, z_dim)


def _is_custom_linear_head(layer: nn.Module) -> bool:
    return custom_linear_rows(layer) == 1


@hookimpl(trylast=True)
def ogan_adapt_discriminator(discriminator: nn.Module, z_dim: int, head: Optional[str]) -> Optional[Adaptation]:
    try:
        path, layer = find_scalar_head(discriminator, head)
    except LookupError:
        return None
    if not _is_custom_linear_head(layer):
        return None
    return Adaptation(path, widen_custom_linear(layer, z_dim, path))
