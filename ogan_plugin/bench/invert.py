"""Inversion against steps: encoder start vs mean and random starts (``ogan-plugin bench --invert``).

On the held-out split of a demo checkpoint (the images the run never trained on: its
``--data``, ``--held-out`` and ``--seed`` rebuild the split exactly), every start runs
:func:`ogan_plugin.invert` for the same budget with the same optimizer and learning rate,
side by side in one process (:func:`ogan_plugin.evaluate.steps_to_quality`):

- ``encoder``: ``0.9 * encode(x)``, one forward of the discriminator;
- ``mean``: ``z = 0``;
- ``random``: ``z ~ N(0, I)``, ``--restarts`` of them per image, the best kept (each step
  costs ``restarts`` times as much: the wall time shows it).

It reports the pixel MSE, the class agreement (a logistic regression on pixels, fit on
the training split, gives the reconstruction the label it gives the original) and the
wall time at steps 0, 1, 2, 5, 10, 20, 50, ... up to the budget, and the goal's figures:
the MSE the best non-encoder start reaches in the budget, the steps the encoder start
needs to match it, their ratio, and the wall-time ratio.  Needs a checkpoint:
``ogan-plugin demo`` writes ``ogan-demo/checkpoint.pt``.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ogan_plugin.bench.timing import device_name, sig
from ogan_plugin.checks import check_int
from ogan_plugin.demo.train import DEFAULT_CHECKPOINT
from ogan_plugin.networks import parse_device
from ogan_plugin.reconstruction import DEFAULT_LR

__all__ = ["add_arguments", "InvertBenchmark", "run_invert_benchmark", "format_report", "write_csv", "plot"]

#: the steps at which the table, the CSV and the class agreement are taken (up to the budget)
GRID = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ogan-plugin bench --invert`` (``--csv``, ``--plot``, ``--device``
    and ``--threads`` are the bench command's own)."""
    g = parser.add_argument_group("inversion benchmark (--invert)")
    g.add_argument("--invert", action="store_true",
                   help="benchmark inversion (ogan_plugin.bench.invert): encoder vs mean vs random start on a demo "
                        "checkpoint's held-out images")
    g.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help=f"--invert: a checkpoint of ogan-plugin demo (default {DEFAULT_CHECKPOINT})")
    g.add_argument("--budget", type=int, default=1000, help="--invert: steps every start runs (default 1000)")
    g.add_argument("--restarts", type=int, default=4, help="--invert: random starts per image (default 4)")
    g.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"--invert: Adam's learning rate on z (default {DEFAULT_LR})")
    g.add_argument("--limit", type=int, default=None, help="--invert: use the first N held-out images (default all)")


@dataclass
class InvertBenchmark:
    """Rows (one per start and grid step) and the goal's figures of one benchmark run."""

    rows: list[dict[str, Any]]
    result: Any  # ogan_plugin.evaluate.StepsToQuality
    agreement: dict[str, dict[int, float]]
    images: int
    device: str
    header: str
    costs: dict[str, tuple[float, float]]  # start -> (seconds to start, seconds per step), interleaved medians

    def seconds(self, start: str, steps: int) -> float:
        """Wall time of ``steps`` steps from ``start`` by the interleaved per-step costs."""
        begin, per_step = self.costs[start]
        return begin + steps * per_step

    def at(self, steps: int) -> Any:
        """The :class:`~ogan_plugin.evaluate.QualityMatch` with the baselines cut at ``steps``,
        its times (and time ratio) by :meth:`seconds`, the interleaved costs."""
        return self.result.at(steps, self.seconds)


def interleaved_costs(generator: Any, discriminator: Any, x: torch.Tensor, *, restarts: int, lr: float,
                      steps: int = 20, rounds: int = 5) -> dict[str, tuple[float, float]]:
    """Per start: (seconds of a 0-step run, seconds per step), medians over ``rounds`` rounds
    that each time every start once with 0 and with ``steps`` steps, in turn, so that a
    change of the machine's load hits every start alike."""
    import statistics

    from ogan_plugin import invert
    from ogan_plugin.bench.timing import sync

    device = x.device
    starts = {"encoder": {}, "random": {"init": "random", "restarts": restarts}, "mean": {"init": "mean"}}
    runs: dict[tuple[str, int], list[float]] = {(s, k): [] for s in starts for k in (0, steps)}
    for _ in range(rounds):
        for name, kwargs in starts.items():
            for k in (0, steps):
                sync(device)
                t0 = time.perf_counter()
                invert(generator, discriminator, x, steps=k, lr=lr, **kwargs)
                sync(device)
                runs[name, k].append(time.perf_counter() - t0)
    costs = {}
    for name in starts:
        begin = statistics.median(runs[name, 0])
        costs[name] = (begin, max(statistics.median(runs[name, steps]) - begin, 0.0) / steps)
    return costs


