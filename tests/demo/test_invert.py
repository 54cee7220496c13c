"""``ogan-plugin invert`` end to end on a tiny demo checkpoint, and every bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from ogan_plugin import cli
from ogan_plugin.demo.train import CHECKPOINT, CHECKPOINT_VERSION, load_pair
from ogan_plugin.images import grid_size

FAST = ["--width", "8", "--batch-size", "16", "--eval-samples", "100", "--no-progress", "--threads", "1"]
QUICK = ["--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert cli.main(["demo", "--steps", "3", "--out", str(out), *FAST]) == 0
    return out / CHECKPOINT


@pytest.fixture
def inputs(tmp_path):
    """3 grayscale PNGs (24x24, resized to the checkpoint's 16x16) in a folder with a
    sub-folder, one loose PNG and a .npy of 4 images: 8 images in all."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "pngs"
    (folder / "sub").mkdir(parents=True)
    for i, where in enumerate(["a.png", "b.png", "sub/c.png"]):
        Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(folder / where)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / "one.png")
    np.save(tmp_path / "arr.npy", rng.random((4, 16, 16)).astype(np.float32))
    return [str(folder), str(tmp_path / "one.png"), str(tmp_path / "arr.npy")]


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_invert_writes_the_grid_the_codes_and_the_losses(checkpoint, inputs, tmp_path, capsys):
    out = tmp_path / "inv"
    assert cli.main(["invert", "--checkpoint", str(checkpoint), *inputs, "--out", str(out), "--steps", "15",
                     "--no-stop", *QUICK]) == 0
    assert "wrote inversions.png, codes.npz, losses.csv" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["codes.npz", "inversions.png", "losses.csv"]
    with Image.open(out / "inversions.png") as im:
        assert im.size == grid_size(3, 8, 16, 16)  # originals, encoder-only, refined; 8 columns
    codes = np.load(out / "codes.npz")
    assert codes["z"].shape == codes["encoder"].shape == (8, 32) and codes["z"].dtype == np.float32
    names = codes["names"].tolist()
    assert names[:4] == ["a.png", "b.png", "sub/c.png", inputs[1]] and names[4] == f"{inputs[2]}[0]"
    rows = _read_csv(out / "losses.csv")
    assert [r["name"] for r in rows] == names and [int(r["index"]) for r in rows] == list(range(8))
    assert all(int(r["steps"]) == 15 for r in rows)
    assert all(float(r["refined_loss"]) < float(r["encoder_loss"]) for r in rows)

    # the files say what they claim: G(encoder) and G(z) give the two losses of the table
    pair = load_pair(checkpoint)
    from ogan_plugin.demo.data import load_path

    x = torch.cat([load_path(p, None, 16).x for p in inputs])
    with torch.no_grad():
        for key, column in (("encoder", "encoder_loss"), ("z", "refined_loss")):
            mse = (pair.generator(torch.from_numpy(codes[key])) - x).pow(2).flatten(1).mean(1)
            np.testing.assert_allclose(mse.numpy(), [float(r[column]) for r in rows], rtol=1e-4)
        start = 0.9 * pair.discriminator.encode(x)
    np.testing.assert_allclose(codes["encoder"], start.numpy(), rtol=1e-5, atol=1e-6)


def test_load_pair_leaves_the_callers_random_state_alone(checkpoint):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    want = torch.rand(5)  # what the caller draws next without load_pair in between
    torch.set_rng_state(state)
    first = load_pair(checkpoint)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(5), want)
    # the weights are the checkpoint's, whatever the caller's state (building seeds a fork)
    torch.manual_seed(99)
    again = load_pair(checkpoint)
    for a, b in zip(first.discriminator.state_dict().values(), again.discriminator.state_dict().values()):
        assert torch.equal(a, b)


def test_steps_0_gives_the_encoder_codes_only(checkpoint, inputs, tmp_path):
    out = tmp_path / "codes"
    assert cli.main(["invert", "--checkpoint", str(checkpoint), *inputs, "--out", str(out), "--steps", "0", *QUICK]) == 0
    codes = np.load(out / "codes.npz")
    assert np.array_equal(codes["z"], codes["encoder"])
    rows = _read_csv(out / "losses.csv")
    assert all(r["steps"] == "0" and r["encoder_loss"] == r["refined_loss"] for r in rows)
    with Image.open(out / "inversions.png") as im:
        assert im.size == grid_size(2, 8, 16, 16)  # originals and encoder-only


