"""The ogan-plugin command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ogan_plugin import cli


def test_plugins_listing(capsys):
    assert cli.main(["plugins", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "ogan_plugin.adapters.linear" in out
    for op in ("pearson:", "correlation_loss:", "ogan_objective:"):
        assert op in out
    assert "reference" in out and "<- active on cpu" in out
    assert "losses: bce, hinge, qp, wgan" in out or "losses:" in out


def test_python_dash_m_and_help():
    out = subprocess.run([sys.executable, "-m", "ogan_plugin", "--help"], capture_output=True, text=True, check=True).stdout
    assert "plugins" in out
    res = subprocess.run([sys.executable, "-m", "ogan_plugin"], capture_output=True, text=True)
    assert res.returncode == 2 and "usage" in res.stdout


def test_unknown_command_is_rejected():
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
