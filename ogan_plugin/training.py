"""Single-loss O-GAN training: both networks from one backward and one optimizer step.

METHOD.md section 4.  With ``L_D`` the discriminator's loss (adversarial term on
``D(x_real)`` and ``D(sg(x_fake))`` plus the correlation term) and ``L_G`` the
generator's (adversarial term on ``D(x_fake)`` plus the correlation term), the loss
returned by :func:`single_loss` has

* the value ``L_D + L_G`` (float32, for logging),
* the gradient ``dL_D/dθ_D`` on the discriminator's parameters and ``dL_G/dθ_G`` on the
  generator's: exactly the gradients of an alternating update that computes both losses
  from the same parameters and the same z (detached fakes for D, D frozen for G).

The values and the three gradient streams of the objective come from the registry's
``ogan_objective`` operation (the fused Triton kernel where that backend is active, the
torch reference otherwise); this module only routes them into the networks.

Routings (``routing=``):

``"split"`` (default, the fastest)
    Two discriminator forwards: ``D(x_real)`` and ``D(x_fake)``, the latter on a detached
    copy of the fakes.  In the backward the discriminator-loss stream goes to D's
    parameters through that forward, and the generator-loss stream to D's input (a second
    vector-Jacobian product of the same forward), then into G.  Each product computes
    only what it needs (no weight gradients for G's stream, no input gradient of D's first
    layer for D's stream).  Exact, also with Dropout or training-mode BatchNorm in D (both
    products see the same forward).  One ``.backward()`` per loss: the backward releases
    the saved forward.

``"three_forward"`` (the original code's)
    ``D(x_real)``, ``D(x_fake)`` and ``D(sg(x_fake))``: the generator stream is fed into
    ``E(x_fake)`` and ``grad_fake_d - grad_fake_g`` into ``E(sg(x_fake))``, so the two
    copies cancel on D's parameters.  One more discriminator forward and weight backward
    than "split".  If D is random in training mode (Dropout), the two fake forwards differ
    and the cancellation is inexact: a warning says so (use "split").

Class-conditional GANs: with labels (``y=``) the networks are called as ``G(z, y)`` and
``D(x, y)``.  The adversarial terms use the score picked from D's whole output
(:mod:`ogan_plugin.scores`), e.g. a projection discriminator's head mean plus its class
term, and the correlation term the head's raw outputs.  The fused objective takes
``code + score`` per row (rho ignores the shift, the row means are the scores); the row
sums of its gradients go into D's output, the centred rest into the head.

BatchNorm in D: by default the real and the fake batch go through separate forwards (as
in the official code and most alternating loops), so each batch is normalised with its
own statistics and the gradients equal the alternating update's even in training mode
(running statistics: "split" updates them once per batch, like the alternating
discriminator step; "three_forward" folds the fake batch in twice).
``concat_batches=True`` runs one forward on ``cat([x_real, x_fake])`` instead, as code
that concatenates the batches does: training-mode BatchNorm then normalises with the
statistics of the mixed batch, which changes the outputs and the gradients.  Without
batch-dependent layers (or in eval mode) both give the same result.  It is not faster
with "split" on CPU (the generator's product then runs over both halves; see
``ogan_plugin.bench.step``).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin.checks import check_int
from ogan_plugin.ema import EMA
from ogan_plugin.head import Decomposition, OGANDiscriminator, as_wrapped
from ogan_plugin.kernels.pearson import EPS
from ogan_plugin.layout import remember_layout
from ogan_plugin.labels import check_conditional, check_labels, label_args
from ogan_plugin.kernels.single_loss import ObjectiveOutput
from ogan_plugin.losses import AdversarialLoss, check_corr_weights, get_loss, pixel_distance
from ogan_plugin.registry import dispatch

__all__ = ["ROUTINGS", "SingleLossOutput", "SingleLossStep", "StepResult", "single_loss"]

#: Routings accepted by :func:`single_loss` and :class:`SingleLossStep`.
ROUTINGS = ("split", "three_forward")


class SingleLossOutput(NamedTuple):
    """What :func:`single_loss` returns with ``return_terms=True``.

    ``loss``: the scalar to call ``.backward()`` on (value ``loss_d + loss_g``);
    ``loss_d``, ``loss_g``: the two players' losses (detached float32 scalars);
    ``rho``: per-sample correlation rho(z, E(G(z))) (detached, (B,));
    ``x_fake``: the generator's output for ``z``.
    """

    loss: Tensor
    loss_d: Tensor
    loss_g: Tensor
    rho: Tensor
    x_fake: Tensor


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


# --- argument checks (public boundary) -----------------------------------------------------
def _check_generator(generator: Any) -> None:
    if not callable(generator):
        raise TypeError(f"generator must be callable (an nn.Module), got {type(generator).__name__}")


def _check_labels(
    generator: Any, discriminator: OGANDiscriminator, y: Any, y_fake: Any, batch: int
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """``(y, y_fake)`` checked, ``y_fake`` defaulting to ``y``; errors name the argument."""
    if y is None:
        if y_fake is not None:
            raise ValueError("y_fake was given without y: give the real batch's labels y too")
        return None, None
    check_conditional(generator, discriminator, y, batch)
    return y, (y if y_fake is None else check_labels(y_fake, batch, "y_fake"))


def _check_options(
    loss: Any, corr_weight: Any, routing: Any, corr_weight_g: Any = None
) -> tuple[AdversarialLoss, float, float]:
    """The loss, and the two weights as :func:`check_corr_weights` resolves them."""
    adv = get_loss(loss)
    weights = check_corr_weights(corr_weight, corr_weight_g)
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
    return (adv, *weights)


def _check_batch(x_real: Any, z: Any, z_dim: int) -> None:
    if not isinstance(x_real, Tensor) or not x_real.is_floating_point():
        raise TypeError(f"x_real must be a floating-point torch.Tensor, got {_describe(x_real)}")
    if not isinstance(z, Tensor) or not z.is_floating_point():
        raise TypeError(f"z must be a floating-point torch.Tensor, got {_describe(z)}")
    if x_real.dim() < 1 or x_real.shape[0] < 1:
        raise ValueError(f"x_real must be a non-empty batch, got shape {tuple(x_real.shape)}")
    if z.dim() < 2 or z[0].numel() != z_dim:
        raise ValueError(
            f"z must have shape (batch, {z_dim}) (or (batch, {z_dim}, 1, ...)): the wrapped "
            f"discriminator's z_dim is {z_dim}, got z of shape {tuple(z.shape)}"
        )
    if z.shape[0] != x_real.shape[0]:
        raise ValueError(f"z has batch size {z.shape[0]} but x_real has {x_real.shape[0]}; they must match")


def _check_augment(augment: Any) -> None:
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be a callable (Tensor -> Tensor) or None, got {type(augment).__name__}")


def _describe(x: Any) -> str:
    return f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__


def _random_layers_in_training(module: nn.Module) -> list[str]:
    return [
        name or type(m).__name__
        for name, m in module.named_modules()
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0
    ]


# --- the split routing's autograd glue -------------------------------------------------------
class _SplitRoute(torch.autograd.Function):
    """The split routing's backward: two vector-Jacobian products of one D forward.

    ``apply(route, x_fake, *d_params)`` returns a zero scalar; the discriminator forward that
    saw the fakes (``outputs``, computed from ``x_leaf``, a detached copy of ``x_fake``)
    is kept on ``ctx`` out of the outer graph.  With incoming scale ``c`` the backward
    computes

    * ``J_params^T (c * grads_d)``: the gradients of D's parameters, returned as those
      inputs' gradients (so they reach ``.grad`` through the outer graph, once, together
      with the real batch's);
    * ``J_x^T (c * grads_g)``: the gradient of the fakes, returned to ``x_fake`` -> G.

    Neither product computes what it does not need (the first no input gradient of D's
    first layer, the second no weight gradients), which is what makes the routing
    cheaper than the alternating update.  One backward per loss: the saved forward is
    released after it.
    """

    @staticmethod
    def forward(ctx, route: tuple, x_fake: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        # route = (outputs, grads_d, grads_g, x_leaf, params): tensors inside a tuple are
        # not inputs, so the outer graph does not reach D's fake forward.
        ctx.route = route
        return x_fake.new_zeros((), dtype=torch.float32)

    @staticmethod
    def backward(ctx, c: Tensor) -> tuple[Optional[Tensor], ...]:  # type: ignore[override]
        route = ctx.route
        if route is None:
            raise RuntimeError(
                "single_loss(routing='split') supports one backward per loss (the discriminator's "
                "forward is released after it); call single_loss again, or use routing='three_forward'"
            )
        ctx.route = None
        outputs, grads_d, grads_g, x_leaf, params = route
        param_grads: tuple[Optional[Tensor], ...] = (None,) * len(params)
        wanted = [i for i in range(len(params)) if ctx.needs_input_grad[2 + i]]
        if wanted:
            got = torch.autograd.grad(
                outputs, [params[i] for i in wanted], _scaled(outputs, grads_d, c), retain_graph=True, allow_unused=True
            )
            param_grads = tuple(got[wanted.index(i)] if i in wanted else None for i in range(len(params)))
        grad_x = None
        if ctx.needs_input_grad[1]:
            # backward(inputs=) into the leaf's .grad rather than autograd.grad: tools that
            # hook module inputs (FlopCounterMode, module trackers) reject a nested
            # autograd.grad with respect to a leaf.
            x_leaf.grad = None
            # retain_graph: under torch.compile the fake forward may share one compiled
            # graph (and backward node) with the outer graph; in eager mode the graph is
            # freed anyway when ``route`` is dropped at the end of this function.
            torch.autograd.backward(outputs, _scaled(outputs, grads_g, c), inputs=[x_leaf], retain_graph=True)
            grad_x, x_leaf.grad = x_leaf.grad, None
        return (None, grad_x, *param_grads)


def _scaled(outputs: list[Tensor], grads: list[Tensor], c: Tensor) -> list[Tensor]:
    return [(g.float() * c).to(o.dtype) if g.dtype != torch.float64 else g * c for o, g in zip(outputs, grads)]


def _dot(e: Tensor, g: Tensor) -> Tensor:
    """``sum(e * g)`` as a float32 scalar whose gradient w.r.t. ``e`` is ``g`` at ``e``'s
    precision (float64 stays float64; half types are reduced in float32)."""
    dtype = torch.float64 if e.dtype == torch.float64 else torch.float32
    return (e.to(dtype) * g.to(dtype)).sum().float()


def _objective_input(d: Decomposition) -> Tensor:
    """``code + score`` per row: what the fused objective reads (detached).

    Its row means are the scores the losses train on (D's whole output, see
    :mod:`ogan_plugin.scores`) and, since Pearson's rho ignores a constant shift of a row,
    its correlation with z is the head's.  So ``ogan_objective`` (which takes scores as row
    means) needs no change for conditional discriminators."""
    return (d.code + d.score[:, None].to(d.code.dtype)).detach()


def _parts(g: Tensor) -> tuple[Tensor, Tensor]:
    """Split a gradient on :func:`_objective_input` into (row-centred part, row sums).

    The row sum is the gradient of the score (the adversarial part, routed into D's
    output); the centred rest is the correlation part (already zero-mean per row), routed
    into the head's raw outputs.  For a score that is the head's mean the two together
    give ``g`` on the raw outputs, as before."""
    return g - g.mean(dim=1, keepdim=True), g.sum(dim=1)


def _feed(d: Decomposition, g: Tensor) -> Tensor:
    """A scalar whose gradient sends ``g`` (a gradient on :func:`_objective_input`) into
    the networks through ``d``'s raw outputs and score."""
    centred, sums = _parts(g)
    return _dot(d.raw, centred) + _dot(d.score, sums)


