"""The inversion benchmark's code path on a tiny demo checkpoint (the figures are not tested)."""

from __future__ import annotations

import csv

import pytest
from PIL import Image

from ogan_plugin import cli
from ogan_plugin.bench.invert import GRID, InvertBenchmark, format_report
from ogan_plugin.demo.train import CHECKPOINT
from ogan_plugin.evaluate import StepsToQuality

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


def test_the_report_times_by_the_interleaved_costs_through_quality_match():
    curves = {"encoder": [5.0, 3.0, 2.0, 1.0, 1.0], "random": [8.0, 7.0, 5.0, 2.5, 1.5], "mean": [9.0, 6.0, 4.0, 3.0, 2.0]}
    own_clock = {k: [100.0 * (t + 1) for t in range(5)] for k in curves}  # the runs' clock: the CSV's seconds
    result = StepsToQuality(4, curves, own_clock)
    costs = {"encoder": (0.5, 1.0), "random": (1.0, 4.0), "mean": (0.25, 0.5)}
    bench = InvertBenchmark([], result, {}, 3, "cpu", "header", costs)
    m = bench.at(4)
    assert m == result.at(4, bench.seconds) and (m.seconds, m.encoder_seconds) == (17.0, 3.5)
    assert result.match.time_ratio == 500.0 / 400.0  # the same definition on the runs' own clock
    report = format_report(bench)
    assert "MSE 1.50000 after 4 steps (17.0 s)" in report
    assert "after 3 steps: step ratio 1.3x, wall-time ratio 4.9x" in report  # 17 / 3.5
    assert f"{2:11d} {4.0:9.5f} {'mean':>8s} {'1':>13s} {'2.0x':>7s} {'0.8x':>10s}" in report  # 1.25 / 1.5


def test_bench_invert_and_invert_default_to_the_demos_checkpoint():
    import argparse

    from ogan_plugin.bench.invert import add_arguments
    from ogan_plugin.demo import invert as invert_command
    from ogan_plugin.demo.command import DEFAULTS

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).checkpoint == invert_command.DEFAULT_CHECKPOINT == f"{DEFAULTS['out']}/{CHECKPOINT}"
