#!/usr/bin/env bash
# Every GPU check of ogan-plugin in one script, for a machine with torch, Triton and a GPU but
# no network.  Run it from a checkout:
#
#     bash benchmarks/gpu_checks.sh [OUT_DIR]      # OUT_DIR: default $OUT if set, else ./gpu-checks
#
# Steps, in order, each under its own time limit (coreutils `timeout`); a failing step does
# not stop the others:
#   env        nvidia-smi, python / torch / CUDA / Triton versions, the relevant packages
#   install    pip install --no-deps --no-build-isolation -e .   (no network needed)
#   check      ogan-plugin bench --check       (kernels against float64, streams, graphs)
#   pytest-gpu pytest -m gpu                   (the tests only a GPU can run)
#   pytest     pytest                          (the whole suite; 4 processes with pytest-xdist)
#   step       ogan-plugin bench --step --device cuda --pair dcgan64   (training-step benchmark, CSV)
#   step-bf16  the same under bf16 autocast (its table in the log)
#   limit      benchmarks/kernel_limit.py     (the correlation kernels against copy bandwidth, CSV)
#   demo       ogan-plugin demo --device cuda  (default size; metrics.json + two pictures)
#
# `pytest`, not `python3 -m pytest`: the -m form puts the checkout's root on sys.path, and
# then ogan_plugin/ is imported without its kernels/ and adapters/.
#
# OUT_DIR receives at most 8 files:
#   gpu_checks.log         every step's command and output, concatenated
#   summary.tsv            one line per step: name, status (PASS/FAIL/TIMEOUT/DRY), seconds,
#                          limit, exit code
#   check.csv, step.csv    the benchmark rows of `bench --check` and `bench --step`
#   limit.csv              the rows of benchmarks/kernel_limit.py
#   demo_metrics.json, demo_samples.png
# The script exits 1 when any step failed or timed out, else 0.
#
# Options (environment):
#   GPU_CHECKS_DRY=1     print each step's command into the log, run none (checks the
#                        script itself on any machine; tests/test_gpu_checks_script.py)
#   GPU_CHECKS_EXTRA=F   a bash file sourced after the built-in steps, to add steps:
#                        `step NAME LIMIT_SECONDS COMMAND ARGS...` (a command, not a shell
#                        string: use `bash -c '...'` for pipes); write files to "$OUT_DIR"
#                        (the 8-file limit counts them)
#   GPU_CHECKS_SKIP=a,b  built-in steps to leave out (names as above)
#   GPU_CHECKS_PYTEST_ARGS="..."  extra arguments of the whole-suite step (default: "-n 4
#                        --dist loadfile" where pytest-xdist is installed, else none)
#
# Wheels carried to a machine without network: a `.whl/` folder in the checkout is
# installed first into /tmp/site (put on PYTHONPATH), with no index and no dependencies.
set -u
cd "$(dirname "$0")/.."

OUT_DIR=${1:-${OUT:-./gpu-checks}}
DRY=${GPU_CHECKS_DRY:-0}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG="$OUT_DIR/gpu_checks.log"
SUMMARY="$OUT_DIR/summary.tsv"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gpu-checks.XXXXXX")
: > "$LOG"
printf 'step\tstatus\tseconds\tlimit\texit_code\n' > "$SUMMARY"
FAILED=0
export PYTHONUNBUFFERED=1

log() { printf '%s\n' "$*" | tee -a "$LOG"; }
now() { if [ -n "${EPOCHREALTIME:-}" ]; then echo "${EPOCHREALTIME/,/.}"; else date +%s.%N; fi; }

# step NAME LIMIT_SECONDS COMMAND ARGS...: run COMMAND under `timeout LIMIT_SECONDS`, its
# output appended to the log; record status and wall seconds in the summary.  With DRY=1
# the command is only written to the log.
step() {
  local name=$1 limit=$2 status rc=0 t0 t1 seconds
  shift 2
  case ",${GPU_CHECKS_SKIP:-}," in *",$name,"*) log "===== $name: skipped (GPU_CHECKS_SKIP)"; return 0 ;; esac
  log ""
  log "===== $name (limit ${limit} s): $*"
  t0=$(now)
  if [ "$DRY" = 1 ]; then
    status=DRY
  else
    timeout --kill-after=15 "$limit" "$@" >> "$LOG" 2>&1
    rc=$?
    case $rc in
      0) status=PASS ;;
      124 | 137) status=TIMEOUT ;;
      *) status=FAIL ;;
    esac
  fi
  t1=$(now)
  seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  [ "$status" = PASS ] || [ "$status" = DRY ] || FAILED=1
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$seconds" "$limit" "$rc" >> "$SUMMARY"
  log "===== $name: $status in ${seconds} s (exit code $rc)"
}

