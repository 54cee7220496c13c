"""ogan_plugin.images: grids and curves drawn with Pillow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ogan_plugin.images import grid_size, image_grid, plot_curves, save_curves, save_grid


def test_grid_layout_and_values(tmp_path):
    x = torch.zeros(5, 1, 3, 4)
    x[0] = -1
    x[1] = 1
    img = save_grid(x, tmp_path / "g.png", nrow=3, scale=2, padding=1, pad_value=7)
    assert img.size == grid_size(2, 3, 3, 4, 2, 1) == (3 * (8 + 1) + 1, 2 * (6 + 1) + 1)
    a = np.asarray(Image.open(tmp_path / "g.png"))
    assert a[0, 0] == 7  # padding
    assert (a[1:7, 1:9] == 0).all()  # image 0 at -1 -> black, upscaled 2x
    assert (a[1:7, 10:18] == 255).all()  # image 1 at +1 -> white
    assert (a[1:7, 19:27] == 128).all()  # image 2 at 0 -> mid gray
    assert (a[8:14, 19:27] == 7).all()  # sixth cell is empty: padding colour


def test_grid_rows_from_5d_and_rgb():
    img = image_grid(torch.rand(3, 4, 3, 5, 5) * 2 - 1, scale=1, padding=0)
    assert img.size == (20, 15) and img.mode == "RGB"


def test_grid_errors():
    with pytest.raises(ValueError, match="shape"):
        image_grid(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="empty"):
        image_grid(torch.zeros(0, 1, 4, 4))
    with pytest.raises(ValueError, match="scale"):
        image_grid(torch.zeros(1, 1, 4, 4), scale=0)
    with pytest.raises(TypeError, match="Tensor"):
        image_grid(np.zeros((1, 1, 4, 4)))


def test_curves(tmp_path):
    vals = [math.sin(i / 10) for i in range(200)]
    vals[5] = float("nan")
    img = save_curves({"a": {"x": vals, "y": [1.0] * 200}, "b": {"rho": list(range(200))}}, tmp_path / "c.png",
                      width=600, height=200, smooth=5)
    assert img.size == (600, 200)
    with Image.open(tmp_path / "c.png") as im:
        assert im.size == (600, 200)
        a = np.asarray(im.convert("RGB"))
    assert (a != 255).any(axis=2).sum() > 500  # something was drawn
    # an empty series is drawn as "no data" rather than failing
    assert plot_curves({"empty": {"x": []}}, width=200, height=120).size == (200, 120)
    with pytest.raises(ValueError, match="empty"):
        plot_curves({})
    with pytest.raises(ValueError, match="too small"):
        plot_curves({"a": {"x": [1.0]}, "b": {"y": [1.0]}}, width=150)
