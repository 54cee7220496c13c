"""Hook mode: the O-GAN correlation term inside an unchanged alternating training loop.

A script written like the official PyTorch DCGAN example (``netD(real)``,
``netD(fake.detach())`` in the discriminator's step, ``netD(fake)`` in the generator's
step, its own losses, ``backward()`` calls and two optimizers) gains the encoder with one
line after the models are built::

    netD = ogan_plugin.wrap(netD, z_dim=nz, generator=netG)

or, to choose the weight and turn it on and off::

    hook = ogan_plugin.attach(netD, netG)   # netD already wrapped; corr_weight="auto"
    # a fixed weight: attach(netD, netG, corr_weight=0.5); another one in the generator's
    # loss: attach(netD, netG, 5.0, corr_weight_g=1.5); a ramp: corr_weight=ogan_plugin.Ramp(5.0, 200)
    ...
    print(hook.last_rho)          # mean rho of the last recognised call (for logging)
    ogan_plugin.detach(netD)      # or: with ogan_plugin.attach(netD, netG): ...

How it works:

* a forward hook on the generator records its noise ``z`` (its first positional argument,
  or a keyword ``z``/``noise``; shape ``(B, z_dim)`` or ``(B, z_dim, 1, ..., 1)``) and its
  output ``fake``;
* a forward pre-hook on the discriminator recognises a call on that output or on a
  ``.detach()`` of it: same storage pointer, shape, strides, device and version counter
  (``fake.detach()`` shares all of them);
* for such a call, a forward hook on the widened head computes rho(z, raw) and the
  gradient of ``-corr_weight * mean(rho)`` w.r.t. the head's raw outputs, and passes the
  score through a custom autograd function that adds that gradient to ``raw`` in the
  backward.  The user's own ``loss.backward()`` then carries the correlation term to the
  discriminator's parameters (both steps) and, through ``fake``, to the generator (when
  the call was on the non-detached fake), and the user's ``optimizer.step()`` applies it.

The effect is exactly that of adding ``-corr_weight * mean(rho(z, E(fake)))`` to every
loss whose backward passes through a recognised call: the discriminator's loss (call on
``fake.detach()``) and the generator's loss (call on ``fake``), as METHOD.md section 2
asks.  With ``corr_weight_g`` the generator's step gets its own weight: a call on an
input that requires grad (``netD(fake)``) uses ``corr_weight_g``, a call on
``fake.detach()`` uses ``corr_weight``.

The default weight, ``"auto"``, is :class:`~ogan_plugin.corr_weights.Ramp`
``(0.5 * sqrt(z_dim), 200)``: zero for the generator's first training call, growing linearly
to ``0.5 * sqrt(z_dim)`` (5 at ``nz = 100``) over its first 200 calls made with gradients, then held
(:mod:`ogan_plugin.corr_weights`; docs/training.md has the search that chose it).  The count
starts when the hook is attached (a resumed run ramps again).  A number gives that fixed
weight at every step.  The term does not follow the scale of your loss:
if you multiply the loss (gradient accumulation) adjust ``corr_weight``; with a
``GradScaler`` pass ``scaler=`` so the term is scaled like the loss.

Not recognised (the term is silently absent for that call; a one-time warning is issued
when a generator output made with gradients is never seen by the discriminator):
fakes that are copied, augmented, concatenated with real images, moved to another
device or dtype, converted to another memory format, modified in place, or sliced before
the discriminator sees them, and generators whose output is not a single tensor.  In
those cases compute the term explicitly, once per loss::

    out = netD.decompose(x_fake_as_d_sees_it)
    loss = your_loss(out.output) + ogan_plugin.correlation_loss(z, out.raw, 0.5)

(``z`` the noise of those fakes, shape ``(B, z_dim)``; the fakes' rows must stay aligned
with ``z``'s rows).
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin.correlation import pearson_correlation
from ogan_plugin.corr_weights import HookWeight, Ramp, resolve_hook_weights, weight_at
from ogan_plugin.head import OGANDiscriminator, OGANHead, as_wrapped
from ogan_plugin.kernels.pearson import EPS
from ogan_plugin.layout import register_layout_source, remember_layout

__all__ = ["OGANHook", "attach", "detach"]


@dataclass
class _Record:
    """The generator's last output: its noise and the identity of the fake tensor."""

    z: Tensor
    fake: Tensor  # detached alias: keeps the storage alive so its pointer is not reused
    ptr: int
    shape: torch.Size
    stride: tuple[int, ...]
    version: int
    with_grad: bool
    step: int = 0  # the generator's training calls before this one (a Ramp's weight reads it)
    matches: int = 0

    def same(self, x: Any) -> bool:
        return (
            isinstance(x, Tensor)
            and x.data_ptr() == self.ptr
            and x.shape == self.shape
            and x.stride() == self.stride
            and x.device == self.fake.device
            and x.dtype == self.fake.dtype
            and x._version == self.version
        )


