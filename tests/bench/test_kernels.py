"""``ogan-plugin bench``: a tiny sweep end to end (table, CSV, PNG), argument errors, --step."""

from __future__ import annotations

import csv

import pytest
import torch

from ogan_plugin import cli
from ogan_plugin.bench import kernels as bench


def test_bench_prints_a_table_and_writes_csv_and_png(tmp_path, capsys):
    out_csv, out_png = tmp_path / "k.csv", tmp_path / "k.png"
    rc = cli.main(["bench", "--device", "cpu", "--sizes", "3x4,5x17", "--iters", "2", "--warmup", "0",
                   "--backends", "reference,triton", "--threads", "1", "--csv", str(out_csv), "--plot", str(out_png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "copy bandwidth" in text
    assert "the Triton rows need a GPU" in text
    lines = [line.split() for line in text.splitlines()]
    table = [parts for parts in lines if parts and parts[0] in bench.BENCH_OPS]
    assert sorted((p[0], p[1], p[2], p[3]) for p in table) == sorted(
        (op, "reference", b, n) for op in bench.BENCH_OPS for b, n in (("3", "4"), ("5", "17"))
    )
    assert all(p[-1] == "1.00x" for p in table)  # the reference against itself
    with open(out_csv) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and set(rows[0]) == set(bench.BenchRow.__dataclass_fields__)
    assert {r["backend"] for r in rows} == {"reference"} and {r["device"] for r in rows} == {"cpu"}
    assert all(float(r["median_us"]) > 0 and float(r["effective_gbps"]) > 0 for r in rows)
    from PIL import Image

    with Image.open(out_png) as img:
        assert img.format == "PNG" and img.width >= 3 * 400
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 3  # axes, text and the data points were drawn


def test_bench_rejects_bad_arguments(capsys):
    assert cli.main(["bench", "--device", "cpu", "--sizes", "3by4"]) == 2
    assert "not of the form BxN" in capsys.readouterr().err
    assert cli.main(["bench", "--device", "cpu", "--sizes", "3x1"]) == 2
    assert "n >= 2" in capsys.readouterr().err
    assert cli.main(["bench", "--device", "cpu", "--sizes", "3x4", "--ops", "softmax"]) == 2
    assert "unknown ops" in capsys.readouterr().err
    assert cli.main(["bench", "--device", "tpu", "--sizes", "3x4"]) == 2
    with pytest.raises(ValueError, match="iters"):
        bench.run_kernel_benchmark([(2, 3)], iters=0)


def test_step_flag_runs_the_training_step_benchmark(monkeypatch, tmp_path):
    import ogan_plugin.bench.step as bench_step

    calls = []
    monkeypatch.setattr(bench_step, "run_step_benchmark", lambda **kw: calls.append(kw) or [])
    path = str(tmp_path / "s.csv")
    assert cli.main(["bench", "--step", "--device", "cpu", "--iters", "3", "--warmup", "1", "--batch-size", "8",
                     "--csv", path]) == 0
    common = {"device": "cpu", "pair": "dcgan32", "loss": "hinge", "amp": None, "variants": None, "host_cost": False}
    assert calls == [{**common, "iters": 3, "warmup": 1, "batch_size": 8, "csv": path}]
    calls.clear()
    assert cli.main(["bench", "--step", "--device", "cpu"]) == 0  # bench_step's own defaults
    assert calls == [{**common, "csv": None}]
    calls.clear()
    assert cli.main(["bench", "--step", "--host-cost", "--variants", "hook, single_split", "--pair", "dcgan64",
                     "--amp", "bf16", "--loss", "qp", "--z-dim", "100"]) == 0
    assert calls == [{**common, "csv": None, "host_cost": True, "variants": ["hook", "single_split"], "pair": "dcgan64",
                      "amp": "bf16", "loss": "qp", "z_dim": 100, "device": calls[0]["device"]}]


def test_parse_sizes_and_table_format():
    assert bench.parse_sizes("256x512, 4096X8,") == [(256, 512), (4096, 8)]
    row = bench.BenchRow("cpu", "pearson", "reference", 2, 3, "float32", 12.345, 0.5, 1.0)
    table = bench.format_table([row]).splitlines()
    assert "effective GB/s" in table[0] and "% copy" not in table[0]
    assert table[0].split()[:2] == ["op", "backend"] and table[2].split() == [
        "pearson", "reference", "2", "3", "float32", "12.3", "0.5", "1.00x"]


def test_gpu_timing_is_k_calls_between_one_pair_of_events_after_an_l2_flush(monkeypatch):
    """The GPU timing's structure, with CUDA mocked: per repetition one L2 flush, then one pair of
    events around ``calls`` calls; the time per call is the events' time divided by ``calls``."""
    from ogan_plugin.bench import timing

    log = []

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.t = None

        def record(self):
            log.append("record")
            self.t = len([x for x in log if x == "call"])  # "time" = calls made so far

        def synchronize(self):
            log.append("sync")

        def elapsed_time(self, end):
            return 1e3 * (end.t - self.t) * 0.002  # 2 ms per call, in milliseconds

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(timing, "flush_l2_cache", lambda device: log.append("flush"))
    seconds = timing.median_seconds(lambda: log.append("call"), torch.device("cuda"), iters=3, warmup=2,
                                    calls=4, flush_l2=True)
    assert seconds == pytest.approx(0.002)
    one = ["flush", "record", "call", "call", "call", "call", "record", "sync"]
    assert log == ["call", "call"] + one * 3
    log.clear()
    timing.median_seconds(lambda: log.append("call"), torch.device("cuda"), iters=1, warmup=0)
    assert log == ["record", "call", "record", "sync"]  # defaults: one call, no flush
    calls = []
    assert timing.median_seconds(lambda: calls.append(1), torch.device("cpu"), iters=2, warmup=1, calls=3) >= 0
    assert len(calls) == 1 + 2 * 3
