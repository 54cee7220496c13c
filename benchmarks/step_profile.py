"""Where a training step's time goes: host (CPU) time, device time and kernel launches per variant.

Runs each variant of ``ogan-plugin bench --step`` for a few warm steps under
``torch.profiler`` and prints, per step: wall time, the host time of the step's Python and
dispatch (the profiler's top-level CPU self time summed), the device time (CUDA kernels
summed) and the number of kernel launches, plus the top host functions.  A step whose wall
time is near its host time is host-bound: the GPU waits for the launches.

    python benchmarks/step_profile.py --pair dcgan64 --batch-size 128 --z-dim 128 [--amp bf16]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def main() -> int:
    from ogan_plugin.bench.step import DEFAULT_VARIANTS, PAIRS, _build

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", default="dcgan64", choices=sorted(PAIRS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--z-dim", type=int, default=128)
    parser.add_argument("--loss", default="hinge")
    parser.add_argument("--amp", default=None, choices=("bf16",))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    dev = torch.device(args.device)
    factory, image_shape, z_shape_of = PAIRS[args.pair]
    torch.manual_seed(0)
    G0, D0 = (m.to(dev) for m in factory(args.z_dim))
    x = torch.rand(args.batch_size, *image_shape, device=dev) * 2 - 1
    amp = torch.bfloat16 if args.amp == "bf16" else None
    activities = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    for variant in DEFAULT_VARIANTS:
        step = _build(variant, G0, D0, args.z_dim, z_shape_of(args.z_dim), args.loss, amp, dev)
        for _ in range(6):  # warm: compile, capture, cuDNN autotuning, optimizer state
            step(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        with torch.profiler.profile(activities=activities) as prof:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) / args.steps
        events = prof.key_averages()
        device_us = sum(e.self_device_time_total for e in events) / args.steps if dev.type == "cuda" else 0.0
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                                                             "cuLaunchKernelEx", "cudaGraphLaunch")) / args.steps
        print(f"{variant:18s} wall {wall * 1e3:7.2f} ms/step, device {device_us / 1e3:7.2f} ms/step, "
              f"launches {launches:6.0f}/step")
        top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
        print("    top host: " + "; ".join(f"{e.key[:40]} {e.self_cpu_time_total / args.steps / 1e3:.2f} ms" for e in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
