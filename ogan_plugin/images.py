"""PNG pictures for the demo, drawn with Pillow (no matplotlib needed).

- :func:`image_grid` / :func:`save_grid`: a grid of images in ``[-1, 1]``, each cell
  upscaled by an integer factor (nearest neighbour) and separated by a padding line.
  A grid of ``rows x cols`` cells of ``h x w`` images is
  ``(rows * (h * scale + padding) + padding)`` pixels high and
  ``(cols * (w * scale + padding) + padding)`` wide (:func:`grid_size`).
- :func:`plot_curves` / :func:`save_curves`: line charts of training histories, one
  panel per group of series, ``width x height`` pixels.
"""

from __future__ import annotations

import math
import os
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ogan_plugin.checks import check_int

__all__ = ["grid_size", "tile", "image_grid", "save_grid", "plot_curves", "save_curves"]


def _pil():
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("drawing pictures needs Pillow: pip install 'ogan-plugin[demo]'") from exc
    return Image, ImageDraw, ImageFont


def grid_size(rows: int, cols: int, height: int, width: int, scale: int = 2, padding: int = 2) -> tuple[int, int]:
    """``(width, height)`` in pixels of a :func:`image_grid` (Pillow's order)."""
    return cols * (width * scale + padding) + padding, rows * (height * scale + padding) + padding


