"""``ogan-plugin bench``: the command line of the benchmarks.

Without options it runs the kernel sweep of :mod:`ogan_plugin.bench.kernels`; ``--step``
runs the training-step benchmark of :mod:`ogan_plugin.bench.step`; ``--compile`` the
ahead-of-time register report of :mod:`ogan_plugin.bench.compile` (no GPU needed);
``--check`` the first-contact GPU check of :mod:`ogan_plugin.bench.gpu_check`;
``--invert`` the inversion benchmark of :mod:`ogan_plugin.bench.invert`.
"""

from __future__ import annotations

import argparse

import torch

from ogan_plugin.bench.kernels import BENCH_OPS, DEFAULT_SIZES, DTYPES
from ogan_plugin.cli import CommandError

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ogan-plugin bench``."""
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available, else cpu)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated BxN sweep (default: " + "; ".join(f"{k}: {v}" for k, v in DEFAULT_SIZES.items()) + ")")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="input dtype (default float32)")
    parser.add_argument("--ops", default=",".join(BENCH_OPS), help="comma-separated operations (default: all)")
    parser.add_argument("--backends", default=None, help="comma-separated backends (default: every one that runs here)")
    parser.add_argument("--iters", type=int, default=None, help="timed runs (default 20; --step: its own default)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 3; --step: its own default)")
    parser.add_argument("--csv", default=None, metavar="PATH", help="also write the numbers to this CSV file")
    parser.add_argument("--plot", default=None, metavar="PATH", help="also draw a PNG chart (needs Pillow)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for the CPU (default: torch's choice; 1 is steadier on a busy machine)")
    parser.add_argument("--step", action="store_true",
                        help="run the training-step benchmark (ogan_plugin.bench.step) instead of the kernel sweep")
    parser.add_argument("--batch-size", type=int, default=None, help="--step only: images per batch (default 64)")
    parser.add_argument("--pair", default="dcgan32", choices=("dcgan32", "dcgan64", "tiny"),
                        help="--step only: the networks (default dcgan32; dcgan64: the PyTorch DCGAN example's)")
    parser.add_argument("--z-dim", type=int, default=None, help="--step only: noise size (default 128)")
    parser.add_argument("--loss", default="hinge", help="--step only: adversarial loss of every variant (default hinge)")
    parser.add_argument("--amp", default=None, choices=("bf16", "fp16"), help="--step only: autocast dtype (default float32)")
    parser.add_argument("--variants", default=None,
                        help="--step only: comma-separated variants (default: plain_alternating, ogan_alternating, "
                             "hook, single_split, single_captured)")
    parser.add_argument("--host-cost", action="store_true",
                        help="--step only: the host-cost mode: tiny networks, batch 16, z 16, one thread "
                             "(a step is all host time, as a small GAN's step is on a GPU)")
    parser.add_argument("--compile", action="store_true",
                        help="compile every kernel configuration for --target with Triton and its ptxas (no GPU): "
                             "registers, spills, shared memory; exit 1 on a spill or failed build")
    parser.add_argument("--target", default="sm_90a", help="--compile only: GPU target, e.g. sm_90a (H100), sm_80 (A100)")
    parser.add_argument("--layout", default="contiguous", choices=("contiguous", "strided"),
                        help="--compile only: input layout compiled (default contiguous)")
    parser.add_argument("--check", action="store_true",
                        help="first-contact GPU check: environment, kernels vs float64, determinism, streams, "
                             "CUDA graphs, then the benchmark table; exit 1 on a failure")
    parser.add_argument("--dry", action="store_true",
                        help="--check only: tiny sizes on the CPU under Triton's interpreter (what CI runs)")
    from ogan_plugin.bench.invert import add_arguments

    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """``ogan-plugin bench``."""
    if args.compile or args.check or args.dry:
        return _run_compile_or_check(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads is not None:
        if args.threads < 1:
            raise CommandError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.invert:
        from ogan_plugin.bench.invert import run_command

        try:
            run_command(args, device, args.csv, args.plot)
        except ValueError as exc:  # bad options, an unusable checkpoint: the message names it
            raise CommandError(str(exc)) from exc
        return 0
    if args.step:
        from ogan_plugin.bench.step import run_step_benchmark

        kwargs = {k: v for k, v in (("iters", args.iters), ("warmup", args.warmup), ("batch_size", args.batch_size),
                                    ("z_dim", args.z_dim)) if v is not None}
        variants = None if args.variants is None else [v.strip() for v in args.variants.split(",") if v.strip()]
        try:
            run_step_benchmark(device=device, csv=args.csv, pair=args.pair, loss=args.loss, amp=args.amp,
                               variants=variants, host_cost=args.host_cost, **kwargs)
        except ValueError as exc:  # bad --device, --iters, --batch-size: the message names it
            raise CommandError(str(exc)) from exc
        return 0
    from ogan_plugin.bench.kernels import format_table, parse_sizes, plot, run_kernel_benchmark, write_csv
    from ogan_plugin.networks import parse_device

    try:
        sizes = parse_sizes(args.sizes or DEFAULT_SIZES[parse_device(device, "--device", ("cpu", "cuda")).type])
        rows = run_kernel_benchmark(
            sizes,
            device=device,
            dtype=args.dtype,
            ops=[o.strip() for o in args.ops.split(",") if o.strip()],
            backends=None if args.backends is None else [b.strip() for b in args.backends.split(",") if b.strip()],
            iters=20 if args.iters is None else args.iters,
            warmup=3 if args.warmup is None else args.warmup,
        )
    except ValueError as exc:  # bad --sizes, --ops, --device, --iters: the message names it
        raise CommandError(str(exc)) from exc
    print(format_table(rows))
    if args.csv:
        write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
    if args.plot and rows:
        plot(rows, args.plot, f"ogan-plugin bench on {device} ({args.dtype}): median forward+backward (us, log)")
        print(f"wrote {args.plot}")
    return 0


def _run_compile_or_check(args: argparse.Namespace) -> int:
    """``--compile`` and ``--check`` (each its own module)."""
    if args.compile and args.check:
        raise CommandError("--compile and --check are separate runs: give one of them")
    if args.dry and not args.check:
        raise CommandError("--dry goes with --check")
    if args.compile:
        from ogan_plugin.bench.compile import PtxasMissing, run_compile_command

        try:
            return run_compile_command(args.target, csv=args.csv, layout=args.layout)
        except (ValueError, PtxasMissing) as exc:  # bad --target, or no ptxas in the wheel
            raise CommandError(str(exc)) from exc
    from ogan_plugin.bench.gpu_check import run_check

    try:
        return run_check(dry=args.dry, device=args.device, csv=args.csv)
    except ValueError as exc:  # no GPU without --dry, bad --device: the message names it
        raise CommandError(str(exc)) from exc
