"""Image data for the demo: scikit-learn's digits, a folder of images, or a numpy array.

Every loader returns float32 tensors ``(N, C, H, W)`` scaled to ``[-1, 1]`` (the range
of the generator's ``tanh``) and integer labels when the source has them.
:func:`split` makes the fixed-seed held-out split the demo never trains on.

The digits (``sklearn.datasets.load_digits``: 1797 real 8x8 scans with values 0..16,
shipped inside scikit-learn, no network) are upsampled to 16x16 with bilinear
interpolation: 16 is the smallest size where the DCGAN-like nets have two stride-2
stages on each side, and bilinear upsampling adds no information but keeps the strokes
smooth rather than blocky.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ImageData", "Split", "load_digits", "load_image_file", "load_image_folder", "load_array", "load_path", "load_demo_data", "split"]


@dataclass
class ImageData:
    """Images ``x`` (N, C, H, W) float32 in [-1, 1], labels ``y`` (N,) int64 or None,
    ``classes``: label names (index -> name) when known, ``source``: where they came from,
    ``names``: one name per image (its file) when read from image files, else None."""

    x: Tensor
    y: Optional[Tensor]
    classes: Optional[list[str]]
    source: str
    names: Optional[list[str]] = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Split:
    """A train / held-out split of :class:`ImageData` (labels None when unknown)."""

    train_x: Tensor
    train_y: Optional[Tensor]
    test_x: Tensor
    test_y: Optional[Tensor]


def _resize(x: Tensor, image_size: Optional[int]) -> Tensor:
    if image_size is None or (x.shape[-2] == image_size and x.shape[-1] == image_size):
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp(-1, 1)


def _check_image_size(image_size: Optional[int]) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")


def load_digits(image_size: int = 16) -> ImageData:
    """scikit-learn's handwritten digits, upsampled (bilinear) to ``image_size``, in [-1, 1]."""
    _check_image_size(image_size)
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the digits data needs scikit-learn: pip install 'ogan-plugin[demo]'") from exc
    d = _sk_load_digits()
    x = torch.from_numpy(d.images.astype(np.float32))[:, None] / 8.0 - 1.0  # 0..16 -> -1..1
    return ImageData(_resize(x, image_size), torch.from_numpy(d.target.astype(np.int64)),
                     [str(i) for i in range(10)], "sklearn.datasets.load_digits")


def _to_unit_range(a: np.ndarray, name: str) -> np.ndarray:
    """uint8/ints -> /255 (or /max for wider ints); floats in [0, 1] or [-1, 1] kept; -> [-1, 1]."""
    if a.dtype == np.bool_:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        top = 255.0 if a.dtype == np.uint8 or (a.size and a.max() <= 255) else float(a.max())
        if a.size and a.min() < 0:
            raise ValueError(f"{name}: integer images must be non-negative, found minimum {a.min()}")
        a = a.astype(np.float32) / max(top, 1.0)
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf values")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
        if lo >= -1.0 - 1e-6 and hi <= 1.0 + 1e-6 and lo < 0:
            return np.clip(a, -1, 1)  # already [-1, 1]
        if lo < -1e-6 or hi > 1.0 + 1e-6:
            raise ValueError(
                f"{name}: float images must lie in [0, 1] or [-1, 1], found values in [{lo:.3g}, {hi:.3g}]"
            )
    else:
        raise TypeError(f"{name} must hold numbers, got dtype {a.dtype}")
    return np.clip(a, 0, 1) * 2.0 - 1.0


def _array_to_nchw(a: np.ndarray, channels: Optional[int], name: str) -> np.ndarray:
    """(N,H,W) / (N,H,W,C) / (N,C,H,W) -> (N,C,H,W) with the requested channel count."""
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        if a.shape[1] not in (1, 3, 4) and a.shape[-1] in (1, 3, 4):
            a = a.transpose(0, 3, 1, 2)
        elif a.shape[1] not in (1, 3, 4):
            raise ValueError(f"{name}: cannot tell the channel axis of shape {a.shape} (expected 1, 3 or 4 channels)")
    else:
        raise ValueError(f"{name} must have shape (N, H, W), (N, H, W, C) or (N, C, H, W), got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} holds no images (shape {a.shape})")
    if a.shape[1] == 4:
        a = a[:, :3]
    if channels is None or channels == a.shape[1]:
        return a
    if channels == 1:
        w = np.array([0.299, 0.587, 0.114], dtype=np.float32)[None, :, None, None]
        return (a * w).sum(axis=1, keepdims=True)
    if channels == 3 and a.shape[1] == 1:
        return np.repeat(a, 3, axis=1)
    raise ValueError(f"channels must be 1 or 3, got {channels!r}")


