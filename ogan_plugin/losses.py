"""Adversarial losses on the O-GAN score, for both sides, plus :class:`OGANLoss`.

Sign convention for every loss here: a **higher score means "more real"**, as in
hinge, BCE and WGAN code.  (METHOD.md writes the QP loss with the opposite sign, the
discriminator pushing real scores down; the two are the same loss with score -> -score.)

Functional forms take scores (B,) and return a scalar (``reduction="mean"``) or the
per-sample values (``reduction="none"``).  :class:`AdversarialLoss` objects bundle the
two sides of one loss for the registry (plugins add losses through ``ogan_losses``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ogan_plugin.correlation import correlation_loss
from ogan_plugin.head import Decomposition
from ogan_plugin.hookspecs import hookimpl
from ogan_plugin.kernels.pearson import EPS

__all__ = [
    "AdversarialLoss",
    "LossSlopes",
    "loss_slopes",
    "QPLoss",
    "HingeLoss",
    "BCELoss",
    "WGANLoss",
    "get_loss",
    "pixel_distance",
    "qp_d_loss",
    "qp_g_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "bce_d_loss",
    "bce_g_loss",
    "wgan_d_loss",
    "wgan_g_loss",
    "OGANLoss",
    "OGANLossTerms",
]


def _acc(x: Tensor) -> Tensor:
    """Scores and pixels in their reduction dtype: float32, float64 when they already are."""
    return x if x.dtype == torch.float64 else x.float()


def _reduce(x: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def pixel_distance(x_real: Tensor, x_fake: Tensor, floor: float = 1e-8) -> Tensor:
    """Per-sample mean squared pixel distance (B,) used by the QP loss (float32; float64 for float64 images)."""
    if x_real.shape != x_fake.shape:
        raise ValueError(
            f"x_real and x_fake must have the same shape for the QP distance, got "
            f"{tuple(x_real.shape)} and {tuple(x_fake.shape)}"
        )
    d = (_acc(x_real) - _acc(x_fake)).pow(2).flatten(1).mean(dim=1)
    return d.clamp_min(floor)


# --- functional forms -------------------------------------------------------------------
def qp_d_loss(real_score: Tensor, fake_score: Tensor, dist: Tensor, reduction: str = "mean") -> Tensor:
    """QP discriminator loss: ``t + 0.25 * t**2 / dist`` with ``t = fake - real``."""
    t = _acc(fake_score) - _acc(real_score)
    return _reduce(t + 0.25 * t * t / _acc(dist), reduction)


def qp_g_loss(fake_score: Tensor, reduction: str = "mean") -> Tensor:
    """QP generator loss: ``-fake`` (the gradient of METHOD.md's t2)."""
    return _reduce(-_acc(fake_score), reduction)


def hinge_d_loss(real_score: Tensor, fake_score: Tensor, dist: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    """Hinge discriminator loss: ``relu(1 - real) + relu(1 + fake)``."""
    return _reduce(F.relu(1 - _acc(real_score)) + F.relu(1 + _acc(fake_score)), reduction)


def hinge_g_loss(fake_score: Tensor, reduction: str = "mean") -> Tensor:
    """Hinge generator loss: ``-fake``."""
    return _reduce(-_acc(fake_score), reduction)


def bce_d_loss(real_score: Tensor, fake_score: Tensor, dist: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on logits: ``softplus(-real) + softplus(fake)``."""
    return _reduce(F.softplus(-_acc(real_score)) + F.softplus(_acc(fake_score)), reduction)


def bce_g_loss(fake_score: Tensor, reduction: str = "mean") -> Tensor:
    """Non-saturating generator loss: ``softplus(-fake)``."""
    return _reduce(F.softplus(-_acc(fake_score)), reduction)


def wgan_d_loss(real_score: Tensor, fake_score: Tensor, dist: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    """WGAN critic loss ``fake - real`` (bring your own Lipschitz constraint)."""
    return _reduce(_acc(fake_score) - _acc(real_score), reduction)


def wgan_g_loss(fake_score: Tensor, reduction: str = "mean") -> Tensor:
    """WGAN generator loss ``-fake``."""
    return _reduce(-_acc(fake_score), reduction)


# --- loss objects (registered through the plugin hook) ---------------------------------
class LossSlopes(NamedTuple):
    """Per-sample values of both sides of a loss and their derivatives in the scores.

    ``d``, ``g``: the per-sample discriminator and generator losses (B,);
    ``d_real``, ``d_fake``: B times the derivatives of ``mean(d)`` in the real and the fake
    scores; ``g_fake``: B times the derivative of ``mean(g)`` in the fake scores.  (For a
    per-sample loss these are each sample's own slopes.)
    """

    d: Tensor
    g: Tensor
    d_real: Tensor
    d_fake: Tensor
    g_fake: Tensor


class AdversarialLoss:
    """Both sides of one adversarial loss, per sample.

    Subclasses set ``name`` and ``needs_dist`` (True when the discriminator side needs
    :func:`pixel_distance`) and implement :meth:`d_loss` and :meth:`g_loss`.  They may
    implement :meth:`slopes` (the values and their derivatives in closed form): the
    single-loss step then computes its objective with no autograd pass of its own.
    """

    name: str = ""
    needs_dist: bool = False

    def slopes(self, real_score: Tensor, fake_score: Tensor, dist: Optional[Tensor] = None) -> Optional[LossSlopes]:
        """Closed-form :class:`LossSlopes` on float32/float64 scores, or None (the default):
        :func:`loss_slopes` then differentiates :meth:`d_loss` and :meth:`g_loss`."""
        return None

    def d_loss(self, real_score: Tensor, fake_score: Tensor, dist: Optional[Tensor] = None) -> Tensor:
        """Per-sample discriminator loss (B,)."""
        raise NotImplementedError

    def g_loss(self, fake_score: Tensor) -> Tensor:
        """Per-sample generator loss (B,)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class QPLoss(AdversarialLoss):
    name, needs_dist = "qp", True

    def d_loss(self, real_score, fake_score, dist=None):
        if dist is None:
            raise ValueError("the QP loss needs dist = pixel_distance(x_real, x_fake)")
        return qp_d_loss(real_score, fake_score, dist, "none")

    def g_loss(self, fake_score):
        return qp_g_loss(fake_score, "none")

    def slopes(self, real_score, fake_score, dist=None):
        if dist is None:
            raise ValueError("the QP loss needs dist = pixel_distance(x_real, x_fake)")
        t = fake_score - real_score
        t_over = t / dist.to(t.dtype)
        slope = 1 + 0.5 * t_over
        return LossSlopes(t + 0.25 * t * t_over, -fake_score, -slope, slope, torch.full_like(fake_score, -1.0))


class HingeLoss(AdversarialLoss):
    name = "hinge"

    def d_loss(self, real_score, fake_score, dist=None):
        return hinge_d_loss(real_score, fake_score, reduction="none")

    def g_loss(self, fake_score):
        return hinge_g_loss(fake_score, "none")

    def slopes(self, real_score, fake_score, dist=None):
        a, b = 1 - real_score, 1 + fake_score
        return LossSlopes(a.clamp_min(0) + b.clamp_min(0), -fake_score, -(a > 0).to(a.dtype), (b > 0).to(b.dtype),
                          torch.full_like(fake_score, -1.0))


class BCELoss(AdversarialLoss):
    name = "bce"

    def d_loss(self, real_score, fake_score, dist=None):
        return bce_d_loss(real_score, fake_score, reduction="none")

    def g_loss(self, fake_score):
        return bce_g_loss(fake_score, "none")

    def slopes(self, real_score, fake_score, dist=None):
        return LossSlopes(F.softplus(-real_score) + F.softplus(fake_score), F.softplus(-fake_score),
                          -torch.sigmoid(-real_score), torch.sigmoid(fake_score), -torch.sigmoid(-fake_score))


class WGANLoss(AdversarialLoss):
    name = "wgan"

    def d_loss(self, real_score, fake_score, dist=None):
        return wgan_d_loss(real_score, fake_score, reduction="none")

    def g_loss(self, fake_score):
        return wgan_g_loss(fake_score, "none")

    def slopes(self, real_score, fake_score, dist=None):
        minus = torch.full_like(fake_score, -1.0)
        return LossSlopes(fake_score - real_score, -fake_score, minus, -minus, minus)


@hookimpl
def ogan_losses() -> dict[str, AdversarialLoss]:
    return {cls.name: cls() for cls in (QPLoss, HingeLoss, BCELoss, WGANLoss)}


def get_loss(loss: "str | AdversarialLoss") -> AdversarialLoss:
    """Look up a registered loss by name (an :class:`AdversarialLoss` passes through)."""
    if isinstance(loss, AdversarialLoss):
        return loss
    from ogan_plugin.registry import get_registry

    table = get_registry().losses()
    if not isinstance(loss, str) or loss not in table:
        raise ValueError(f"loss must be one of {sorted(table)} or an AdversarialLoss, got {loss!r}")
    return table[loss]


def loss_slopes(adv: AdversarialLoss, real_score: Tensor, fake_score: Tensor, dist: Optional[Tensor]) -> LossSlopes:
    """:class:`LossSlopes` of ``adv`` at detached float32/float64 scores: its closed form,
    or one autograd pass through :meth:`~AdversarialLoss.d_loss` and
    :meth:`~AdversarialLoss.g_loss` (the fake scores enter each side as their own leaf)."""
    found = adv.slopes(real_score, fake_score, dist)
    if found is not None:
        return found
    with torch.enable_grad():
        r = real_score.detach().requires_grad_(True)
        f_d = fake_score.detach().requires_grad_(True)
        f_g = fake_score.detach().requires_grad_(True)
        d, g = adv.d_loss(r, f_d, dist), adv.g_loss(f_g)
        d_real, d_fake, g_fake = torch.autograd.grad(d.sum() + g.sum(), (r, f_d, f_g), allow_unused=True)
    zeros = torch.zeros_like(fake_score)
    return LossSlopes(d.detach().to(fake_score.dtype), g.detach().to(fake_score.dtype),
                      zeros if d_real is None else d_real, zeros if d_fake is None else d_fake,
                      zeros if g_fake is None else g_fake)


# --- the O-GAN loss ----------------------------------------------------------------------
def check_corr_weights(corr_weight: Any, corr_weight_g: Any = None) -> tuple[float, float]:
    """Raise ``ValueError`` naming the argument unless both weights are numbers >= 0
    (``corr_weight_g`` may be None: the same as ``corr_weight``).

    Returns ``(corr_weight, corr_weight_g)`` as floats, None resolved to ``corr_weight``.
    """
    for name, w in (("corr_weight", corr_weight), ("corr_weight_g", corr_weight_g)):
        if w is None and name == "corr_weight_g":
            continue
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
            raise ValueError(f"{name} must be a number >= 0{' or None' if name == 'corr_weight_g' else ''}, got {w!r}")
    return float(corr_weight), float(corr_weight if corr_weight_g is None else corr_weight_g)


class OGANLossTerms(NamedTuple):
    """Discriminator and generator losses of one batch (scalars)."""

    discriminator: Tensor
    generator: Tensor


#: what :class:`OGANLoss` takes for a batch: a :class:`~ogan_plugin.head.Decomposition`
#: (score from D's whole output, correlation from the head) or the head's raw outputs
EncoderOutput = Union[Decomposition, Tensor]


def _score_and_raw(e: EncoderOutput, name: str) -> tuple[Tensor, Tensor]:
    """(score (B,), raw (B, z_dim)) of a decomposition, or of raw outputs (score = their mean)."""
    if isinstance(e, Decomposition):
        return e.score, e.raw
    if not isinstance(e, Tensor) or e.dim() != 2:
        what = f"shape {tuple(e.shape)}" if isinstance(e, Tensor) else type(e).__name__
        raise TypeError(f"{name} must be D.decompose(x) (a Decomposition) or raw outputs (B, z_dim), got {what}")
    return _acc(e).mean(1), e


class OGANLoss(torch.nn.Module):
    """An adversarial loss on the score plus the correlation term on both sides.

    Each batch is given as ``D.decompose(x)`` (a :class:`~ogan_plugin.head.Decomposition`:
    the adversarial term uses its ``score``, picked from D's whole output as
    ``wrap(..., score=)`` says, and the correlation its ``raw``) or as the raw outputs
    ``e`` (B, z_dim) alone (the score is then their mean: the head only).  For alternating
    loops::

        crit = OGANLoss("qp", corr_weight=0.5)
        fake = G(z)
        loss_d = crit.discriminator_loss(D.decompose(x), D.decompose(fake.detach()), z, x_real=x, x_fake=fake)
        loss_g = crit.generator_loss(D.decompose(fake), z)

    Class-conditional: ``D.decompose(x, y)``, ``D.decompose(G(z, y), y)``; pass the
    decompositions (not ``.raw``) so a projection discriminator's class term is in the
    adversarial terms.

    ``forward(e_real, e_fake, z, ...)`` returns both as :class:`OGANLossTerms`.
    ``corr_weight_g`` sets a different correlation weight for the generator's loss (None:
    ``corr_weight`` in both), as in :func:`ogan_plugin.single_loss`.
    """

    def __init__(
        self, loss: "str | AdversarialLoss" = "qp", corr_weight: float = 0.5, *, corr_weight_g: Optional[float] = None,
        eps: float = EPS,
    ) -> None:
        super().__init__()
        self.adversarial = get_loss(loss)
        self.corr_weight, self.corr_weight_g = check_corr_weights(corr_weight, corr_weight_g)
        self.eps = eps

    def _dist(self, x_real: Optional[Tensor], x_fake: Optional[Tensor]) -> Optional[Tensor]:
        if not self.adversarial.needs_dist:
            return None
        if x_real is None or x_fake is None:
            raise ValueError(f"loss {self.adversarial.name!r} needs x_real and x_fake (for the pixel distance)")
        return pixel_distance(x_real.detach(), x_fake.detach())

    def discriminator_loss(
        self,
        e_real: EncoderOutput,
        e_fake: EncoderOutput,
        z: Tensor,
        *,
        x_real: Optional[Tensor] = None,
        x_fake: Optional[Tensor] = None,
    ) -> Tensor:
        """Discriminator loss: adversarial term + ``-corr_weight * mean rho(z, raw_fake)``.

        Args:
            e_real: ``D.decompose(x_real)`` or its raw outputs.
            e_fake: ``D.decompose(x_fake.detach())`` or its raw outputs.
            z: the fakes' noise (B, z_dim).
            x_real: the real batch (for the QP loss's pixel distance).
            x_fake: the generated batch (for the QP loss's pixel distance).
        """
        s_real, _ = _score_and_raw(e_real, "e_real")
        s_fake, raw_fake = _score_and_raw(e_fake, "e_fake")
        adv = self.adversarial.d_loss(s_real, s_fake, self._dist(x_real, x_fake)).mean()
        return adv + correlation_loss(z, raw_fake, self.corr_weight, eps=self.eps)

    def generator_loss(self, e_fake: EncoderOutput, z: Tensor) -> Tensor:
        """Generator loss: adversarial term + ``-corr_weight_g * mean rho(z, raw_fake)``
        (``e_fake``: ``D.decompose(x_fake)`` or its raw outputs)."""
        s_fake, raw_fake = _score_and_raw(e_fake, "e_fake")
        adv = self.adversarial.g_loss(s_fake).mean()
        return adv + correlation_loss(z, raw_fake, self.corr_weight_g, eps=self.eps)

    def forward(
        self,
        e_real: EncoderOutput,
        e_fake: EncoderOutput,
        z: Tensor,
        *,
        x_real: Optional[Tensor] = None,
        x_fake: Optional[Tensor] = None,
    ) -> OGANLossTerms:
        return OGANLossTerms(
            self.discriminator_loss(e_real, e_fake, z, x_real=x_real, x_fake=x_fake),
            self.generator_loss(e_fake, z),
        )

    def extra_repr(self) -> str:
        g = "" if self.corr_weight_g == self.corr_weight else f", corr_weight_g={self.corr_weight_g}"
        return f"loss={self.adversarial.name!r}, corr_weight={self.corr_weight}{g}"
