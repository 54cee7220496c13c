"""The plugin registry: loading, backend resolution, fallbacks, and an installed example plugin."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin import Backend, BackendUnavailableError, hookimpl
from ogan_plugin.registry import ENV_BACKEND, Registry

REPO = Path(__file__).resolve().parents[1]


def _plugin(*backends: Backend) -> types.SimpleNamespace:
    return types.SimpleNamespace(ogan_backends=hookimpl(lambda: list(backends)))


def _marker(tag: str):
    def fn(z, e, eps):
        return torch.full((z.shape[0],), float(len(tag)))

    return fn


@pytest.fixture
def reg(monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    return Registry(load_entry_points=False)


def test_builtins_are_loaded(reg):
    names = {name for name, _ in reg.pm.list_name_plugin()}
    assert {"ogan_plugin.adapters.linear", "ogan_plugin.kernels.pearson", "ogan_plugin.losses"} <= names
    assert reg.failed == {}
    assert reg.resolve("pearson", "cpu").name == "reference"


def test_priority_explicit_and_environment(reg, monkeypatch):
    reg.register(_plugin(Backend("pearson", "fast", _marker("fast"), priority=5)), name="fast")
    reg.register(
        _plugin(Backend("pearson", "gpu_only", _marker("gpu"), priority=19, serves=lambda d, explicit: d == "cuda")),
        name="gpu",
    )
    assert reg.resolve("pearson", "cpu").name == "fast"
    assert reg.resolve("pearson", "cuda").name == "gpu_only"
    assert reg.resolve("pearson", "cpu", backend="reference").name == "reference"
    monkeypatch.setenv(ENV_BACKEND, "reference")
    assert reg.resolve("pearson", "cpu").name == "reference"
    assert reg.resolve("pearson", "cpu", backend="fast").name == "fast"  # the argument beats the variable


def test_explicit_request_that_cannot_run_names_what_is_available(reg):
    reg.register(
        _plugin(Backend("pearson", "gpu_only", _marker("gpu"), serves=lambda d, explicit: d == "cuda")), name="gpu"
    )
    with pytest.raises(BackendUnavailableError, match=r"backend='gpu_only'.*'cpu'.*\[.*'reference'\]"):
        reg.resolve("pearson", "cpu", backend="gpu_only")
    with pytest.raises(BackendUnavailableError, match=r"not registered.*\[.*'reference', 'gpu_only'\]"):
        reg.resolve("pearson", "cpu", backend="nope")


def test_broken_preferred_backend_falls_back_with_one_warning(reg):
    broken = Backend("pearson", "triton_like", _marker("x"), priority=10, check=lambda: "triton failed to import")
    reg.register(_plugin(broken), name="broken")
    with pytest.warns(RuntimeWarning, match="triton_like.*triton failed to import.*'reference'"):
        assert reg.resolve("pearson", "cpu").name == "reference"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg._cache.clear()
        assert reg.resolve("pearson", "cpu").name == "reference"  # warned once only
    with pytest.raises(BackendUnavailableError, match="triton failed to import"):
        reg.resolve("pearson", "cpu", backend="triton_like")


def test_unknown_op_and_duplicate_loss(reg):
    with pytest.raises(ValueError, match="unknown op"):
        reg.backends("softmax")
    reg.register(_plugin(Backend("softmax", "x", _marker("x"))), name="bad-op")
    with pytest.raises(ValueError, match="unknown op 'softmax'"):
        reg.backends()
    reg.unregister(name="bad-op")
    dup = types.SimpleNamespace(ogan_losses=hookimpl(lambda: {"qp": object()}))
    reg.register(dup, name="dup")
    with pytest.raises(ValueError, match="loss 'qp'.*already registered"):
        reg.losses()


def test_public_functions_honour_backend_argument():
    reg = ogan_plugin.get_registry()
    plugin = _plugin(Backend("pearson", "sevens", _marker("sevens!"), priority=-5))
    reg.register(plugin, name="sevens")
    try:
        z, e = torch.randn(3, 4), torch.randn(3, 4)
        torch.testing.assert_close(ogan_plugin.pearson_correlation(z, e, backend="sevens"), torch.full((3,), 7.0))
        assert ogan_plugin.pearson_correlation(z, e).abs().max() <= 1  # automatic choice: still the reference
    finally:
        reg.unregister(name="sevens")


def test_failing_entry_point_is_recorded_not_raised(monkeypatch):
    class EP:
        name = "broken-plugin"

        def load(self):
            raise ImportError("no module named broken")

    monkeypatch.setattr("ogan_plugin.registry.metadata.entry_points", lambda group: [EP()])
    reg = Registry()
    assert "ImportError: no module named broken" in reg.failed["broken-plugin"]
    assert reg.resolve("pearson", "cpu").name == "reference"


@pytest.fixture(scope="module")
def example_plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin package of examples/, really installed (into a temp folder)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(REPO / "examples" / "ogan_plugin_example")],
        check=True,
    )
    return target


def test_example_plugin_installs_through_the_entry_point(example_plugin_path, monkeypatch):
    monkeypatch.syspath_prepend(str(example_plugin_path))
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    reg = Registry()
    assert reg.pm.get_plugin("example") is not None, reg.failed
    import ogan_plugin_example as ex

    # its loss, its backend (explicit only) and its adapter
    assert "lsgan" in reg.losses()
    assert reg.resolve("pearson", "cpu").name == "reference"
    b = reg.resolve("pearson", "cpu", backend="float64")
    z, e = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(b.fn(z, e, 1e-6), ogan_plugin.pearson_correlation(z, e), rtol=1e-5, atol=1e-6)
    d = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.2), ex.EqualLinear(8, 1))
    x = torch.randn(4, 6)
    before = d(x).detach()
    adaptation = reg.pm.hook.ogan_adapt_discriminator(discriminator=d, z_dim=5, head=None)
    assert adaptation.path == "2" and isinstance(adaptation.head.layer, ex.EqualLinear)
    d[2] = adaptation.head
    torch.testing.assert_close(d(x), before, rtol=1e-5, atol=1e-5)
