"""The learning-rate search behind docs/inversion.md ("Why not 10x, and what was tried").

On a seeded subset of a demo checkpoint's held-out images, for each learning rate, every
start runs ``--steps`` Adam steps (same rate for all): the encoder start, the mean start,
the random start with 1 and with 4 restarts, and the encoder start with 3 jittered copies
(``encoder + sigma * N(0, I)``, best of the 4 kept per image, ``--jitter-steps`` steps).
It prints each curve at a few steps and, for each baseline, the first step at which each
encoder start matches the baseline's MSE after ``--steps`` steps.

    python benchmarks/invert_search.py --checkpoint /tmp/ogan-demo-17/checkpoint.pt --lrs 0.05 0.1 0.2
"""

from __future__ import annotations

import argparse
import time

import torch

import ogan_plugin
from ogan_plugin.demo.data import load_demo_data, split
from ogan_plugin.demo.train import load_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="ogan-demo/checkpoint.pt", help="a checkpoint of ogan-plugin demo")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.05, 0.1, 0.2], help="Adam learning rates")
    parser.add_argument("--steps", type=int, default=1000, help="steps of every start (default 1000)")
    parser.add_argument("--jitter-steps", type=int, default=300, help="steps of the jittered copies (default 300)")
    parser.add_argument("--sigma", type=float, default=0.5, help="jitter of the encoder's copies (default 0.5)")
    parser.add_argument("--images", type=int, default=120, help="held-out images, a seeded subset (default 120)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pair = load_pair(args.checkpoint)
    cfg = pair.config
    test_x = split(load_demo_data(cfg.get("data"), cfg.get("channels", 1), cfg.get("image_size")),
                   cfg["held_out"], cfg["seed"]).test_x
    x = test_x[torch.randperm(len(test_x), generator=torch.Generator().manual_seed(5))[: args.images]]
    G, D = pair.generator, pair.discriminator
    with torch.no_grad():
        encoder = 0.9 * D.encode(x)
    for lr in args.lrs:
        curves: dict[str, torch.Tensor] = {}
        runs = {"encoder": {}, "mean": {"init": "mean"}, "random1": {"init": "random"},
                "random4": {"init": "random", "restarts": 4}}
        for name, kwargs in runs.items():
            t0 = time.perf_counter()
            curves[name] = ogan_plugin.invert(G, D, x, steps=args.steps, lr=lr, **kwargs).history
            mean = curves[name].double().mean(1)
            shown = {k: round(float(mean[k]), 5) for k in (0, 10, 30, 100, 300, args.steps) if k <= args.steps}
            print(f"lr {lr} {name}: {time.perf_counter() - t0:.0f} s {shown}", flush=True)
        T = min(args.steps, args.jitter_steps)
        g = torch.Generator().manual_seed(1)
        copies = [curves["encoder"][: T + 1]] + [
            ogan_plugin.invert(G, D, x, steps=T, lr=lr, init=encoder + args.sigma * torch.randn(encoder.shape, generator=g)).history
            for _ in range(3)
        ]
        curves["encoder_jitter4"] = torch.stack(copies).amin(0)
        means = {k: v.double().mean(1) for k, v in curves.items()}
        for base in ("mean", "random1", "random4"):
            target = float(means[base][-1])
            for enc in ("encoder", "encoder_jitter4"):
                hit = (means[enc] <= target).nonzero()
                at = int(hit[0]) if len(hit) else None
                tail = f"at {at}: ratio {args.steps / at:.1f}x" if at else f"not within its {len(means[enc]) - 1} steps"
                print(f"lr {lr}: {base} after {args.steps}: {target:.5f}; {enc} reaches it {tail}", flush=True)


if __name__ == "__main__":
    main()
