"""Time full O-GAN training iterations: the plain GAN against every way to add O-GAN
(see ogan_plugin.bench.step; the same as ``ogan-plugin bench --step``).

    python benchmarks/step.py --iters 40 --warmup 5 --csv step.csv
    python benchmarks/step.py --host-cost --iters 300 --warmup 30        # tiny networks: host time
    python benchmarks/step.py --device cuda --pair dcgan64 --batch-size 128 --amp bf16
"""

from __future__ import annotations

import argparse

from ogan_plugin.bench.step import DEFAULT_VARIANTS, VARIANTS, run_step_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=30, help="timed rounds, each runs every variant once (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS), help="variants to time")
    parser.add_argument("--timer", choices=("wall", "cpu"), default="wall", help="wall clock or process CPU time (default wall)")
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")
    parser.add_argument("--pair", default="dcgan32", choices=("dcgan32", "dcgan64", "tiny"), help="networks (default dcgan32)")
    parser.add_argument("--z-dim", type=int, default=128, help="noise size (default 128)")
    parser.add_argument("--loss", default="hinge", help="adversarial loss (default hinge)")
    parser.add_argument("--amp", default=None, choices=("bf16", "fp16"), help="autocast dtype (default float32)")
    parser.add_argument("--host-cost", action="store_true", help="tiny networks, batch 16, z 16, one thread")
    args = parser.parse_args()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    run_step_benchmark(args.iters, args.warmup, args.batch_size, args.device, args.csv, variants=args.variants,
                       timer=args.timer, pair=args.pair, z_dim=args.z_dim, loss=args.loss, amp=args.amp,
                       host_cost=args.host_cost)


if __name__ == "__main__":
    main()