def load_array(path: Union[str, os.PathLike], channels: Optional[int] = None, image_size: Optional[int] = None) -> ImageData:
    """Images from a ``.npy`` array or a ``.npz`` archive.

    A ``.npz`` holds the images under ``x``, ``images`` or its only array, and optionally
    labels under ``y`` or ``labels`` (one per image).  Shapes (N, H, W), (N, H, W, C) or
    (N, C, H, W); integer pixels are read as 0..255, floats as [0, 1] or [-1, 1].
    ``channels`` (1 or 3) converts grayscale/RGB; ``image_size`` resizes (bilinear).
    """
    _check_image_size(image_size)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    labels = None
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot read {str(path)!r} as a .npy/.npz array: {exc}") from exc
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            key = next((k for k in ("x", "images") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ValueError(f"{str(path)!r}: put the images under 'x' or 'images' (found arrays {keys})")
            images = loaded[key]
            lkey = next((k for k in ("y", "labels") if k in keys), None)
            if lkey is not None:
                labels = np.asarray(loaded[lkey])
    else:
        images = loaded
    name = str(path)
    a = _array_to_nchw(_to_unit_range(np.asarray(images), name), channels, name)
    y = None
    if labels is not None:
        if labels.ndim != 1 or labels.shape[0] != a.shape[0]:
            raise ValueError(
                f"{name}: labels have shape {labels.shape} but there are {a.shape[0]} images (need one label each)"
            )
        classes, inverse = np.unique(labels, return_inverse=True)
        y = torch.from_numpy(inverse.astype(np.int64))
        class_names: Optional[list[str]] = [str(c) for c in classes]
    else:
        class_names = None
    x = _resize(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)), image_size)
    return ImageData(x, y, class_names, name)


#: Pillow modes kept as one channel when ``channels=None`` (everything else reads as RGB)
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _pillow():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading image files needs Pillow: pip install 'ogan-plugin[demo]'") from exc
    return Image, UnidentifiedImageError


def _check_channels(channels: Optional[int]) -> None:
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"channels must be 1, 3 or None (the images' own), got {channels!r}")


def _read_image(path: Path, channels: Optional[int], image_size: Optional[int]) -> np.ndarray:
    """One image file as uint8 (H, W) (grayscale) or (H, W, 3) (RGB), resized (bilinear)
    to ``image_size`` when given; ``channels=None`` keeps grayscale files grayscale."""
    Image, _ = _pillow()
    with Image.open(path) as im:
        gray = im.mode in _GRAY_MODES if channels is None else channels == 1
        im = im.convert("L" if gray else "RGB")
        if image_size is not None and im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def _from_uint8(arrays: list[np.ndarray]) -> Tensor:
    """Same-shaped uint8 (H, W) / (H, W, 3) arrays -> (N, C, H, W) float32 in [-1, 1]."""
    a = np.stack(arrays)
    a = a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2)
    return torch.from_numpy(a.astype(np.float32) / 127.5 - 1.0)


def load_image_file(
    path: Union[str, os.PathLike], channels: Optional[int] = 1, image_size: Optional[int] = None
) -> ImageData:
    """One image file read with Pillow, as :class:`ImageData` of one image (no label).

    ``channels`` 1 or 3 converts to grayscale or RGB; ``None`` keeps the file's own kind
    (grayscale modes stay one channel, anything else becomes RGB).  ``image_size`` resizes
    (bilinear).  ``ValueError`` when Pillow cannot read the file.
    """
    _check_image_size(image_size)
    _check_channels(channels)
    _, UnidentifiedImageError = _pillow()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file {str(p)!r} does not exist")
    try:
        a = _read_image(p, channels, image_size)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read {str(p)!r} as an image: {exc}") from exc
    return ImageData(_from_uint8([a]), None, None, str(p), [str(p)])