# --- carried wheels, then the tools the steps use ------------------------------------------
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  step wheels 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
SCRIPTS=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || echo "")
tool() {  # the console script NAME: on PATH, or in python3's scripts folder (after install)
  if command -v "$1" > /dev/null 2>&1; then echo "$1"; elif [ -x "$SCRIPTS/$1" ]; then echo "$SCRIPTS/$1"; else echo "$1"; fi
}

# --- the built-in steps -----------------------------------------------------------------------
step env 60 bash -c '
  nvidia-smi || echo "nvidia-smi: not available"
  echo
  python3 - <<PY
import platform, sys
print("python", sys.version.split()[0], sys.executable, platform.platform())
import torch
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| available:", torch.cuda.is_available(),
      "| devices:", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
try:
    import triton
    print("triton", triton.__version__)
except Exception as exc:
    print("triton: cannot be imported:", exc)
PY
  echo
  python3 -m pip list 2>/dev/null | grep -iE "^(torch|torchvision|triton|numpy|pluggy|pytest|pytest-timeout|lightning|pytorch-lightning|accelerate|scikit-learn|pillow|tqdm|setuptools|ogan-plugin) "
  echo "nproc: $(nproc)"
'
step install 180 python3 -m pip install -q --no-deps --no-build-isolation -e .
OGAN=$(tool ogan-plugin)
PYTEST=$(tool pytest)
step check 180 "$OGAN" bench --check --csv "$OUT_DIR/check.csv"
step pytest-gpu 240 "$PYTEST" -m gpu -rfEs -p no:cacheprovider
# the whole suite in 4 processes, one test file each at a time, where pytest-xdist is installed
# (serially it took 6 min on the H200 machine); GPU_CHECKS_PYTEST_ARGS overrides ("" = serial)
if [ -z "${GPU_CHECKS_PYTEST_ARGS+set}" ] && python3 -c "import xdist" > /dev/null 2>&1; then
  GPU_CHECKS_PYTEST_ARGS="-n 4 --dist loadfile"
fi
# shellcheck disable=SC2086  # the arguments are meant to be split
step pytest 360 "$PYTEST" ${GPU_CHECKS_PYTEST_ARGS:-} -rfEs -p no:cacheprovider --durations=15
# the training step on the PyTorch DCGAN example's 64x64 pair, batch 128, z 128 (issue 21's
# yardstick): plain, alternating O-GAN, hook mode, SingleLossStep and its CUDA graph; float32
# with a CSV, then bf16 autocast (its table in the log)
step step 120 "$OGAN" bench --step --device cuda --pair dcgan64 --batch-size 128 --z-dim 128 --iters 50 \
  --csv "$OUT_DIR/step.csv"
step step-bf16 120 "$OGAN" bench --step --device cuda --pair dcgan64 --batch-size 128 --z-dim 128 --iters 50 \
  --amp bf16
# the correlation kernels against the copy bandwidth and torch.compile (GPU_CHECKS_SWEEP=1 adds
# a sweep of tile shapes at 262144x512)
step limit 120 python3 benchmarks/kernel_limit.py --csv "$OUT_DIR/limit.csv" ${GPU_CHECKS_SWEEP:+--sweep}
step demo 180 bash -c '
  "$1" demo --device cuda --out "$2/demo" --no-progress || exit
  for f in metrics.json samples.png; do cp "$2/demo/$f" "$3/demo_$f" || exit; done
' demo "$OGAN" "$SCRATCH" "$OUT_DIR"

# --- steps added by the caller (GPU_CHECKS_EXTRA) ----------------------------------------------
if [ -n "${GPU_CHECKS_EXTRA:-}" ]; then
  # shellcheck source=/dev/null
  . "$GPU_CHECKS_EXTRA"
fi

rm -rf "$SCRATCH"
log ""
log "===== summary ($SUMMARY)"
if command -v column > /dev/null; then column -t -s $'\t' "$SUMMARY"; else cat "$SUMMARY"; fi | tee -a "$LOG"
n=$(find "$OUT_DIR" -type f | wc -l)
[ "$n" -le 8 ] || log "warning: $n files in $OUT_DIR (at most 8 come back from a device run)"
exit $FAILED