def _rows(d: Decomposition, rows: slice) -> Decomposition:
    return Decomposition(d.score[rows], d.code[rows], d.raw[rows], None)


# --- the functional form ------------------------------------------------------------------
def _single_loss(
    generator: Callable[[Tensor], Tensor],
    D: OGANDiscriminator,
    x_real: Tensor,
    z: Tensor,
    adv: AdversarialLoss,
    loss_arg: Union[str, AdversarialLoss],
    corr_weight: float,
    corr_weight_g: float,
    routing: str,
    concat_batches: bool,
    backend: Optional[str],
    eps: float,
    augment: Optional[Callable[[Tensor], Tensor]] = None,
    y: Optional[Tensor] = None,
    y_fake: Optional[Tensor] = None,
) -> SingleLossOutput:
    """The work of :func:`single_loss`, on checked arguments (the weights resolved)."""
    real_labels, fake_labels = label_args(y), label_args(y_fake)
    generated = x_fake = generator(z, *fake_labels)
    if not isinstance(x_fake, Tensor) or x_fake.shape != x_real.shape:
        got = tuple(x_fake.shape) if isinstance(x_fake, Tensor) else type(x_fake).__name__
        raise ValueError(
            f"the generator's output for z has shape {got} but x_real has shape {tuple(x_real.shape)}; "
            "real and generated batches must have the same shape"
        )
    if augment is not None:
        # What D sees from here on; G's gradient flows back through augment(x_fake).
        x_real, x_fake = augment(x_real), augment(x_fake)
        if not (isinstance(x_real, Tensor) and isinstance(x_fake, Tensor) and x_real.shape == x_fake.shape):
            raise ValueError("augment must map the real and the generated batch to tensors of one shape")
    B = x_real.shape[0]
    z_flat = z.detach().flatten(1)
    dist = pixel_distance(x_real.detach(), x_fake.detach()) if adv.needs_dist else None
    fused = dispatch("ogan_objective", x_real.device.type, backend)

    def objective(d_real: Decomposition, d_fake: Decomposition) -> ObjectiveOutput:
        return fused(
            _objective_input(d_real), _objective_input(d_fake), z_flat, dist, loss_arg, corr_weight, corr_weight_g, eps
        )

    if routing == "split":
        # D's input for the fakes: a leaf cut from G's graph.
        x_leaf = x_fake.detach().requires_grad_(x_fake.requires_grad)
        params = [p for p in D.parameters() if p.requires_grad]
        if concat_batches:
            two = () if y is None else (torch.cat([y, y_fake]),)
            d_all = D.decompose(torch.cat([x_real, x_leaf.to(x_real.dtype)]), *two)
            out = objective(_rows(d_all, slice(0, B)), _rows(d_all, slice(B, None)))
            (c_real, s_real), (c_d, s_d), (c_g, s_g) = (_parts(g) for g in (out.grad_real, out.grad_fake_d, out.grad_fake_g))
            route = (
                [d_all.raw, d_all.score],
                [torch.cat([c_real, c_d]), torch.cat([s_real, s_d])],
                [torch.cat([torch.zeros_like(c_g), c_g]), torch.cat([torch.zeros_like(s_g), s_g])],
                x_leaf,
                params,
            )
            surrogate = _SplitRoute.apply(route, x_fake, *params)
        else:
            d_real = D.decompose(x_real, *real_labels)
            d_fake = D.decompose(x_leaf, *fake_labels)
            out = objective(d_real, d_fake)
            (c_d, s_d), (c_g, s_g) = _parts(out.grad_fake_d), _parts(out.grad_fake_g)
            route = ([d_fake.raw, d_fake.score], [c_d, s_d], [c_g, s_g], x_leaf, params)
            surrogate = _feed(d_real, out.grad_real) + _SplitRoute.apply(route, x_fake, *params)
    else:
        randoms = _random_layers_in_training(D)
        if randoms:
            warnings.warn(
                f"routing='three_forward' with random layers in training mode in the discriminator "
                f"({', '.join(randoms[:3])}): D(x_fake) and D(sg(x_fake)) draw different masks, so the "
                "generator term does not cancel exactly on D's parameters; use routing='split'",
                RuntimeWarning,
                stacklevel=3,
            )
        if concat_batches:
            three = () if y is None else (torch.cat([y, y_fake, y_fake]),)
            d_all = D.decompose(torch.cat([x_real, x_fake.detach().to(x_real.dtype), x_fake.to(x_real.dtype)]), *three)
            d_real, d_sg, d_fake = (_rows(d_all, slice(i * B, (i + 1) * B)) for i in range(3))
        else:
            d_real = D.decompose(x_real, *real_labels)
            d_sg = D.decompose(x_fake.detach(), *fake_labels)
            d_fake = D.decompose(x_fake, *fake_labels)
        out = objective(d_real, d_fake)
        surrogate = (
            _feed(d_real, out.grad_real)
            + _feed(d_fake, out.grad_fake_g)
            + _feed(d_sg, out.grad_fake_d - out.grad_fake_g)
        )
    value = (out.loss_d + out.loss_g).float()
    loss = surrogate - surrogate.detach() + value
    return SingleLossOutput(loss, out.loss_d.detach().float(), out.loss_g.detach().float(), out.rho.detach(), generated)


