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
import math
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin.checks import check_device, check_int
from ogan_plugin.ema import EMA
from ogan_plugin.head import Decomposition, OGANDiscriminator, as_wrapped
from ogan_plugin.kernels.pearson import EPS
from ogan_plugin.layout import remember_layout
from ogan_plugin.labels import check_conditional, check_labels, label_args
from ogan_plugin.kernels.single_loss import ObjectiveOutput, dense_available, objective_dense, ogan_objective_reference
from ogan_plugin.losses import AdversarialLoss, check_corr_weights, get_loss, pixel_distance
from ogan_plugin.registry import dispatch

__all__ = ["ROUTINGS", "SingleLossOutput", "single_loss"]

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


# --- argument checks (public boundary) -----------------------------------------------------
def _check_generator(generator: Any) -> None:
    if not callable(generator):
        raise TypeError(f"generator must be callable (an nn.Module), got {type(generator).__name__}")


def _check_labels(
    generator: Any, discriminator: OGANDiscriminator, y: Any, y_fake: Any, batch: int, device: torch.device
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """``(y, y_fake)`` checked (on the batch's ``device``), ``y_fake`` defaulting to ``y``;
    errors name the argument."""
    if y is None:
        if y_fake is not None:
            raise ValueError("y_fake was given without y: give the real batch's labels y too")
        return None, None
    check_conditional(generator, discriminator, y, batch, device=device)
    return y, (y if y_fake is None else check_labels(y_fake, batch, "y_fake", device))


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
    if z.dim() < 2 or math.prod(z.shape[1:]) != z_dim:
        raise ValueError(
            f"z must have shape (batch, {z_dim}) (or (batch, {z_dim}, 1, ...)): the wrapped "
            f"discriminator's z_dim is {z_dim}, got z of shape {tuple(z.shape)}"
        )
    if z.shape[0] != x_real.shape[0]:
        raise ValueError(f"z has batch size {z.shape[0]} but x_real has {x_real.shape[0]}; they must match")
    check_device("z", z, x_real.device, "x_real")


def _check_on_discriminator(x_real: Tensor, D: OGANDiscriminator) -> None:
    """x_real on the discriminator's device (its first parameter's), when it has parameters."""
    p = next(D.parameters(), None)
    if p is not None:
        check_device("x_real", x_real, p.device, "the discriminator's parameters")


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


# --- routing: one autograd node feeds the objective's gradient parts into the networks ------
class _Plan:
    """What :class:`_Route` sends where, for one call of :func:`single_loss`.

    ``cotangents``: per differentiable input of the route after ``x_fake``, the gradient it
    receives (unscaled; the incoming scale multiplies it); ``nested``: for the split
    routing, ``(outputs, cotangents, x_leaf)`` of the generator's stream, a vector-Jacobian
    product of D's fake forward with respect to its input only.
    """

    __slots__ = ("cotangents", "nested", "unit_scale")

    def __init__(self, cotangents: list[Tensor], nested: Optional[tuple[list[Tensor], list[Tensor], Tensor]]) -> None:
        self.cotangents = cotangents
        self.nested = nested
        #: the caller promises an incoming gradient of exactly 1 (SingleLossStep without a
        #: GradScaler or accumulation): the cotangents are used as they are
        self.unit_scale = False


def _scaled(g: Tensor, c: Optional[Tensor], dtype: torch.dtype) -> Tensor:
    """``g * c`` in ``dtype`` (float64 stays float64; half types scale in float32); ``c``
    None: ``g`` itself in ``dtype``."""
    if c is not None:
        g = g * c if g.dtype == torch.float64 else g.float() * c
    return g if g.dtype == dtype else g.to(dtype)


class _Route(torch.autograd.Function):
    """The single loss's one autograd node: value ``loss_d + loss_g``; its backward hands
    each network output the objective's gradient part for it (and, for the split
    routing, first runs the generator's stream through D's fake forward to its input).

    ``apply(plan, loss_d, loss_g, x_fake, *outputs)``: ``outputs`` are the D outputs that
    receive ``plan.cotangents`` (scores and raw outputs of the forwards).  So a training
    step's backward is one pass of the engine over G, D and this node, plus, for
    "split", one nested product: D's fake forward w.r.t. its input (no weight gradients).
    With incoming scale ``c`` (a GradScaler's, ``1 / accumulation``) every gradient is
    multiplied by ``c``: the loss's gradient is linear in it.
    """

    @staticmethod
    def forward(ctx, plan: _Plan, loss_d: Tensor, loss_g: Tensor, x_fake: Tensor, *outputs: Tensor) -> Tensor:  # type: ignore[override]
        ctx.plan = plan
        ctx.dtypes = [o.dtype for o in outputs]
        return (loss_d + loss_g).float()

    @staticmethod
    def backward(ctx, c: Tensor) -> tuple[Optional[Tensor], ...]:  # type: ignore[override]
        plan = ctx.plan
        if plan is None:
            raise RuntimeError(
                "single_loss supports one backward per loss (the discriminator's forward is released after "
                "it); call single_loss again for another backward"
            )
        ctx.plan = None
        unit = plan.unit_scale  # the cotangents as they are (the engine casts them to the outputs' dtypes)
        grad_x = None
        if plan.nested is not None and ctx.needs_input_grad[3]:
            outputs, cotangents, x_leaf = plan.nested
            if not unit:
                cotangents = [_scaled(g, c, o.dtype) for o, g in zip(outputs, cotangents)]
            (grad_x,) = torch.autograd.grad(outputs, (x_leaf,), cotangents, retain_graph=True)
        if unit:
            return (None, None, None, grad_x, *plan.cotangents)
        return (None, None, None, grad_x, *(
            _scaled(g, c, dtype) if need else None
            for dtype, g, need in zip(ctx.dtypes, plan.cotangents, ctx.needs_input_grad[4:])
        ))



def _objective_input(d: Decomposition) -> Tensor:
    """``code + score`` per row: what the fused objective reads (detached).

    Its row means are the scores the losses train on (D's whole output, see
    :mod:`ogan_plugin.scores`) and, since Pearson's rho ignores a constant shift of a row,
    its correlation with z is the head's.  So ``ogan_objective`` (which takes scores as row
    means) needs no change for conditional discriminators."""
    return (d.code + d.score.unsqueeze(1).to(d.code.dtype)).detach()


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
    unit_scale: bool = False,
) -> SingleLossOutput:
    """The work of :func:`single_loss`, on checked arguments (the weights resolved).
    ``unit_scale``: the caller backpropagates the loss with a gradient of exactly 1 (see
    :class:`_Plan`)."""
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
    w, wg = corr_weight, corr_weight_g

    def objective(d_real: Decomposition, d_fake: Decomposition) -> ObjectiveOutput:
        return fused(
            _objective_input(d_real), _objective_input(d_fake), z_flat, dist, loss_arg, w, wg, eps
        )

    if routing == "split":
        # D's input for the fakes: a leaf cut from G's graph.
        x_leaf = x_fake.detach().requires_grad_(x_fake.requires_grad)
        if concat_batches:
            two = () if y is None else (torch.cat([y, y_fake]),)
            d_all = D.decompose(torch.cat([x_real, x_leaf.to(x_real.dtype)]), *two)
            out = objective(_rows(d_all, slice(0, B)), _rows(d_all, slice(B, None)))
            zero_rows, zero_scores = torch.zeros_like(out.corr), torch.zeros_like(out.slope_real)
            plan = _Plan(
                [torch.cat([zero_rows, w * out.corr]), torch.cat([out.slope_real, out.slope_fake_d])],
                ([d_all.raw, d_all.score],
                 [torch.cat([zero_rows, wg * out.corr]), torch.cat([zero_scores, out.slope_fake_g])], x_leaf),
            )
            outputs = [d_all.raw, d_all.score]
        else:
            parts_real, parts_fake = D._run(x_real, *real_labels), D._run(x_leaf, *fake_labels)
            raw_real, raw_fake = parts_real[0], parts_fake[0]
            if (
                fused is ogan_objective_reference
                and D._score_is_mean(*parts_real)
                and D._score_is_mean(*parts_fake)
                and dense_available(raw_real, raw_fake, z_flat)
            ):
                # the scores are the rows' means: their gradients join the rows' (one (B, n)
                # gradient per stream, no score stream), computed with the values in NumPy
                out = objective_dense(raw_real.detach(), raw_fake.detach(), z_flat, dist, loss_arg, w, wg, eps)
                grad_real, grad_fake_d, grad_fake_g = out.grads
                plan = _Plan([grad_real, grad_fake_d], ([raw_fake], [grad_fake_g], x_leaf))
                outputs = [raw_real, raw_fake]
            else:
                d_real, d_fake = D._decomposition(*parts_real), D._decomposition(*parts_fake)
                out = objective(d_real, d_fake)
                plan = _Plan(
                    [out.slope_real, w * out.corr, out.slope_fake_d],
                    ([d_fake.raw, d_fake.score], [wg * out.corr, out.slope_fake_g], x_leaf),
                )
                outputs = [d_real.score, d_fake.raw, d_fake.score]
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
        # G's stream into E(x_fake); D's minus G's into E(sg(x_fake)): the two cancel on D's parameters
        plan = _Plan(
            [out.slope_real, wg * out.corr, out.slope_fake_g, (w - wg) * out.corr, out.slope_fake_d - out.slope_fake_g],
            None,
        )
        outputs = [d_real.score, d_fake.raw, d_fake.score, d_sg.raw, d_sg.score]
    plan.unit_scale = unit_scale
    loss_d, loss_g = out.loss_d.detach(), out.loss_g.detach()
    loss = _Route.apply(plan, loss_d, loss_g, x_fake, *outputs)
    return SingleLossOutput(loss, loss_d.float(), loss_g.float(), out.rho.detach(), generated)


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
    _check_on_discriminator(x_real, D)
    _check_augment(augment)
    y, y_fake = _check_labels(generator, D, y, y_fake, x_real.shape[0], x_real.device)
    out = _single_loss(
        generator, D, x_real, z, adv, loss, weight_d, weight_g, routing,
        bool(concat_batches), backend, eps, augment, y, y_fake,
    )
    return out if return_terms else out.loss
