"""ogan_plugin.demo.data: the digits, image folders, arrays, the held-out split, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ogan_plugin.demo import data as datasets


def test_digits_are_upsampled_and_scaled():
    d = datasets.load_digits(16)
    assert d.x.shape == (1797, 1, 16, 16) and d.x.dtype == torch.float32
    assert d.x.min() >= -1 and d.x.max() <= 1
    assert d.y.shape == (1797,) and set(d.y.tolist()) == set(range(10))
    small = datasets.load_digits(8)
    from sklearn.datasets import load_digits

    raw = torch.from_numpy(load_digits().images).float()
    torch.testing.assert_close(small.x[:, 0], raw / 8 - 1)


def test_split_is_stratified_disjoint_and_fixed():
    d = datasets.load_digits(8)
    a, b = datasets.split(d, 0.2, seed=0), datasets.split(d, 0.2, seed=0)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y)
    assert a.train_x.shape[0] + a.test_x.shape[0] == 1797
    assert 0.19 < a.test_x.shape[0] / 1797 < 0.21
    for c in range(10):
        share = (a.test_y == c).sum() / (d.y == c).sum()
        assert 0.15 < share < 0.25
    # disjoint: no held-out image equals a training image exactly
    train = {tuple(r.tolist()) for r in a.train_x.flatten(1)}
    dup = sum(tuple(r.tolist()) in train for r in a.test_x.flatten(1))
    assert dup <= 2  # the digits contain a few exact duplicate scans
    c = datasets.split(d, 0.2, seed=1)
    assert not torch.equal(a.test_x, c.test_x)
    with pytest.raises(ValueError, match="held_out"):
        datasets.split(d, 1.5)


def _png(path, size=(8, 8), value=128, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)


def test_folder_with_subfolders_gives_labels(tmp_path):
    for i in range(3):
        _png(tmp_path / "cats" / f"{i}.png", value=10)
        _png(tmp_path / "dogs" / f"{i}.jpg", value=250, mode="RGB")
    d = datasets.load_image_folder(tmp_path, channels=1)
    assert d.x.shape == (6, 1, 8, 8) and d.classes == ["cats", "dogs"]
    assert d.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert d.x[0].max() == pytest.approx(10 / 127.5 - 1)
    rgb = datasets.load_image_folder(tmp_path, channels=3, image_size=16)
    assert rgb.x.shape == (6, 3, 16, 16)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        datasets.load_image_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.load_path(tmp_path / "missing")


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.warns(UserWarning, match="skipped 2 of 4 files"):
        d = datasets.load_image_folder(tmp_path)
    assert len(d) == 2 and d.y is None


def test_only_unreadable_files_is_an_error(tmp_path):
    (tmp_path / "x.txt").write_text("nope")
    with pytest.warns(UserWarning, match="skipped 1 of 1"), pytest.raises(ValueError, match="no readable images"):
        datasets.load_image_folder(tmp_path)


def test_mismatched_sizes_need_image_size(tmp_path):
    _png(tmp_path / "a.png", size=(8, 8))
    _png(tmp_path / "b.png", size=(12, 10))
    with pytest.raises(ValueError, match="different sizes.*--image-size"):
        datasets.load_image_folder(tmp_path)
    d = datasets.load_image_folder(tmp_path, image_size=8)
    assert d.x.shape == (2, 1, 8, 8)


def test_arrays(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", imgs)
    d = datasets.load_path(tmp_path / "a.npy", channels=3)
    assert d.x.shape == (10, 3, 8, 8) and d.y is None
    torch.testing.assert_close(d.x[0, 1], torch.from_numpy(imgs[0, :, :, 1]).float() / 127.5 - 1)
    gray = datasets.load_array(tmp_path / "a.npy", channels=1, image_size=16)
    assert gray.x.shape == (10, 1, 16, 16)
    np.savez(tmp_path / "b.npz", x=imgs[..., 0], y=np.array(list("ababababab")))
    d = datasets.load_path(tmp_path / "b.npz")
    assert d.x.shape == (10, 1, 8, 8) and d.classes == ["a", "b"] and d.y.tolist() == [0, 1] * 5
    np.savez(tmp_path / "c.npz", x=imgs[..., 0], y=np.arange(3))
    with pytest.raises(ValueError, match="labels have shape"):
        datasets.load_path(tmp_path / "c.npz")
    np.save(tmp_path / "d.npy", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="must have shape"):
        datasets.load_path(tmp_path / "d.npy")
    np.save(tmp_path / "e.npy", np.full((2, 4, 4), 7.5))
    with pytest.raises(ValueError, match=r"\[0, 1\] or \[-1, 1\]"):
        datasets.load_path(tmp_path / "e.npy")
    (tmp_path / "f.csv").write_text("1,2")
    with pytest.raises(ValueError, match="folder of images or a .npy/.npz"):
        datasets.load_path(tmp_path / "f.csv")
