"""Public correlation API: check inputs once, then dispatch to the active backend."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ogan_plugin.kernels.pearson import EPS
from ogan_plugin.registry import dispatch

__all__ = ["EPS", "check_pair", "check_result", "pearson_correlation", "correlation_loss", "CorrelationLoss"]


def _check_finite(names: tuple[str, str], tensors: tuple[Tensor, Tensor], check_finite: Optional[bool]) -> None:
    """Raise ``ValueError`` naming the first input with NaN/inf, under the rule of :func:`check_pair`.

    One host read for both inputs (on a GPU: one synchronisation), only on the CPU by default.
    """
    if check_finite is False or torch.compiler.is_compiling():
        return
    device = tensors[0].device
    if device.type != "cpu":
        if check_finite is None:  # the default: no host synchronisation on accelerators
            return
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return  # a CUDA graph is being captured: reading a value back is not allowed
    if bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        return
    for name, t in zip(names, tensors):  # the error path only: find which one
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf values")


def check_result(
    out: Tensor, names: tuple[str, str], tensors: tuple[Tensor, Tensor], check_finite: Optional[bool]
) -> None:
    """The finite check of :func:`check_pair`, made on a result computed from ``tensors``.

    A NaN or inf in either input makes every reduction that reads it non-finite (the row's
    rho, and so the loss), so a finite result proves finite inputs: one read of the small
    result replaces two passes over the inputs.  Only a non-finite result reads the inputs,
    to name the bad one.  Same rule as :func:`check_pair` (``None``: CPU only; ``True``:
    every device, one synchronisation on a GPU, skipped during CUDA-graph capture and under
    ``torch.compile``; ``False``: never).
    """
    if check_finite is False or torch.compiler.is_compiling():
        return
    device = out.device
    if device.type != "cpu":
        if check_finite is None or (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
            return
    finite = math.isfinite(out.item()) if out.dim() == 0 else bool(torch.isfinite(out).all())
    if not finite:
        _check_finite(names, tensors, True)


def check_pair(
    z: Tensor, e: Tensor, *, z_name: str = "z", e_name: str = "e", check_finite: Optional[bool] = None
) -> None:
    """Validate a (noise, encoding) pair for the correlation; raise naming the bad argument.

    Rules: both floating-point tensors of shape (B, n) with the same shape, B >= 1 (a
    batch of one is fine: the correlation is per row), n >= 2, on the same device, and
    free of NaN/inf when checked.  Different floating dtypes are allowed (e.g. float32
    noise with bfloat16 codes under autocast): the reductions run in float32.

    Args:
        z: noise, shape (B, n).
        e: encodings, shape (B, n).
        z_name: the name ``z`` has in error messages.
        e_name: the name ``e`` has in error messages.
        check_finite: NaN/inf check.  ``None`` (the default) checks CPU tensors only:
            on a GPU the check needs a host synchronisation per call (and cannot run
            while a CUDA graph is being captured), so it is skipped there and NaN/inf
            inputs give a NaN result instead of an error.  ``True`` checks on every
            device (one synchronisation on a GPU; still skipped during CUDA-graph capture
            and under ``torch.compile``); ``False`` never checks.

    Raises:
        TypeError: an input is not a floating-point tensor.
        ValueError: bad shapes, devices, or NaN/inf values (naming the input).
    """
    for name, t in ((z_name, z), (e_name, e)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape (batch, z_dim), got shape {tuple(t.shape)}")
    if z.shape != e.shape:
        raise ValueError(
            f"{z_name} and {e_name} must have the same shape, got {tuple(z.shape)} and {tuple(e.shape)}"
            + (" (is z_dim of wrap() the generator's noise size?)" if z.shape[0] == e.shape[0] else "")
        )
    if z.shape[0] < 1:
        raise ValueError(f"{z_name} and {e_name} are an empty batch (batch size 0)")
    if z.shape[1] < 2:
        raise ValueError(f"the correlation needs z_dim >= 2 columns, {z_name} has {z.shape[1]}")
    if z.device != e.device:
        raise ValueError(f"{z_name} is on {z.device} but {e_name} is on {e.device}")
    _check_finite((z_name, e_name), (z, e), check_finite)


def pearson_correlation(
    z: Tensor, e: Tensor, *, eps: float = EPS, backend: Optional[str] = None, check_finite: Optional[bool] = None
) -> Tensor:
    """Per-row Pearson correlation between noise ``z`` and encodings ``e`` = E(G(z)).

    Args:
        z: noise, shape (B, n).
        e: raw encoder outputs (or codes: the result is the same), shape (B, n).
        eps: norm floor for constant rows (see :mod:`ogan_plugin.kernels.pearson`).
        backend: force a backend by name (default: the registry's choice).
        check_finite: raise ``ValueError`` on NaN/inf inputs.  Default ``None``: on CPU
            tensors only (on a GPU the check would cost a host synchronisation per call);
            ``True``: on every device; ``False``: never (see :func:`check_pair`).

    Returns:
        float32 tensor (B,) of correlations in [-1, 1], differentiable w.r.t. both inputs
        (float64 when an input is float64).

    Raises:
        TypeError: an input is not a floating-point tensor (see :func:`check_pair`).
        ValueError: bad shapes, devices or values, naming the argument (see :func:`check_pair`).
        ogan_plugin.registry.BackendUnavailableError: ``backend`` cannot run here.
    """
    check_pair(z, e, check_finite=False)
    rho = dispatch("pearson", e.device.type, backend)(z, e, eps)
    check_result(rho, ("z", "e"), (z, e), check_finite)
    return rho


def correlation_loss(
    z: Tensor,
    e: Tensor,
    weight: float = 0.5,
    *,
    eps: float = EPS,
    backend: Optional[str] = None,
    check_finite: Optional[bool] = None,
) -> Tensor:
    """O-GAN correlation term ``-weight * mean(rho(z, e))`` (a float32 scalar).

    Add it to both the discriminator's and the generator's loss (METHOD.md section 2).

    Args:
        z: noise, shape (B, n).
        e: raw encoder outputs E(G(z)) (or codes), shape (B, n).
        weight: lambda (0.5 in the paper).
        eps: norm floor for constant rows.
        backend: force a backend by name (default: the registry's choice).
        check_finite: NaN/inf check; default ``None`` checks CPU tensors only (no host
            synchronisation on a GPU), see :func:`check_pair`.

    Returns:
        The loss, a scalar, differentiable w.r.t. both inputs.

    Raises:
        TypeError: an input is not a floating-point tensor (see :func:`check_pair`).
        ValueError: bad shapes, devices or values, naming the argument (see :func:`check_pair`).
        ogan_plugin.registry.BackendUnavailableError: ``backend`` cannot run here.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(f"weight must be a number, got {type(weight).__name__}")
    check_pair(z, e, check_finite=False)
    loss = dispatch("correlation_loss", e.device.type, backend)(z, e, float(weight), eps)
    check_result(loss, ("z", "e"), (z, e), check_finite)
    return loss


class CorrelationLoss(torch.nn.Module):
    """Module form of :func:`correlation_loss`."""

    def __init__(self, weight: float = 0.5, *, eps: float = EPS, backend: Optional[str] = None) -> None:
        super().__init__()
        self.weight, self.eps, self.backend = weight, eps, backend

    def forward(self, z: Tensor, e: Tensor) -> Tensor:
        return correlation_loss(z, e, self.weight, eps=self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, eps={self.eps}"
