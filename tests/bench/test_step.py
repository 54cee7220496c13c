"""The step benchmark's code path (tiny sizes; the figures themselves are not tested)."""

from __future__ import annotations

import csv

import pytest
import torch

from ogan_plugin.bench.step import DEFAULT_VARIANTS, VARIANTS, dcgan32_pair, dcgan64_pair, run_step_benchmark, tiny_pair


def test_dcgan32_pair_shapes():
    G, D = dcgan32_pair(z_dim=16)
    x = G(torch.randn(2, 16))
    assert x.shape == (2, 3, 32, 32)
    assert D(x).shape == (2, 1)


def test_dcgan64_and_tiny_pairs_shapes():
    G, D = dcgan64_pair(z_dim=16, width=4)
    x = G(torch.randn(2, 16, 1, 1))
    assert x.shape == (2, 3, 64, 64) and D(x).shape == (2, 1, 1, 1)
    G, D = tiny_pair(16)
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 1, 8, 8) and D(x).shape == (3, 1)


def test_run_step_benchmark_rows_and_csv(tmp_path, capsys):
    path = tmp_path / "step.csv"
    names = [v for v in VARIANTS[1:] if v != "single_captured"]  # captured (compiled on CPU): its own test
    rows = run_step_benchmark(iters=1, warmup=0, batch_size=2, csv=str(path), z_dim=8, variants=names)
    assert [r["variant"] for r in rows] == ["plain_alternating", *names]  # plain_alternating is always added, first
    assert rows[0]["ratio"] == 1.0
    for r in rows:
        assert r["median_ms"] > 0 and r["iters"] == 1 and r["batch_size"] == 2 and r["loss"] == "hinge"
        assert r["ratio"] == pytest.approx(r["median_ms"] / rows[0]["median_ms"], rel=1e-3)
    with open(path) as fh:
        assert [r["variant"] for r in csv.DictReader(fh)] == ["plain_alternating", *names]
    assert "x plain" in capsys.readouterr().out


def test_host_cost_mode_runs_every_default_variant_on_the_tiny_pair(capsys):
    rows = run_step_benchmark(iters=1, warmup=1, host_cost=True, loss="qp")
    assert [r["variant"] for r in rows] == list(DEFAULT_VARIANTS)
    assert {(r["pair"], r["batch_size"], r["z_dim"], r["threads"]) for r in rows} == {("tiny", 16, 16, 1)}
    assert "tiny pair, batch 16, z_dim 16, qp loss" in capsys.readouterr().out


def test_run_step_benchmark_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown variants"):
        run_step_benchmark(iters=1, variants=["fused"])
    with pytest.raises(ValueError, match="iters"):
        run_step_benchmark(iters=0)
    with pytest.raises(ValueError, match="pair must be one of"):
        run_step_benchmark(iters=1, pair="biggan")
    with pytest.raises(ValueError, match="amp must be"):
        run_step_benchmark(iters=1, amp="int8")
