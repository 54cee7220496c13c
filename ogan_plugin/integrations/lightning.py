"""PyTorch Lightning integration (optional extra ``lightning``).

Two ways in:

* :class:`OGANModule`, a ready ``LightningModule``: the single O-GAN loss
  (:func:`ogan_plugin.single_loss`), automatic optimization with one optimizer over both
  networks, logging of ``ogan/loss``, ``ogan/loss_d``, ``ogan/loss_g`` and ``ogan/rho``,
  and optional sample / reconstruction grids logged as images every N steps::

      from ogan_plugin.integrations.lightning import OGANModule
      model = OGANModule(G, D, z_dim=128, image_every_n_steps=500)
      lightning.Trainer(max_steps=10_000).fit(model, loader)

  A class-conditional GAN (``G(z, y)``, ``D(x, y)``) trains from ``(images, labels)``
  batches with ``OGANModule(G, D, z_dim, conditional=True)``.

* :class:`OGANCallback`, for an existing GAN ``LightningModule`` with manual
  optimization (the usual way to write GANs in Lightning 2): it wraps the module's
  discriminator before the optimizers are built and turns on hook mode
  (:mod:`ogan_plugin.hook`), so the module's own ``training_step`` gets the
  correlation term in both updates; rho is logged as ``ogan/rho``::

      trainer = lightning.Trainer(callbacks=[OGANCallback(z_dim=100)])

Importing this module needs ``lightning`` (``pip install 'ogan-plugin[lightning]'``);
``import ogan_plugin`` does not.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ogan_plugin.integrations.lightning needs PyTorch Lightning: install the optional extra "
        "with pip install 'ogan-plugin[lightning]'"
    ) from exc

from ogan_plugin.images import tile
from ogan_plugin.corr_weights import Ramp, resolve_hook_weights
from ogan_plugin.hook import OGANHook, attach
from ogan_plugin.layout import remember_layout
from ogan_plugin.wrapping import wrap
from ogan_plugin.kernels.pearson import EPS
from ogan_plugin.labels import label_args
from ogan_plugin.losses import AdversarialLoss
from ogan_plugin.networks import eval_mode
from ogan_plugin.training import ROUTINGS, single_loss

__all__ = ["OGANModule", "OGANCallback", "image_grid_tensor"]


def image_grid_tensor(images: Tensor, nrow: int = 8, padding: int = 2, value_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Tile a batch (N, C, H, W) into one (C, H', W') float image in [0, 1] (for loggers)."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    lo, hi = value_range
    x = ((images.detach().float() - lo) / (hi - lo)).clamp(0, 1).cpu()
    return tile(x, min(nrow, x.shape[0]), padding, 1.0)


def _first_tensor(batch: Any) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return batch[0]  # (images, labels) from a TensorDataset / torchvision dataset
    if isinstance(batch, dict):
        for key in ("image", "images", "x", "input"):
            if isinstance(batch.get(key), Tensor):
                return batch[key]
    raise TypeError(
        "OGANModule expects batches that are a tensor, a (tensor, ...) tuple or a dict with an "
        f"'image'/'x' entry; got {type(batch).__name__} (override get_real_batch to adapt)"
    )


#: dict keys searched for the labels of a conditional batch
LABEL_KEYS = ("label", "labels", "y", "class", "target")


def _labels(batch: Any) -> Tensor:
    if isinstance(batch, (list, tuple)) and len(batch) > 1 and isinstance(batch[1], Tensor):
        return batch[1]  # (images, labels)
    if isinstance(batch, dict):
        for key in LABEL_KEYS:
            if isinstance(batch.get(key), Tensor):
                return batch[key]
    raise TypeError(
        "OGANModule(conditional=True) expects (images, labels) batches or a dict with a "
        f"{'/'.join(repr(k) for k in LABEL_KEYS)} entry; got {type(batch).__name__} (override get_labels to adapt)"
    )


class OGANModule(pl.LightningModule):
    """A ``LightningModule`` training an O-GAN with the single loss.

    Args:
        generator: maps z of shape ``(B, *z_shape)`` to a batch shaped like the real data.
        discriminator: the discriminator, plain (it is wrapped here) or already wrapped.
        z_dim: the noise size.
        loss: as in :func:`ogan_plugin.single_loss`.
        corr_weight: as in :func:`ogan_plugin.single_loss`.
        routing: as in :func:`ogan_plugin.single_loss`.
        lr: learning rate of the default optimizer.
        optimizer: ``callable(parameters) -> torch.optim.Optimizer`` for the one optimizer
            over both networks; default ``RMSprop(lr=lr, alpha=0.99)`` (the official recipe).
        z_shape: per-sample shape of z (default ``(z_dim,)``; ``(z_dim, 1, 1)`` for
            DCGAN-style generators).
        image_every_n_steps: every this many optimizer steps, log a grid of samples (from
            fixed noise) and one of reconstructions (each real image above its
            reconstruction ``G(0.9 * encode(x))``) to every logger that takes images
            (``log_image`` as in W&B / Neptune, or TensorBoard's ``add_image``); 0 turns
            it off.  The latest grids are kept in :attr:`last_images` either way.
            Needs image batches (B, C, H, W) in [-1, 1].
        num_images: images per grid.
        backend: as in :func:`ogan_plugin.single_loss`.
        eps: as in :func:`ogan_plugin.single_loss`.
        augment: differentiable augmentation of D's inputs, as in
            :func:`ogan_plugin.single_loss` (an ``nn.Module`` such as
            :class:`~ogan_plugin.RandomTranslate` becomes a submodule: its random stream is
            saved in Lightning's checkpoints).
        corr_weight_g: the correlation weight in the generator's loss, as in
            :func:`ogan_plugin.single_loss` (None: ``corr_weight``).
        conditional: a class-conditional GAN: batches are ``(images, labels)`` (or dicts
            with a ``"label"``/``"y"`` entry), the labels reach ``G(z, y)`` and ``D(x, y)``
            in training (fakes get the real batch's labels) and in the image grids
            (samples and reconstructions with the batch's labels).  Wrap a
            discriminator with a tuple/dict output yourself first when its score needs
            naming: ``ogan_plugin.wrap(D, z_dim, score=...)``.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        z_dim: int,
        loss: Union[str, AdversarialLoss] = "qp",
        corr_weight: float = 0.5,
        routing: str = "split",
        lr: float = 1e-4,
        optimizer: Optional[Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]] = None,
        z_shape: Optional[Sequence[int]] = None,
        image_every_n_steps: int = 0,
        num_images: int = 16,
        backend: Optional[str] = None,
        eps: float = EPS,
        augment: Optional[Callable[[Tensor], Tensor]] = None,
        corr_weight_g: Optional[float] = None,
        conditional: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(generator, nn.Module):
            raise TypeError(f"generator must be an nn.Module, got {type(generator).__name__}")
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        for name, value in (("image_every_n_steps", image_every_n_steps), ("num_images", num_images)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "image_every_n_steps" else 1):
                raise ValueError(f"{name} must be a non-negative int (num_images >= 1), got {value!r}")
        if optimizer is not None and not callable(optimizer):
            raise TypeError(f"optimizer must be callable(parameters) -> Optimizer, got {type(optimizer).__name__}")
        self.generator = generator
        self.discriminator = wrap(discriminator, z_dim)
        self.z_dim = z_dim
        self.z_shape = (z_dim,) if z_shape is None else tuple(int(s) for s in z_shape)
        if torch.Size(self.z_shape).numel() != z_dim:
            raise ValueError(f"z_shape={self.z_shape} must have z_dim={z_dim} elements")
        if z_shape is not None:  # reconstruct / invert / evaluate feed G codes in this layout
            remember_layout(self.z_shape, generator, self.discriminator)
        self.loss_name = loss
        self.corr_weight = corr_weight
        self.corr_weight_g = corr_weight_g
        self.routing = routing
        self.lr = lr
        self.optimizer_factory = optimizer
        self.image_every_n_steps = image_every_n_steps
        self.num_images = num_images
        self.backend = backend
        self.eps = eps
        self.augment = augment
        self.conditional = bool(conditional)
        #: the latest logged grids: {"samples": (C, H, W), "reconstructions": (C, H, W)}
        self.last_images: dict[str, Tensor] = {}
        self._fixed_z = torch.randn((num_images, *self.z_shape), generator=torch.Generator().manual_seed(0))
        self._warned_images = False

    # -- Lightning API -------------------------------------------------------------------------
    def forward(self, z: Tensor) -> Tensor:
        """Generate from noise ``z``."""
        return self.generator(z)

    def get_real_batch(self, batch: Any) -> Tensor:
        """The real samples of a dataloader batch (override for other batch layouts)."""
        return _first_tensor(batch)

    def get_labels(self, batch: Any) -> Optional[Tensor]:
        """The labels of a batch when ``conditional`` (else None); override for other layouts."""
        return _labels(batch) if self.conditional else None

    def sample_z(self, batch_size: int, like: Tensor) -> Tensor:
        """Standard normal noise ``(batch_size, *z_shape)`` on ``like``'s device."""
        p = next(self.generator.parameters(), None)
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        return torch.randn((batch_size, *self.z_shape), device=like.device, dtype=dtype)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = self.get_real_batch(batch)
        z = self.sample_z(x.shape[0], x)
        out = single_loss(
            self.generator, self.discriminator, x, z, self.loss_name, self.corr_weight, self.routing,
            backend=self.backend, eps=self.eps, augment=self.augment, corr_weight_g=self.corr_weight_g,
            return_terms=True, y=self.get_labels(batch),
        )
        rho = out.rho.float().mean()
        self.log_dict(
            {"ogan/loss": out.loss.detach(), "ogan/loss_d": out.loss_d, "ogan/loss_g": out.loss_g},
            on_step=True, batch_size=x.shape[0],
        )
        self.log("ogan/rho", rho, on_step=True, prog_bar=True, batch_size=x.shape[0])
        return out.loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is not None:
            return self.optimizer_factory(params)
        return torch.optim.RMSprop(params, lr=self.lr, alpha=0.99)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        n = self.image_every_n_steps
        if n and self.global_step % n == 0:
            self.log_images(self.get_real_batch(batch), self.get_labels(batch))

    # -- images ----------------------------------------------------------------------------------
    @torch.no_grad()
    def make_images(self, x_real: Tensor, y: Optional[Tensor] = None) -> dict[str, Tensor]:
        """Sample and reconstruction grids (eval mode for the duration, then restored).

        With labels ``y`` (conditional): the samples use the batch's labels in turn, the
        reconstructions their own images' labels.
        """
        with eval_mode(self.generator, self.discriminator):
            k = min(self.num_images, x_real.shape[0])
            fixed = self._fixed_z.to(device=x_real.device)
            p = next(self.generator.parameters(), None)
            if p is not None and p.is_floating_point():
                fixed = fixed.to(p.dtype)
            sample_labels = label_args(None if y is None else y[torch.arange(len(fixed)) % len(y)])
            samples = self.generator(fixed, *sample_labels)
            real = x_real[:k]
            labels = label_args(None if y is None else y[:k])
            code = self.discriminator.encode(real, *labels).view(k, *self.z_shape)
            rec = self.generator((0.9 * code).to(fixed.dtype), *labels).to(real.dtype)
            ncol = max(1, min(8, k))
            rows = []
            for start in range(0, k, ncol):  # a row of reals, then their reconstructions
                rows += [real[start : start + ncol], rec[start : start + ncol]]
            pairs = torch.cat(rows)
        return {"samples": image_grid_tensor(samples), "reconstructions": image_grid_tensor(pairs, nrow=ncol)}

    def log_images(self, x_real: Tensor, y: Optional[Tensor] = None) -> None:
        """Make the grids (``y``: the batch's labels, conditional) and send them to every
        logger that accepts images."""
        if x_real.dim() != 4:
            if not self._warned_images:
                self._warned_images = True
                warnings.warn(
                    f"OGANModule: image_every_n_steps needs image batches (B, C, H, W), got shape "
                    f"{tuple(x_real.shape)}; no grids are logged",
                    RuntimeWarning,
                )
            return
        self.last_images = self.make_images(x_real, y)
        step = self.global_step
        for logger in self.loggers:
            for name, grid in self.last_images.items():
                key = f"ogan/{name}"
                if hasattr(logger, "log_image"):
                    logger.log_image(key=key, images=[grid], step=step)
                elif hasattr(getattr(logger, "experiment", None), "add_image"):
                    logger.experiment.add_image(key, grid, step)


class OGANCallback(pl.Callback):
    """Add the O-GAN term to an existing GAN ``LightningModule`` (manual optimization).

    At ``setup`` the module's discriminator attribute is wrapped (before the optimizers are
    built, so they hold the widened head); at the start of fitting hook mode is attached
    (with the precision plugin's ``GradScaler`` when there is one), and it is detached at
    the end.  The module's ``training_step`` stays as it is: it must call the generator on
    z (first positional argument) and the discriminator on that output or its
    ``.detach()`` (see :mod:`ogan_plugin.hook` for what is recognised).

    Args:
        z_dim: the generator's noise size.
        generator: attribute name of the generator on the module.
        discriminator: attribute name of the discriminator on the module.
        corr_weight: the weight of the correlation term, as in :func:`ogan_plugin.attach`:
            ``"auto"`` (hook mode's default), a fixed number, or :class:`ogan_plugin.Ramp`.
        corr_weight_g: the weight in the generator's step (None: ``corr_weight``'s); see
            :func:`ogan_plugin.attach`.
        log_rho: log the last recognised rho as ``ogan/rho`` after each batch.
    """

    def __init__(
        self,
        z_dim: int,
        generator: str = "generator",
        discriminator: str = "discriminator",
        corr_weight: Union[float, str, Ramp] = "auto",
        log_rho: bool = True,
        corr_weight_g: Union[None, float, str, Ramp] = None,
    ) -> None:
        super().__init__()
        if not isinstance(z_dim, int) or isinstance(z_dim, bool):
            raise TypeError(f"z_dim must be an int, got {type(z_dim).__name__}")
        resolve_hook_weights(corr_weight, corr_weight_g, z_dim)  # checked here, resolved at attach
        self.z_dim = z_dim
        self.generator_attr = generator
        self.discriminator_attr = discriminator
        self.corr_weight = corr_weight
        self.corr_weight_g = corr_weight_g
        self.log_rho = log_rho
        self.hook: Optional[OGANHook] = None

    def _module(self, pl_module: pl.LightningModule, attr: str) -> nn.Module:
        m = getattr(pl_module, attr, None)
        if not isinstance(m, nn.Module):
            names = [n for n, _ in pl_module.named_children()]
            raise AttributeError(
                f"OGANCallback: {type(pl_module).__name__} has no network attribute {attr!r}; its "
                f"submodules are {names} (pass OGANCallback(generator=..., discriminator=...))"
            )
        return m

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        d = self._module(pl_module, self.discriminator_attr)
        self._module(pl_module, self.generator_attr)
        setattr(pl_module, self.discriminator_attr, wrap(d, self.z_dim))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.hook = attach(
            getattr(pl_module, self.discriminator_attr),
            self._module(pl_module, self.generator_attr),
            self.corr_weight,
            corr_weight_g=self.corr_weight_g,
            scaler=scaler,
        )

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.log_rho and self.hook is not None and self.hook.last_rho is not None:
            pl_module.log("ogan/rho", self.hook.last_rho.float(), on_step=True, prog_bar=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.hook is not None:
            self.hook.detach()
            self.hook = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.on_fit_end(trainer, pl_module)