class _AddCorrelationGrad(torch.autograd.Function):
    """Identity on the score; in the backward adds a precomputed gradient to ``raw``."""

    @staticmethod
    def forward(ctx: Any, score: Tensor, raw: Tensor, grad_raw: Tensor, scale: Optional[Callable[[], Any]]) -> Tensor:
        ctx.grad_raw = grad_raw
        ctx.scale = scale
        return score.clone()

    @staticmethod
    def backward(ctx: Any, grad_score: Tensor) -> tuple[Optional[Tensor], ...]:
        grad_raw = ctx.grad_raw
        if ctx.scale is not None:
            grad_raw = grad_raw * ctx.scale()
        return grad_score, grad_raw, None, None


class _Relay:
    """A hook callable bound to one module object.

    Deep copies of the module (an EMA generator, ``copy.deepcopy(netD)``) share this
    relay but are not its owner, so their calls are ignored instead of disturbing the
    record of the original networks.

    DataParallel over several GPUs runs replicas of the module (copies that share its
    hooks); their calls are ignored too (each sees a slice of the batch on another
    device), and ``on_replica`` is called so that the hook can warn that it adds nothing.
    """

    def __init__(self, owner: nn.Module, fn: Callable[..., Any], on_replica: Callable[[], None]) -> None:
        self.owner = weakref.ref(owner)
        self.fn = fn
        self.on_replica = on_replica

    def __call__(self, module: nn.Module, *args: Any) -> Any:
        if module is not self.owner():
            if getattr(module, "_is_replica", False):
                self.on_replica()
            return None
        return self.fn(module, *args)

    def __deepcopy__(self, memo: dict) -> "_Relay":
        return self


_CONTAINERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)


def _hooked(discriminator: Any) -> OGANDiscriminator:
    """The wrapped discriminator that hook mode hooks: ``discriminator`` itself, or the one
    inside ``DistributedDataParallel`` / ``DataParallel``.

    Hooks go on the wrapped module itself, not on :func:`~ogan_plugin.head.as_wrapped`'s
    view through DDP: the container calls that module's forward, so its hooks fire for
    calls through the container too, and ``wrap(D, z, generator=G)`` before ``DDP(...)``
    and ``attach(DDP(...))`` find the same hook.  ``as_wrapped`` checks what is inside
    (the one check of "is it wrapped", its message naming ``discriminator``).
    """
    inner = discriminator.module if isinstance(discriminator, _CONTAINERS) else discriminator
    try:
        return as_wrapped(inner, "discriminator")
    except TypeError as exc:
        raise TypeError(
            f"{exc}. Hook mode needs it wrapped first: netD = ogan_plugin.wrap(netD, z_dim=nz, generator=netG)"
        ) from None


