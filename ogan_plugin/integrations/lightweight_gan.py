"""lucidrains' lightweight-gan with the O-GAN encoder: ``ogan_plugin.enable(trainer)``.

``lightweight_gan.Trainer`` builds its networks in ``init_GAN()`` and runs its own
``train()`` (a hinge loss on D's 5x5 patch logits and on its 32x32 auxiliary output, D's
auto-encoding loss, a gradient penalty every 4 steps, DiffAugment through ``AugWrapper``).
After :func:`enable` that code runs unchanged and D's patch head becomes an encoder of the
latent ``z``:

* D's patch logits head (``D.to_logits``' last convolution, ``to_logits.2`` for the 5x5
  output) is widened to ``latent_dim`` outputs in place (:func:`ogan_plugin.wrap`): D
  still returns ``(logits, logits_32x32, aux_loss)`` with the same values, and
  ``AugWrapper`` (``GAN.D_aug``) calls the same module;
* the head's new parameters replace the old ones in ``GAN.D_opt``;
* hook mode is attached to ``GAN.G``, the generator ``train()`` samples from: it follows
  the fakes through ``AugWrapper``'s flip and DiffAugment (``color``, ``translation``,
  ``cutout``, ``offset``) into D; the gradient-penalty pass (``create_graph=True``) gets no
  term; with ``amp=True`` the term is scaled by ``D_scaler`` in D's step and ``G_scaler``
  in G's;
* ``trainer.load(...)`` rebuilds the GAN (``init_GAN()``), and it is enabled again, so
  checkpoints saved with O-GAN load back.

Tested with lightweight-gan 1.2.1.  Its ``Trainer`` moves everything to CUDA itself, so
the package's own ``train()`` runs on a GPU only.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from ogan_plugin.corr_weights import Ramp
from ogan_plugin.hook import OGANHook
from ogan_plugin.hookspecs import hookimpl
from ogan_plugin.integrations.trainers import (
    TrainerAdapter,
    attach_once,
    is_instance_of,
    remember,
    swap_parameters,
    wrap_once,
)

__all__ = ["enable"]


def _is_trainer(trainer: Any) -> bool:
    return is_instance_of(trainer, "lightweight_gan", "Trainer")


def enable(
    trainer: Any, corr_weight: Union[float, str, Ramp] = "auto", *, corr_weight_g: Union[None, float, str, Ramp] = None
) -> OGANHook:
    """Turn the O-GAN encoder on in a ``lightweight_gan.Trainer``.

    Builds the GAN first (``trainer.init_GAN()``) when the trainer has not yet.

    Args:
        trainer: a ``lightweight_gan.Trainer``.
        corr_weight: the correlation term's weight, as in :func:`ogan_plugin.attach`: ``"auto"``
            (hook mode's default ramp), a number or an :class:`ogan_plugin.Ramp`.
        corr_weight_g: lambda in the generator's step (None: ``corr_weight``).

    Returns:
        The :class:`~ogan_plugin.hook.OGANHook`; enabling again returns the same hook
        (with other weights, a new one), and never wraps D twice.

    Raises:
        TypeError: ``trainer`` is not a ``lightweight_gan.Trainer``.
    """
    if not _is_trainer(trainer):
        raise TypeError(f"trainer must be a lightweight_gan.Trainer, got {type(trainer).__name__}")
    if trainer.GAN is None:
        trainer.init_GAN()
    GAN = trainer.GAN
    D = GAN.D
    wrapped, old = wrap_once(D, int(GAN.latent_dim), f"to_logits.{len(D.to_logits) - 1}")
    swap_parameters(GAN.D_opt, old, list(wrapped.head.parameters()))
    if old and getattr(trainer, "is_ddp", False):  # DDP was built around the plain head: rebuild it
        from torch.nn.parallel import DistributedDataParallel as DDP

        kwargs = {"device_ids": [trainer.rank], "output_device": trainer.rank, "find_unused_parameters": True}
        trainer.D_ddp, trainer.D_aug_ddp = DDP(GAN.D, **kwargs), DDP(GAN.D_aug, **kwargs)
    amp = bool(getattr(trainer, "amp", False))
    hook = attach_once(
        trainer, wrapped, GAN.G, corr_weight=corr_weight, corr_weight_g=corr_weight_g,
        scaler=trainer.D_scaler if amp else None, scaler_g=trainer.G_scaler if amp else None,
    )
    remember(trainer, "init_GAN", enable, {"corr_weight": corr_weight, "corr_weight_g": corr_weight_g})
    return hook


@hookimpl
def ogan_trainer_adapters() -> list[TrainerAdapter]:
    return [TrainerAdapter("lightweight-gan", "lightweight_gan.Trainer", _is_trainer, enable)]
