"""Time forward+backward of the fused operations for every backend (see ogan_plugin.bench.kernels).

The same as ``ogan-plugin bench``; every option of the command works here, e.g.

    python benchmarks/kernels.py --sizes 256x512,65536x512 --csv kernels.csv --plot kernels.png
"""

from __future__ import annotations

import sys

from ogan_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