def _check_args(
    generator: Any, corr_weight: Any, corr_weight_g: Any, scaler: Any, z_dim: int
) -> tuple[HookWeight, HookWeight]:
    """Check the arguments; return the two weights as :func:`resolve_hook_weights` resolves them."""
    if not isinstance(generator, nn.Module):
        raise TypeError(f"generator must be an nn.Module, got {type(generator).__name__}")
    weights = resolve_hook_weights(corr_weight, corr_weight_g, z_dim)
    if scaler is not None and not (hasattr(scaler, "get_scale") and hasattr(scaler, "is_enabled")):
        raise TypeError(f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
    return weights


class OGANHook:
    """Adds the O-GAN correlation term to an unchanged alternating loop (see module doc).

    Create it with :func:`attach` (or ``wrap(..., generator=G)``).  It is a context
    manager: leaving the ``with`` block detaches it.

    Attributes:
        discriminator: the wrapped discriminator it watches.
        generator: the generator whose outputs it records.
        corr_weight: lambda of ``-lambda * mean(rho)`` for calls on ``fake.detach()``: a
            float, or a :class:`~ogan_plugin.corr_weights.Ramp` (``"auto"`` resolved).
        corr_weight_g: lambda for calls on ``fake`` itself (the generator's step); equals
            ``corr_weight`` unless another value was given.
        generator_steps: the generator's calls made with gradients since attaching (the
            clock of a ``Ramp``).
        calls: number of discriminator calls that received the term.
        z_shape: the per-sample shape of the last ``z`` the generator took (``(z_dim,)`` or
            ``(z_dim, 1, ..., 1)``), None before its first call.
            :func:`~ogan_plugin.reconstruct`, :func:`~ogan_plugin.invert` and the
            :mod:`~ogan_plugin.evaluate` helpers feed codes to the generator in this layout
            when they are not given ``z_shape=`` (:mod:`ogan_plugin.layout`; it stays known
            after :meth:`detach`).
    """

    def __init__(
        self,
        discriminator: OGANDiscriminator,
        generator: nn.Module,
        corr_weight: Union[float, str, Ramp] = "auto",
        *,
        corr_weight_g: Union[None, float, str, Ramp] = None,
        scaler: Any = None,
        eps: float = EPS,
        backend: Optional[str] = None,
    ) -> None:
        self.corr_weight, self.corr_weight_g = _check_args(
            generator, corr_weight, corr_weight_g, scaler, discriminator.z_dim
        )
        self.discriminator = discriminator
        self.generator = generator
        self.scaler = scaler
        self.eps = eps
        self.backend = backend
        self.calls = 0
        self.generator_steps = 0
        self.z_shape: Optional[tuple[int, ...]] = None
        register_layout_source(self, generator, discriminator)  # reconstruct/invert/evaluate read z_shape
        self._last_rho: Optional[Tensor] = None
        self._record: Optional[_Record] = None
        # per discriminator call in progress: (recognised record, weight of its term) or None
        self._stack: list[Optional[tuple[_Record, float]]] = []
        self._unmatched_grad_calls = 0
        self._warned = False
        self._warned_replica = False
        inner, head, seen = discriminator.discriminator, discriminator.head, self._on_replica
        self._handles = [
            generator.register_forward_hook(_Relay(generator, self._on_generator, seen), with_kwargs=True),
            inner.register_forward_pre_hook(_Relay(inner, self._on_d_enter, seen)),
            inner.register_forward_hook(_Relay(inner, self._on_d_exit, seen), always_call=True),
            head.register_forward_hook(_Relay(head, self._on_head, seen)),
        ]

    # -- public ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """True while the hook is attached."""
        return bool(self._handles)

    @property
    def last_rho(self) -> Optional[Tensor]:
        """Mean rho(z, E(fake)) of the last recognised call, or None.

        A detached scalar in float32 (float64 for float64 networks); ``float(hook.last_rho)``
        to log it.
        """
        return self._last_rho

    @staticmethod
    def of(discriminator: nn.Module) -> Optional["OGANHook"]:
        """The hook attached to ``discriminator`` (wrapped, or DDP around it), or None."""
        wrapped = _hooked(discriminator)
        hook = getattr(wrapped, "_ogan_hook", None)
        return hook if hook is not None and hook.discriminator is wrapped else None

    def detach(self) -> None:
        """Remove the hooks; the networks behave as if it had never been attached."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._record = None
        self._stack.clear()
        if self.z_shape is not None:  # the generator's layout stays known (ogan_plugin.layout)
            remember_layout(self.z_shape, self.generator, self.discriminator)
        if getattr(self.discriminator, "_ogan_hook", None) is self:
            del self.discriminator._ogan_hook

    def __enter__(self) -> "OGANHook":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def __deepcopy__(self, memo: dict) -> "OGANHook":
        return self

    def __repr__(self) -> str:
        state = "attached" if self.active else "detached"
        g = f", corr_weight_g={self.corr_weight_g}" if self.corr_weight_g != self.corr_weight else ""
        return f"OGANHook(corr_weight={self.corr_weight}{g}, calls={self.calls}, {state})"

    # -- hooks ----------------------------------------------------------------------------
    def _on_replica(self) -> None:
        if not self._warned_replica:
            self._warned_replica = True
            warnings.warn(
                "ogan_plugin hook mode: a DataParallel replica of a hooked network ran (DataParallel over "
                "several GPUs); hook mode watches the original modules only, so no correlation term is "
                "added. Use DistributedDataParallel (one process per GPU), or single_loss / SingleLossStep",
                RuntimeWarning,
                stacklevel=3,
            )

    def _on_generator(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        prev = self._record
        if prev is not None and prev.with_grad and prev.matches == 0 and self._unmatched_grad_calls and not self._warned:
            self._warned = True
            warnings.warn(
                "ogan_plugin hook mode: the discriminator ran since the generator's last output but "
                "never on that output or its .detach(), so no correlation term was added. Fakes that "
                "are copied, augmented, moved or modified in place are not recognised: add "
                "ogan_plugin.correlation_loss(z, netD.decompose(x_fake).raw) to your losses instead.",
                RuntimeWarning,
                stacklevel=2,
            )
        self._record = None
        self._unmatched_grad_calls = 0
        if not isinstance(output, Tensor) or output.dim() == 0:
            return
        z = args[0] if args else kwargs.get("z", kwargs.get("noise"))
        if not isinstance(z, Tensor):
            raise TypeError(
                "ogan_plugin hook mode reads z from the generator's first positional argument "
                f"(or keyword z/noise), got {type(z).__name__}"
            )
        z_dim = self.discriminator.z_dim
        if z.dim() < 2 or z.shape[1] != z_dim or any(s != 1 for s in z.shape[2:]) or z.shape[0] != output.shape[0]:
            raise ValueError(
                f"z (the generator's input) has shape {tuple(z.shape)} for a batch of "
                f"{output.shape[0]} fakes; hook mode needs (batch, z_dim={z_dim}) "
                f"or (batch, {z_dim}, 1, ..., 1), the z_dim given to wrap()"
            )
        self.z_shape = tuple(z.shape[1:])
        fake = output.detach()
        self._record = _Record(
            z=z.detach().flatten(1),
            fake=fake,
            ptr=fake.data_ptr(),
            shape=fake.shape,
            stride=fake.stride(),
            version=fake._version,
            with_grad=torch.is_grad_enabled() and output.requires_grad,
            step=self.generator_steps,
        )
        if self._record.with_grad:
            self.generator_steps += 1

    def _on_d_enter(self, module: nn.Module, args: tuple) -> None:
        rec = self._record
        if rec is not None and args and rec.same(args[0]):
            # netD(fake) feeds the generator's loss, netD(fake.detach()) the discriminator's
            self._stack.append((rec, self.corr_weight_g if args[0].requires_grad else self.corr_weight))
            return
        if torch.is_grad_enabled():
            self._unmatched_grad_calls += 1
        self._stack.append(None)

    def _on_d_exit(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._stack:
            self._stack.pop()

    def _on_head(self, module: OGANHead, args: tuple, output: Tensor) -> Optional[Tensor]:
        if not self._stack or self._stack[-1] is None:
            return None
        rec, weight = self._stack[-1]
        self._stack[-1] = None  # one term per discriminator call
        raw = module.last_raw
        if raw is None or not torch.is_grad_enabled() or not raw.requires_grad:
            return None
        weight = weight_at(weight, rec.step)  # a Ramp (the "auto" default): its weight at this step
        with torch.autocast(raw.device.type, enabled=False), torch.enable_grad():
            e = raw.detach().requires_grad_(True)
            rho = pearson_correlation(rec.z, e, eps=self.eps, backend=self.backend)
            mean_rho = rho.mean()
            (grad_raw,) = torch.autograd.grad(-weight * mean_rho, e)
        rec.matches += 1
        self.calls += 1
        self._last_rho = mean_rho.detach()
        scale = None
        if self.scaler is not None and self.scaler.is_enabled():
            scale = self.scaler.get_scale
        return _AddCorrelationGrad.apply(output, raw, grad_raw, scale)


def attach(
    discriminator: nn.Module,
    generator: nn.Module,
    corr_weight: Union[float, str, Ramp] = "auto",
    *,
    corr_weight_g: Union[None, float, str, Ramp] = None,
    scaler: Any = None,
    eps: float = EPS,
    backend: Optional[str] = None,
) -> OGANHook:
    """Turn on hook mode: add the O-GAN term to the user's own alternating updates.

    Args:
        discriminator: a wrapped discriminator (:func:`ogan_plugin.wrap`), or a
            ``DistributedDataParallel`` / ``DataParallel`` around one (DataParallel on one
            device, or none: over several GPUs it runs replicas that hooks cannot watch).
        generator: the generator; its first positional argument is taken as z.
        corr_weight: lambda in ``-lambda * mean(rho)``: ``"auto"`` (the default: a ramp to
            ``0.5 * sqrt(z_dim)`` over the generator's first 200 training calls, see the
            module doc), a fixed number (0.5 is the official code's, with its QP loss), or an
            :class:`ogan_plugin.Ramp`.
        corr_weight_g: lambda for the generator's step, i.e. calls on the fake itself
            rather than its ``.detach()`` (None: ``corr_weight``'s), as in
            :func:`ogan_plugin.single_loss`; the same kinds of value.
        scaler: a ``torch.amp.GradScaler`` when the losses are scaled by one (the term is
            then scaled the same way).
        eps: norm floor of the correlation.
        backend: force a correlation backend by name.

    Returns:
        The :class:`OGANHook` (a context manager; ``hook.last_rho`` for logging).  Attaching
        again with the same generator, weights and scaler returns the attached hook.

    Raises:
        TypeError: ``discriminator`` is not wrapped, ``generator`` is not an ``nn.Module``
            or ``scaler`` is not a GradScaler.
        ValueError: a hook with another generator, weight or scaler is attached (call
            :func:`detach` first), a bad weight, or DataParallel over several GPUs.
    """
    if isinstance(discriminator, nn.DataParallel) and len(discriminator.device_ids) > 1:
        raise ValueError(
            f"discriminator: DataParallel over {len(discriminator.device_ids)} GPUs runs replicas of the "
            "networks, which hook mode does not see (no correlation term would be added); use "
            "DistributedDataParallel (one process per GPU), or DataParallel on one device"
        )
    wrapped = _hooked(discriminator)
    weights = _check_args(generator, corr_weight, corr_weight_g, scaler, wrapped.z_dim)
    existing = OGANHook.of(wrapped)
    if existing is not None:
        if (existing.generator is generator and (existing.corr_weight, existing.corr_weight_g) == weights
                and existing.scaler is scaler):
            return existing
        raise ValueError(
            "a hook is already attached to this discriminator (with another generator, weight or "
            "scaler); call ogan_plugin.detach(discriminator) first"
        )
    hook = OGANHook(wrapped, generator, corr_weight, corr_weight_g=corr_weight_g, scaler=scaler, eps=eps, backend=backend)
    wrapped._ogan_hook = hook
    return hook


def detach(discriminator: nn.Module) -> Optional[OGANHook]:
    """Turn hook mode off for ``discriminator``; returns the removed hook (None if none)."""
    hook = OGANHook.of(discriminator)
    if hook is not None:
        hook.detach()
    return hook
