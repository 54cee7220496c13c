"""``ogan-plugin demo`` end to end (tiny runs), exact resumption, and bad inputs."""

from __future__ import annotations

import json
import math
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from ogan_plugin import cli
from ogan_plugin.demo import command as demo

# small and fast: narrow nets, few steps, few samples for the metrics
FAST = ["--width", "8", "--batch-size", "16", "--eval-samples", "100", "--no-progress", "--threads", "1"]


def _finite_numbers(obj, where="metrics"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _finite_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _finite_numbers(v, f"{where}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield where, obj


def test_short_run_writes_everything(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--steps", "6", "--out", str(out), "--compare-plain", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "mean rho" in printed and "plain GAN" in printed
    files = ("samples.png", "plain_samples.png", "reconstructions.png", "interpolations.png", "training.png",
             "metrics.json", "checkpoint.pt")
    for name in files:
        assert (out / name).is_file(), name
        assert name in printed, name
    sizes = {"samples.png": (342, 342), "plain_samples.png": (342, 342), "reconstructions.png": (342, 274), "interpolations.png": (342, 274),
             "training.png": (800, 300)}
    for name, size in sizes.items():
        with Image.open(out / name) as im:
            im.load()
            assert im.size == size, name
    m = json.loads((out / "metrics.json").read_text())
    required = [
        "mean_rho", "reconstruction_mse", "mean_image_mse", "class_agreement", "probe_code_accuracy",
        "probe_pixel_accuracy", "sample_confidence", "sample_classes_present", "frechet", "frechet_reference",
        "train_seconds", "steps_per_second",
    ]
    for key in required:
        assert isinstance(m[key], (int, float)) and math.isfinite(m[key]), key
    for key in ("sample_confidence", "sample_classes_present", "frechet", "train_seconds"):
        assert math.isfinite(m["plain"][key]), key
    for where, v in _finite_numbers(m):
        assert math.isfinite(v), where
    assert m["steps"] == 6 and m["held_out_images"] >= 0.15 * 1797
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 6 and set(ck) >= {"generator", "discriminator", "trainer", "config", "rng", "history"}
    assert len(ck["history"]["rho"]) == 6


def _weights(path):
    ck = torch.load(path, weights_only=False)
    return ck


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, monkeypatch, device):
    """Exactly on the CPU.  On CUDA the resumed run matches to rounding only: some GPU kernels
    (cuDNN's, atomics) do not give the same bits run after run, resumed or not."""
    args = ["--steps", "8", "--checkpoint-every", "100", "--ema-decay", "0.9", "--device", device, *FAST]
    if device == "cpu":
        same = torch.equal
    else:
        def same(a, b):
            return torch.allclose(a, b, rtol=1e-3, atol=1e-5)
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert cli.main(["demo", "--out", str(full), *args]) == 0

    from ogan_plugin.step import SingleLossStep

    real_step = SingleLossStep.step

    def interrupted(self, x, z=None):
        result = real_step(self, x, z)
        if self.step_count == 5:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the run
        return result

    monkeypatch.setattr(SingleLossStep, "step", interrupted)
    assert cli.main(["demo", "--out", str(cut), *args]) == 130
    assert torch.load(cut / "checkpoint.pt", weights_only=False)["step"] == 5
    monkeypatch.setattr(SingleLossStep, "step", real_step)
    assert cli.main(["demo", "--out", str(cut), "--resume", *args]) == 0

    a, b = _weights(full / "checkpoint.pt"), _weights(cut / "checkpoint.pt")
    assert a["step"] == b["step"] == 8
    for part in ("generator", "discriminator"):
        for k in a[part]:
            assert same(a[part][k], b[part][k]), f"{part}.{k}"
    for k, v in a["trainer"]["ema"]["module"].items():
        assert same(v, b["trainer"]["ema"]["module"][k]), f"ema.{k}"
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (full, cut))
    if device == "cpu":
        assert a["history"] == b["history"]
        assert ma["mean_rho"] == mb["mean_rho"] and ma["reconstruction_mse"] == mb["reconstruction_mse"]
    else:
        assert a["history"].keys() == b["history"].keys()
        for k in a["history"]:
            assert np.allclose(a["history"][k], b["history"][k], rtol=1e-3, atol=1e-5), k
        assert math.isclose(ma["mean_rho"], mb["mean_rho"], rel_tol=1e-3, abs_tol=1e-4)
        assert math.isclose(ma["reconstruction_mse"], mb["reconstruction_mse"], rel_tol=1e-3, abs_tol=1e-5)


def _fails(capsys, *argv: str) -> str:
    """Run ``ogan-plugin demo ARGV``: exit status 2 and one error line on stderr, returned."""
    assert cli.main(["demo", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ogan-plugin demo: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_resume_refuses_other_training_options(tmp_path, capsys):
    out = tmp_path / "r"
    assert "no checkpoint" in _fails(capsys, "--out", str(out), "--resume", *FAST)
    assert cli.main(["demo", "--out", str(out), "--steps", "2", *FAST]) == 0
    capsys.readouterr()
    line = _fails(capsys, "--out", str(out), "--resume", "--steps", "3", "--lr", "0.01", *FAST)
    assert "--lr 0.01 differs from the checkpoint" in line
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert "cannot read the checkpoint" in _fails(capsys, "--out", str(out), "--resume", "--steps", "3", *FAST)


def test_resume_of_a_checkpoint_from_before_the_shifts_and_the_generator_weight(tmp_path):
    out = tmp_path / "old"
    assert cli.main(["demo", "--out", str(out), "--steps", "2", "--translate", "0", "--corr-weight-g", "2.5", *FAST]) == 0
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    for key in ("translate", "translate_p", "corr_weight_g"):  # as written before the options existed
        del ck["config"][key]
    del ck["trainer"]["augment"]
    torch.save(ck, out / "checkpoint.pt")
    assert cli.main(["demo", "--out", str(out), "--steps", "3", "--resume", *FAST]) == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["translate"] == 0 and config["corr_weight_g"] is None  # G's weight = corr_weight, as then


def test_bad_data_inputs(tmp_path, capsys):
    o = str(tmp_path / "o")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "empty" in _fails(capsys, "--data", str(empty), "--out", o, *FAST)
    assert "does not exist" in _fails(capsys, "--data", str(tmp_path / "nowhere"), "--out", o, *FAST)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("x")
    with pytest.warns(UserWarning, match="skipped 1 of 1"):
        assert "no readable images" in _fails(capsys, "--data", str(junk), "--out", o, *FAST)
    odd = tmp_path / "odd.npy"
    np.save(odd, np.zeros((40, 12, 12), dtype=np.uint8))
    assert "power-of-two" in _fails(capsys, "--data", str(odd), "--out", o, *FAST)
    assert not (tmp_path / "o").exists()  # nothing written for a run that could not start


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "-5"], "--steps must be an int >= 1, got -5"),
        (["--held-out", "0.05"], "--held-out"),
        (["--loss", "nope"], "loss"),
        (["--translate", "-1"], "--translate must be an int >= 0"),
        (["--translate-p", "1.5"], "--translate-p must be in"),
        (["--corr-weight-g", "-1"], "--corr-weight-g must be >= 0"),
        (["--device", "tpu:9"], "--device"),
    ],
)
def test_bad_options_get_one_line_and_status_2(tmp_path, capsys, argv, message):
    assert message in _fails(capsys, *argv, "--out", str(tmp_path / "o"), *FAST)


