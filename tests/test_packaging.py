"""The subpackages ship as ogan_plugin.kernels / ogan_plugin.adapters, never as top-level names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ogan_plugin
import ogan_plugin.adapters
import ogan_plugin.kernels

REPO = Path(__file__).resolve().parents[1]


def test_subpackages_resolve_to_the_kernels_and_adapters_folders():
    assert ogan_plugin.kernels.__name__ == "ogan_plugin.kernels"
    assert Path(ogan_plugin.kernels.__file__).parent.name == "kernels"
    assert Path(ogan_plugin.adapters.__file__).parent.name == "adapters"


def test_no_generic_top_level_modules_are_importable_from_the_package():
    code = (
        "import sys, ogan_plugin, ogan_plugin.kernels.pearson, ogan_plugin.adapters.linear; "
        "ogan_plugin.get_registry(); "
        "bad = [m for m in ('kernels', 'adapters') if m in sys.modules]; "
        "print(bad)"
    )
    # run outside the repository so the working directory cannot shadow anything
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout
    assert out.strip() == "[]"


def test_import_works_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None; "  # makes `import triton` raise ImportError
        "import torch, ogan_plugin; "
        "z = torch.randn(3, 4); "
        "print(float(ogan_plugin.pearson_correlation(z, z).mean())); "
        "print(ogan_plugin.get_registry().resolve('pearson', 'cpu').name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout
    assert abs(float(out.split()[0]) - 1.0) < 1e-5 and out.split()[1] == "reference"


def test_regular_install_ships_the_same_modules(tmp_path):
    """A non-editable install (what `pip install .` does) carries kernels/ and adapters/ as subpackages."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(REPO)],
        check=True,
    )
    assert (target / "ogan_plugin" / "kernels" / "pearson.py").is_file()
    assert (target / "ogan_plugin" / "adapters" / "linear.py").is_file()
    for sub in ("demo", "bench"):
        assert (target / "ogan_plugin" / sub / "command.py").is_file(), sub
    for part in ("data", "classifier", "steps"):  # ogan_plugin.evaluate's parts
        assert (target / "ogan_plugin" / "evaluation" / f"{part}.py").is_file(), part
    assert (target / "ogan_plugin" / "py.typed").is_file()  # package data
    assert not (target / "kernels").exists() and not (target / "adapters").exists()
    code = (
        "import ogan_plugin, ogan_plugin.kernels.pearson as k, ogan_plugin.adapters.linear as a, ogan_plugin.evaluate; "
        "print(ogan_plugin.__file__); print(k.__file__); print(a.__file__)"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/", env=env).stdout
    assert all(line.startswith(str(target)) for line in out.split()), out


def test_the_version_is_written_once_and_reaches_the_metadata():
    import importlib.metadata as md

    assert ogan_plugin.__version__ == md.version("ogan-plugin")
    text = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and "\nversion =" not in text.split("[tool.setuptools.dynamic]")[0]
    assert f"## [{ogan_plugin.__version__}]" in (REPO / "CHANGELOG.md").read_text()


def test_the_moved_modules_still_import_with_a_deprecation_warning():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "for name in ('datasets', 'models'):\n"
        "    try:\n"
        "        __import__('ogan_plugin.' + name)\n"
        "    except DeprecationWarning as w:\n"
        "        print(name, 'moved' in str(w))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout
    assert out.split() == ["datasets", "True", "models", "True"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ogan_plugin import datasets, models
        from ogan_plugin.demo import data
        from ogan_plugin.demo import models as demo_models
    assert datasets.load_digits is data.load_digits and models.Generator is demo_models.Generator


def test_importing_dunder_main_does_not_run_the_command():
    code = "import ogan_plugin.__main__; print('imported')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert res.returncode == 0 and res.stdout.strip() == "imported"
