"""The step benchmark's code path (tiny sizes; the figures themselves are not tested)."""

from __future__ import annotations

import csv

import pytest
import torch

from ogan_plugin.bench.step import VARIANTS, dcgan32_pair, run_step_benchmark


def test_dcgan32_pair_shapes():
    G, D = dcgan32_pair(z_dim=16)
    x = G(torch.randn(2, 16))
    assert x.shape == (2, 3, 32, 32)
    assert D(x).shape == (2, 1)


def test_run_step_benchmark_rows_and_csv(tmp_path, capsys):
    path = tmp_path / "step.csv"
    rows = run_step_benchmark(iters=1, warmup=0, batch_size=2, csv=str(path), z_dim=8, variants=list(VARIANTS[1:]))
    assert [r["variant"] for r in rows] == list(VARIANTS)  # plain_alternating is always added, first
    assert rows[0]["ratio"] == 1.0
    for r in rows:
        assert r["median_ms"] > 0 and r["iters"] == 1 and r["batch_size"] == 2
        assert r["ratio"] == pytest.approx(r["median_ms"] / rows[0]["median_ms"], rel=1e-3)
    with open(path) as fh:
        assert [r["variant"] for r in csv.DictReader(fh)] == list(VARIANTS)
    assert "single_split / ogan_alternating" in capsys.readouterr().out


def test_run_step_benchmark_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown variants"):
        run_step_benchmark(iters=1, variants=["fused"])
    with pytest.raises(ValueError, match="iters"):
        run_step_benchmark(iters=0)
