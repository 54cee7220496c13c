"""DistributedDataParallel with a wrapped discriminator.

Order: **wrap first, then DDP.**  ``wrap`` replaces the head and adds parameters, and DDP
registers the parameters it synchronises when it is built, so DDP must see the widened
head (``wrap`` refuses a DDP module for that reason).

Then which DDP?  DDP only synchronises gradients of backward passes whose forward ran
through the DDP module itself.  The O-GAN losses call :meth:`OGANDiscriminator.decompose`
(``single_loss``, ``SingleLossStep``, ``OGANLoss`` pipelines), which runs the inner
network directly, so ``DDP(wrapped)`` would leave the discriminator's gradients
unsynchronised there.  :func:`distribute` puts DDP *inside* the wrapper instead::

    D = ogan_plugin.wrap(D, z_dim=nz)                    # 1. wrap
    D_ddp = distribute(D, device_ids=[local_rank])       # 2. DDP around the inner network
    G_ddp = DDP(G, device_ids=[local_rank])
    loss = ogan_plugin.single_loss(G_ddp, D_ddp, x, z)   # every D forward goes through DDP
    loss.backward()                                      # gradients all-reduced (averaged)

``D_ddp`` is an :class:`~ogan_plugin.head.OGANDiscriminator` sharing its parameters with
``D``; checkpoint ``D.state_dict()`` (plain keys, loadable without DDP).  In hook mode
(``wrap(..., generator=G)``) the user's loop calls the discriminator itself, so either
``DDP(D)`` or ``distribute(D)`` works.

All O-GAN losses are batch means of per-sample terms (the adversarial terms, the QP
distance and rho are per sample), so with equal per-rank batches the averaged gradients
equal one process's gradients on the concatenated batch, unless the discriminator has
batch-dependent layers: plain BatchNorm normalises each rank's batch on its own.  Convert
BatchNorm to ``nn.SyncBatchNorm.convert_sync_batchnorm(D)`` (CUDA only) before wrapping,
or use a discriminator without BatchNorm (the usual advice for GAN discriminators with
gradient penalties, and the QP loss's setting).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from ogan_plugin.head import OGANDiscriminator

__all__ = ["distribute"]


def distribute(wrapped_discriminator: OGANDiscriminator, **ddp_kwargs: Any) -> OGANDiscriminator:
    """A DDP-synchronised view of a wrapped discriminator (see the module docstring).

    Args:
        wrapped_discriminator: ``ogan_plugin.wrap(D, z_dim)``, not yet under DDP.
        **ddp_kwargs: passed to ``DistributedDataParallel`` (``device_ids``,
            ``broadcast_buffers``, ``find_unused_parameters``, ...).

    Returns:
        An :class:`OGANDiscriminator` whose network is ``DistributedDataParallel(D.discriminator)``;
        calling it, ``decompose`` and ``encode`` run through DDP's forward.  It shares the
        parameters (and any hook-mode hooks) with ``wrapped_discriminator``.
    """
    if not isinstance(wrapped_discriminator, OGANDiscriminator):
        raise TypeError(
            "wrapped_discriminator must be an OGANDiscriminator (D = ogan_plugin.wrap(D, z_dim) first), got "
            f"{type(wrapped_discriminator).__name__}"
        )
    inner = wrapped_discriminator.discriminator
    if isinstance(inner, (DistributedDataParallel, nn.DataParallel)):
        raise ValueError("this wrapped discriminator is already distributed")
    ddp = DistributedDataParallel(inner, **ddp_kwargs)
    return OGANDiscriminator(ddp, "module." + wrapped_discriminator.head_path, wrapped_discriminator.z_dim)
