"""``ogan-plugin bench --compile``: every kernel configuration built for real GPU targets (no GPU),
with the register budget of issue 18 checked; and the pieces of the report on their own."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

from ogan_plugin import cli
from ogan_plugin.bench import compile as C
from ogan_plugin.kernels import pearson as P
from ogan_plugin.kernels import single_loss as S


@pytest.mark.parametrize("target", ["sm_90a", "sm_80"])
def test_every_configuration_builds_without_spills_and_rows_up_to_512_fit_128_registers(target, tmp_path):
    """The whole report, as CI runs it: a subprocess without TRITON_INTERPRET (the kernels are
    compiled for the GPU, not interpreted), Triton's compiler and the wheel's ptxas."""
    try:
        C.find_ptxas(C.parse_target(target))
    except C.PtxasMissing as exc:
        pytest.skip(f"no ptxas for {target} in the Triton wheel: {exc}")
    out_csv = tmp_path / "report.csv"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("OMP_NUM_THREADS", "1")
    res = subprocess.run(
        [sys.executable, "-m", "ogan_plugin", "bench", "--compile", "--target", target, "--csv", str(out_csv)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert out_csv.is_file(), res.stdout[-4000:] + res.stderr[-4000:]
    with open(out_csv) as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [dict(zip(header, r)) for r in reader]
    assert tuple(header) == C.CSV_COLUMNS
    configs = C.configurations()
    # which configurations spilled, by name: kernel, the widths the tile serves, dtype, bytes
    first = {str(c["width"]): c["min_width"] for c in configs}
    spilled = [
        f"{r['kernel']} widths {first.get(r['width'], '?')}-{r['width']} {r['dtype']}: {r['spills']} B spilled "
        f"({r['registers']} registers, {r['num_warps']} warps)"
        for r in rows if int(r["spills"]) > 0
    ]
    import triton

    assert not spilled, f"ptxas spills for {target} with triton {triton.__version__}:\n" + "\n".join(spilled)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "spills: none; failed builds: 0" in res.stdout
    expected = {(k, str(c["width"]), d) for k in C.KERNELS for c in configs for d in C.DTYPES}
    assert {(r["kernel"], r["width"], r["dtype"]) for r in rows} == expected and len(rows) == len(expected)
    for r in rows:
        cfg = P.launch_config(1, int(r["width"]))  # the report compiled what the launcher chooses
        assert (int(r["rows"]), int(r["num_warps"])) == (cfg["ROWS"], cfg["num_warps"]), r
        assert int(r["spills"]) == 0 and int(r["shared_bytes"]) >= 0, r
        assert 0 < int(r["registers"]) <= 255, r
        if int(r["width"]) <= 512:
            assert int(r["registers"]) <= 128, r


def test_configurations_cover_every_width_once_and_match_the_launcher():
    configs = C.configurations()
    served = [w for c in configs for w in range(c["min_width"], c["width"] + 1)]
    assert served == list(C.WIDTHS)  # contiguous, ordered, no gaps or overlaps
    for c in configs:
        for w in {c["min_width"], (c["min_width"] + c["width"]) // 2, c["width"]}:
            cfg = P.launch_config(1000, w)
            assert (cfg["BLOCK_N"], cfg["ROWS"], cfg["ONE_BLOCK"], cfg["num_warps"]) == (
                c["BLOCK_N"], c["ROWS"], c["ONE_BLOCK"], c["num_warps"])
    assert len(configs) == len({(c["BLOCK_N"], c["ONE_BLOCK"]) for c in configs})
    assert [c["ONE_BLOCK"] for c in configs].count(0) == 1 and configs[-1]["width"] == 8192


def test_the_batch_size_and_runtime_flags_never_change_the_compiled_kernel():
    """Launch constants are fixed across batch sizes (no recompile for a last partial batch), and
    the flags choosing pearson/correlation_loss, the gradients and qp/hinge are runtime arguments:
    Triton's cache key of every such launch is the same; only the row-length bucket changes it."""

    def keys(n):
        found = set()
        for B in (1, 2, 7, 16, 37, 64, 100, 1000):
            z, e = torch.randn(B, n), torch.randn(B, n)
            found.add(("fwd", C.compile_key(P.forward_launch(z, e)[0])))
            found.add(("fwd", C.compile_key(P.forward_launch(z, e, loss_weight=0.5)[0])))
            for need_z in (True, False):
                found.add(("bwd", C.compile_key(P.backward_launch(torch.ones(B), z, e, need_z=need_z)[0])))
            found.add(("bwd", C.compile_key(P.backward_launch(torch.ones(()).expand(B), z, e, need_z=False)[0])))
            for loss, dist in (("qp", torch.rand(B) + 0.1), ("hinge", None)):
                found.add(("obj", C.compile_key(S.objective_launch(e, e, z, dist, loss, 0.5, 0.5, P.EPS)[0])))
        return found

    k128 = keys(128)
    assert sorted(name for name, _ in k128) == ["bwd", "fwd", "obj"]  # one compiled kernel each
    assert P.launch_config(7, 100)["BLOCK_N"] == P.launch_config(7, 128)["BLOCK_N"]
    assert keys(100) != k128 and keys(256) != k128  # the row length does reach the key


