"""The inversion benchmark's code path on a tiny demo checkpoint (the figures are not tested)."""

from __future__ import annotations

import csv

import pytest
from PIL import Image

from ogan_plugin import cli
from ogan_plugin.bench.invert import GRID
from ogan_plugin.demo.train import CHECKPOINT

FAST = ["--width", "8", "--batch-size", "16", "--eval-samples", "100", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert cli.main(["demo", "--steps", "2", "--out", str(out), *FAST]) == 0
    return out / CHECKPOINT


def test_bench_invert_prints_and_writes_the_csv_and_the_plot(checkpoint, tmp_path, capsys):
    table, picture = tmp_path / "inv.csv", tmp_path / "inv.png"
    assert cli.main(["bench", "--invert", "--checkpoint", str(checkpoint), "--budget", "7", "--restarts", "2",
                     "--limit", "12", "--threads", "1", "--csv", str(table), "--plot", str(picture)]) == 0
    out = capsys.readouterr().out
    assert "12 held-out images (1, 16, 16)" in out and "best non-encoder start" in out
    assert "equal quality when the non-encoder starts stop earlier" in out
    assert "wall time (medians of interleaved runs): encoder" in out
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    grid = [0, 1, 2, 5, 7]  # the grid up to the budget, and the budget
    assert grid[:-1] == [s for s in GRID if s <= 7]
    assert [(r["start"], int(r["steps"])) for r in rows] == [(s, g) for s in ("encoder", "random x2", "mean") for g in grid]
    for r in rows:
        assert float(r["mse"]) > 0 and 0 <= float(r["class_agreement"]) <= 1 and float(r["seconds"]) > 0
    with Image.open(picture) as im:
        assert im.size == (800, 400)


def test_bench_invert_refuses_bad_options_and_checkpoints(checkpoint, tmp_path, capsys):
    def fails(*argv):
        assert cli.main(["bench", "--invert", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ogan-plugin bench: error: "), err
        return err[0]

    assert "--budget must be an int >= 1" in fails("--checkpoint", str(checkpoint), "--budget", "0")
    assert "--lr must be > 0" in fails("--checkpoint", str(checkpoint), "--lr", "0")
    assert "no checkpoint at" in fails("--checkpoint", str(tmp_path / "none.pt"))
