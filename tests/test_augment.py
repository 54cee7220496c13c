"""translate / RandomTranslate: exact shifts against a float64 reference, gradients, state."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from ogan_plugin.augment import RandomTranslate, translate


def shifted(img: torch.Tensor, dy: int, dx: int, fill=None) -> torch.Tensor:
    """Reference: ``out[..., i, j] = img[..., i - dy, j - dx]``, outside = edge or fill."""
    H, W = img.shape[-2:]
    out = torch.empty_like(img)
    for i, j in itertools.product(range(H), range(W)):
        si, sj = i - dy, j - dx
        inside = 0 <= si < H and 0 <= sj < W
        if fill is not None and not inside:
            out[..., i, j] = fill
        else:
            out[..., i, j] = img[..., min(max(si, 0), H - 1), min(max(sj, 0), W - 1)]
    return out


def shifts_of(x: torch.Tensor, out: torch.Tensor, max_shift: int, fill=None) -> list[tuple[int, int]]:
    """The (dy, dx) each output image equals (exactly), asserting there is exactly one."""
    found = []
    for img, o in zip(x, out):
        hits = [
            (dy, dx)
            for dy, dx in itertools.product(range(-max_shift, max_shift + 1), repeat=2)
            if torch.equal(shifted(img, dy, dx, fill), o)
        ]
        assert len(hits) == 1, hits
        found.append(hits[0])
    return found


@pytest.mark.parametrize("fill", [None, -1.0], ids=["edge", "fill"])
def test_every_image_is_an_exact_shift_and_all_shifts_occur(fill):
    x = torch.randn(60, 2, 5, 6, dtype=torch.float64)
    out = translate(x, 2, fill=fill, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    found = shifts_of(x, out, 2, fill)
    assert set(found) >= {(-2, -2), (2, 2), (0, 0), (-2, 1)}  # 60 draws over 25 shifts
    assert len(set(found)) >= 20


def test_probability_leaves_the_rest_unchanged():
    x = torch.randn(400, 1, 4, 4, dtype=torch.float64)
    out = translate(x, 1, p=0.25, generator=torch.Generator().manual_seed(1))
    found = shifts_of(x, out, 1)
    moved = sum(s != (0, 0) for s in found) / len(found)
    assert moved == pytest.approx(0.25 * 8 / 9, abs=0.06)  # shifted with p, and (0, 0) is a draw
    assert translate(x, 1, p=0.0) is x
    assert translate(x, 0) is x


def test_any_leading_shape_and_the_same_shift_for_all_channels():
    x = torch.randn(5, 3, 2, 6, 6)
    out = translate(x, 1, generator=torch.Generator().manual_seed(2))
    flat = translate(x.reshape(5, 6, 6, 6), 1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out.reshape(5, 6, 6, 6), flat)
    gray = torch.randn(5, 6, 6)
    assert translate(gray, 1, generator=torch.Generator().manual_seed(2)).shape == (5, 6, 6)


def test_gradient_is_the_transposed_gather():
    x = torch.randn(4, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    fn = lambda t: translate(t, 2, fill=0.5, generator=torch.Generator().manual_seed(3))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    fn = lambda t: translate(t, 2, generator=torch.Generator().manual_seed(3))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    # edge replication: the gradient of the sum counts how often each pixel is read
    g = torch.autograd.grad(fn(x).sum(), x)[0]
    assert g.sum().item() == pytest.approx(4 * 25)
    assert (g >= 0).all()


def test_module_is_seeded_and_its_stream_is_in_the_state_dict():
    x = torch.randn(8, 1, 6, 6)
    a, b = RandomTranslate(1, p=0.5, seed=7), RandomTranslate(1, p=0.5, seed=7)
    assert torch.equal(a(x), b(x))
    saved = copy.deepcopy(a.state_dict())
    first = a(x)
    c = RandomTranslate(1, p=0.5, seed=123)
    c.load_state_dict(saved)
    assert torch.equal(c(x), first)
    assert "max_shift=1, p=0.5" in repr(a)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_shift": -1}, "max_shift"),
        ({"max_shift": 1.5}, "max_shift"),
        ({"max_shift": True}, "max_shift"),
        ({"p": 1.5}, "p must be"),
        ({"p": "half"}, "p must be"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        translate(torch.zeros(2, 1, 4, 4), **kwargs)
    with pytest.raises(ValueError, match=match):
        RandomTranslate(**kwargs)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="x must be a batch of images"):
        translate(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="x must be a batch of images"):
        translate([[1.0]])
