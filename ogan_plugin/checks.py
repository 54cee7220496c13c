"""Argument checks shared by the public functions: one place per check and per error text.

Each check returns the value (converted where it says so) or raises an error whose message
starts with the argument's name, so the functions that use them check their inputs at the
public boundary in one line each::

    steps = check_int("steps", steps, 0)         # "steps must be an int >= 0, got -1"
    loss_fn = named_or_callable("loss", loss, LOSSES)
    check_device("z", z, x_real.device, "x_real")  # "z is on cpu, x_real on cuda:0: ..."
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, TypeVar

__all__ = ["check_int", "check_number", "named_or_callable", "check_device"]

F = TypeVar("F", bound=Callable[..., Any])


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) of at least ``minimum``.

    Args:
        name: the argument's name, as the message shows it (``"steps"``, ``"--budget"``).
        value: what was passed.
        minimum: the smallest value allowed.

    Returns:
        ``value`` itself.

    Raises:
        ValueError: ``{name} must be an int >= {minimum}, got {value!r}``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_number(name: str, value: Any, *, positive: bool = False, minimum: Optional[float] = None) -> float:
    """``value`` as a ``float`` if it is a finite real number (not a ``bool``) within bounds.

    Args:
        name: the argument's name, as the message shows it.
        value: what was passed.
        positive: require ``value > 0``.
        minimum: require ``value >= minimum``.

    Returns:
        ``float(value)``.

    Raises:
        ValueError: ``{name} must be a finite number``, ``{name} must be > 0`` or
            ``{name} must be >= {minimum}`` (each followed by ``, got {value!r}``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


def named_or_callable(name: str, value: Any, known: Mapping[str, F], what: str = "a callable") -> F:
    """``known[value]`` for a name, ``value`` itself for a callable.

    Args:
        name: the argument's name, as the message shows it.
        value: a key of ``known`` or a callable.
        known: the choices by name.
        what: how the messages describe the callable (e.g. ``"a function (B, z) -> (B,)"``).

    Returns:
        The callable.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        TypeError: neither a string nor callable.
    """
    if isinstance(value, str):
        if value not in known:
            raise ValueError(f"{name} must be one of {sorted(known)} or {what}, got {value!r}")
        return known[value]
    if not callable(value):
        raise TypeError(f"{name} must be a name or {what}, got {type(value).__name__}")
    return value


def check_device(name: str, tensor: Any, device: Any, other: str) -> None:
    """Raise ``ValueError`` when ``tensor`` is not on ``device``, where ``other`` lives.

    On a GPU a tensor left on the CPU otherwise fails deep inside a network or a kernel
    with an error that names no argument.

    Args:
        name: the argument's name, as the message shows it (``"z"``).
        tensor: what was passed (anything without a ``device`` is left to other checks).
        device: the device it must be on.
        other: what is on ``device``, as the message shows it (``"x_real"``,
            ``"the generator's parameters"``).

    Raises:
        ValueError: ``{name} is on {tensor.device}, {other} on {device}: ...``.
    """
    have = getattr(tensor, "device", None)
    if have is not None and device is not None and have != device:
        raise ValueError(f"{name} is on {have}, {other} on {device}: put them on one device")