def run_invert_benchmark(
    checkpoint: str,
    *,
    budget: int = 1000,
    restarts: int = 4,
    lr: float = DEFAULT_LR,
    device: str = "cpu",
    limit: Optional[int] = None,
    progress: bool = True,
    cost_rounds: int = 5,
) -> InvertBenchmark:
    """Run the three starts on the checkpoint's held-out images; see the module docstring.

    The curves come from one run per start (:func:`~ogan_plugin.evaluate.steps_to_quality`,
    whose per-step times are in the rows' ``seconds``); the time ratios of the report use
    :func:`interleaved_costs` (``cost_rounds`` rounds), which a changing machine load skews
    less than runs minutes apart.

    Raises:
        ValueError: a bad option (the message names it), an unusable checkpoint
            (:class:`~ogan_plugin.demo.train.CheckpointError`) or data that cannot be read.
    """
    from ogan_plugin.demo.data import load_demo_data, split
    from ogan_plugin.demo.train import Progress, load_pair
    from ogan_plugin.evaluate import PixelClassifier, steps_to_quality

    check_int("--budget", budget, 1)
    check_int("--restarts", restarts, 1)
    if limit is not None:
        check_int("--limit", limit, 1)
    if not lr > 0:
        raise ValueError(f"--lr must be > 0, got {lr!r}")
    dev = parse_device(device)
    pair = load_pair(Path(checkpoint), dev)
    cfg = pair.config
    data = load_demo_data(cfg.get("data"), cfg.get("channels", 1), cfg.get("image_size"))
    sp = split(data, cfg["held_out"], cfg["seed"])
    x = sp.test_x[:limit] if limit else sp.test_x
    if x.shape[1:] != pair.image_shape:
        raise ValueError(f"the checkpoint's images {pair.image_shape} differ from its data's {tuple(x.shape[1:])}")
    clf = None
    if sp.train_y is not None and len(torch.unique(sp.train_y)) > 1:
        clf = PixelClassifier().fit(sp.train_x, sp.train_y)
        source_labels = clf.predict(x)
    grid = [s for s in GRID if s <= budget] + ([budget] if budget not in GRID else [])
    agreement: dict[str, dict[int, float]] = {}
    bar = Progress(budget * 3, 0, "invert bench", progress)

    def snapshot(start: str, step: int, z: torch.Tensor) -> None:
        if step:  # step 0 is the start, not a step
            bar.update(step, 50)
        if clf is None or step not in grid:
            return
        with torch.no_grad():
            rec = pair.generator(z).float().cpu()
        agreement.setdefault(start, {})[step] = float((clf.predict(rec) == source_labels).double().mean())

    try:
        result = steps_to_quality(pair.generator, pair.discriminator, x.to(dev), steps=budget, restarts=restarts, lr=lr,
                                  callback=snapshot)
    finally:
        bar.close()
    rows = []
    for start, curve in result.curves.items():
        for s in grid:
            rows.append({
                "start": start + (f" x{restarts}" if start == "random" else ""),
                "steps": s,
                "mse": sig(curve[s]),
                "class_agreement": None if clf is None else round(agreement[start][s], 4),
                "seconds": sig(result.times[start][s]),
            })
    header = (f"ogan-plugin bench --invert: {x.shape[0]} held-out images {tuple(x.shape[1:])} of {checkpoint} "
              f"(step {pair.step}); Adam lr {lr}; {device_name(dev)}")
    costs = interleaved_costs(pair.generator, pair.discriminator, x.to(dev), restarts=restarts, lr=lr,
                              steps=min(budget, 20), rounds=cost_rounds)
    return InvertBenchmark(rows, result, agreement, int(x.shape[0]), str(dev), header, costs)


