"""DistributedDataParallel with a wrapped discriminator.

Order: **wrap first, then DDP.**  ``wrap`` replaces the head and adds parameters, and DDP
registers the parameters it synchronises when it is built, so DDP must see the widened
head (``wrap`` refuses a DDP module for that reason).

Then which DDP?  DDP only synchronises gradients of backward passes whose forward ran
through the DDP module itself, and the O-GAN losses call
:meth:`OGANDiscriminator.decompose`, which must run the forward *through* DDP.  The
O-GAN functions (``single_loss``, ``SingleLossStep``, ``reconstruct``, ``evaluate``)
take ``DDP(wrapped)`` as it is (what ``accelerator.prepare`` returns in a distributed run)
and route every discriminator forward through it (:func:`ogan_plugin.head.as_wrapped`).
For ``decompose``/``encode`` in your own code, :func:`distribute` gives that view::

    D = ogan_plugin.wrap(D, z_dim=nz)                    # 1. wrap
    D_ddp = distribute(D, device_ids=[local_rank])       # 2. DDP, seen as a wrapped discriminator
    G_ddp = DDP(G, device_ids=[local_rank])
    loss = ogan_plugin.single_loss(G_ddp, D_ddp, x, z)   # every D forward goes through DDP
    loss.backward()                                      # gradients all-reduced (averaged)
    codes = D_ddp.encode(x)                              # also through DDP

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

from ogan_plugin.head import OGANDiscriminator, as_wrapped

__all__ = ["distribute"]


def distribute(wrapped_discriminator: OGANDiscriminator, **ddp_kwargs: Any) -> OGANDiscriminator:
    """A DDP-synchronised view of a wrapped discriminator (see the module docstring).

    Args:
        wrapped_discriminator: ``ogan_plugin.wrap(D, z_dim)``, not yet under DDP.
        **ddp_kwargs: passed to ``DistributedDataParallel`` (``device_ids``,
            ``broadcast_buffers``, ``find_unused_parameters``, ...).

    Returns:
        An :class:`OGANDiscriminator` whose forwards run through
        ``DistributedDataParallel(wrapped_discriminator)``: calling it, ``decompose`` and
        ``encode``.  It shares the parameters (and any hook-mode hooks) with
        ``wrapped_discriminator``; it is :func:`~ogan_plugin.head.as_wrapped` of that DDP
        module (``view.discriminator`` is the DDP module).

    Raises:
        TypeError: ``wrapped_discriminator`` is not an :class:`OGANDiscriminator`.
        ValueError: it is already a DDP view.
    """
    if not isinstance(wrapped_discriminator, OGANDiscriminator):
        raise TypeError(
            "wrapped_discriminator must be an OGANDiscriminator (D = ogan_plugin.wrap(D, z_dim) first), got "
            f"{type(wrapped_discriminator).__name__}"
        )
    if isinstance(wrapped_discriminator.discriminator, (DistributedDataParallel, nn.DataParallel)):
        raise ValueError("this wrapped discriminator is already distributed")
    return as_wrapped(DistributedDataParallel(wrapped_discriminator, **ddp_kwargs))
