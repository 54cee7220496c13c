"""Hook mode on an augmented DCGAN-style loop: the one call against the term added by hand.

The PyTorch DCGAN example's loop (BCE on a Sigmoid, Adam 2e-4 / 0.5, N(0, 0.02) init,
``netD(real)``, ``netD(fake.detach())``, ``netD(fake)``) on scikit-learn's digits at 16x16,
with every discriminator input augmented by DiffAugment (Zhao et al. 2020; its
``translation``, ``cutout`` and ``color`` policies as lightweight-gan 1.2.1 ships them,
written out below).  Two ways to add the O-GAN term with the same weight, seed and steps:

* ``hook``: the loop unchanged plus ``netD = ogan_plugin.wrap(netD, nz, generator=netG)``
  (and ``attach(..., corr_weight=)``): hook mode follows the fakes through the augmentation;
* ``by-hand``: ``netD = ogan_plugin.wrap(netD, nz)`` and each loss on fakes gets
  ``ogan_plugin.correlation_loss(z, netD.decompose(augment(fake)).raw, weight)``.

For each, rho(z, E(G(z))) on 1000 fresh z and the held-out reconstruction MSE of
``G(0.9 * E(x))`` against predicting the mean training image::

    python benchmarks/hook_augment.py                       # none, translation, cutout, color; 800 steps
    python benchmarks/hook_augment.py --augment all --steps 1600 --csv out.csv   # the three policies at once
"""

from __future__ import annotations

import argparse
import csv
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import ogan_plugin
from ogan_plugin.demo.data import load_digits, split
from ogan_plugin.evaluate import mean_correlation, reconstruction_error


# --- DiffAugment's policies (lightweight_gan/diff_augment.py, 1.2.1), written out ----------------
def rand_brightness(x):
    return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def rand_saturation(x):
    x_mean = x.mean(dim=1, keepdim=True)
    return (x - x_mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + x_mean


def rand_contrast(x):
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - x_mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + x_mean


def rand_translation(x, ratio=0.125):
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    translation_x = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1], device=x.device)
    translation_y = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1], device=x.device)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), device=x.device), torch.arange(x.size(2), device=x.device),
        torch.arange(x.size(3), device=x.device), indexing="ij",
    )
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def rand_cutout(x, ratio=0.5):
    cutout_size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    offset_x = torch.randint(0, x.size(2) + (1 - cutout_size[0] % 2), size=[x.size(0), 1, 1], device=x.device)
    offset_y = torch.randint(0, x.size(3) + (1 - cutout_size[1] % 2), size=[x.size(0), 1, 1], device=x.device)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), device=x.device), torch.arange(cutout_size[0], device=x.device),
        torch.arange(cutout_size[1], device=x.device), indexing="ij",
    )
    grid_x = torch.clamp(grid_x + offset_x - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype, device=x.device)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


POLICIES = {"none": [], "translation": [rand_translation], "cutout": [rand_cutout],
            "color": [rand_brightness, rand_saturation, rand_contrast]}
POLICIES["all"] = POLICIES["color"] + POLICIES["translation"] + POLICIES["cutout"]  # DiffAugment's order


def diff_augment(x, policy):
    for f in POLICIES[policy]:
        x = f(x)
    return x.contiguous()