def load_image_folder(
    path: Union[str, os.PathLike], channels: Optional[int] = 1, image_size: Optional[int] = None
) -> ImageData:
    """Every image file under ``path`` (recursively), read with Pillow.

    Files Pillow cannot read are skipped and counted (a warning says how many); no
    readable image at all raises ``ValueError``.  Images are converted to grayscale
    (``channels=1``) or RGB (``channels=3``); ``channels=None`` keeps their own kind (then
    they must all be grayscale or all colour).  With ``image_size`` every image is resized
    to it (bilinear); without it, all images must already have the same size.  When the
    images sit in sub-folders (``path/cat/1.png``, ``path/dog/2.png``), the sub-folder
    names become the labels.  ``names`` lists the files read, relative to ``path``.
    """
    _check_image_size(image_size)
    _check_channels(channels)
    Image, UnidentifiedImageError = _pillow()
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {str(root)!r} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"data folder {str(root)!r} is empty: no files found")
    arrays, folders, read, skipped = [], [], [], []
    for f in files:
        try:
            arrays.append(_read_image(f, channels, image_size))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            skipped.append(f)
            continue
        folders.append(str(f.parent.relative_to(root)))
        read.append(f)
    if skipped:
        import warnings

        warnings.warn(
            f"skipped {len(skipped)} of {len(files)} files in {str(root)!r} that Pillow cannot read "
            f"(e.g. {skipped[0].name!r})",
            stacklevel=2,
        )
    if not arrays:
        raise ValueError(f"no readable images in {str(root)!r}: all {len(files)} files were skipped as unreadable")
    kinds = {a.ndim for a in arrays}
    if len(kinds) > 1:
        gray, colour = (next(f.name for f, a in zip(read, arrays) if a.ndim == k) for k in (2, 3))
        raise ValueError(
            f"images in {str(root)!r} mix grayscale and colour (e.g. {gray!r} and {colour!r}); "
            "convert them to one kind (channels 1 or 3)"
        )
    sizes = sorted({a.shape[:2] for a in arrays})
    if len(sizes) > 1:
        raise ValueError(
            f"images in {str(root)!r} have different sizes {[f'{w}x{h}' for h, w in sizes[:5]]}"
            f"{' ...' if len(sizes) > 5 else ''}; pass image_size (--image-size) to resize them all"
        )
    x = _from_uint8(arrays)
    names = [str(f.relative_to(root)) for f in read]
    labels = sorted(set(folders))
    if len(labels) > 1:
        index = {n: i for i, n in enumerate(labels)}
        return ImageData(x, torch.tensor([index[n] for n in folders], dtype=torch.int64), labels, str(root), names)
    return ImageData(x, None, None, str(root), names)


def load_path(path: Union[str, os.PathLike], channels: Optional[int] = 1, image_size: Optional[int] = None) -> ImageData:
    """A folder (:func:`load_image_folder`), a ``.npy``/``.npz`` file (:func:`load_array`) or
    one image file (:func:`load_image_file`)."""
    p = Path(path)
    if p.is_dir():
        return load_image_folder(p, channels, image_size)
    if p.suffix.lower() in (".npy", ".npz"):
        return load_array(p, channels, image_size)
    if not p.exists():
        raise FileNotFoundError(f"data path {str(p)!r} does not exist")
    try:
        return load_image_file(p, channels, image_size)
    except ValueError:
        raise ValueError(
            f"data path {str(p)!r} must be a folder of images or a .npy/.npz file, or an image file Pillow reads"
        ) from None


def load_demo_data(data: Optional[str], channels: int = 1, image_size: Optional[int] = None) -> ImageData:
    """The images of an ``ogan-plugin demo`` run from its ``--data``, ``--channels`` and
    ``--image-size``: the digits (at ``image_size``, default 16) when ``data`` is None,
    else :func:`load_path`."""
    if data is None:
        return load_digits(image_size or 16)
    return load_path(data, channels, image_size)


def split(data: ImageData, held_out: float = 0.2, seed: int = 0) -> Split:
    """A fixed-seed random split; ``held_out`` of the images (at least one) are kept apart.

    With labels, the split is stratified per class, so both parts see every class.
    """
    if isinstance(held_out, bool) or not isinstance(held_out, (int, float)) or not 0 < held_out < 1:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out!r}")
    n = len(data)
    if n < 2:
        raise ValueError(f"need at least 2 images to make a held-out split, got {n}")
    g = torch.Generator().manual_seed(seed)
    if data.y is None:
        perm = torch.randperm(n, generator=g)
        k = min(n - 1, max(1, int(round(held_out * n))))
        test_idx, train_idx = perm[:k], perm[k:]
    else:
        test_parts, train_parts = [], []
        for c in torch.unique(data.y):
            idx = torch.nonzero(data.y == c).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            k = int(round(held_out * len(idx))) if len(idx) > 1 else 0
            test_parts.append(idx[:k])
            train_parts.append(idx[k:])
        test_idx, train_idx = torch.cat(test_parts).sort().values, torch.cat(train_parts).sort().values
        if len(test_idx) == 0:
            raise ValueError(f"held_out={held_out} leaves no held-out image; use a larger fraction")
    y = data.y
    return Split(
        data.x[train_idx], None if y is None else y[train_idx], data.x[test_idx], None if y is None else y[test_idx]
    )
