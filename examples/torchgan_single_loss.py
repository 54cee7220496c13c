"""torchgan's DCGAN pair trained as an O-GAN with the single-loss step, on sklearn's digits.

The networks are torchgan's own (``DCGANGenerator``, ``DCGANDiscriminator``), unchanged:
``ogan_plugin.wrap`` widens the discriminator's 1-output head convolution into a 32-output
encoder, and ``SingleLossStep`` trains both networks from one loss per batch.  It prints
rho(z, E(G(z))) on the training batch every 100 steps, and at the end the mean rho on fresh
noise and the pixel error of reconstructions G(0.9 * E(x)) of held-out digits beside the
error of predicting the mean image.

    pip install --no-deps torchgan        # torchgan also imports torchvision at the top
    python examples/torchgan_single_loss.py --steps 1000

Where torchvision cannot be imported (a CPU-only torch build without a matching wheel),
``--torchvision-stand-in`` puts an empty module in its place for the import: torchgan's
networks never use it.
"""

from __future__ import annotations

import argparse
import sys
import types

import torch

import ogan_plugin
from ogan_plugin import evaluate
from ogan_plugin.demo.data import load_digits, split


def import_torchgan_models(stand_in: bool) -> types.ModuleType:
    """``torchgan.models``, with an empty torchvision in ``sys.modules`` if asked and needed."""
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # ImportError, or RuntimeError when its operators fail to register
        if not stand_in:
            raise SystemExit(
                f"torchgan imports torchvision, which fails here ({type(exc).__name__}: {exc}); install a "
                "torchvision matching your torch, or rerun with --torchvision-stand-in"
            ) from None
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        tv = types.ModuleType("torchvision")
        for sub in ("transforms", "utils", "models", "datasets"):
            setattr(tv, sub, types.ModuleType(f"torchvision.{sub}"))
            sys.modules[f"torchvision.{sub}"] = getattr(tv, sub)
        sys.modules["torchvision"] = tv
    try:
        import torchgan.models
    except ImportError as exc:
        raise SystemExit(f"this example needs torchgan: pip install --no-deps torchgan ({exc})") from None
    return torchgan.models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="single-loss steps (default 1000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--z-dim", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--torchvision-stand-in", action="store_true",
                        help="import torchgan with an empty torchvision where the real one fails")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = import_torchgan_models(args.torchvision_stand_in)

    torch.manual_seed(args.seed)
    data = split(load_digits(16), held_out=0.2, seed=args.seed)
    G = models.DCGANGenerator(encoding_dims=args.z_dim, out_size=16, out_channels=1, step_channels=32)
    D = models.DCGANDiscriminator(in_size=16, in_channels=1, step_channels=32)

    D = ogan_plugin.wrap(D, z_dim=args.z_dim)  # the O-GAN line: D's head now has z_dim outputs
    print(f"wrapped torchgan's DCGANDiscriminator: head {D.head_path!r} -> {D.head.layer}")
    opt = torch.optim.RMSprop([*G.parameters(), *D.parameters()], lr=2e-4, alpha=0.99)
    step = ogan_plugin.SingleLossStep(G, D, loss="hinge", corr_weight=1.0, optimizer=opt)

    batches = torch.Generator().manual_seed(args.seed + 1)
    for i in range(1, args.steps + 1):
        idx = torch.randint(len(data.train_x), (args.batch_size,), generator=batches)
        r = step.step(data.train_x[idx])
        if i % 100 == 0 or i == args.steps:
            print(f"step {i:5d}  loss_d {float(r.loss_d):7.3f}  loss_g {float(r.loss_g):7.3f}  rho {float(r.rho):.3f}")

    rho = evaluate.mean_correlation(G, D, 1000, seed=args.seed + 100)
    rec = evaluate.reconstruction_error(G, D, data.test_x, mean_image=data.train_x.mean(0))
    print(f"mean rho on 1000 fresh z: {rho:.3f}")
    print(f"held-out reconstruction MSE: {rec.mse:.3f} (mean image: {rec.mean_image_mse:.3f})")


if __name__ == "__main__":
    main()