# --- the DCGAN example's networks at 16x16 (G takes (B, nz)) ----------------------------------
def weights_init(m: nn.Module) -> None:
    if m.__class__.__name__.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif m.__class__.__name__.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def networks(nz: int, width: int) -> tuple[nn.Module, nn.Module]:
    netG = nn.Sequential(
        nn.Unflatten(1, (nz, 1, 1)),
        nn.ConvTranspose2d(nz, width * 2, 4, 1, 0, bias=False), nn.BatchNorm2d(width * 2), nn.ReLU(True),
        nn.ConvTranspose2d(width * 2, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
        nn.ConvTranspose2d(width, 1, 4, 2, 1, bias=False), nn.Tanh(),
    )
    netD = nn.Sequential(
        nn.Conv2d(1, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(width * 2, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
    )
    netG.apply(weights_init)
    netD.apply(weights_init)
    return netG, netD


def train(policy: str, mode: str, steps: int, seed: int, weight: float, nz: int, width: int, batch: int, data: torch.Tensor):
    """The DCGAN example's loop with every D input augmented; the term by ``mode``."""
    torch.manual_seed(seed)
    netG, netD = networks(nz, width)
    torch.manual_seed(seed + 1)  # the widened head's draw
    if mode == "hook":
        netD = ogan_plugin.wrap(netD, z_dim=nz)
        ogan_plugin.attach(netD, netG, corr_weight=weight)  # = wrap(..., generator=netG) with this weight
    else:
        netD = ogan_plugin.wrap(netD, z_dim=nz)
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
    aug = lambda x: diff_augment(x, policy)  # noqa: E731
    torch.manual_seed(seed + 2)
    for _ in range(steps):
        real = data[torch.randint(0, len(data), (batch,))]
        ones, zeros = torch.ones(batch), torch.zeros(batch)
        netD.zero_grad()
        criterion(netD(aug(real)).view(-1), ones).backward()
        noise = torch.randn(batch, nz)
        fake = netG(noise)
        if mode == "hook":
            criterion(netD(aug(fake.detach())).view(-1), zeros).backward()
        else:
            out = netD.decompose(aug(fake.detach()))
            (criterion(out.output.view(-1), zeros) + ogan_plugin.correlation_loss(noise, out.raw, weight)).backward()
        optimizerD.step()
        netG.zero_grad()
        if mode == "hook":
            criterion(netD(aug(fake)).view(-1), ones).backward()
        else:
            out = netD.decompose(aug(fake))
            (criterion(out.output.view(-1), ones) + ogan_plugin.correlation_loss(noise, out.raw, weight)).backward()
        optimizerG.step()
    ogan_plugin.detach(netD)
    return netG, netD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--augment", nargs="+", choices=list(POLICIES), default=["none", "translation", "cutout", "color"],
                        help="DiffAugment policies to run, 'all' for the three together (default: none translation cutout color)")
    parser.add_argument("--modes", nargs="+", choices=("hook", "by-hand"), default=["hook", "by-hand"])
    parser.add_argument("--steps", type=int, default=800, help="training steps per run (default 800)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corr-weight", type=float, default=0.5, help="the term's weight in both modes (default 0.5)")
    parser.add_argument("--nz", type=int, default=16)
    parser.add_argument("--width", type=int, default=32, help="channels of the first conv (default 32)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = split(load_digits(16), held_out=0.2, seed=0)
    runs = [(p, m) for p in args.augment for m in args.modes]
    try:
        from tqdm import tqdm
    except ImportError:  # the [demo] extra brings tqdm
        tqdm = None
    bar = None if args.no_progress or tqdm is None else tqdm(total=len(runs), desc="runs")
    rows = []
    for policy, mode in runs:
        t = time.perf_counter()
        netG, netD = train(policy, mode, args.steps, args.seed, args.corr_weight, args.nz, args.width, args.batch_size, parts.train_x)
        seconds = time.perf_counter() - t
        rho = mean_correlation(netG, netD, 1000, seed=123)
        err = reconstruction_error(netG, netD, parts.test_x, mean_image=parts.train_x.mean(0))
        rows.append({"augment": policy, "mode": mode, "steps": args.steps, "rho": round(rho, 3), "mse": round(err.mse, 4),
                     "mean_image_mse": round(err.mean_image_mse, 4), "seconds": round(seconds, 1)})
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{policy}/{mode}: rho {rho:.3f}")
    if bar is not None:
        bar.close()
    print("| augment | mode | steps | rho on fresh z | held-out MSE | mean-image MSE | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['augment']} | {r['mode']} | {r['steps']} | {r['rho']:.3f} | {r['mse']:.4f} | {r['mean_image_mse']:.4f} | {r['seconds']} |")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
