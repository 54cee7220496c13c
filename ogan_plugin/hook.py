"""Hook mode: the O-GAN correlation term inside an unchanged training loop.

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
    print(float(hook.last_rho))   # mean rho of the last call that got the term (for logging)
    ogan_plugin.detach(netD)      # or: with ogan_plugin.attach(netD, netG): ...

How it works:

* a forward hook on the generator records its noise ``z`` (its first positional argument,
  or a keyword ``z``/``noise``, or what ``z_from`` picks; ``(B, z_dim)`` or
  ``(B, z_dim, 1, ..., 1)``) and returns its output as a *tracked* tensor (an alias: the
  same storage and autograd graph) that knows, for each row, the row of ``z`` that made it
  (:mod:`ogan_plugin.provenance`).  For a generator returning a tuple or list, the first
  tensor with one row per ``z`` row is tracked; the rest is returned as it was;
* torch operations on it carry that row map along: ``.detach()``, ``.to(dtype)``,
  memory formats, augmentations in torch ops or kornia (DiffAugment's ``color``,
  ``translation`` and ``cutout``; affine warps, colour jitter), ``torch.cat`` with real
  images in either order, slices, ``chunk``, and wrappers that augment and then call D
  (lightweight-gan's ``AugWrapper``).  An op that mixes rows (mixup across the batch, a
  shuffle then a mix, a real/fake interpolation) or that the rules do not know makes
  those rows "lost": they get no term, and a warning names the op once;
* a forward pre-hook on the discriminator takes the row map off its input (D runs on a
  plain tensor: its forward pays nothing, and real-only calls cost one type check);
* the widened head's forward hook passes the score through a custom autograd function
  whose backward adds the gradient of ``-corr_weight * mean over the fake rows of
  rho(z[row], raw)`` to the head's raw outputs.  No nested autograd and no host
  synchronisation: the gradient is one ``ogan_plugin::pearson_backward`` call in your
  ``loss.backward()``, which carries it to the discriminator's parameters (both steps)
  and, through ``fake``, to the generator (when D saw the fake with its graph).

The effect is exactly that of adding ``-corr_weight * mean(rho(z_rows, E(x)[fake_rows]))``
to every loss whose backward passes through a discriminator call on fakes: the
discriminator's loss (D on ``fake.detach()``) and the generator's (D on ``fake``), as
METHOD.md section 2 asks.  With ``corr_weight_g`` the generator's step gets its own
weight: a call on rows that still carry the generator's graph uses ``corr_weight_g``, a call
on detached ones ``corr_weight``.

The default weight, ``"auto"``, is :class:`~ogan_plugin.corr_weights.Ramp`
``(0.5 * sqrt(z_dim), 200)``: zero for the generator's first training call, growing linearly
to ``0.5 * sqrt(z_dim)`` (5 at ``nz = 100``) over its first 200 calls made with gradients, then
held (:mod:`ogan_plugin.corr_weights`; docs/training.md has the search that chose it).  The
count starts when the hook is attached (a resumed run ramps again).  A number gives that
fixed weight at every step.  The term does not follow the scale of your loss: if you
multiply the loss (gradient accumulation) adjust ``corr_weight``; with a ``GradScaler``
pass ``scaler=`` (and ``scaler_g=`` when the generator's step has its own).  A backward
with ``create_graph=True`` (a gradient penalty's ``autograd.grad``) gets no term: it
computes input gradients, not a loss.

A plain tensor fakes are written into (``buffer[:n] = fake``, ``out[i] = crop``,
``buffer.copy_(fake)``) follows them from then on.  Not followed: NumPy or list round
trips, and writes through a view of a plain tensor (``buffer[:n].copy_(fake)``: only the
view is written to).  Rows whose provenance was lost get no term; to add it yourself, once
per loss::

    out = netD.decompose(x_as_d_sees_it)
    loss = your_loss(out.output) + ogan_plugin.correlation_loss(z_rows, out.raw[fake_rows], 0.5)
"""

from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin.correlation import pearson_correlation
from ogan_plugin.head import OGANDiscriminator, OGANHead, as_wrapped
from ogan_plugin.kernels.pearson import EPS
from ogan_plugin.corr_weights import HookWeight, Ramp, resolve_hook_weights, weight_at
from ogan_plugin.layout import register_layout_source, remember_layout
from ogan_plugin.provenance import Tracked, track, untrack
from ogan_plugin.hook_term import _CorrelationTerm, _correlation_grad, _noise
from ogan_plugin.rows import CHECK_EVERY, GeneratorCall, Provenance, identity, on_device

