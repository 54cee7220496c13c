"""The fused O-GAN single-loss objective with gradient masking (METHOD.md section 4).

Operation ``ogan_objective(e_real, e_fake, z, dist, loss, corr_weight, eps)``:

* ``e_real`` (B, n): encoder outputs of the real batch;
* ``e_fake`` (B, n): encoder outputs of the fake batch (one forward serves both routings:
  the values of E(x_fake) and E(sg(x_fake)) are equal);
* ``z`` (B, n): the noise; ``dist`` (B,) or None: the QP pixel distance;
* ``loss``: a registered adversarial loss name; ``corr_weight``: lambda; ``eps``: see pearson.

With s = mean(e) (the score) and rho = rho(z, e_fake):

    L_D = mean(d_loss(s_real, s_fake, dist)) - corr_weight * mean(rho)
    L_G = mean(g_loss(s_fake))              - corr_weight * mean(rho)

It returns the values and the three gradient streams (no autograd graph; the caller
feeds them to the networks' backward):

* ``grad_real``   = dL_D / de_real     -> discriminator parameters (real forward)
* ``grad_fake_d`` = dL_D / de_fake     -> discriminator parameters (fake forward)
* ``grad_fake_g`` = dL_G / de_fake     -> generator, through the fake images

The "split" routing sends ``grad_fake_d`` to D's parameters and ``grad_fake_g`` to D's
input; the "three_forward" routing sends ``grad_fake_g`` into E(x_fake) and
``grad_fake_d - grad_fake_g`` into E(sg(x_fake)) (the t2 cancellation).
Gradients have the dtype of ``e_fake``; values are float32.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ogan_plugin.hookspecs import hookimpl
from ogan_plugin.kernels.pearson import pearson_reference
from ogan_plugin.registry import Backend


class ObjectiveOutput(NamedTuple):
    """Values (float32) and gradient streams of the fused objective."""

    loss_d: Tensor
    loss_g: Tensor
    rho: Tensor
    grad_real: Tensor
    grad_fake_d: Tensor
    grad_fake_g: Tensor


# --- torch reference ---------------------------------------------------------------------
def ogan_objective_reference(
    e_real: Tensor,
    e_fake: Tensor,
    z: Tensor,
    dist: Optional[Tensor],
    loss: str,
    corr_weight: float,
    eps: float,
) -> ObjectiveOutput:
    """Reference implementation: autograd on detached float32 (or float64) copies."""
    from ogan_plugin.losses import get_loss

    adv = get_loss(loss)
    dtype = torch.float64 if e_fake.dtype == torch.float64 else torch.float32
    with torch.enable_grad():
        er = e_real.detach().to(dtype).requires_grad_(True)
        ef = e_fake.detach().to(dtype).requires_grad_(True)
        s_real, s_fake = er.mean(dim=1), ef.mean(dim=1)
        rho = pearson_reference(z.detach(), ef, eps)
        corr = corr_weight * rho.mean()
        loss_d = adv.d_loss(s_real, s_fake, dist).mean() - corr
        loss_g = adv.g_loss(s_fake).mean() - corr
        grad_real, grad_fake_d = torch.autograd.grad(loss_d, (er, ef), retain_graph=True)
        (grad_fake_g,) = torch.autograd.grad(loss_g, ef)
    return ObjectiveOutput(
        loss_d.detach(),
        loss_g.detach(),
        rho.detach(),
        grad_real.to(e_real.dtype),
        grad_fake_d.to(e_fake.dtype),
        grad_fake_g.to(e_fake.dtype),
    )


# --- registration ------------------------------------------------------------------------
@hookimpl
def ogan_backends() -> list[Backend]:
    return [
        Backend(
            op="ogan_objective",
            name="reference",
            fn=ogan_objective_reference,
            priority=0,
            description="torch reference (autograd on detached copies), any device",
        )
    ]