def format_report(bench: InvertBenchmark) -> str:
    """The table (start, steps, MSE, class agreement, seconds), the goal's figures, and the
    same ratio when the baselines stop earlier (at each grid step)."""
    r = bench.result
    m = bench.at(r.budget)
    lines = [bench.header, "", f"{'start':12s} {'steps':>6s} {'MSE':>9s} {'agreement':>10s} {'seconds':>9s}"]
    for row in bench.rows:
        agree = "-" if row["class_agreement"] is None else f"{row['class_agreement']:.1%}"
        lines.append(f"{row['start']:12s} {row['steps']:6d} {row['mse']:9.5f} {agree:>10s} {row['seconds']:9.2f}")
    lines += ["", f"best non-encoder start: {m.baseline}, MSE {m.target:.5f} after {m.steps} steps "
                  f"({m.seconds:.1f} s)"]
    if m.encoder_steps is None:
        lines.append(f"the encoder start does not reach it in {r.budget} steps "
                     f"(MSE {r.curves['encoder'][-1]:.5f} after {r.budget}): no step ratio")
    else:
        lines.append(f"the encoder start reaches it after {m.encoder_steps} steps: step ratio {m.ratio:.1f}x, "
                     f"wall-time ratio {m.time_ratio:.1f}x")
    enc = bench.agreement.get("encoder")
    if enc:
        at = [s for s in sorted(enc) if m.encoder_steps is not None and s >= m.encoder_steps][:1] + [r.budget]
        lines.append("class agreement with the originals: encoder only " + f"{enc[0]:.1%}, "
                     + ", ".join(f"refined {s} steps {enc[s]:.1%}" for s in dict.fromkeys(at)))
    c = bench.costs
    lines += ["", "wall time (medians of interleaved runs): "
              + ", ".join(f"{k} {c[k][0] * 1e3:.0f} ms to start + {c[k][1] * 1e3:.1f} ms per step" for k in c)]
    lines += ["", "equal quality when the non-encoder starts stop earlier (time ratio from the interleaved costs):",
              f"{'their steps':>11s} {'best MSE':>9s} {'by':>8s} {'encoder steps':>13s} {'ratio':>7s} {'time ratio':>10s}"]
    for steps in [s for s in GRID if 1 <= s <= r.budget]:
        q = bench.at(steps)
        enc_steps = "never" if q.encoder_steps is None else str(q.encoder_steps)
        ratio = "-" if q.ratio is None else f"{q.ratio:.1f}x"
        time_ratio = "-" if q.time_ratio is None else f"{q.time_ratio:.1f}x"
        lines.append(f"{steps:11d} {q.target:9.5f} {q.baseline:>8s} {enc_steps:>13s} {ratio:>7s} {time_ratio:>10s}")
    return "\n".join(lines)


def write_csv(bench: InvertBenchmark, path: str) -> None:
    """One row per start and grid step: start, steps, mse, class_agreement, seconds."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["start", "steps", "mse", "class_agreement", "seconds"])
        w.writeheader()
        w.writerows(bench.rows)


def plot(bench: InvertBenchmark, path: str) -> None:
    """MSE against steps (both axes log-scale, from step 1), one line per start, as a PNG."""
    from ogan_plugin.images import save_curves

    r = bench.result
    curves = {name: values[1:] for name, values in r.curves.items()}
    curves[f"target: {r.match.baseline} after {r.budget}"] = [r.match.target] * r.budget
    title = f"pixel MSE vs steps (log-log), {bench.images} held-out images"
    save_curves({title: curves}, path, steps=list(range(1, r.budget + 1)), width=800, height=400, log_x=True, log_y=True)


def run_command(args: argparse.Namespace, device: str, csv_path: Optional[str], plot_path: Optional[str]) -> None:
    """``ogan-plugin bench --invert``: run, print, write ``--csv``/``--plot``."""
    t0 = time.perf_counter()
    bench = run_invert_benchmark(args.checkpoint, budget=args.budget, restarts=args.restarts, lr=args.lr,
                                 device=device, limit=args.limit)
    print(format_report(bench))
    print(f"({time.perf_counter() - t0:.0f} s in all)")
    if csv_path:
        write_csv(bench, csv_path)
        print(f"wrote {csv_path}")
    if plot_path:
        plot(bench, plot_path)
        print(f"wrote {plot_path}")