def tile(images: Tensor, cols: int, padding: int, pad_value: float) -> Tensor:
    """Lay ``images`` (N, C, h, w) out row by row, ``cols`` per row, into one (C, H, W)
    tensor of their dtype, cells separated and surrounded by ``padding`` lines of
    ``pad_value``."""
    n, c, h, w = images.shape
    rows = math.ceil(n / cols)
    grid = images.new_full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def image_grid(
    images: Tensor, nrow: Optional[int] = None, *, scale: int = 2, padding: int = 2, pad_value: int = 255
) -> "PIL.Image.Image":  # noqa: F821
    """A Pillow image of ``images`` laid out in a grid.

    Args:
        images: (N, C, H, W) with C = 1 or 3, or (R, K, C, H, W) for R rows of K images,
            values in [-1, 1] (clipped).
        nrow: images per row for 4-d input (default: ``ceil(sqrt(N))``).
        scale: integer upscaling of each image (nearest neighbour).
        padding: pixels between cells and around the grid.
        pad_value: gray level of the padding (0..255).
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 5:
        nrow = images.shape[1]
        images = images.flatten(0, 1)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, C, H, W) or (R, K, C, H, W) with C in (1, 3), got {tuple(images.shape)}")
    n = images.shape[0]
    if n == 0:
        raise ValueError("images is empty")
    check_int("scale", scale, 1)
    check_int("padding", padding, 0)
    cols = nrow if nrow is not None else math.ceil(math.sqrt(n))
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    c = images.shape[1]
    a = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    a = a.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)  # (N, C, h*s, w*s)
    canvas = tile(a, cols, padding, pad_value).permute(1, 2, 0).numpy()  # (H, W, C)
    Image, _, _ = _pil()
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")


def save_grid(images: Tensor, path: Union[str, os.PathLike], nrow: Optional[int] = None, **kwargs) -> "PIL.Image.Image":  # noqa: F821
    """:func:`image_grid` saved as a PNG at ``path``; returns the image."""
    img = image_grid(images, nrow, **kwargs)
    img.save(path, format="PNG", optimize=True)
    return img


_COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]


def _nice(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1e7:
        return str(int(v))
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def plot_curves(
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    steps: Optional[Sequence[float]] = None,
    width: int = 800,
    height: int = 300,
    smooth: int = 1,
    log_x: bool = False,
    log_y: bool = False,
) -> "PIL.Image.Image":  # noqa: F821
    """Line charts side by side, one panel per entry of ``panels``.

    Args:
        panels: ``{panel title: {series name: values}}``; all series share the x axis
            ``steps`` (default 1..len).  Non-finite values are skipped.
        width: width of the whole picture in pixels.
        height: height of the whole picture in pixels.
        smooth: moving-average window applied to each series (1 = raw).
        log_x: a logarithmic x axis (base 10); points at x <= 0 are skipped.
        log_y: a logarithmic y axis (base 10); values <= 0 are skipped.
    """
    if not panels:
        raise ValueError("panels is empty: nothing to plot")
    check_int("smooth", smooth, 1)
    if width < 100 * len(panels) or height < 100:
        raise ValueError(f"the picture is too small for {len(panels)} panels: {width}x{height}")
    Image, ImageDraw, ImageFont = _pil()
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    pw = width // len(panels)
    for p, (title, series) in enumerate(panels.items()):
        left, right, top, bottom = p * pw + 48, (p + 1) * pw - 10, 22, height - 22
        draw.text((p * pw + 48, 4), str(title), fill="black", font=font)
        arrays = {}
        for name, vals in series.items():
            v = np.asarray(list(vals), dtype=np.float64)
            if smooth > 1 and v.size >= smooth:
                kernel = np.ones(smooth) / smooth
                v = np.concatenate([np.full(smooth - 1, np.nan), np.convolve(v, kernel, mode="valid")])
            arrays[name] = v
        n = max((v.size for v in arrays.values()), default=0)
        xs = np.asarray(steps if steps is not None else np.arange(1, n + 1), dtype=np.float64)[:n]
        if log_x:
            keep = xs > 0
            xs = np.log10(xs[keep])
            arrays = {k: v[keep[: v.size]] for k, v in arrays.items()}
            n = xs.size
        if log_y:
            arrays = {k: np.log10(np.where(v > 0, v, np.nan)) for k, v in arrays.items()}
        label_x = (lambda v: _nice(10 ** v)) if log_x else _nice
        label_y = (lambda v: _nice(float(f"{10 ** v:.3g}"))) if log_y else _nice
        finite = [v[np.isfinite(v)] for v in arrays.values()]
        finite = [f for f in finite if f.size]
        draw.rectangle([left, top, right, bottom], outline=(120, 120, 120))
        if not finite or n == 0:
            draw.text((left + 6, top + 6), "no data", fill="gray", font=font)
            continue
        lo = min(float(f.min()) for f in finite)
        hi = max(float(f.max()) for f in finite)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        x_lo, x_hi = float(xs[0]), float(xs[-1]) if xs[-1] > xs[0] else float(xs[0]) + 1
        for frac in (0.0, 0.5, 1.0):
            yv = lo + frac * (hi - lo)
            yp = bottom - frac * (bottom - top)
            draw.line([left, yp, right, yp], fill=(225, 225, 225))
            draw.text((p * pw + 2, yp - 6), label_y(yv), fill="black", font=font)
        draw.text((left, bottom + 4), label_x(x_lo), fill="black", font=font)
        draw.text((right - 40, bottom + 4), label_x(x_hi), fill="black", font=font)
        if log_x:  # a tick at every power of ten inside the axis
            for decade in range(math.ceil(x_lo), math.floor(x_hi) + 1):
                xp = left + (decade - x_lo) / (x_hi - x_lo) * (right - left)
                draw.line([xp, bottom, xp, bottom - 4], fill=(120, 120, 120))
                if 0.08 < (decade - x_lo) / (x_hi - x_lo) < 0.92:
                    draw.text((xp - 8, bottom + 4), label_x(decade), fill="black", font=font)
        for k, (name, v) in enumerate(arrays.items()):
            color = _COLORS[k % len(_COLORS)]
            m = min(v.size, xs.size)
            px = left + (xs[:m] - x_lo) / (x_hi - x_lo) * (right - left)
            py = bottom - (v[:m] - lo) / (hi - lo) * (bottom - top)
            ok = np.isfinite(py)
            # draw each finite run as one polyline (at most ~2 points per horizontal pixel)
            stride = max(1, m // max(1, 2 * (right - left)))
            pts = [(float(a), float(b)) if o else None for a, b, o in zip(px[::stride], py[::stride], ok[::stride])]
            run: list[tuple[float, float]] = []
            for pt in pts + [None]:
                if pt is None:
                    if len(run) > 1:
                        draw.line(run, fill=color, width=1)
                    run = []
                else:
                    run.append(pt)
            draw.text((left + 6, top + 4 + 12 * k), str(name), fill=color, font=font)
    return img


def save_curves(
    panels: Mapping[str, Mapping[str, Sequence[float]]], path: Union[str, os.PathLike], **kwargs
) -> "PIL.Image.Image":  # noqa: F821
    """:func:`plot_curves` saved as a PNG at ``path``; returns the image."""
    img = plot_curves(panels, **kwargs)
    img.save(path, format="PNG", optimize=True)
    return img
