"""The single-loss training step: :class:`SingleLossStep`, and its captured form.

One iteration: sample z, G's forward, D's forwards, the fused objective, ONE backward
(:func:`~ogan_plugin.training.single_loss`'s: the engine's pass over G, D and the route,
plus, for the "split" routing, one nested product of D's fake forward w.r.t. its input),
one optimizer step over both networks and the EMA update.  No host synchronisation by
default on a GPU: the finite check is a device-side flag read every ``check_every`` steps.
``capture=True`` replays the whole iteration as a CUDA graph (on CPU: compiled).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin.checks import check_int
from ogan_plugin.ema import EMA
from ogan_plugin.head import OGANDiscriminator, as_wrapped
from ogan_plugin.kernels.pearson import EPS
from ogan_plugin.layout import remember_layout
from ogan_plugin.losses import AdversarialLoss
from ogan_plugin.training import (
    _check_augment,
    _check_batch,
    _check_generator,
    _check_labels,
    _check_on_discriminator,
    _check_options,
    _single_loss,
)

__all__ = ["CAPTURE_WARMUP", "SingleLossStep", "StepResult"]

#: eager steps of each new batch shape before ``capture=True`` captures it
CAPTURE_WARMUP = 3
#: batch shapes whose captured graphs are kept (the full batch and the last partial one)
CAPTURED_SHAPES = 2
#: the default ``check_every`` on devices other than the CPU
CHECK_EVERY = 100
#: optimizers whose ``capturable`` flag ``capture=True`` switches on
_CAPTURABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop)


def _prepare_capture(step: "SingleLossStep") -> None:
    """Check what ``capture=True`` needs and switch the optimizer to capturable (see the class)."""
    if step.grad_scaler is not None:
        raise ValueError(
            "capture=True cannot use a GradScaler: its dynamic loss scale reads the device every step, which a "
            "captured graph cannot do; use amp_dtype=torch.bfloat16 (no scaler), or capture=False"
        )
    opt = step.optimizer
    if step.device.type == "cuda":
        for group in opt.param_groups:
            if "capturable" in group and not group["capturable"]:
                if opt.state:
                    raise ValueError(
                        "capture=True needs a capturable optimizer, and this one already has state: build it "
                        f"with capturable=True ({type(opt).__name__}(..., capturable=True)) before its first step"
                    )
                group["capturable"] = True
    else:
        # no CUDA graphs off CUDA: the networks' forwards (in place, as nn.Module.compile does) and
        # the optimizer step are compiled; the backward runs AOTAutograd's compiled backward
        step.generator.compile()
        as_wrapped(step.discriminator, "wrapped_discriminator").discriminator.compile()
        step._optimizer_step = torch.compile(opt.step)


class StepResult(NamedTuple):
    """Detached logging values of one :meth:`SingleLossStep.step`.

    ``loss`` = ``loss_d + loss_g``; ``rho`` is the batch mean of the correlation;
    ``step`` the number of optimizer steps taken so far (1 after the first call).
    """

    loss: Tensor
    loss_d: Tensor
    loss_g: Tensor
    rho: Tensor
    step: int


def _named_trainable(generator: nn.Module, discriminator: nn.Module) -> list[tuple[str, nn.Parameter]]:
    seen: set[int] = set()
    out = []
    for prefix, module in (("generator", generator), ("discriminator", discriminator)):
        for name, p in module.named_parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append((f"{prefix}.{name}", p))
    return out


class SingleLossStep:
    """One full O-GAN training iteration per :meth:`step`: one backward, one optimizer step.

    Each step samples z (unless given), runs G once, the discriminator forwards of the
    chosen ``routing``, one backward of :func:`single_loss` and one optimizer step over
    both networks, then updates the generator's EMA if enabled::

        D = ogan_plugin.wrap(D, z_dim=128)
        trainer = ogan_plugin.SingleLossStep(G, D, loss="qp", ema_decay=0.999)
        for x in loader:
            r = trainer.step(x)
            print(r.step, float(r.loss_d), float(r.loss_g), float(r.rho))
        samples = trainer.ema.module(torch.randn(16, 128))

    The networks may be under DDP (``accelerator.prepare``'s result), as in
    :func:`single_loss`; a conditional GAN passes labels to :meth:`step`.

    Args:
        generator: the generator (an ``nn.Module``).
        wrapped_discriminator: ``ogan_plugin.wrap(D, z_dim)``.
        loss: as in :func:`single_loss`.
        corr_weight: as in :func:`single_loss`.
        routing: as in :func:`single_loss`.
        concat_batches: as in :func:`single_loss`.
        optimizer: one optimizer holding the trainable parameters of both networks;
            ``None`` builds the official recipe, ``RMSprop(lr=1e-4, alpha=0.99)``.
        z_dim: noise size (default and only valid value: the discriminator's ``z_dim``).
        amp_dtype: ``torch.bfloat16`` or ``torch.float16`` to run the forwards under
            ``torch.autocast`` (None: no autocast).
        grad_scaler: a ``torch.amp.GradScaler``; ``None`` creates one when ``amp_dtype``
            is float16, ``False`` never uses one.
        accumulation_steps: split each batch into this many micro-batches, one backward
            each, the gradients summed (weighted by micro-batch size) before the single
            optimizer step.  Without batch-dependent layers the result equals the
            full-batch step.
        ema_decay: keep an :class:`~ogan_plugin.ema.EMA` of the generator with this decay.
        z_shape: per-sample shape of sampled z (default ``(z_dim,)``; e.g.
            ``(z_dim, 1, 1)`` for DCGAN-style generators).  When given, it is also the
            layout :func:`~ogan_plugin.reconstruct`, :func:`~ogan_plugin.invert` and the
            :mod:`~ogan_plugin.evaluate` helpers feed this generator codes in
            (:mod:`ogan_plugin.layout`).
        noise_generator: a ``torch.Generator`` for sampling z (saved in
            :meth:`state_dict`, for exact resumption); default: torch's global RNG.
        backend: force the ``ogan_objective`` backend by name.
        check_finite: raise ``FloatingPointError`` when the loss is NaN/inf.  When the check
            is read is ``check_every``'s choice: every step (before the backward: the
            gradients are cleared and no parameter changes), or every N steps from a
            device-side flag (no host synchronisation in between; the message names the
            steps, and those steps were taken).
        check_every: read the finite check every this many steps.  Default ``None``: every
            step on the CPU (where a read costs nothing), every 100 steps elsewhere (on a
            GPU each read is a synchronisation); :meth:`state_dict` (a checkpoint) and
            :meth:`check` always read it.  1 on a GPU: every step, synchronising.
        eps: norm floor of the correlation.
        augment: differentiable augmentation of D's inputs, as in :func:`single_loss`.  If
            it is an ``nn.Module`` (e.g. :class:`~ogan_plugin.augment.RandomTranslate`),
            its state (random stream) is saved in :meth:`state_dict`.
        corr_weight_g: the correlation weight in the generator's loss, as in
            :func:`single_loss` (None: ``corr_weight``).
        capture: run each iteration as one captured program.  On CUDA the whole iteration
            (G's forward, D's forwards, the objective, the backward, the optimizer step and
            the EMA) is captured once per batch shape as a CUDA graph and replayed: the
            host launches one graph per step instead of hundreds of kernels.  The first
            :data:`CAPTURE_WARMUP` steps of each new batch shape run eagerly (they warm up
            cuDNN and the optimizer's state), then the step is captured.  Requirements: a
            capturable optimizer (Adam, AdamW, RMSprop and SGD are switched to
            ``capturable=True`` when built without state), no GradScaler (its
            dynamic scale reads the device: use bfloat16), and the networks' tensors left
            alone between steps (the graph reuses their memory).  Random ops inside the
            step (Dropout, augmentations) draw from the captured generator: a new draw per
            replay, not the eager sequence.  Elsewhere (the CPU) the networks are compiled in
            place (``nn.Module.compile``) and the optimizer step with ``torch.compile``: this
            pays where ops are large, not for tiny networks, whose step it slows (docs/training.md
            has the measured figures).  See :attr:`captured` for what was captured.

    Attributes:
        optimizer, ema (:class:`EMA` or None), grad_scaler (or None), step_count.
    """

    def __init__(
        self,
        generator: nn.Module,
        wrapped_discriminator: OGANDiscriminator,
        loss: Union[str, AdversarialLoss] = "qp",
        corr_weight: float = 0.5,
        optimizer: Optional[torch.optim.Optimizer] = None,
        routing: str = "split",
        z_dim: Optional[int] = None,
        amp_dtype: Optional[torch.dtype] = None,
        grad_scaler: Any = None,
        accumulation_steps: int = 1,
        ema_decay: Optional[float] = None,
        concat_batches: bool = False,
        *,
        z_shape: Optional[Sequence[int]] = None,
        noise_generator: Optional[torch.Generator] = None,
        backend: Optional[str] = None,
        check_finite: bool = True,
        eps: float = EPS,
        augment: Optional[Callable[[Tensor], Tensor]] = None,
        corr_weight_g: Optional[float] = None,
        check_every: Optional[int] = None,
        capture: bool = False,
    ) -> None:
        _check_generator(generator)
        wrapped_discriminator = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
        _check_augment(augment)
        if not isinstance(generator, nn.Module):
            raise TypeError(f"generator must be an nn.Module, got {type(generator).__name__}")
        self.adversarial, self.corr_weight, self.corr_weight_g = _check_options(loss, corr_weight, routing, corr_weight_g)
        self.generator = generator
        self.discriminator = wrapped_discriminator
        self.loss = loss
        self.routing = routing
        self.concat_batches = bool(concat_batches)
        self.backend = backend
        self.check_finite = bool(check_finite)
        self.eps = eps
        self.augment = augment

        D_z = wrapped_discriminator.z_dim
        if z_dim is not None and z_dim != D_z:
            raise ValueError(f"z_dim={z_dim!r} differs from the wrapped discriminator's z_dim={D_z}")
        self.z_dim = D_z
        self.z_shape = (D_z,) if z_shape is None else tuple(int(s) for s in z_shape)
        if int(torch.Size(self.z_shape).numel()) != D_z:
            raise ValueError(f"z_shape={tuple(self.z_shape)} must have {D_z} elements (the discriminator's z_dim)")
        if z_shape is not None:  # reconstruct / invert / evaluate feed G codes in this layout
            remember_layout(self.z_shape, generator, wrapped_discriminator)

        self.accumulation_steps = check_int("accumulation_steps", accumulation_steps, 1)

        if amp_dtype not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"amp_dtype must be None, torch.bfloat16 or torch.float16, got {amp_dtype!r}")
        self.amp_dtype = amp_dtype
        p0 = next(generator.parameters(), None)
        self.device = p0.device if p0 is not None else torch.device("cpu")
        self.z_dtype = p0.dtype if p0 is not None and p0.is_floating_point() else torch.float32
        if grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(self.device.type) if amp_dtype == torch.float16 else False
        if grad_scaler is not False and not hasattr(grad_scaler, "scale"):
            raise TypeError(f"grad_scaler must be a torch.amp.GradScaler, None or False, got {type(grad_scaler).__name__}")
        self.grad_scaler = grad_scaler or None

        named = _named_trainable(generator, wrapped_discriminator)
        if optimizer is None:
            optimizer = torch.optim.RMSprop([p for _, p in named], lr=1e-4, alpha=0.99)
        elif not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
        else:
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            missing = [name for name, p in named if id(p) not in held]
            if missing:
                shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
                raise ValueError(
                    "optimizer must hold the trainable parameters of both networks (one optimizer steps "
                    f"both); it lacks: {shown}. (An optimizer built before wrap() does not hold the "
                    "widened head's new parameters.)"
                )
        self.optimizer = optimizer
        self.ema: Optional[EMA] = None if ema_decay is None else EMA(generator, ema_decay)
        self.noise_generator = noise_generator
        self.step_count = 0
        if check_every is not None:
            check_int("check_every", check_every, 1)
        self.check_every = check_every
        self.capture = bool(capture)
        self._optimizer_step: Optional[Callable[[], Any]] = None
        if self.capture:
            _prepare_capture(self)
        #: trainable tensors the backward fills (the optimizer's): nothing else gets a gradient
        self._params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        self._nonfinite: Optional[Tensor] = None  # device flag of the deferred finite check
        self._checked_through = 0  # steps whose finite check has been read
        self._graphs: dict = {}

    # -- one iteration ---------------------------------------------------------------------
    def sample_z(self, batch_size: int, device: Optional[torch.device] = None) -> Tensor:
        """Standard normal noise of shape ``(batch_size, *z_shape)`` in G's parameter dtype."""
        return torch.randn(
            (batch_size, *self.z_shape),
            device=self.device if device is None else device,
            dtype=self.z_dtype,
            generator=self.noise_generator,
        )

    def _autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        # inside a CUDA graph the cast weights must not be cached across replays
        return torch.autocast(device_type, dtype=self.amp_dtype, cache_enabled=not self.capture)

    def _every(self, device: torch.device) -> int:
        if self.check_every is not None:
            return self.check_every
        return 1 if device.type == "cpu" else CHECK_EVERY

    def step(
        self, x_real: Tensor, z: Optional[Tensor] = None, *, y: Optional[Tensor] = None, y_fake: Optional[Tensor] = None
    ) -> StepResult:
        """Train both networks on one batch of real samples; return detached logging values.

        Args:
            x_real: real batch (B, ...), on the networks' device.
            z: noise (B, z_dim) or (B, *z_shape); sampled when None.
            y: class labels of ``x_real`` for a conditional GAN (``G(z, y_fake)``,
                ``D(x, y)``), as in :func:`single_loss`.
            y_fake: labels for the generated batch (default: ``y``).

        Returns:
            :class:`StepResult`: device tensors (reading one is a synchronisation on a GPU).

        Raises:
            FloatingPointError: the loss was NaN/inf (with ``check_finite``).  Read every
                step (the CPU's default): raised before the backward, the gradients cleared
                and no parameter changed.  Read every N steps: raised at the read, naming
                the steps since the last read; they were taken.
        """
        if z is None and isinstance(x_real, Tensor) and x_real.dim() >= 1:
            z = self.sample_z(x_real.shape[0], x_real.device)
        _check_batch(x_real, z, self.z_dim)
        _check_on_discriminator(x_real, self.discriminator)
        B = x_real.shape[0]
        y, y_fake = _check_labels(self.generator, self.discriminator, y, y_fake, B, x_real.device)
        k = self.accumulation_steps
        if k > B:
            raise ValueError(f"accumulation_steps={k} exceeds the batch size {B}")
        every = self._every(x_real.device) if self.check_finite else 0
        if self.capture and x_real.device.type == "cuda":
            values = self._replay(x_real, z, y, y_fake)
        else:
            values = self._iteration(x_real, z, y, y_fake, every == 1)
        self.step_count += 1
        if every > 1 and self.step_count - self._checked_through >= every:
            self.check()
        return StepResult(values[0], values[1], values[2], values[3], self.step_count)

    __call__ = step

    def _iteration(
        self, x_real: Tensor, z: Tensor, y: Optional[Tensor], y_fake: Optional[Tensor], check_now: bool
    ) -> Tensor:
        """One training iteration on checked inputs; returns (loss, loss_d, loss_g, mean rho)."""
        k = self.accumulation_steps
        B = x_real.shape[0]
        xs, zs, ys, yfs = (x_real,), (z,), (y,), (y_fake,)
        if k > 1:
            xs, zs = x_real.tensor_split(k), z.tensor_split(k)
            if y is not None:
                ys, yfs = y.tensor_split(k), y_fake.tensor_split(k)
            else:
                ys = yfs = (None,) * k
        opt, scaler = self.optimizer, self.grad_scaler
        opt.zero_grad(set_to_none=True)
        totals: Optional[Tensor] = None
        unit = scaler is None and k == 1  # the backward below passes the loss's own gradient, 1
        for xr, zr, yr, yfr in zip(xs, zs, ys, yfs):
            with self._autocast(x_real.device.type):
                out = _single_loss(
                    self.generator, self.discriminator, xr, zr, self.adversarial, self.loss,
                    self.corr_weight, self.corr_weight_g, self.routing, self.concat_batches, self.backend, self.eps,
                    self.augment, yr, yfr, unit,
                )
            if check_now and not math.isfinite(out.loss.item()):  # (check_now: on the CPU, or asked for)
                opt.zero_grad(set_to_none=True)
                raise FloatingPointError(
                    f"non-finite O-GAN loss at step {self.step_count + 1} (loss_d={float(out.loss_d):.4g}, "
                    f"loss_g={float(out.loss_g):.4g}); the optimizer was not stepped and the weights are "
                    "unchanged (lower the learning rate, check the inputs, or use a GradScaler with float16)"
                )
            if k > 1 or self.capture:  # one tensor: summed over micro-batches, or a captured graph's output
                values: Any = torch.stack([out.loss.detach(), out.loss_d, out.loss_g, out.rho.float().mean()])
            else:
                values = (out.loss.detach(), out.loss_d, out.loss_g, out.rho.float().mean())
            if k > 1:
                w = xr.shape[0] / B
                loss = out.loss * w
                values = values * w
                totals = values if totals is None else totals + values
            else:
                loss, totals = out.loss, values
            torch.autograd.backward(scaler.scale(loss) if scaler is not None else loss, inputs=self._params)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        elif self._optimizer_step is not None:
            self._optimizer_step()
        else:
            opt.step()
        if self.ema is not None:
            self.ema.update()
        if self.check_finite and not check_now:
            bad = ~torch.isfinite(totals[0])
            self._nonfinite = bad if self._nonfinite is None else self._nonfinite.logical_or_(bad)
        return totals

    def check(self) -> None:
        """Read the deferred finite check now (one synchronisation on a GPU).

        Raises:
            FloatingPointError: a step since the last read had a NaN/inf loss.
        """
        flag, first = self._nonfinite, self._checked_through + 1
        self._checked_through = self.step_count
        if flag is None:
            return
        bad = bool(flag)
        flag.zero_()
        if bad:
            raise FloatingPointError(
                f"non-finite O-GAN loss at one of steps {first} to {self.step_count} (read every "
                f"{self._every(flag.device)} steps: check_every); those steps were taken, so the weights may "
                "hold NaN/inf: restore the last checkpoint, lower the learning rate or check the inputs "
                "(check_every=1 finds the step, at one synchronisation per step)"
            )

    # -- capture ------------------------------------------------------------------------------
    @property
    def captured(self) -> list[tuple]:
        """The batch shapes whose iteration is captured as a CUDA graph (``capture=True``)."""
        return [key for key, entry in self._graphs.items() if entry.get("graph") is not None]

    def _replay(self, x_real: Tensor, z: Tensor, y: Optional[Tensor], y_fake: Optional[Tensor]) -> Tensor:
        """The CUDA-graph form of :meth:`_iteration`: warm up, capture, then replay."""
        key = (tuple(x_real.shape), x_real.dtype, tuple(z.shape), z.dtype,
               None if y is None else (tuple(y.shape), y.dtype), None if y_fake is None else (tuple(y_fake.shape), y_fake.dtype))
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = {"eager": 0, "graph": None}
            while len(self._graphs) > CAPTURED_SHAPES:
                self._graphs.pop(next(iter(self._graphs)))
        # a float rate is baked into the captured kernels; a tensor rate is read by them
        lrs = [id(g["lr"]) if isinstance(g["lr"], Tensor) else g["lr"] for g in self.optimizer.param_groups]
        if entry["graph"] is not None and entry["lrs"] != lrs:
            warnings.warn(
                "SingleLossStep(capture=True): the learning rate changed since the step was captured, so it is "
                "captured again; to change the rate every step without recapturing, give the optimizer a tensor "
                "lr (torch.tensor(lr, device='cuda'))",
                RuntimeWarning,
                stacklevel=3,
            )
            entry.update(graph=None, eager=CAPTURE_WARMUP)
        if entry["graph"] is None:
            if entry["eager"] < CAPTURE_WARMUP:
                entry["eager"] += 1
                side = torch.cuda.Stream(x_real.device)
                side.wait_stream(torch.cuda.current_stream(x_real.device))
                with torch.cuda.stream(side):
                    values = self._iteration(x_real, z, y, y_fake, False)
                torch.cuda.current_stream(x_real.device).wait_stream(side)
                return values
            self._capture(entry, x_real, z, y, y_fake)
            entry["lrs"] = lrs
        static = entry["inputs"]
        for buffer, value in zip(static, (x_real, z, y, y_fake)):
            if buffer is not None:
                buffer.copy_(value, non_blocking=True)
        entry["graph"].replay()
        if self.ema is not None:
            self.ema.num_updates += 1  # the replayed update (the capture counted none)
        return entry["values"].clone()

    def _capture(self, entry: dict, x_real: Tensor, z: Tensor, y: Optional[Tensor], y_fake: Optional[Tensor]) -> None:
        static = tuple(None if t is None else t.clone() for t in (x_real, z, y, y_fake))
        self.optimizer.zero_grad(set_to_none=True)
        if self._nonfinite is None and self.check_finite:
            self._nonfinite = torch.zeros((), dtype=torch.bool, device=x_real.device)
        updates = None if self.ema is None else self.ema.num_updates
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            values = self._iteration(*static, False)
        if self.ema is not None:
            self.ema.num_updates = updates  # capturing ran nothing
        entry.update(graph=graph, inputs=static, values=values)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the step owns: optimizer, EMA, step count, GradScaler, noise RNG and
        the augmentation's state (when ``augment`` is an ``nn.Module``).

        The networks' own weights are not included: save ``G.state_dict()`` and
        ``D.state_dict()`` beside it.  A checkpoint reads the deferred finite check first
        (:meth:`check`), so a NaN is reported before it is saved.
        """
        if self.check_finite:
            self.check()
        return {
            "step_count": self.step_count,
            "optimizer": self.optimizer.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "grad_scaler": None if self.grad_scaler is None else self.grad_scaler.state_dict(),
            "noise_generator": None if self.noise_generator is None else self.noise_generator.get_state(),
            "augment": self.augment.state_dict() if isinstance(self.augment, nn.Module) else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (into a step built the same way)."""
        missing = {"step_count", "optimizer", "ema", "grad_scaler", "noise_generator"} - set(state_dict)
        if missing:
            raise KeyError(f"SingleLossStep state dict lacks {sorted(missing)}")
        augment = self.augment if isinstance(self.augment, nn.Module) else None
        owned = (("ema", self.ema), ("grad_scaler", self.grad_scaler), ("noise_generator", self.noise_generator),
                 ("augment", augment))
        for key, mine in owned:
            if (state_dict.get(key) is None) != (mine is None):  # "augment" is absent from older states
                raise ValueError(
                    f"state dict has {'no ' if state_dict.get(key) is None else ''}{key} state but this step "
                    f"{'has' if mine is not None else 'has no'} {key}; build the step with the same options"
                )
        self.optimizer.load_state_dict(state_dict["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state_dict["ema"])
        if self.grad_scaler is not None:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
        if self.noise_generator is not None:
            self.noise_generator.set_state(state_dict["noise_generator"].cpu())
        if augment is not None:
            augment.load_state_dict(state_dict["augment"])
        self.step_count = int(state_dict["step_count"])

    def __repr__(self) -> str:
        name = self.adversarial.name or type(self.adversarial).__name__
        return (
            f"SingleLossStep(loss={name!r}, corr_weight={self.corr_weight}, corr_weight_g={self.corr_weight_g}, "
            f"routing={self.routing!r}, "
            f"z_dim={self.z_dim}, amp_dtype={self.amp_dtype}, accumulation_steps={self.accumulation_steps}, "
            f"ema={'on' if self.ema else 'off'}, augment={self.augment!r}, step_count={self.step_count})"
        )
