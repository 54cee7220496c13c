"""Using the encoder: reconstructions, interpolations and inversions through the generator.

- :func:`reconstruct`: ``G(scale * encode(x))``, one forward each way;
- :func:`interpolate`: decode the line between two images' codes;
- :func:`invert`: optimise ``z`` so that ``G(z)`` matches ``x``, started from the
  encoder's code (or a random/mean/given start, for comparison): an :class:`Inversion`.

Each takes ``z_shape=``, the per-sample shape the generator takes its noise in:
``(z_dim, 1, 1)`` for the PyTorch DCGAN example's generator, fed
``torch.randn(B, z_dim, 1, 1)``.  Without it, the layout hook mode saw the generator take
(``OGANHook.z_shape``, while the hook is attached) or a ``SingleLossStep`` was built with is
used, else flat codes ``(B, z_dim)``; a generator that rejects flat codes raises a
``ValueError`` that names ``z_shape`` (:mod:`ogan_plugin.layout`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin.checks import check_int, check_number, named_or_callable
from ogan_plugin.head import OGANDiscriminator, as_wrapped
from ogan_plugin.labels import check_conditional, check_labels, label_args
from ogan_plugin.layout import GeneratorFeed, generator_feed
from ogan_plugin.networks import device_dtype, eval_mode

__all__ = ["reconstruct", "interpolate", "invert", "Inversion", "LOSSES", "INITS", "OPTIMIZERS", "DEFAULT_LR"]


@torch.no_grad()
def reconstruct(
    generator: Callable[..., Tensor],
    wrapped_discriminator: OGANDiscriminator,
    x: Tensor,
    scale: float = 0.9,
    *,
    y: Optional[Tensor] = None,
    z_shape: Optional[Sequence[int]] = None,
) -> Tensor:
    """``G(scale * encode(x))``: images rebuilt from their codes (METHOD.md section 5).

    Runs without gradients and does not change the modules' train/eval mode (put them in
    eval mode first when they use BatchNorm or Dropout).

    Args:
        generator: the generator.
        wrapped_discriminator: ``ogan_plugin.wrap(D, z_dim)`` (or DDP around it).
        x: images (B, ...).
        scale: factor on the standardized code.
        y: class labels of ``x`` for a conditional GAN: ``G(scale * encode(x, y), y)``.
        z_shape: the per-sample shape G takes its noise in, e.g. ``(z_dim, 1, 1)``
            (default: as known from hook mode or a ``SingleLossStep``, else ``(z_dim,)``;
            see the module doc).

    Returns:
        The reconstructions, as the generator returns them.

    Raises:
        ValueError: the generator rejects flat codes and no ``z_shape`` is known (the
            message names ``z_shape``), or ``z_shape`` does not have ``z_dim`` elements.
    """
    d = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
    check_number("scale", scale, positive=True)
    check_conditional(generator, d, y, x.shape[0])
    return reconstruct_checked(generator, d, x, scale, y, generator_feed(generator, z_shape, d.z_dim, d))


@torch.no_grad()
def reconstruct_checked(
    generator: Callable[..., Tensor], d: OGANDiscriminator, x: Tensor, scale: float, y: Optional[Tensor],
    feed: GeneratorFeed,
) -> Tensor:
    """:func:`reconstruct` on arguments already checked (``d`` resolved by
    :func:`~ogan_plugin.head.as_wrapped`), for callers that check once and run in batches;
    ``feed`` (:func:`~ogan_plugin.layout.generator_feed`) calls the generator."""
    labels = label_args(y)
    code = d.encode(x, *labels)
    return feed(scale * code.to(_generator_dtype(generator, code)), *labels)


@torch.no_grad()
def interpolate(
    generator: Callable[..., Tensor],
    wrapped_discriminator: OGANDiscriminator,
    x_a: Tensor,
    x_b: Tensor,
    steps: int = 8,
    scale: float = 0.9,
    *,
    y: Optional[Tensor] = None,
    y_b: Optional[Tensor] = None,
    z_shape: Optional[Sequence[int]] = None,
) -> Tensor:
    """Decode codes on the line from ``encode(x_a)`` to ``encode(x_b)``.

    Args:
        generator: the generator.
        wrapped_discriminator: ``ogan_plugin.wrap(D, z_dim)`` (or DDP around it).
        x_a: the images the paths start from (B, ...).
        x_b: the images the paths end at, of ``x_a``'s shape.
        steps: points on each line (>= 2), both ends included.
        scale: factor on the standardized codes.
        y: class labels of ``x_a`` (conditional GANs; also of ``x_b`` unless ``y_b``).
        y_b: class labels of ``x_b``.  Where they differ from ``y``, floating-point
            (one-hot) labels are interpolated along with the codes; integer labels must
            then be equal (``ValueError``).
        z_shape: the per-sample shape G takes its noise in, as in :func:`reconstruct`.

    Returns:
        A tensor (B, steps, *image_shape): row i morphs x_a[i] into x_b[i]; the first and
        last columns are the two reconstructions.
    """
    d = as_wrapped(wrapped_discriminator, "wrapped_discriminator")
    check_number("scale", scale, positive=True)
    check_int("steps", steps, 2)
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    if y is None and y_b is not None:
        raise ValueError("y_b was given without y: give the labels of x_a as y")
    B = x_a.shape[0]
    check_conditional(generator, d, y, B)
    feed = generator_feed(generator, z_shape, d.z_dim, d)
    if y_b is not None:
        check_labels(y_b, B, "y_b")
        if y_b.shape != y.shape or y_b.dtype != y.dtype:
            raise ValueError(f"y_b must have y's shape and dtype, got {tuple(y_b.shape)} {y_b.dtype} "
                             f"and {tuple(y.shape)} {y.dtype}")
        if not y.is_floating_point() and not torch.equal(y, y_b):
            raise ValueError("y_b: integer class labels cannot be interpolated; pass one-hot float labels, "
                             "or equal labels")
    ca, cb = d.encode(x_a, *label_args(y)), d.encode(x_b, *label_args(y if y_b is None else y_b))
    t = torch.linspace(0, 1, steps, device=ca.device, dtype=ca.dtype).view(1, steps, 1)
    codes = (1 - t) * ca[:, None] + t * cb[:, None]  # (B, steps, z)
    labels: tuple = ()
    if y is not None:
        if y_b is None or not y.is_floating_point():
            labels = (y.repeat_interleave(steps, dim=0),)
        else:
            tl = t.view(1, steps, *([1] * (y.dim() - 1))).to(y.dtype)
            labels = (((1 - tl) * y[:, None] + tl * y_b[:, None]).flatten(0, 1),)
    out = feed(scale * codes.flatten(0, 1).to(_generator_dtype(generator, codes)), *labels)
    return out.view(B, steps, *out.shape[1:])


def _generator_dtype(generator: Any, code: Tensor) -> torch.dtype:
    """The dtype codes are fed to ``generator`` in: its parameters' (the code's own for a
    generator without floating-point parameters)."""
    return device_dtype(generator, default=(code.device, code.dtype))[1]


# --- inversion: optimise z so that G(z) matches x ---------------------------------------------
#: the built-in per-image losses of :func:`invert` (reconstruction, target) -> (B,)
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": lambda rec, x: (rec - x).pow(2).flatten(1).mean(1),
    "l1": lambda rec, x: (rec - x).abs().flatten(1).mean(1),
}

#: :func:`invert`'s default learning rate (Adam on z; docs/inversion.md compares 0.05, 0.1, 0.2)
DEFAULT_LR = 0.1

#: the start points :func:`invert` knows by name (a tensor of codes is the fourth kind)
INITS = ("encoder", "random", "mean")

#: optimizers :func:`invert` knows by name (a callable ``(params, lr) -> Optimizer`` also works)
OPTIMIZERS: dict[str, Callable[[list[Tensor], float], torch.optim.Optimizer]] = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}


@dataclass
class Inversion:
    """What :func:`invert` found, one row per image, every tensor on the generator's device.

    Attributes:
        z: (N, *z_shape) the best code found per image (lowest objective seen), in G's
            dtype and input layout (``(N, z_dim)`` for a generator that takes flat
            codes): ``G(z)`` gives ``reconstruction``.
        reconstruction: (N, *image_shape) ``G(z)``, detached.
        loss: (N,) reconstruction loss of ``G(z)`` against the image (without the prior
            term), float32 (float64 for a float64 generator).
        history: (T + 1, N), the same dtype: row ``t`` holds each image's loss (of its best
            code so far) after ``t`` steps; row 0 is the start.  ``T`` is the number of
            steps run (fewer than asked when every image stopped early on ``tol``).  With
            ``prior=0`` every column is non-increasing and ``history[-1] == loss``.
        steps: (N,) int64 steps each image ran before it stopped (``tol``) or the run ended.
        start: (N, *z_shape) the code each image started from (for ``init="random"`` with
            restarts: the start of the restart that was kept).
    """

    z: Tensor
    reconstruction: Tensor
    loss: Tensor
    history: Tensor
    steps: Tensor
    start: Tensor


def _module_state(module: object) -> list[tuple[Tensor, bool]]:
    return [(p, p.requires_grad) for p in module.parameters()] if isinstance(module, nn.Module) else []


def invert(
    generator: Callable[..., Tensor],
    wrapped_discriminator: OGANDiscriminator,
    x: Tensor,
    steps: int = 100,
    lr: float = DEFAULT_LR,
    loss: Union[str, Callable[[Tensor, Tensor], Tensor]] = "mse",
    y: Optional[Tensor] = None,
    init: Union[str, Tensor] = "encoder",
    *,
    scale: float = 0.9,
    restarts: int = 1,
    tol: Optional[float] = None,
    patience: int = 10,
    prior: float = 0.0,
    optimizer: Union[str, Callable[[list[Tensor], float], torch.optim.Optimizer]] = "adam",
    batch_size: Optional[int] = None,
    seed: int = 0,
    callback: Optional[Callable[[int, Tensor], None]] = None,
    z_shape: Optional[Sequence[int]] = None,
) -> Inversion:
    """Find codes ``z`` with ``G(z) ~ x``: optimisation-based inversion started from the encoder.

    Minimises ``loss(G(z), x) + prior * mean(z ** 2)`` over ``z`` alone, one code per
    image, all images of a batch at once (each image's code gets its own gradient, so the
    result does not depend on the batching).  The default start is the encoder's code,
    scaled as :func:`reconstruct` does (METHOD.md section 7): it starts close to the
    answer, so far fewer steps reach a given loss than from a random or the mean code.

    G and D run in eval mode (BatchNorm uses its running statistics, spectral norm does no
    power iteration), and G's parameters are excluded from autograd while it runs; both
    modules get their train/eval modes and ``requires_grad`` flags back afterwards, and
    no weight or buffer of G or D changes.

    Args:
        generator: ``G``, called as ``G(z)`` (or ``G(z, y)``); an ``nn.Module`` or any
            differentiable callable.
        wrapped_discriminator: ``ogan_plugin.wrap(D, z_dim)``: gives ``z_dim`` and the
            encoder's start.
        x: (N, ...) images shaped like G's output, finite; moved to G's device and dtype.
        steps: optimizer steps (0: no optimisation, the start point itself).
        lr: the optimizer's learning rate on ``z``.
        loss: ``"mse"`` or ``"l1"`` (per-pixel mean per image), or a differentiable
            callable ``(reconstruction, target) -> (N,)`` loss per image.
        y: labels of a conditional pair (integer ``(N,)`` or one-hot ``(N, K)``): ``G(z, y)``
            and ``D.encode(x, y)``.
        init: the start: ``"encoder"`` (``scale * D.encode(x)``), ``"random"``
            (``z ~ N(0, I)``, ``restarts`` of them per image), ``"mean"`` (``z = 0``, the
            prior's mean), or a tensor of codes, (N, z_dim) or (N, *z_shape).
        scale: factor on the standardized code for ``init="encoder"``.
        restarts: independent random starts per image for ``init="random"`` (run side by
            side; the one with the lowest final objective is kept per image).
        tol: per-image stop: an image stops once its best objective has improved by less
            than ``tol`` (relative) over the last ``patience`` steps; ``None`` runs every
            step.  The run ends early when every image has stopped.
        patience: the window of ``tol``, in steps.
        prior: weight of ``mean(z ** 2)`` (a Gaussian prior on z) in the objective; 0 = off.
        optimizer: ``"adam"`` (default) or a callable ``(params, lr) -> torch.optim.Optimizer``
            (e.g. ``lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9)``; mind that a
            per-pixel mean loss has small gradients, so SGD needs a far larger ``lr``).
        batch_size: images optimised together (default: all of them).
        seed: seed of the random starts (a CPU generator: the same starts on every device).
        callback: called as ``callback(step, z)`` after the start (step 0) and after every
            step, ``z`` being the best codes so far of the current batch's images (batches
            run one after another), in G's input layout; for progress bars and snapshots.
        z_shape: the per-sample shape G takes its noise in, e.g. ``(z_dim, 1, 1)`` for the
            DCGAN example's generator (default: the layout hook mode saw or a
            ``SingleLossStep`` was built with, else ``(z_dim,)``; see the module doc).  The
            optimisation runs on the same ``z_dim`` numbers either way.

    Returns:
        :class:`Inversion`: ``z``, ``reconstruction``, ``loss`` per image, ``history``,
        ``steps`` per image and ``start``.

    Raises:
        TypeError: ``wrapped_discriminator`` is not wrapped, ``x`` is not a tensor, ``y``
            is not a tensor of labels, ``generator``/``callback`` or the ``loss``/
            ``optimizer`` given is not callable.
        ValueError: a bad number (``steps < 0``, ``lr <= 0``, ...), ``x`` not a non-empty
            floating-point batch, ``init`` neither a known name nor a tensor of codes, NaN or
            inf in ``x`` or ``init``, shapes that do not match (the message names the
            argument), or a generator that rejects flat codes while no ``z_shape`` is
            known (the message names ``z_shape``).
    """
    d = as_wrapped(wrapped_discriminator, "wrapped_discriminator")  # DDP around a wrapped D: a view through it
    if not callable(generator):
        raise TypeError(f"generator must be callable, got {type(generator).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] == 0 or not x.is_floating_point():
        raise ValueError(f"x must be a non-empty floating-point batch (N, ...), got {x.dtype} of shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf values")
    n = x.shape[0]
    steps = check_int("steps", steps, 0)
    lr = check_number("lr", lr, positive=True)
    scale = check_number("scale", scale, positive=True)
    prior = check_number("prior", prior, minimum=0.0)
    restarts = check_int("restarts", restarts, 1)
    patience = check_int("patience", patience, 1)
    seed = check_int("seed", seed, 0)
    if tol is not None:
        tol = check_number("tol", tol, minimum=0.0)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    loss_fn = named_or_callable("loss", loss, LOSSES)
    make_opt = named_or_callable("optimizer", optimizer, OPTIMIZERS)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    check_conditional(generator, d, y, n)
    feed = generator_feed(generator, z_shape, d.z_dim, d)
    layout = feed.layout.shape
    if isinstance(init, Tensor):
        if init.shape not in ((n, d.z_dim), (n, *layout)):
            raise ValueError(f"init must have shape ({n}, {d.z_dim}) or {(n, *layout)} (one code per image), "
                             f"got {tuple(init.shape)}")
        init = init.reshape(n, d.z_dim)
        if not bool(torch.isfinite(init).all()):
            raise ValueError("init contains NaN or inf values")
    elif init not in INITS:
        raise ValueError(f"init must be one of {INITS} or a (N, z_dim) tensor, got {init!r}")
    if restarts > 1 and init != "random":
        raise ValueError(f"restarts={restarts} needs init='random' (the other starts are deterministic)")

    device, dtype = device_dtype(generator, d)
    x = x.to(device=device, dtype=dtype)
    y = None if y is None else y.to(device)
    if init == "random":  # drawn at once, so that the starts do not depend on batch_size
        drawn = torch.randn(restarts, n, d.z_dim, generator=torch.Generator().manual_seed(seed))
    flags = _module_state(generator)
    parts = []
    try:
        with eval_mode(generator, d):
            for p, _ in flags:
                p.requires_grad_(False)
            size = batch_size or n
            for i in range(0, n, size):
                xb, yb = x[i : i + size], None if y is None else y[i : i + size]
                if isinstance(init, Tensor):
                    z0 = init[i : i + size].to(device=device, dtype=dtype)
                elif init == "encoder":
                    with torch.no_grad():
                        z0 = scale * d.encode(xb, *label_args(yb)).to(dtype)
                elif init == "mean":
                    z0 = torch.zeros(xb.shape[0], d.z_dim, device=device, dtype=dtype)
                else:
                    z0 = drawn[:, i : i + size].flatten(0, 1).to(device=device, dtype=dtype)
                parts.append(
                    _invert_batch(feed, xb, yb, z0, restarts, steps, lr, loss_fn, prior, tol, patience, make_opt, callback)
                )
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    z, rec, losses, histories, used, starts = zip(*parts)
    length = max(h.shape[0] for h in histories)  # batches that all stopped early (tol) hold their last row
    history = torch.cat([torch.cat([h, h[-1:].expand(length - h.shape[0], -1)]) for h in histories], dim=1)
    return Inversion(torch.cat(z).view(n, *layout), torch.cat(rec), torch.cat(losses), history, torch.cat(used),
                     torch.cat(starts).view(n, *layout))


def _invert_batch(G, x, y, z0, restarts, steps, lr, loss_fn, prior, tol, patience, make_opt, callback) -> tuple:
    """One batch of :func:`invert` (inputs checked); rows of ``z0`` (flat, (rows, z_dim))
    are ``restarts`` blocks of the batch's images; ``G`` is a
    :class:`~ogan_plugin.layout.GeneratorFeed` (flat codes in).  Returns the fields of
    :class:`Inversion` in order, codes flat."""
    b = x.shape[0]
    if restarts > 1:
        x = x.repeat(restarts, *([1] * (x.dim() - 1)))
        y = None if y is None else y.repeat(restarts, *([1] * (y.dim() - 1)))
    rows = z0.shape[0]
    z = z0.clone().requires_grad_(True)
    opt = make_opt([z], lr)
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    best_obj = torch.full((rows,), math.inf, device=z.device, dtype=acc)
    best_loss = best_obj.clone()
    best_z = z0.clone()
    ref_obj = best_obj.clone()  # best objective at the last improvement by more than tol
    ref_step = torch.zeros(rows, dtype=torch.long, device=z.device)
    used = torch.full((rows,), steps, dtype=torch.long, device=z.device)
    active = torch.ones(rows, dtype=torch.bool, device=z.device)
    idx: Optional[Tensor] = None  # rows still running (None: all of them)
    history = []
    checked = False
    for t in range(steps + 1):
        zi = z if idx is None else z[idx]
        xi, yi = (x, y) if idx is None else (x[idx], None if y is None else y[idx])
        with torch.enable_grad() if t < steps else torch.no_grad():
            rec = G(zi, *label_args(yi))
            if not checked:
                if rec.shape != xi.shape:
                    raise ValueError(
                        f"the generator's images {tuple(rec.shape[1:])} differ from x's {tuple(xi.shape[1:])}"
                    )
                per_image = loss_fn(rec, xi)
                if not isinstance(per_image, Tensor) or per_image.shape != (xi.shape[0],):
                    got = tuple(per_image.shape) if isinstance(per_image, Tensor) else type(per_image).__name__
                    raise ValueError(f"loss must return one value per image, shape ({xi.shape[0]},), got {got}")
                checked = True
            else:
                per_image = loss_fn(rec, xi)
            objective = per_image + prior * zi.pow(2).mean(1) if prior else per_image
        with torch.no_grad():
            obj, lo = objective.detach().to(acc), per_image.detach().to(acc)
            better = obj < (best_obj if idx is None else best_obj[idx])
            if idx is None:
                best_obj = torch.where(better, obj, best_obj)
                best_loss = torch.where(better, lo, best_loss)
                best_z = torch.where(better[:, None], zi.detach(), best_z)
            else:
                keep = idx[better]
                best_obj[keep], best_loss[keep], best_z[keep] = obj[better], lo[better], zi.detach()[better]
            history.append(best_loss.clone())
            if callback is not None:
                picked = _pick(best_z, best_obj, restarts, b)[0]
                callback(t, picked.view(picked.shape[0], *G.layout.shape))
            if t == steps:
                break
            if tol is not None:
                moved = best_obj < ref_obj - tol * ref_obj.abs() if t else torch.ones_like(active)
                ref_obj = torch.where(moved, best_obj, ref_obj)
                ref_step = torch.where(moved, torch.full_like(ref_step, t), ref_step)
                stop = active & (t - ref_step >= patience)
                if bool(stop.any()):
                    used[stop] = t
                    active &= ~stop
                    if not bool(active.any()):
                        break
                    idx = active.nonzero().flatten()
        (z.grad,) = torch.autograd.grad(objective.sum(), z)  # rows stopped this step: their z is no longer read
        opt.step()
    z_best, pick = _pick(best_z, best_obj, restarts, b)
    with torch.no_grad():
        rows_kept = pick * b + torch.arange(b, device=pick.device)
        rec = G(z_best, *label_args(None if y is None else y[rows_kept]))
    hist = torch.stack(history).view(len(history), restarts, b).amin(1)
    return z_best, rec.detach(), best_loss[rows_kept], hist, used[rows_kept], z0[rows_kept]


def _pick(best_z: Tensor, best_obj: Tensor, restarts: int, b: int) -> tuple[Tensor, Tensor]:
    """The best of ``restarts`` blocks per image: (codes (b, z_dim), restart index (b,))."""
    if restarts == 1:
        return best_z, torch.zeros(b, dtype=torch.long, device=best_z.device)
    pick = best_obj.view(restarts, b).argmin(0)
    return best_z.view(restarts, b, -1)[pick, torch.arange(b, device=best_z.device)], pick
