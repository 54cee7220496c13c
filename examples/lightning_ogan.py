"""O-GAN with PyTorch Lightning, two ways (needs ``pip install 'ogan-plugin[lightning,demo]'``).

``--mode module`` (default): the ready :class:`~ogan_plugin.integrations.lightning.OGANModule`
trains a generator / discriminator pair with the single O-GAN loss, one optimizer,
automatic optimization; metrics and sample / reconstruction grids go to a CSV logger
(grids are also written as PNG files here).

``--mode callback``: a GAN LightningModule written the usual Lightning-2 way (manual
optimization, BCE, two Adam optimizers) gets the O-GAN term from
:class:`~ogan_plugin.integrations.lightning.OGANCallback` without touching its code.

    python examples/lightning_ogan.py --steps 600
    python examples/lightning_ogan.py --mode callback --steps 800
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.integrations.lightning import OGANCallback, OGANModule, image_grid_tensor

import lightning.pytorch as pl  # noqa: E402  (after ogan_plugin's clear message on a missing extra)
from lightning.pytorch.loggers import CSVLogger  # noqa: E402


def digits(batch_size: int) -> torch.utils.data.DataLoader:
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # (1797, 1, 8, 8)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch_size, shuffle=True, drop_last=True)


def networks(nz: int, sigmoid: bool = False) -> tuple[nn.Module, nn.Module]:
    """Small DCGAN-style nets for 8x8 images; z of shape (B, nz, 1, 1)."""
    G = nn.Sequential(
        nn.ConvTranspose2d(nz, 64, 4, 1, 0), nn.BatchNorm2d(64), nn.ReLU(True),  # 4x4
        nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh(),  # 8x8
    )
    D = nn.Sequential(
        nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2, True),  # 4x4
        nn.Conv2d(32, 64, 3, 1, 1), nn.LeakyReLU(0.2, True),
        nn.Conv2d(64, 1, 4, 1, 0), *([nn.Sigmoid()] if sigmoid else []),  # the scalar head
    )
    return G, D


class ManualGAN(pl.LightningModule):
    """An ordinary GAN module (no O-GAN code): manual optimization, BCE, two optimizers."""

    def __init__(self, nz: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.nz = nz
        self.generator, self.discriminator = networks(nz, sigmoid=True)
        self.bce = nn.BCELoss()

    def training_step(self, batch, batch_idx):
        (x,) = batch
        opt_d, opt_g = self.optimizers()
        ones, zeros = torch.ones(len(x), device=x.device), torch.zeros(len(x), device=x.device)
        fake = self.generator(torch.randn(len(x), self.nz, 1, 1, device=x.device))
        d_loss = self.bce(self.discriminator(x).view(-1), ones) + self.bce(self.discriminator(fake.detach()).view(-1), zeros)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss = self.bce(self.discriminator(fake).view(-1), ones)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss})

    def configure_optimizers(self):
        return (
            torch.optim.Adam(self.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
            torch.optim.Adam(self.generator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
        )


def save_png(grid: torch.Tensor, path: str) -> None:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return
    img = (grid.clamp(0, 1) * 255).round().byte()
    img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
    Image.fromarray(img.numpy()).resize((img.shape[1] * 4, img.shape[0] * 4), Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("module", "callback"), default="module")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--nz", type=int, default=16)
    parser.add_argument("--out", default="lightning_ogan_out")
    args = parser.parse_args()
    torch.manual_seed(0)
    logger = CSVLogger(args.out, name=args.mode)
    opts = dict(max_steps=args.steps, accelerator="auto", devices=1, logger=logger, log_every_n_steps=20, enable_checkpointing=False)

    if args.mode == "module":
        G, D = networks(args.nz)
        model = OGANModule(G, D, z_dim=args.nz, z_shape=(args.nz, 1, 1), image_every_n_steps=max(1, args.steps // 3))
        pl.Trainer(**opts).fit(model, digits(args.batch_size))
        G, D = model.generator, model.discriminator
        for name, grid in model.last_images.items():
            save_png(grid, os.path.join(logger.log_dir, f"{name}.png"))
    else:
        module = ManualGAN(args.nz)
        # manual optimization counts both optimizers' steps: 2 per batch
        pl.Trainer(**{**opts, "max_steps": 2 * args.steps}, callbacks=[OGANCallback(z_dim=args.nz)]).fit(
            module, digits(args.batch_size)
        )
        G, D = module.generator, module.discriminator
        with torch.no_grad():
            G.eval()
            samples = G(torch.randn(16, args.nz, 1, 1))
        save_png(image_grid_tensor(samples), os.path.join(logger.log_dir, "samples.png"))

    G.eval()
    D.eval()
    with torch.no_grad():
        z = torch.randn(1024, args.nz)
        rho = ogan_plugin.pearson_correlation(z, D.decompose(G(z[:, :, None, None])).raw).mean()
    print(f"rho(z, E(G(z))) on fresh z: {rho.item():.3f}; logs and grids in {logger.log_dir}")


if __name__ == "__main__":
    main()