def single_loss(
    generator: Callable[[Tensor], Tensor],
    wrapped_discriminator: OGANDiscriminator,
    x_real: Tensor,
    z: Tensor,
    loss: Union[str, AdversarialLoss] = "qp",
    corr_weight: float = 0.5,
    routing: str = "split",
    *,
    concat_batches: bool = False,
    backend: Optional[str] = None,
    eps: float = EPS,
    augment: Optional[Callable[[Tensor], Tensor]] = None,
    corr_weight_g: Optional[float] = None,
    return_terms: bool = False,
    y: Optional[Tensor] = None,
    y_fake: Optional[Tensor] = None,
) -> Union[Tensor, SingleLossOutput]:
    """The O-GAN single loss of one batch: a scalar whose ``.backward()`` trains both nets.

    After ``single_loss(G, D, x_real, z).backward()`` the discriminator's parameters hold
    ``dL_D/dθ_D`` and the generator's ``dL_G/dθ_G`` (see the module docstring), so one
    optimizer over both networks performs the alternating update from one backward::

        D = ogan_plugin.wrap(D, z_dim=nz)
        opt = torch.optim.RMSprop([*G.parameters(), *D.parameters()], lr=1e-4, alpha=0.99)
        for x in loader:
            opt.zero_grad()
            ogan_plugin.single_loss(G, D, x, torch.randn(len(x), nz)).backward()
            opt.step()

    Args:
        generator: maps ``z`` to a batch shaped like ``x_real``.
        wrapped_discriminator: the discriminator wrapped by :func:`ogan_plugin.wrap`, or
            ``DistributedDataParallel`` around it (``accelerator.prepare``'s result): its
            forwards then run through DDP.
        x_real: a batch of real samples (B, ...).
        z: the noise the fakes are generated from, (B, z_dim) or (B, z_dim, 1, ...).
        loss: adversarial loss name (``"qp"``, ``"hinge"``, ``"bce"``, ``"wgan"`` or a
            plugin's) or an :class:`~ogan_plugin.losses.AdversarialLoss`.
        corr_weight: lambda, the weight of ``-mean(rho)`` in both losses (in the
            discriminator's only, when ``corr_weight_g`` is given).
        routing: ``"split"`` or ``"three_forward"`` (module docstring).
        concat_batches: one discriminator forward on ``cat([x_real, x_fake])`` instead of
            separate forwards (changes training-mode BatchNorm statistics).
        backend: force the ``ogan_objective`` backend by name (default: the registry's).
        eps: norm floor of the correlation.
        augment: a differentiable augmentation applied to the real and to the generated
            batch right before the discriminator (DiffAugment; e.g.
            :class:`~ogan_plugin.augment.RandomTranslate`).  Both adversarial terms and
            the correlation then see augmented images, so the encoder learns to recover
            z from ``augment(G(z))``: codes that depend less on what it changes.
            The gradients are the alternating update's on the augmented batches.
        corr_weight_g: the weight of ``-mean(rho)`` in the generator's loss (None: the
            same as ``corr_weight``).  A lower weight for G than for D asks less of the
            samples while D keeps learning to read z: on the digits demo, weights 4 (D)
            and 1.5 (G) instead of 2.5 in both brought the samples' Fréchet distance
            level with a plain GAN's at no cost in the encoder (README, "The demo").
        return_terms: return a :class:`SingleLossOutput` (loss, loss_d, loss_g, rho,
            x_fake) instead of the bare loss; ``x_fake`` is the generator's output
            before any augmentation.
        y: class labels of ``x_real`` for a conditional GAN (B,) integer or (B, ...)
            floating point: the networks are called as ``G(z, y_fake)``,
            ``D(x_real, y)`` and ``D(x_fake, y_fake)``.  The adversarial terms use the
            score picked from D's whole output (``wrap(..., score=)``), so a projection
            discriminator's class term is trained; the correlation term uses the head.
        y_fake: labels the fakes are generated with (default: ``y``), e.g. classes
            drawn uniformly.

    Returns:
        A float32 scalar tensor of value ``loss_d + loss_g`` (or :class:`SingleLossOutput`).
        Its gradient is linear in the incoming scale, so ``GradScaler.scale(loss)`` and
        ``loss / accumulation_steps`` work as usual; ``torch.autograd.grad(loss, params)``
        works too.  Call ``.backward()`` once per loss (with ``routing="split"`` a second
        backward raises ``RuntimeError``).
    """
    _check_generator(generator)
    D = as_wrapped(wrapped_discriminator, "wrapped_discriminator")  # DDP around a wrapped D: a view through it
    adv, weight_d, weight_g = _check_options(loss, corr_weight, routing, corr_weight_g)
    _check_batch(x_real, z, D.z_dim)
    _check_augment(augment)
    y, y_fake = _check_labels(generator, D, y, y_fake, x_real.shape[0])
    out = _single_loss(
        generator, D, x_real, z, adv, loss, weight_d, weight_g, routing,
        bool(concat_batches), backend, eps, augment, y, y_fake,
    )
    return out if return_terms else out.loss


