"""The correlation kernels against the GPU's limits (issue 21's targets), with a tile sweep.

For correlation_loss forward + backward (both z and e require gradients, as the issue
counts: the forward reads z and e, the backward reads z and e and writes dz and de, so
6 * B * n * itemsize bytes at least), it times, with CUDA events over back-to-back calls:

* the fused op (backend triton), an eager torch formula (backend reference), and
  ``torch.compile`` of the formula (backend compiled), at 128x128, 4096x512 and 262144x512,
  in float32 and bfloat16;
* the share of the measured copy bandwidth the fused op reaches at each size;
* with ``--sweep``: the fused op at 262144x512 for several tile shapes (TILE, elements per
  thread), so the launch constants can be chosen on the machine (the kernels recompile
  for each).

    python benchmarks/kernel_limit.py --csv limit.csv [--sweep]

Needs CUDA.  Prints a table; ``--csv`` writes every row.
"""

from __future__ import annotations

import argparse
import csv
import sys

import torch


def _time(fn, iters: int = 30, calls: int = 20, warmup: int = 5) -> float:
    """Median seconds per call over ``iters`` repetitions of ``calls`` back-to-back calls (CUDA events)."""
    from ogan_plugin.bench.timing import median_seconds

    return median_seconds(fn, torch.device("cuda"), iters, warmup, calls=calls)


def copy_bandwidth() -> float:
    src = torch.ones(1 << 28, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _time(lambda: dst.copy_(src), iters=10, calls=5) / 1e9


def _case(backend: str, B: int, n: int, dtype: torch.dtype):
    from ogan_plugin.registry import get_registry

    fn = get_registry().resolve("correlation_loss", "cuda", backend=backend).fn
    g = torch.Generator(device="cuda").manual_seed(0)
    z = torch.randn(B, n, device="cuda", generator=g).to(dtype).requires_grad_(True)
    e = (0.5 * z.detach().float() + torch.randn(B, n, device="cuda", generator=g)).to(dtype).requires_grad_(True)

    def run():
        return torch.autograd.grad(fn(z, e, 0.5, 1e-6), (z, e))

    return run, 6 * B * n * z.element_size()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", default=None)
    parser.add_argument("--sweep", action="store_true", help="also sweep tile shapes at 262144x512")
    parser.add_argument("--sizes", default="128x128,4096x512,262144x512")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("kernel_limit.py needs CUDA", file=sys.stderr)
        return 2
    import ogan_plugin  # noqa: F401  (registers the backends)

    copy_gbps = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {copy_gbps:.0f} GB/s; torch {torch.__version__}")
    rows = []
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    for dtype in (torch.float32, torch.bfloat16):
        for B, n in sizes:
            found = {}
            for backend in ("triton", "reference", "compiled"):
                try:
                    run, nbytes = _case(backend, B, n, dtype)
                    seconds = _time(run)
                except Exception as exc:  # e.g. no compiler for torch.compile
                    print(f"{backend} {B}x{n} {dtype}: {type(exc).__name__}: {exc}")
                    continue
                found[backend] = seconds
                rows.append({"kind": "backend", "backend": backend, "B": B, "n": n, "dtype": str(dtype).split(".")[1],
                             "us": round(seconds * 1e6, 1), "gbps": round(nbytes / seconds / 1e9, 1),
                             "copy_share": round(nbytes / seconds / 1e9 / copy_gbps, 3)})
            if "triton" in found and "compiled" in found:
                print(f"{B}x{n} {str(dtype).split('.')[1]}: fused {found['triton'] * 1e6:.1f} us, eager "
                      f"{found.get('reference', float('nan')) * 1e6:.1f} us, compiled {found['compiled'] * 1e6:.1f} us; "
                      f"fused / compiled {found['triton'] / found['compiled']:.2f}; fused share of copy bandwidth "
                      f"{rows[-3]['copy_share'] if rows[-3]['backend'] == 'triton' else float('nan'):.2f}")
    if args.sweep:
        from ogan_plugin.kernels import launch as L

        saved = (L.TILE, L.ELEMENTS_PER_THREAD, L.MAX_PROGRAMS)
        for tile, per_thread, programs in ((2048, 4, 1024), (2048, 8, 1024), (4096, 8, 1024), (4096, 16, 1024),
                                           (1024, 4, 1024), (2048, 4, 4096), (2048, 4, 132 * 2)):
            L.TILE, L.ELEMENTS_PER_THREAD, L.MAX_PROGRAMS = tile, per_thread, programs
            for dtype in (torch.float32, torch.bfloat16):
                run, nbytes = _case("triton", 262144, 512, dtype)
                seconds = _time(run)
                share = nbytes / seconds / 1e9 / copy_gbps
                rows.append({"kind": f"sweep tile={tile} per_thread={per_thread} programs={programs}", "backend": "triton",
                             "B": 262144, "n": 512, "dtype": str(dtype).split(".")[1], "us": round(seconds * 1e6, 1),
                             "gbps": round(nbytes / seconds / 1e9, 1), "copy_share": round(share, 3)})
                print(f"sweep TILE={tile} EPT={per_thread} MAX_PROGRAMS={programs} {str(dtype).split('.')[1]}: "
                      f"{seconds * 1e6:.1f} us, {share:.2f} of copy bandwidth")
        L.TILE, L.ELEMENTS_PER_THREAD, L.MAX_PROGRAMS = saved
    print(f"{'kind':44s} {'backend':10s} {'size':>12s} {'dtype':9s} {'us':>9s} {'GB/s':>8s} {'copy':>6s}")
    for r in rows:
        print(f"{r['kind']:44s} {r['backend']:10s} {str(r['B']) + 'x' + str(r['n']):>12s} {r['dtype']:9s} "
              f"{r['us']:9.1f} {r['gbps']:8.1f} {r['copy_share']:6.2f}")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
