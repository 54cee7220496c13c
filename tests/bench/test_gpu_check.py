"""``ogan-plugin bench --check``: the dry run (Triton's interpreter, tiny sizes) that CI runs, and
the command's failure handling."""

from __future__ import annotations

import csv

import torch

import pytest

from ogan_plugin import cli
from ogan_plugin.bench import gpu_check

#: the dry run in this process needs Triton's interpreter, which tests/conftest.py turns on
#: (before triton is imported) on machines without CUDA
needs_interpreter = pytest.mark.skipif(
    not gpu_check._interpreter_active(), reason="TRITON_INTERPRET=1 was not set before triton was imported (a GPU machine)"
)


@needs_interpreter
def test_the_dry_check_passes_every_check_that_runs_without_a_gpu(tmp_path, capsys):
    path = tmp_path / "bench.csv"
    assert cli.main(["bench", "--check", "--dry", "--csv", str(path)]) == 0
    out = capsys.readouterr().out
    assert "torch " in out and "triton " in out and "Triton's interpreter" in out
    lines = out.splitlines()
    for case in gpu_check.cases(dry=True):
        assert any(line.startswith(f"PASS  correlation {case} ") for line in lines), case
    assert sum(line.startswith("PASS  objective") for line in lines) == 3
    assert any(line.startswith("PASS  determinism") and "ticket 0" in line for line in lines)
    assert [line.split("  ")[1] for line in lines if line.startswith("SKIP")] == [
        "side stream 5x130 float32", "second device 5x130 float32", "CUDA graph 5x130 float32"]
    assert "checks: 13 passed, 0 failed, 3 skipped" in out
    assert "effective GB/s" in out  # then the benchmark table
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert {r["op"] for r in rows} == {"pearson", "correlation_loss", "ogan_objective"}


def test_the_cases_cover_what_the_issue_asks_on_a_gpu():
    """>= 8 shapes and dtypes: the chunked path, a 1x2 row, 100000x128, bf16, fp16 (and more)."""
    from ogan_plugin.kernels.pearson import MAX_BLOCK

    cases = gpu_check.cases(dry=False)
    assert len(cases) >= 8
    assert any(c.B == 1 and c.n == 2 for c in cases) and any((c.B, c.n) == (100000, 128) for c in cases)
    assert any(c.n > MAX_BLOCK for c in cases)  # the chunked path
    assert any(c.e_dtype == torch.bfloat16 for c in cases) and any(c.e_dtype == torch.float16 for c in cases)
    assert any(c.transposed for c in cases) and any(c.z_dtype != c.e_dtype for c in cases)
    dry = gpu_check.cases(dry=True)  # the dry run has the same structure at tiny sizes
    assert [(c.z_dtype, c.e_dtype, c.transposed, c.n > MAX_BLOCK) for c in dry] == [
        (c.z_dtype, c.e_dtype, c.transposed, c.n > MAX_BLOCK) for c in cases]


@needs_interpreter
def test_a_failing_check_is_reported_and_the_others_still_run(monkeypatch, capsys):
    def broken(*args):
        raise AssertionError("qp corr 3.0e-02 > 1e-05")

    def crash(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_check, "_check_objective", broken)
    monkeypatch.setattr(gpu_check, "_check_determinism", crash)
    monkeypatch.setattr(gpu_check, "_benchmark", lambda *a: None)
    monkeypatch.setattr(gpu_check, "cases", lambda dry: [gpu_check.Case(3, 5), gpu_check.Case(2, 4)] * 2)
    assert cli.main(["bench", "--check", "--dry"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  objective 5x130 float32" in out and "qp corr 3.0e-02 > 1e-05" in out
    assert "FAIL  determinism 2x4 float32" in out and "RuntimeError: CUDA error: an illegal memory access" in out
    assert "PASS  correlation 3x5 float32" in out and "checks: 4 passed, 4 failed, 3 skipped" in out


def test_without_a_gpu_the_check_says_so_and_dry_reruns_itself_under_the_interpreter(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench", "--check"]) == 2
    assert "--check needs a CUDA GPU (torch sees none); --dry runs it on the CPU" in capsys.readouterr().err
    calls = []

    class Done:
        returncode = 0

    monkeypatch.setattr(gpu_check.subprocess, "run", lambda cmd, env: calls.append((cmd, env)) or Done())
    assert cli.main(["bench", "--check", "--dry", "--csv", str(tmp_path / "c.csv")]) == 0
    (cmd, env), = calls
    assert cmd[1:] == ["-m", "ogan_plugin", "bench", "--check", "--dry", "--csv", str(tmp_path / "c.csv")]
    assert env["TRITON_INTERPRET"] == "1"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cli.main(["bench", "--check"]) == 2
    assert "unset TRITON_INTERPRET" in capsys.readouterr().err


def test_relative_error_and_the_error_list():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5], dtype=torch.float64)
    assert gpu_check.relative_error(a, b) == 0.5 / 2.5
    assert gpu_check.relative_error(a, b, scale=5.0) == 0.1
    assert gpu_check.relative_error(torch.tensor([float("nan"), 1.0]), b) == float("inf")
    assert gpu_check._expect({"rho": (1e-7, 1e-5)}) == "rho 1.0e-07"
    try:
        gpu_check._expect({"rho": (1e-7, 1e-5), "grad": (float("inf"), 1e-5)})
    except AssertionError as exc:
        assert str(exc) == "grad inf > 1e-05"
    else:
        raise AssertionError("expected a failure")


def test_the_script_runs_from_a_checkout_without_an_install():
    """benchmarks/gpu_check.py imports the package from the source tree when it is not installed
    (a lent GPU machine with torch and triton and no network): kernels/ becomes ogan_plugin.kernels."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (
        "import sys, runpy\n"
        "sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('ogan_plugin') is None\n"
        f"script = runpy.run_path({os.path.join(root, 'benchmarks', 'gpu_check.py')!r})\n"
        "script['_import_from_checkout']()\n"
        "import ogan_plugin.kernels.pearson as P, ogan_plugin.bench.gpu_check\n"
        f"assert P.__file__ == {os.path.join(root, 'kernels', 'pearson.py')!r}, P.__file__\n"
        "assert ogan_plugin.get_registry().resolve('pearson', 'cpu').name == 'reference'\n"
        "print('ok')\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/", timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