# --- the training step ------------------------------------------------------------------
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
        check_finite: before each backward, raise ``FloatingPointError`` naming the step
            if the loss is NaN/inf (one device sync per micro-batch); the gradients are
            cleared and the optimizer is not stepped.
        eps: norm floor of the correlation.
        augment: differentiable augmentation of D's inputs, as in :func:`single_loss`.  If
            it is an ``nn.Module`` (e.g. :class:`~ogan_plugin.augment.RandomTranslate`),
            its state (random stream) is saved in :meth:`state_dict`.
        corr_weight_g: the correlation weight in the generator's loss, as in
            :func:`single_loss` (None: ``corr_weight``).

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
        return torch.autocast(device_type, dtype=self.amp_dtype)

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

        Raises:
            FloatingPointError: the loss is NaN/inf (with ``check_finite``); the step
                number is in the message, gradients are cleared and no parameter changed.
        """
        if z is None and isinstance(x_real, Tensor) and x_real.dim() >= 1:
            z = self.sample_z(x_real.shape[0], x_real.device)
        _check_batch(x_real, z, self.z_dim)
        B = x_real.shape[0]
        y, y_fake = _check_labels(self.generator, self.discriminator, y, y_fake, B)
        k = self.accumulation_steps
        if k > B:
            raise ValueError(f"accumulation_steps={k} exceeds the batch size {B}")
        xs, zs, ys, yfs = (x_real, ), (z, ), (y, ), (y_fake, )
        if k > 1:
            xs, zs = x_real.tensor_split(k), z.tensor_split(k)
            if y is not None:
                ys, yfs = y.tensor_split(k), y_fake.tensor_split(k)
            else:
                ys = yfs = (None,) * k

        opt, scaler = self.optimizer, self.grad_scaler
        opt.zero_grad(set_to_none=True)
        totals = torch.zeros(4, dtype=torch.float32, device=x_real.device)
        for xr, zr, yr, yfr in zip(xs, zs, ys, yfs):
            w = xr.shape[0] / B
            with self._autocast(x_real.device.type):
                out = _single_loss(
                    self.generator, self.discriminator, xr, zr, self.adversarial, self.loss,
                    self.corr_weight, self.corr_weight_g, self.routing, self.concat_batches, self.backend, self.eps,
                    self.augment, yr, yfr,
                )
            if self.check_finite and not bool(torch.isfinite(out.loss)):
                opt.zero_grad(set_to_none=True)
                raise FloatingPointError(
                    f"non-finite O-GAN loss at step {self.step_count + 1} (loss_d={float(out.loss_d):.4g}, "
                    f"loss_g={float(out.loss_g):.4g}); the optimizer was not stepped and the weights are "
                    "unchanged (lower the learning rate, check the inputs, or use a GradScaler with float16)"
                )
            loss = out.loss * w if k > 1 else out.loss
            (scaler.scale(loss) if scaler is not None else loss).backward()
            totals += w * torch.stack([out.loss.detach(), out.loss_d, out.loss_g, out.rho.float().mean()])
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        self.step_count += 1
        if self.ema is not None:
            self.ema.update()
        return StepResult(totals[0], totals[1], totals[2], totals[3], self.step_count)

    __call__ = step

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the step owns: optimizer, EMA, step count, GradScaler, noise RNG and
        the augmentation's state (when ``augment`` is an ``nn.Module``).

        The networks' own weights are not included: save ``G.state_dict()`` and
        ``D.state_dict()`` beside it.
        """
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
