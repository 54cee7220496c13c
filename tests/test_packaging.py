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