def test_a_checkpoint_from_before_the_format_version_still_loads(checkpoint, inputs, tmp_path):
    state = torch.load(checkpoint, weights_only=True)
    assert state["format_version"] == CHECKPOINT_VERSION
    del state["format_version"]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    assert cli.main(["invert", "--checkpoint", str(old), inputs[1], "--out", str(tmp_path / "o"), "--steps", "2",
                     *QUICK]) == 0


def _fails(capsys, *argv: str) -> str:
    """Run ``ogan-plugin invert ARGV``: exit status 2 and one error line on stderr, returned."""
    assert cli.main(["invert", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ogan-plugin invert: error: "), err
    return err[0]


def test_unusable_checkpoints_are_refused(checkpoint, inputs, tmp_path, capsys):
    out = tmp_path / "o"
    args = [inputs[1], "--out", str(out), *QUICK]
    assert "no checkpoint at" in _fails(capsys, "--checkpoint", str(tmp_path / "missing.pt"), *args)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert "cannot read the checkpoint" in _fails(capsys, "--checkpoint", str(junk), *args)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    assert "cannot read the checkpoint" in _fails(capsys, "--checkpoint", str(truncated), *args)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert "is not an ogan-plugin demo checkpoint" in _fails(capsys, "--checkpoint", str(foreign), *args)
    state = torch.load(checkpoint, weights_only=True)
    newer = tmp_path / "newer.pt"
    torch.save({**state, "format_version": CHECKPOINT_VERSION + 1}, newer)
    line = _fails(capsys, "--checkpoint", str(newer), *args)
    assert f"checkpoint format {CHECKPOINT_VERSION + 1}" in line and "incompatible" in line
    misfit = tmp_path / "misfit.pt"
    torch.save({**state, "config": {**state["config"], "width": 16}}, misfit)
    assert "does not fit this version's demo networks" in _fails(capsys, "--checkpoint", str(misfit), *args)
    assert not out.exists()  # nothing written


def test_a_resume_refuses_a_newer_checkpoint_format(checkpoint, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "format_version": CHECKPOINT_VERSION + 1}, out / CHECKPOINT)
    assert cli.main(["demo", "--out", str(out), "--resume", "--steps", "4", *FAST]) == 2
    assert "incompatible" in capsys.readouterr().err


def test_bad_inputs_and_options_are_refused(checkpoint, inputs, tmp_path, capsys):
    out = tmp_path / "o"
    ck = ["--checkpoint", str(checkpoint), "--out", str(out), *QUICK]
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(rgb)
    line = _fails(capsys, str(rgb), *ck)
    assert "3-channel images" in line and "1-channel" in line and "--convert-channels" in line
    nan = tmp_path / "nan.npy"
    a = np.zeros((2, 16, 16), dtype=np.float32)
    a[1, 3, 3] = np.nan
    np.save(nan, a)
    assert "NaN or inf" in _fails(capsys, str(nan), *ck)
    inf = tmp_path / "inf.npy"
    np.save(inf, np.full((2, 16, 16), np.inf, dtype=np.float32))
    assert "NaN or inf" in _fails(capsys, str(inf), *ck)
    assert "does not exist" in _fails(capsys, str(tmp_path / "nowhere.png"), *ck)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "folder of images or a .npy/.npz" in _fails(capsys, str(text), *ck)
    assert "--steps must be >= 0, got -1" in _fails(capsys, inputs[1], "--steps", "-1", *ck)
    assert "--lr must be a finite number > 0, got 0.0" in _fails(capsys, inputs[1], "--lr", "0", *ck)
    assert "--lr must be a finite number > 0" in _fails(capsys, inputs[1], "--lr", "-0.1", *ck)
    assert "--tol must be a finite number >= 0" in _fails(capsys, inputs[1], "--tol", "nan", *ck)
    assert not out.exists()  # nothing written for a run that could not start
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    assert "is a file" in _fails(capsys, inputs[1], "--checkpoint", str(checkpoint), "--out", str(taken), *QUICK)
    assert taken.read_text() == "keep me"


def test_convert_channels_accepts_colour_images(checkpoint, tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.full((20, 20, 3), 200, dtype=np.uint8)).save(rgb)
    out = tmp_path / "o"
    assert cli.main(["invert", "--checkpoint", str(checkpoint), str(rgb), "--convert-channels", "--out", str(out),
                     "--steps", "1", *QUICK]) == 0
    assert np.load(out / "codes.npz")["z"].shape == (1, 32)
