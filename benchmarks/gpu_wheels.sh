#!/usr/bin/env bash
# Download the wheels tests/thirdparty's GPU test (test_lucidrains_gpu.py) needs and the lent
# H200 machine lacks (it has torch 2.11, torchvision 0.26, einops, pillow, tqdm, scikit-learn,
# colorama and tabulate; see /work/.library/device/KINDS.md) into .whl/: CPython 3.12, manylinux
# x86_64.  .whl/ is ignored through the repository's info/exclude (not .gitignore).
#
#     bash benchmarks/gpu_wheels.sh
#
# On the machine (carry .whl), before the tests:
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#         --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#
# lightweight_gan's Trainer imports kornia (filter2d), adabelief_pytorch, einops, PIL, torchvision
# and tqdm; aim only when use_aim=True (the test passes use_aim=False), pytorch_fid only for FID,
# retry and fire only in its command line (lightweight_gan.cli, which the package does not import).
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    lightweight-gan==1.2.1 kornia==0.9.0 kornia-rs==0.2.0 adabelief-pytorch==0.2.1
ls -l .whl
du -ch .whl/*.whl | tail -1
