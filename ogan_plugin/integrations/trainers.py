"""One call for training packages that build their networks themselves: ``ogan_plugin.enable``.

Packages such as lucidrains' lightweight-gan and stylegan2-pytorch build their generator,
discriminator and optimizers inside a ``Trainer`` and run their own ``train()``; there is no
place for ``wrap(D, z_dim, generator=G)`` in user code.  After the trainer has built its
GAN::

    trainer = lightweight_gan.Trainer(...)          # or stylegan2_pytorch.Trainer(...)
    trainer.set_data_src(folder)
    hook = ogan_plugin.enable(trainer)              # the one call
    for _ in range(steps):
        trainer.train()                             # the package's own code, unchanged
    print(float(hook.last_rho))

``enable`` asks the trainer adapters (hook ``ogan_trainer_adapters``: the built-in ones, and
any a plugin adds) for one that recognises the trainer, and lets it wrap the discriminator
the package calls (keeping every output the package reads), give the widened head's new
parameters to the discriminator's optimizer, and attach hook mode to the generator the
package samples from (:mod:`ogan_plugin.hook`, which follows the fakes through the
package's augmentation).  A trainer that was already enabled, or whose discriminator was
already wrapped, is not wrapped twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch.nn as nn

from ogan_plugin.head import OGANDiscriminator, OGANHead
from ogan_plugin.hook import OGANHook, _Relay, attach
from ogan_plugin.registry import get_registry
from ogan_plugin.wrapping import wrap

__all__ = ["TrainerAdapter", "enable", "supported_trainers"]

#: the adapters that ship with ogan-plugin (registered on the first call of :func:`enable`)
BUILTIN_TRAINER_ADAPTERS = (
    "ogan_plugin.integrations.lightweight_gan",
    "ogan_plugin.integrations.stylegan2_pytorch",
)


@dataclass(frozen=True)
class TrainerAdapter:
    """How :func:`enable` turns O-GAN on in one package's trainer.

    Attributes:
        name: the package, as users know it (``"lightweight-gan"``).
        trainer: what it recognises, for messages (``"lightweight_gan.Trainer"``).
        recognises: ``recognises(trainer) -> bool`` (without importing the package).
        enable: ``enable(trainer, **options) -> OGANHook``.
    """

    name: str
    trainer: str
    recognises: Callable[[Any], bool]
    enable: Callable[..., OGANHook]


def _adapters() -> list[TrainerAdapter]:
    reg = get_registry()
    for modname in BUILTIN_TRAINER_ADAPTERS:
        if reg.pm.get_plugin(modname) is None and not reg.pm.is_blocked(modname):
            import importlib

            reg.register(importlib.import_module(modname), name=modname)
    return [a for found in reg.pm.hook.ogan_trainer_adapters() for a in found]


def supported_trainers() -> list[str]:
    """What :func:`enable` recognises: ``"package (module.Class)"`` for each adapter."""
    return sorted(f"{a.name} ({a.trainer})" for a in _adapters())


def enable(trainer: Any, **options: Any) -> OGANHook:
    """Turn O-GAN on in a training package's trainer, after it has built its GAN.

    Args:
        trainer: a trainer object of a supported package (:func:`supported_trainers`).
        **options: passed to the package's ``enable``: ``corr_weight`` (``"auto"``),
            ``corr_weight_g`` and the like (see :mod:`ogan_plugin.integrations.lightweight_gan`
            and :mod:`ogan_plugin.integrations.stylegan2_pytorch`).

    Returns:
        The :class:`~ogan_plugin.hook.OGANHook` (``hook.last_rho`` for logging).

    Raises:
        TypeError: no adapter recognises ``trainer``; the message lists the supported ones.
    """
    for adapter in _adapters():
        if adapter.recognises(trainer):
            return adapter.enable(trainer, **options)
    kind = f"{type(trainer).__module__}.{type(trainer).__qualname__}"
    raise TypeError(
        f"ogan_plugin.enable() does not know a {kind}; it supports: {', '.join(supported_trainers())}. "
        "A plugin can add a package with the ogan_trainer_adapters hook (docs/hook-mode.md); for your "
        "own loop use netD = ogan_plugin.wrap(netD, z_dim=nz, generator=netG)"
    )


# --- helpers the package adapters share -------------------------------------------------------
def is_instance_of(obj: Any, module_prefix: str, class_name: str) -> bool:
    """True when a class in ``type(obj)``'s MRO is ``class_name`` from a module under
    ``module_prefix`` (recognises a package's class without importing the package)."""
    return any(c.__name__ == class_name and c.__module__.split(".")[0] == module_prefix for c in type(obj).__mro__)


def attached_hook(inner: nn.Module) -> Optional[OGANHook]:
    """The hook attached to a wrapped discriminator's inner module, by any wrapper object."""
    for h in inner._forward_pre_hooks.values():
        if isinstance(h, _Relay) and isinstance(getattr(h.fn, "__self__", None), OGANHook):
            return h.fn.__self__
    return None


def wrap_once(D: nn.Module, z_dim: int, head: str) -> tuple[OGANDiscriminator, list]:
    """Wrap ``D`` in place at ``head`` unless it already is; returns the wrapper and the old
    head's parameters (empty when it was wrapped before)."""
    for path, m in D.named_modules():
        if isinstance(m, OGANHead):
            if m.z_dim != z_dim:
                raise ValueError(
                    f"the discriminator was already wrapped with z_dim={m.z_dim}, but the generator's latent "
                    f"size is {z_dim}"
                )
            return OGANDiscriminator(D, path, z_dim), []
    old = list(D.get_submodule(head).parameters())
    return wrap(D, z_dim, head=head), old


def swap_parameters(optimizer: Any, old: list, new: list) -> None:
    """Put the widened head's parameters into ``optimizer`` in place of the old head's (its
    state for them dropped), so the package's own optimizer trains them."""
    if not old:
        return
    ids = {id(p) for p in old}
    for group in optimizer.param_groups:
        kept = [p for p in group["params"] if id(p) not in ids]
        if len(kept) != len(group["params"]):
            group["params"] = kept + list(new)
            new = []
    for p in old:
        optimizer.state.pop(p, None)
    if new:
        optimizer.param_groups[0]["params"].extend(new)


def remember(trainer: Any, rebuild: str, enable_fn: Callable[..., OGANHook], options: dict) -> None:
    """Re-enable after the trainer rebuilds its GAN (``load()`` calls ``init_GAN()`` again,
    and a rebuilt GAN would be plain): wrap the instance's ``rebuild`` method once."""
    trainer.__dict__["_ogan_options"] = options
    if trainer.__dict__.get("_ogan_rebuild_wrapped"):
        return
    original = getattr(trainer, rebuild)

    def rebuilt(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        enable_fn(trainer, **trainer.__dict__["_ogan_options"])
        return out

    trainer.__dict__[rebuild] = rebuilt
    trainer.__dict__["_ogan_rebuild_wrapped"] = True


def attach_once(trainer: Any, wrapped: OGANDiscriminator, generator: nn.Module, **options: Any) -> OGANHook:
    """Attach hook mode, keeping a hook already attached with the same settings and
    replacing one with others (or one left on networks the trainer has since rebuilt)."""
    previous = trainer.__dict__.get("_ogan_hook")
    if previous is not None and previous.discriminator.discriminator is not wrapped.discriminator:
        previous.detach()  # the trainer rebuilt its GAN: that hook watches the old networks
    existing = attached_hook(wrapped.discriminator)
    if existing is not None:
        try:
            hook = attach(existing.discriminator, generator, **options)
        except ValueError:
            existing.detach()
            hook = attach(wrapped, generator, **options)
    else:
        hook = attach(wrapped, generator, **options)
    trainer.__dict__["_ogan_hook"] = hook
    return hook
