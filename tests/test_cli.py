"""The ogan-plugin command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ogan_plugin import cli, get_registry


def test_plugins_listing(capsys):
    assert cli.main(["plugins", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "ogan_plugin.adapters.linear" in out
    adapters = out.split("adapters (tried in this order):")[1].split("losses:")[0].split()
    assert adapters[0] == "ogan_plugin.adapters.patch" and "(wrapper:" in out  # it wraps the others
    assert adapters[-1] == "ogan_plugin.adapters.custom_linear"  # trylast: after the exact adapters
    for op in ("pearson:", "correlation_loss:", "ogan_objective:"):
        assert op in out
    assert "reference" in out and "<- active on cpu" in out
    # the last line lists every registered loss, sorted: the four built-ins and any plugin's
    (line,) = [ln for ln in out.splitlines() if ln.startswith("losses:")]
    listed = line.removeprefix("losses:").strip().split(", ")
    assert listed == sorted(get_registry().losses()) and {"bce", "hinge", "qp", "wgan"} <= set(listed), line


def test_python_dash_m_and_help():
    out = subprocess.run([sys.executable, "-m", "ogan_plugin", "--help"], capture_output=True, text=True, check=True).stdout
    assert "plugins" in out
    res = subprocess.run([sys.executable, "-m", "ogan_plugin"], capture_output=True, text=True)
    assert res.returncode == 2 and "usage" in res.stdout


def test_unknown_command_is_rejected():
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2


def test_an_expected_error_is_one_line_with_status_2_from_the_real_command(tmp_path):
    res = subprocess.run([sys.executable, "-m", "ogan_plugin", "demo", "--steps", "-5", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["ogan-plugin demo: error: --steps must be an int >= 1, got -5"]
    res = subprocess.run([sys.executable, "-m", "ogan_plugin", "plugins", "--device", "tpu"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip() == "ogan-plugin plugins: error: --device must be cpu or cuda, got 'tpu'"


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    import ogan_plugin.cli as cli_module

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli_module, "run", broken)
    with pytest.raises(ZeroDivisionError):
        cli.main(["plugins"])