def test_an_out_path_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert "is a file" in _fails(capsys, "--steps", "2", "--out", str(target), *FAST)
    assert target.read_text() == "keep me"


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    from ogan_plugin.cli import CommandError

    with pytest.raises(CommandError, match="--steps"):
        cli.main(["demo", "--debug", "--steps", "-5", "--out", str(tmp_path / "o"), *FAST])
    with pytest.raises(CommandError, match="--steps"):
        cli.main(["--debug", "demo", "--steps", "-5", "--out", str(tmp_path / "o"), *FAST])
    monkeypatch.setenv("OGAN_PLUGIN_DEBUG", "1")
    with pytest.raises(CommandError, match="--steps"):
        cli.main(["demo", "--steps", "-5", "--out", str(tmp_path / "o"), *FAST])


def test_unlabelled_array_data_runs(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "imgs.npy", rng.integers(0, 256, size=(60, 12, 12), dtype=np.uint8))
    out = tmp_path / "o"
    assert cli.main(["demo", "--data", str(tmp_path / "imgs.npy"), "--image-size", "8", "--steps", "2",
                     "--out", str(out), *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(m["mean_rho"]) and m["class_agreement"] is None


def test_format_table_has_both_columns():
    text = demo.format_table({"mean_rho": 0.5, "sample_confidence": 0.9, "plain": {"sample_confidence": 0.8}})
    assert "0.500" in text and "0.900" in text and "0.800" in text and "plain GAN" in text


@pytest.mark.gpu
def test_quick_run_on_cuda_from_the_command_line(tmp_path):
    """``ogan-plugin demo --steps 50 --device cuda``, the installed command as a user runs it:
    trains on the GPU (metrics.json says so), writes every file, finite metrics."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    beside = Path(sys.executable).with_name("ogan-plugin")  # the console script of this Python
    exe = str(beside) if beside.is_file() else shutil.which("ogan-plugin")
    assert exe, "no ogan-plugin command beside this Python or on PATH (pip install -e . first)"
    res = subprocess.run([exe, "demo", "--steps", "50", "--device", "cuda", "--out", "tmp", "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "tmp"
    for name in ("samples.png", "reconstructions.png", "interpolations.png", "training.png", "metrics.json",
                 "checkpoint.pt"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 50 and m["device"].startswith("cuda"), m.get("device")
    assert "device cuda" in res.stdout
    for where, v in _finite_numbers(m):
        assert math.isfinite(v), where