__all__ = ["OGANHook", "attach", "detach"]


class _Relay:
    """A hook callable bound to one module object.

    Deep copies of the module (an EMA generator, ``copy.deepcopy(netD)``) share this
    relay but are not its owner, so their calls are ignored instead of disturbing the
    record of the original networks.  DataParallel over several GPUs runs replicas of the
    module (copies that share its hooks); their calls are ignored too, and ``on_replica``
    is called so that the hook can warn that it adds nothing.
    """

    def __init__(self, owner: nn.Module, fn: Callable[..., Any], on_replica: Callable[[], None]) -> None:
        self.owner = weakref.ref(owner)
        self.fn = fn
        self.on_replica = on_replica

    @torch.compiler.disable  # Python bookkeeping: run eagerly (a graph break) under torch.compile
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
    inside ``DistributedDataParallel`` / ``DataParallel`` (their forward calls it, so its
    hooks fire for calls through the container too)."""
    inner = discriminator.module if isinstance(discriminator, _CONTAINERS) else discriminator
    try:
        return as_wrapped(inner, "discriminator")
    except TypeError as exc:
        raise TypeError(
            f"{exc}. Hook mode needs it wrapped first: netD = ogan_plugin.wrap(netD, z_dim=nz, generator=netG)"
        ) from None


def _check_args(
    generator: Any, corr_weight: Any, corr_weight_g: Any, scalers: tuple, z_from: Any, z_dim: int
) -> tuple[HookWeight, HookWeight]:
    """Check the arguments; return the two weights as :func:`resolve_hook_weights` resolves them."""
    if not isinstance(generator, nn.Module):
        raise TypeError(f"generator must be an nn.Module, got {type(generator).__name__}")
    weights = resolve_hook_weights(corr_weight, corr_weight_g, z_dim)
    for name, scaler in zip(("scaler", "scaler_g"), scalers):
        if scaler is not None and not (hasattr(scaler, "get_scale") and hasattr(scaler, "is_enabled")):
            raise TypeError(f"{name} must be a torch.amp.GradScaler, got {type(scaler).__name__}")
    if z_from is not None and not callable(z_from):
        raise TypeError(f"z_from must be a function (args, kwargs) -> z, got {type(z_from).__name__}")
    return weights


def _default_z(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs.get("z", kwargs.get("noise"))


class OGANHook:
    """Adds the O-GAN correlation term to an unchanged training loop (see the module doc).

    Create it with :func:`attach` (or ``wrap(..., generator=G)``).  It is a context
    manager: leaving the ``with`` block detaches it.

    Attributes:
        discriminator: the wrapped discriminator it watches.
        generator: the generator whose outputs it tracks.
        corr_weight: lambda of ``-lambda * mean(rho)`` for calls on detached fakes: a
            float, or a :class:`~ogan_plugin.corr_weights.Ramp` (``"auto"`` resolved).
        corr_weight_g: lambda for calls on fakes that carry the generator's graph (the
            generator's step); equals ``corr_weight`` unless another value was given.
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
        scaler_g: Any = None,
        eps: float = EPS,
        backend: Optional[str] = None,
        z_from: Optional[Callable[[tuple, dict], Tensor]] = None,
    ) -> None:
        self.corr_weight, self.corr_weight_g = _check_args(
            generator, corr_weight, corr_weight_g, (scaler, scaler_g), z_from, discriminator.z_dim
        )
        self.discriminator = discriminator
        self.generator = generator
        self.scaler, self.scaler_g = scaler, scaler_g
        self.eps = eps
        self.backend = backend
        self.z_from = z_from or _default_z
        self.calls = 0
        self.generator_steps = 0
        self.z_shape: Optional[tuple[int, ...]] = None
        register_layout_source(self, generator, discriminator)  # reconstruct/invert/evaluate read z_shape
        self._last: Optional[tuple] = None  # (calls, index, raw, weights, divisor) of the last term, for last_rho
        self._last_rho: Optional[Tensor] = None
        self._record: Optional[GeneratorCall] = None
        self._current: Optional[tuple[Provenance, float]] = None  # the discriminator call in progress
        self._unmatched_grad_calls = 0
        self._generator_calls = 0
        self._pending: dict[tuple, Tensor] = {}  # GPU "rows were mixed" flags by op names, read lazily
        self._pairs: OrderedDict = OrderedDict()  # row map -> (z index, weights) on a device
        self._warned: set = set()
        inner, head, seen = discriminator.discriminator, discriminator.head, self._on_replica
        self._handles = [
            generator.register_forward_hook(_Relay(generator, self._on_generator, seen), with_kwargs=True),
            inner.register_forward_pre_hook(_Relay(inner, self._on_d_enter, seen), with_kwargs=True),
            head.register_forward_hook(_Relay(head, self._on_head, seen)),
        ]

    # -- public ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """True while the hook is attached."""
        return bool(self._handles)

    @property
    def last_rho(self) -> Optional[Tensor]:
        """Mean rho(z, E(x)) over the fake rows of the last call that got the term, or None.

        A detached scalar in float32 (float64 for float64 networks), computed when first
        read (the training step itself never computes it); ``float(hook.last_rho)`` to log it.
        """
        if self._last is not None:
            calls, index, raw, weights, divisor = self._last
            with torch.no_grad(), torch.autocast(raw.device.type, enabled=False):
                z = _noise(calls) if index is None else _noise(calls).index_select(0, index)
                rho = pearson_correlation(z, raw, eps=self.eps, backend=self.backend, check_finite=False)
                self._last_rho = (rho.sum() if weights is None else (rho * weights.to(rho.dtype)).sum()) / divisor
            self._last = None
        return self._last_rho

    def check_provenance(self) -> None:
        """Read the GPU row maps' pending "rows were mixed" flags now (one host
        synchronisation) and warn for those set; hook mode does it every
        :data:`~ogan_plugin.rows.CHECK_EVERY` generator calls."""
        pending, self._pending = self._pending, {}
        for ops, flag in pending.items():
            if bool(flag):
                self._warn_lost(ops)

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
        self._current = None
        self._pairs.clear()
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

    # -- warnings -------------------------------------------------------------------------
    def _on_replica(self) -> None:
        self._warn_once(
            "replica",
            "ogan_plugin hook mode: a DataParallel replica of a hooked network ran (DataParallel over "
            "several GPUs); hook mode watches the original modules only, so no correlation term is "
            "added. Use DistributedDataParallel (one process per GPU), or single_loss / SingleLossStep",
        )

    def _warn_once(self, key: Any, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _warn_lost(self, ops: tuple) -> None:
        for op in ops:
            self._warn_once(
                ("lost", op),
                f"ogan_plugin hook mode: rows of the discriminator's input made from the generator's output "
                f"lost their provenance at '{op}' (an op that mixes rows, e.g. mixup or a real/fake "
                "interpolation, combines a fake additively with real data of its shape, reduces over the "
                "batch, or is not known to keep rows): those rows get no correlation term. To add it "
                "yourself: loss += ogan_plugin.correlation_loss(z_rows, netD.decompose(x).raw[fake_rows])",
            )

    # -- hooks ----------------------------------------------------------------------------
    def _on_generator(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        prev = self._record
        if prev is not None and prev.with_grad and not prev.seen and self._unmatched_grad_calls:
            self._warn_once(
                "unseen",
                "ogan_plugin hook mode: the discriminator ran since the generator's last output but never on "
                "a tensor made from it that hook mode could follow (a NumPy or list round trip, a write "
                "through a view), so no correlation term was added: add "
                "ogan_plugin.correlation_loss(z, netD.decompose(x_fake).raw) to your losses instead.",
            )
        self._record = None
        self._unmatched_grad_calls = 0
        self._generator_calls += 1
        if self._pending and self._generator_calls % CHECK_EVERY == 0:
            self.check_provenance()
        fake, where = _fake_of(output)
        if fake is None:
            return None
        z = self.z_from(args, kwargs)
        if not isinstance(z, Tensor):
            raise TypeError(
                "ogan_plugin hook mode reads z from the generator's first positional argument "
                f"(or keyword z/noise, or attach(..., z_from=)), got {type(z).__name__}"
            )
        z_dim = self.discriminator.z_dim
        if z.dim() < 2 or z.shape[1] != z_dim or any(s != 1 for s in z.shape[2:]) or z.shape[0] != fake.shape[0]:
            raise ValueError(
                f"z (the generator's input) has shape {tuple(z.shape)} for a batch of "
                f"{fake.shape[0]} fakes; hook mode needs (batch, z_dim={z_dim}) "
                f"or (batch, {z_dim}, 1, ..., 1), the z_dim given to wrap()"
            )
        self.z_shape = tuple(z.shape[1:])
        with_grad = torch.is_grad_enabled() and fake.requires_grad
        record = GeneratorCall(z.detach().flatten(1), self, with_grad, self.generator_steps)
        if with_grad:
            self.generator_steps += 1
        self._record = record
        tracked = track(fake, Provenance((record,), identity(fake.shape[0]), fake.requires_grad))
        if where is None:
            return tracked
        items = list(output)
        items[where] = tracked
        return type(output)(*items) if hasattr(output, "_fields") else type(output)(items)

    def _on_d_enter(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if not any(type(a) is Tracked for a in args) and not any(type(v) is Tracked for v in kwargs.values()):
            if torch.is_grad_enabled():
                self._unmatched_grad_calls += 1
            self._current = None
            return None
        found: Optional[Provenance] = None
        plain_args = []
        for a in args:
            if type(a) is Tracked:
                found = found or a.__dict__.get("_ogan_prov")
                a = untrack(a)
            plain_args.append(a)
        plain_kwargs = {}
        for k, v in kwargs.items():
            if type(v) is Tracked:
                found = found or v.__dict__.get("_ogan_prov")
                v = untrack(v)
            plain_kwargs[k] = v
        self._current = self._accept(found)
        return tuple(plain_args), plain_kwargs

    def _accept(self, prov: Optional[Provenance]) -> Optional[tuple[Provenance, HookWeight]]:
        """The call's (provenance, weight) when it may get the term; warnings for lost rows."""
        if prov is None or prov.sample or any(c.owner is not self for c in prov.calls):
            return None
        for c in prov.calls:
            c.seen = True
        if not torch.is_grad_enabled():
            return None
        if prov.lost:
            self._warn_lost(prov.lost)
        if prov.flag is not None:
            key = prov.flag_ops
            self._pending[key] = prov.flag if key not in self._pending else self._pending[key] | prov.flag
        if isinstance(prov.rows, tuple) and max(prov.rows, default=-1) < 0:
            return None
        return prov, (self.corr_weight_g if prov.attached else self.corr_weight)

    def _on_head(self, module: OGANHead, args: tuple, output: Tensor) -> Optional[Tensor]:
        current = self._current
        if current is None:
            return None
        self._current = None  # one term per discriminator call
        prov, rule = current
        # a Ramp (the "auto" default): its weight for the newest generator call the rows come from
        weight = weight_at(rule, max(c.step for c in prov.calls))
        raw = module.last_raw
        if raw is None or not raw.requires_grad or not torch.is_grad_enabled():
            return None
        if len(prov) != raw.shape[0]:
            self._warn_once(
                "rows",
                f"ogan_plugin hook mode: the discriminator's input had {len(prov)} rows but its head gave "
                f"{raw.shape[0]}: the rows cannot be paired with z, so no correlation term was added",
            )
            return None
        pairing = self._pair(prov, raw)
        if pairing is None:
            return None
        index, weights, divisor = pairing
        values = raw.detach()
        self._last, self._last_rho = (prov.calls, index, values, weights, divisor), None  # rho is logged at weight 0 too
        if weight == 0:  # a ramp's first step, or a zero weight: no term
            return None
        self.calls += 1
        scaler = self.scaler_g if prov.attached and self.scaler_g is not None else self.scaler
        if scaler is not None and not scaler.is_enabled():
            scaler = None
        grad_raw = _correlation_grad(prov.calls, index, weights, values, -weight / divisor, self.eps)
        return _CorrelationTerm.apply(output, raw, grad_raw, scaler)

    def _pair(self, prov: Provenance, raw: Tensor) -> Optional[tuple[Optional[Tensor], Optional[Tensor], int]]:
        """``(index, w, n)``: the row of z for each raw row (None: z's rows in order), and the
        term's per-row weights (None: all ones), ``-corr_weight / n * sum(w * rho)`` being
        the mean over the fake rows.

        Host row maps: ``w`` is 1 on fake rows and 0 elsewhere and ``n`` the number of fake
        rows (cached per row map: no copy to the device per call); device row maps: ``w`` is
        the fake-row mask over its count, on the device (no synchronisation), and ``n`` 1.
        None when no row is a fake.
        """
        rows, B = prov.rows, raw.shape[0]
        if isinstance(rows, tuple):
            if rows is identity(B) and len(prov.calls) == 1 and prov.calls[0].z.shape[0] == B:
                return None, None, B  # G's own rows in order: the common case costs nothing
            key = (rows, raw.device)
            cached = self._pairs.get(key)
            if cached is None:
                fake = [k for k, r in enumerate(rows) if r >= 0]
                if not fake:
                    return None
                index = on_device(tuple(max(r, 0) for r in rows), raw.device)
                weights = None if len(fake) == B else on_device(tuple(1 if r >= 0 else 0 for r in rows), raw.device)
                cached = self._pairs[key] = (index, weights, len(fake))
                if len(self._pairs) > 64:
                    self._pairs.popitem(last=False)
            return cached
        mask = rows >= 0
        dtype = torch.float64 if torch.float64 in (raw.dtype, prov.calls[0].z.dtype) else torch.float32
        return rows.clamp(min=0), mask.to(dtype) / mask.sum().clamp(min=1).to(dtype), 1


def _fake_of(output: Any) -> tuple[Optional[Tensor], Optional[int]]:
    """The tensor to track in a generator's output, and its place in a tuple/list (or None)."""
    if isinstance(output, Tensor):
        return (output, None) if output.dim() > 0 else (None, None)
    if isinstance(output, (tuple, list)):
        for k, item in enumerate(output):
            if isinstance(item, Tensor) and item.dim() > 0:
                return item, k
    return None, None


def attach(
    discriminator: nn.Module,
    generator: nn.Module,
    corr_weight: Union[float, str, Ramp] = "auto",
    *,
    corr_weight_g: Union[None, float, str, Ramp] = None,
    scaler: Any = None,
    scaler_g: Any = None,
    eps: float = EPS,
    backend: Optional[str] = None,
    z_from: Optional[Callable[[tuple, dict], Tensor]] = None,
) -> OGANHook:
    """Turn on hook mode: add the O-GAN term to the user's own training loop.

    Args:
        discriminator: a wrapped discriminator (:func:`ogan_plugin.wrap`), or a
            ``DistributedDataParallel`` / ``DataParallel`` around one (DataParallel on one
            device, or none: over several GPUs it runs replicas that hooks cannot watch).
        generator: the generator; its first positional argument is taken as z (see ``z_from``).
        corr_weight: lambda in ``-lambda * mean(rho)``: ``"auto"`` (the default: a ramp to
            ``0.5 * sqrt(z_dim)`` over the generator's first 200 training calls, see the
            module doc), a fixed number (0.5 is the official code's, with its QP loss), or an
            :class:`ogan_plugin.Ramp`.
        corr_weight_g: lambda for the generator's step, i.e. calls on fakes that carry the
            generator's graph rather than detached ones (None: ``corr_weight``'s; the same
            kinds of value), as in
            :func:`ogan_plugin.single_loss`.
        scaler: a ``torch.amp.GradScaler`` when the losses are scaled by one (the term is
            then scaled the same way).
        scaler_g: the generator step's GradScaler when it has its own (None: ``scaler``).
        eps: norm floor of the correlation.
        backend: force a correlation backend by name (for :attr:`OGANHook.last_rho`).
        z_from: a function ``(args, kwargs) -> z`` that picks the code from the generator's
            call arguments, for generators whose first argument is not z (default: the first
            positional argument, or a keyword ``z`` / ``noise``).

    Returns:
        The :class:`OGANHook` (a context manager; ``hook.last_rho`` for logging).  Attaching
        again with the same generator, weights and scalers returns the attached hook.

    Raises:
        TypeError: ``discriminator`` is not wrapped, ``generator`` is not an ``nn.Module``,
            a scaler is not a GradScaler, or ``z_from`` is not callable.
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
    weights = _check_args(generator, corr_weight, corr_weight_g, (scaler, scaler_g), z_from, wrapped.z_dim)
    existing = OGANHook.of(wrapped)
    if existing is not None:
        if (existing.generator is generator and (existing.corr_weight, existing.corr_weight_g) == weights
                and existing.scaler is scaler and existing.scaler_g is scaler_g):
            return existing
        raise ValueError(
            "a hook is already attached to this discriminator (with another generator, weight or "
            "scaler); call ogan_plugin.detach(discriminator) first"
        )
    hook = OGANHook(
        wrapped, generator, corr_weight, corr_weight_g=corr_weight_g, scaler=scaler, scaler_g=scaler_g,
        eps=eps, backend=backend, z_from=z_from,
    )
    wrapped._ogan_hook = hook
    return hook


def detach(discriminator: nn.Module) -> Optional[OGANHook]:
    """Turn hook mode off for ``discriminator``; returns the removed hook (None if none)."""
    hook = OGANHook.of(discriminator)
    if hook is not None:
        hook.detach()
    return hook
