"""The plugin contract of ogan-plugin: every hook, what it receives and what it returns.

Plugins are plain modules or objects whose functions are marked with :data:`hookimpl`.
Built-in plugins live in ``ogan_plugin.adapters``, ``ogan_plugin.kernels`` and
``ogan_plugin.losses``; third-party packages register theirs through the entry-point
group ``ogan_plugin`` (as pytest does with ``pytest11``)::

    # pyproject.toml of a third-party package
    [project.entry-points.ogan_plugin]
    my_backend = "my_package.ogan_hooks"

Every hook is optional for a plugin: implement the ones you need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from ogan_plugin.head import Adaptation
    from ogan_plugin.integrations.trainers import TrainerAdapter
    from ogan_plugin.losses import AdversarialLoss
    from ogan_plugin.registry import Backend

PROJECT = "ogan_plugin"

#: Marker for hook specifications (used only in this file).
hookspec = pluggy.HookspecMarker(PROJECT)
#: Marker for hook implementations: decorate your plugin's functions with it.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def ogan_backends() -> "list[Backend]":
    """Return the operation implementations this plugin provides.

    Each :class:`~ogan_plugin.registry.Backend` names the operation it implements
    (one of :data:`ogan_plugin.registry.OPS`), its backend name (``"reference"``,
    ``"triton"``, ``"compiled"``, or your own), the callable, a ``priority`` (higher wins
    when the registry picks automatically) and a ``serves(device_type, explicit)``
    predicate telling on which devices it may run.  All plugins' results are collected.

    The callable must follow the operation's signature documented in
    :data:`ogan_plugin.registry.OPS`.
    """


@hookspec(firstresult=True)
def ogan_adapt_discriminator(
    discriminator: "nn.Module", z_dim: int, head: Optional[str]
) -> "Optional[Adaptation]":
    """Recognise a discriminator's scalar head and build its widened replacement.

    ``head`` is the dotted path the user passed to ``wrap(..., head=...)`` or ``None``
    for automatic detection (see :func:`ogan_plugin.layers.find_scalar_head`).
    Return an :class:`~ogan_plugin.head.Adaptation` (the head's path and the new
    :class:`~ogan_plugin.head.OGANHead`) or ``None`` when this adapter does not
    recognise the head.  The first non-``None`` answer wins; use
    ``@hookimpl(tryfirst=True)`` to run before the built-in adapters.  An adapter that
    recognises the head but cannot widen it should raise ``ValueError`` saying why.
    The adapter must not modify ``discriminator``: :func:`ogan_plugin.wrap` installs
    the new head.  The mean of the new head's outputs must equal the old head's output.
    (The built-in ``ogan_plugin.adapters.patch`` is a ``wrapper=True`` implementation:
    it gives convolution heads returned by any adapter their patch reduction.)
    """


@hookspec
def ogan_losses() -> "dict[str, AdversarialLoss]":
    """Return adversarial losses by name (for example ``{"qp": QPLoss()}``).

    Names become valid values of ``loss=`` in :class:`ogan_plugin.OGANLoss`, the
    single-loss step and the demo.  A later plugin may not silently replace an existing
    name: the registry raises on duplicates.
    """


@hookspec
def ogan_trainer_adapters() -> "list[TrainerAdapter]":
    """Return adapters that turn O-GAN on in a training package's own trainer.

    :func:`ogan_plugin.enable` asks every adapter (a
    :class:`~ogan_plugin.integrations.trainers.TrainerAdapter`: a name, what it
    recognises, and an ``enable(trainer, **options)`` that wraps the discriminator the
    package calls and attaches hook mode to the generator it samples from) and uses the
    first that recognises the trainer.  The built-in ones cover lightweight-gan and
    stylegan2-pytorch (:mod:`ogan_plugin.integrations.lightweight_gan`,
    :mod:`ogan_plugin.integrations.stylegan2_pytorch`); all plugins' adapters are collected.
    """
