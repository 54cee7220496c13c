"""Exponential moving average (EMA) of a module's weights.

The official O-GAN code reports its best samples and reconstructions from an EMA of the
generator's weights.  :class:`EMA` keeps an averaged copy::

    ema = EMA(G, decay=0.999)
    for batch in data:
        ...  # optimizer step on G
        ema.update()
    samples = ema.module(z)          # the averaged generator (eval mode, no grad)

Parameters are averaged, ``p_ema <- decay * p_ema + (1 - decay) * p``; buffers
(BatchNorm running statistics, counters) are copied from the live module, as most GAN
code bases do.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
import torch.nn as nn

__all__ = ["EMA"]


class EMA:
    """An exponential moving average of ``module``'s parameters.

    Args:
        module: the module to track (usually the generator).  It is deep-copied once;
            the copy, :attr:`module`, is in eval mode and does not require gradients.
        decay: weight of the old average in ``[0, 1)`` (0 copies the weights).

    Attributes:
        module: the averaged copy (use it for sampling and evaluation).
        source: the tracked module.
        decay: the decay.
        num_updates: how many times :meth:`update` ran.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be a number in [0, 1), got {decay!r}")
        self.source = module
        self.decay = float(decay)
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, module: Optional[nn.Module] = None) -> None:
        """Move the average towards ``module``'s current weights (default: :attr:`source`).

        The pairs of tensors are found once per source module (and again if its tensors
        change), and updated with one fused ``_foreach`` call per kind: a few kernel launches
        per update, however many parameters (it runs inside a captured training step too).
        """
        src = self.source if module is None else module
        pairs = self._pairs(src)
        (ema_p, live_p), (ema_b, live_b), mixed = pairs
        if ema_p:
            torch._foreach_lerp_(ema_p, live_p, 1.0 - self.decay)
        if ema_b:
            torch._foreach_copy_(ema_b, live_b)
        for p_ema, p in mixed:  # a parameter in another dtype than its average
            p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - self.decay)
        self.num_updates += 1

    def _pairs(self, src: nn.Module) -> tuple:
        """((averages, live params), (average buffers, live buffers), [(average, live) of other dtypes]),
        remembered for ``src`` while its parameters and buffers are the same tensors."""
        live = list(src.parameters()) + list(src.buffers())
        cached = self.__dict__.get("_cached_pairs")
        if cached is not None and cached[0] is src and len(cached[1]) == len(live) and all(
            a is b for a, b in zip(cached[1], live)
        ):
            return cached[2]
        named = dict(src.named_parameters())
        ema_p, live_p, mixed = [], [], []
        for name, p_ema in self.module.named_parameters():
            p = named.get(name)
            if p is None:
                raise ValueError(f"module has no parameter {name!r}: it is not the module this EMA tracks")
            if p.dtype == p_ema.dtype and p.device == p_ema.device:
                ema_p.append(p_ema)
                live_p.append(p.detach())
            else:
                mixed.append((p_ema, p))
        named_b = dict(src.named_buffers())
        ema_b, live_b = [], []
        for name, b_ema in self.module.named_buffers():
            b = named_b.get(name)
            if b is not None:
                ema_b.append(b_ema)
                live_b.append(b)
        pairs = ((ema_p, live_p), (ema_b, live_b), mixed)
        self.__dict__["_cached_pairs"] = (src, live, pairs)
        return pairs

    def state_dict(self) -> dict[str, Any]:
        """``{"decay", "num_updates", "module"}`` (the averaged copy's state dict)."""
        return {"decay": self.decay, "num_updates": self.num_updates, "module": self.module.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        missing = {"decay", "num_updates", "module"} - set(state_dict)
        if missing:
            raise KeyError(f"EMA state dict lacks {sorted(missing)}")
        self.decay = float(state_dict["decay"])
        self.num_updates = int(state_dict["num_updates"])
        self.module.load_state_dict(state_dict["module"])

    def __repr__(self) -> str:
        return f"EMA(decay={self.decay}, num_updates={self.num_updates}, module={type(self.module).__name__})"
