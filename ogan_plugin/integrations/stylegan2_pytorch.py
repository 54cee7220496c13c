"""lucidrains' stylegan2-pytorch with the O-GAN encoder: ``ogan_plugin.enable(trainer)``.

``stylegan2_pytorch.Trainer`` builds its networks in ``init_GAN()`` and runs its own
``train()``: a mapping network ``S`` turns noise into styles ``w`` (two noises per image
under style mixing), ``G(w_styles, noise)`` draws, and D (through ``AugWrapper``, with
DiffAugment) scores.  After :func:`enable` that code runs unchanged and D's head
(``to_logit``) becomes an encoder:

* the head is widened to ``latent_dim`` outputs in place (D still returns
  ``(logits, quantize_loss)`` with the same values), and its new parameters replace the
  old ones in ``GAN.D_opt``;
* hook mode is attached to ``GAN.G``.  What the encoder learns is the style of G's first
  (coarsest) layer, ``w_styles[:, 0]``: ``G`` takes styles, not noise, and with style
  mixing an image has two noises, while its first layer's style is always defined (the
  code is then a point of StyleGAN's W space, which is also what ``G`` takes);
* ``trainer.load(...)`` rebuilds the GAN and it is enabled again.

Mixed precision through apex (``fp16=True``) is not supported.  Tested with
stylegan2-pytorch 1.9.0; its ``Trainer`` moves everything to CUDA itself, so the package's
own ``train()`` runs on a GPU only.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from torch import Tensor

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

__all__ = ["enable", "first_style"]


def _is_trainer(trainer: Any) -> bool:
    return is_instance_of(trainer, "stylegan2_pytorch", "Trainer")


def first_style(args: tuple, kwargs: dict) -> Tensor:
    """The code hook mode pairs with a stylegan2-pytorch image: ``G(styles, noise)``'s first
    layer's style, ``styles[:, 0]`` (``(B, latent_dim)``)."""
    styles = args[0] if args else kwargs["styles"]
    return styles[:, 0]


def enable(
    trainer: Any, corr_weight: Union[float, str, Ramp] = "auto", *, corr_weight_g: Union[None, float, str, Ramp] = None
) -> OGANHook:
    """Turn the O-GAN encoder on in a ``stylegan2_pytorch.Trainer``.

    Builds the GAN first (``trainer.init_GAN()``) when the trainer has not yet.

    Args:
        trainer: a ``stylegan2_pytorch.Trainer``.
        corr_weight: the correlation term's weight, as in :func:`ogan_plugin.attach`: ``"auto"``
            (hook mode's default ramp), a number or an :class:`ogan_plugin.Ramp`.
        corr_weight_g: lambda in the generator's step (None: ``corr_weight``).

    Returns:
        The :class:`~ogan_plugin.hook.OGANHook`; enabling again returns the same hook
        (with other weights, a new one), and never wraps D twice.

    Raises:
        TypeError: ``trainer`` is not a ``stylegan2_pytorch.Trainer``.
        ValueError: the trainer uses apex mixed precision (``fp16=True``).
    """
    if not _is_trainer(trainer):
        raise TypeError(f"trainer must be a stylegan2_pytorch.Trainer, got {type(trainer).__name__}")
    if getattr(trainer, "fp16", False):
        raise ValueError("trainer: fp16=True (apex mixed precision) is not supported by ogan_plugin.enable")
    if trainer.GAN is None:
        trainer.init_GAN()
    GAN = trainer.GAN
    wrapped, old = wrap_once(GAN.D, int(GAN.G.latent_dim), "to_logit")
    swap_parameters(GAN.D_opt, old, list(wrapped.head.parameters()))
    if old and getattr(trainer, "is_ddp", False):  # DDP was built around the plain head: rebuild it
        from torch.nn.parallel import DistributedDataParallel as DDP

        trainer.D_ddp = DDP(GAN.D, device_ids=[trainer.rank])
        trainer.D_aug_ddp = DDP(GAN.D_aug, device_ids=[trainer.rank])
    hook = attach_once(trainer, wrapped, GAN.G, corr_weight=corr_weight, corr_weight_g=corr_weight_g, z_from=first_style)
    remember(trainer, "init_GAN", enable, {"corr_weight": corr_weight, "corr_weight_g": corr_weight_g})
    return hook


@hookimpl
def ogan_trainer_adapters() -> list[TrainerAdapter]:
    return [TrainerAdapter("stylegan2-pytorch", "stylegan2_pytorch.Trainer", _is_trainer, enable)]
