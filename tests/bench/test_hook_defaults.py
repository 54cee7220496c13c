"""benchmarks/hook_defaults.py (docs/training.md's hook-mode table) runs, and its "auto" row is
the library's default: the same run as the explicit ramp the table names for nz 100."""

from __future__ import annotations

import csv
import os
import runpy

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def script():
    return runpy.run_path(os.path.join(ROOT, "benchmarks", "hook_defaults.py"), run_name="hook_defaults")


def test_auto_is_the_ramp_the_table_names_and_rows_are_written(script, tmp_path) -> None:
    out = tmp_path / "hook.csv"
    script["main"](["--configs", "plain", "d=auto", "d=w5,ramp=200", "--steps", "4", "--width", "2", "--quiet",
                    "--csv", str(out)])
    rows = {r["config"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"plain", "d=auto", "d=w5,ramp=200"}
    assert rows["plain"]["rho"] == "" and float(rows["plain"]["confidence"]) > 0
    auto, ramp = rows.pop("d=auto"), rows.pop("d=w5,ramp=200")
    for key in ("rho", "confidence", "fd", "rec_mse", "dx", "dgz", "rho_train"):
        assert auto[key] == ramp[key], key


def test_configurations_are_parsed_and_bad_ones_named(script) -> None:
    parse = script["parse_config"]
    assert parse("plain") == {"plugin": False, "nz": 100}
    assert parse("plain,nz=32")["plugin"] is False and parse("plain,nz=32")["nz"] == 32
    assert parse("d=w5,g=w1.5,ramp=200") == {"plugin": True, "nz": 100, "d": 5.0, "g": 1.5, "ramp": 200}
    with pytest.raises(ValueError, match="f1bddf2"):
        parse("d=b4")
    with pytest.raises(ValueError, match="unknown setting 'x'"):
        parse("x=1")