def test_parse_target_and_ptxas_output():
    assert C.parse_target("sm_90a") == 90 and C.parse_target("sm_80") == 80 and C.parse_target("sm_100a") == 100
    with pytest.raises(ValueError, match="use --target sm_90a"):
        C.parse_target("sm_90")
    with pytest.raises(ValueError, match="use --target sm_80"):
        C.parse_target("sm_80a")
    with pytest.raises(ValueError, match="--target must look like"):
        C.parse_target("hopper")
    log = (
        "ptxas info    : Compiling entry function '_k' for 'sm_90a'\n"
        "ptxas info    : Function properties for _k\n"
        "    8 bytes stack frame, 12 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers, 16 bytes smem, 448 bytes cmem[0]\n"
    )
    assert C.parse_ptxas(log) == {"registers": 255, "spills": 24, "smem": 16}
    assert C.parse_ptxas("ptxas info    : Used 40 registers, used 1 barriers, 448 bytes cmem[0]") == {
        "registers": 40, "spills": 0, "smem": 0}
    with pytest.raises(ValueError, match="no register count"):
        C.parse_ptxas("ptxas fatal   : Unsupported .version 9.4")


def _row(**kw):
    base = dict(kernel="forward", width=128, rows=16, dtype="float32", num_warps=8, registers=40, spills=0,
                shared_bytes=64, min_width=65, block_n=128)
    return C.CompileRow(**{**base, **kw})


def test_the_command_fails_on_a_spill_or_a_failed_build(monkeypatch, tmp_path, capsys):
    for rows, status in (([_row()], 0), ([_row(), _row(spills=24)], 1), ([_row(error="PTXASError: boom")], 1)):
        monkeypatch.setattr(C, "compile_report", lambda capability, layout="contiguous", rows=rows: rows)
        path = tmp_path / "r.csv"
        assert cli.main(["bench", "--compile", "--target", "sm_80", "--csv", str(path)]) == status
        text = capsys.readouterr().out
        assert "forward" in text and f"wrote {path}" in text
        with open(path) as fh:
            assert next(csv.reader(fh)) == list(C.CSV_COLUMNS)
    monkeypatch.setattr(C, "compile_report", lambda capability, layout="contiguous": [_row(spills=8)])
    cli.main(["bench", "--compile", "--target", "sm_80"])
    assert "spills: forward/128/float32: 8 B" in capsys.readouterr().out


def test_the_command_names_a_bad_target_and_a_missing_ptxas(monkeypatch, capsys):
    assert cli.main(["bench", "--compile", "--target", "sm_90"]) == 2
    assert "use --target sm_90a" in capsys.readouterr().err

    def missing(capability):
        raise C.PtxasMissing("the Triton wheel has no ptxas for sm_90 (simulated)")

    monkeypatch.setattr(C, "find_ptxas", missing)
    assert cli.main(["bench", "--compile"]) == 2
    assert "ogan-plugin bench: error: the Triton wheel has no ptxas for sm_90 (simulated)" in capsys.readouterr().err
    assert cli.main(["bench", "--compile", "--check"]) == 2
    assert "separate runs" in capsys.readouterr().err
    assert cli.main(["bench", "--dry"]) == 2
    assert "--dry goes with --check" in capsys.readouterr().err


def test_a_failed_build_is_reported_not_raised():
    row = C.build_one("forward", C.configurations()[0], "float32", 90, layout="diagonal")
    assert row.error.startswith("ValueError: layout must be one of") and row.registers == -1
    table = C.format_report([row])
    assert "FAILED" in table and "layout must be one of" in table
