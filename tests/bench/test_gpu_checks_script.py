"""benchmarks/gpu_checks.sh, the one script of every GPU check: its syntax, its dry run (every
step's command logged, none run) and its bookkeeping (a failing or timed-out step is
recorded, the others still run, the exit status is 1), on any machine."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_checks.sh"
STEPS = ["env", "install", "check", "pytest-gpu", "pytest", "step", "step-bf16", "limit", "demo"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


def run(out: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECKS_") and k != "OUT"}
    return subprocess.run(["bash", str(SCRIPT), str(out)], env={**full, **env}, capture_output=True, text=True,
                          timeout=120)


def summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.tsv") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_the_script_parses():
    res = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_a_dry_run_logs_every_step_in_order_and_runs_none(tmp_path):
    out = tmp_path / "out"
    res = run(out, GPU_CHECKS_DRY="1")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = summary(out)
    assert [r["step"] for r in rows] == STEPS and {r["status"] for r in rows} == {"DRY"}
    assert [int(r["limit"]) for r in rows] == [60, 180, 180, 240, 360, 120, 120, 120, 180]
    assert sum(int(r["limit"]) for r in rows if r["step"] != "env") <= 25 * 60
    log = (out / "gpu_checks.log").read_text()
    for cmd in ("pip install -q --no-deps --no-build-isolation -e .", "bench --check --csv", "pytest -m gpu",
                "bench --step --device cuda", "demo --device cuda"):
        assert cmd in log, cmd
    assert "python3 -m pytest" not in log  # the -m form imports ogan_plugin/ without its kernels
    assert sorted(p.name for p in out.iterdir()) == ["gpu_checks.log", "summary.tsv"]


def test_failing_and_timed_out_steps_are_recorded_and_the_rest_still_run(tmp_path):
    out = tmp_path / "out"
    extra = tmp_path / "extra.sh"
    extra.write_text(
        'DRY=0 step fails 10 bash -c "echo about to fail; exit 3"\n'
        "DRY=0 step too-slow 1 sleep 30\n"
        'DRY=0 step writes 10 bash -c "echo 1,2 > $OUT_DIR/extra.csv"\n'
    )
    res = run(out, GPU_CHECKS_DRY="1", GPU_CHECKS_EXTRA=str(extra), GPU_CHECKS_SKIP="pytest,demo")
    assert res.returncode == 1, res.stdout + res.stderr
    rows = {r["step"]: r for r in summary(out)}
    assert list(rows) == ["env", "install", "check", "pytest-gpu", "step", "step-bf16", "limit", "fails", "too-slow", "writes"]
    assert (rows["fails"]["status"], rows["fails"]["exit_code"]) == ("FAIL", "3")
    assert rows["too-slow"]["status"] == "TIMEOUT" and float(rows["too-slow"]["seconds"]) < 20
    assert rows["writes"]["status"] == "PASS" and (out / "extra.csv").read_text() == "1,2\n"
    log = (out / "gpu_checks.log").read_text()
    assert "about to fail" in log and "pytest: skipped (GPU_CHECKS_SKIP)" in log


def test_the_folder_defaults_to_OUT(tmp_path):
    res = subprocess.run(["bash", str(SCRIPT)], env={**os.environ, "OUT": str(tmp_path / "o"), "GPU_CHECKS_DRY": "1"},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and (tmp_path / "o" / "summary.tsv").is_file(), res.stdout + res.stderr
