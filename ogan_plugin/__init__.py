"""ogan-plugin: turn any PyTorch GAN discriminator into an O-GAN encoder with one call.

    D = ogan_plugin.wrap(D, z_dim=nz)

See ``README.md`` and ``shared/METHOD.md`` for the method.  This module only re-exports
the public API.
"""

from ogan_plugin import augment
from ogan_plugin.augment import RandomTranslate
from ogan_plugin.corr_weights import Ramp
from ogan_plugin.correlation import EPS, CorrelationLoss, correlation_loss, pearson_correlation
from ogan_plugin.head import Decomposition, OGANDiscriminator, OGANHead
from ogan_plugin.hookspecs import hookimpl
from ogan_plugin.hook import OGANHook, attach, detach
from ogan_plugin.integrations.trainers import enable
from ogan_plugin.losses import (
    AdversarialLoss,
    OGANLoss,
    OGANLossTerms,
    bce_d_loss,
    bce_g_loss,
    hinge_d_loss,
    hinge_g_loss,
    pixel_distance,
    qp_d_loss,
    qp_g_loss,
    wgan_d_loss,
    wgan_g_loss,
)
from ogan_plugin.reconstruction import Inversion, interpolate, invert, reconstruct
from ogan_plugin.ema import EMA
from ogan_plugin.step import SingleLossStep, StepResult
from ogan_plugin.training import SingleLossOutput, single_loss
from ogan_plugin.registry import Backend, BackendUnavailableError, get_registry
from ogan_plugin.wrapping import from_state_dict, wrap

__version__ = "0.2.0"

__all__ = [
    "EPS",
    "AdversarialLoss",
    "Backend",
    "BackendUnavailableError",
    "CorrelationLoss",
    "Decomposition",
    "OGANDiscriminator",
    "OGANHead",
    "RandomTranslate",
    "Ramp",
    "EMA",
    "from_state_dict",
    "SingleLossOutput",
    "SingleLossStep",
    "StepResult",
    "single_loss",
    "OGANHook",
    "attach",
    "detach",
    "enable",
    "OGANLoss",
    "OGANLossTerms",
    "bce_d_loss",
    "bce_g_loss",
    "correlation_loss",
    "get_registry",
    "hinge_d_loss",
    "hinge_g_loss",
    "hookimpl",
    "interpolate",
    "invert",
    "Inversion",
    "pearson_correlation",
    "pixel_distance",
    "qp_d_loss",
    "qp_g_loss",
    "reconstruct",
    "wgan_d_loss",
    "wgan_g_loss",
    "wrap",
]
