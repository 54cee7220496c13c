"""The shared argument checks (ogan_plugin.checks): what they accept, and messages naming the argument."""

from __future__ import annotations

import math

import pytest

from ogan_plugin.checks import check_int, check_number, named_or_callable


def test_check_int_returns_ints_at_or_above_the_minimum():
    assert check_int("steps", 0, 0) == 0 and check_int("--budget", 7, 1) == 7


@pytest.mark.parametrize("value", [-1, True, 2.0, "3", None])
def test_check_int_refuses_with_the_shared_text(value):
    with pytest.raises(ValueError) as err:
        check_int("batch_size", value, 0)
    assert str(err.value) == f"batch_size must be an int >= 0, got {value!r}"


def test_check_number():
    assert check_number("lr", 1) == 1.0 and isinstance(check_number("lr", 1), float)
    assert check_number("prior", 0.0, minimum=0.0) == 0.0
    for value in (math.nan, math.inf, False, "1"):
        with pytest.raises(ValueError, match=r"^lr must be a finite number, got "):
            check_number("lr", value)
    with pytest.raises(ValueError, match=r"^lr must be > 0, got 0$"):
        check_number("lr", 0, positive=True)
    with pytest.raises(ValueError, match=r"^tol must be >= 0.0, got -1$"):
        check_number("tol", -1, minimum=0.0)


def test_named_or_callable():
    known = {"b": abs, "a": round}
    assert named_or_callable("loss", "a", known) is round
    own = lambda v: v  # noqa: E731
    assert named_or_callable("loss", own, known) is own
    with pytest.raises(ValueError, match=r"^loss must be one of \['a', 'b'\] or a callable, got 'c'$"):
        named_or_callable("loss", "c", known)
    with pytest.raises(TypeError, match=r"^loss must be a name or a callable, got int$"):
        named_or_callable("loss", 3, known)
    with pytest.raises(TypeError, match=r"^reduction must be a name or a function \(B,\) -> \(\), got int$"):
        named_or_callable("reduction", 3, known, "a function (B,) -> ()")
