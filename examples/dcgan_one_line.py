"""The PyTorch DCGAN example's training loop, unchanged, plus ONE line: an O-GAN encoder.

The loop below is the official example's (BCE loss, two Adam optimizers, ``netD(real)``,
``netD(fake.detach())``, ``netD(fake)``), shrunk to sklearn's 8x8 digits so it runs on a
CPU in seconds.  The only O-GAN line is marked; remove it and the discriminator learns no
encoder.  At the end the script prints rho(z, E(G(z))) on fresh noise and the pixel error
of reconstructions G(0.9 * E(x)) of real digits.

    python examples/dcgan_one_line.py --steps 400           # needs scikit-learn
    python examples/dcgan_one_line.py --steps 400 --no-ogan # the same loop without the line
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.optim as optim

import ogan_plugin


def weights_init(m: nn.Module) -> None:
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--nz", type=int, default=16)
    parser.add_argument("--no-ogan", action="store_true", help="leave out the one O-GAN line")
    parser.add_argument("--seed", type=int, default=0)
    opt = parser.parse_args()
    torch.manual_seed(opt.seed)
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("this example needs scikit-learn: pip install 'ogan-plugin[demo]'") from exc
    data = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # [-1, 1]
    held_out, data = data[:256], data[256:]
    nz, ngf, ndf = opt.nz, 16, 16

    netG = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, 1, 4, 2, 1, bias=False), nn.Tanh(),
    )
    netD = nn.Sequential(
        nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 3, 1, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
    )
    netG.apply(weights_init)
    netD.apply(weights_init)

    # ---- the one O-GAN line -------------------------------------------------------------
    netD = ogan_plugin.wrap(netD, z_dim=nz, generator=None if opt.no_ogan else netG)
    # ----------------------------------------------------------------------------------------
    hook = ogan_plugin.OGANHook.of(netD)  # optional: only to log rho

    criterion = nn.BCELoss()
    real_label, fake_label = 1.0, 0.0
    optimizerD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))

    for i in range(opt.steps):
        real_cpu = data[torch.randint(0, len(data), (opt.batch_size,))]
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        b_size = real_cpu.size(0)
        label = torch.full((b_size,), real_label, dtype=torch.float)
        output = netD(real_cpu).view(-1)
        errD_real = criterion(output, label)
        errD_real.backward()
        noise = torch.randn(b_size, nz, 1, 1)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label)
        errD_fake.backward()
        optimizerD.step()
        # (2) Update G network: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake).view(-1)
        errG = criterion(output, label)
        errG.backward()
        optimizerG.step()
        if i % 50 == 0 or i == opt.steps - 1:
            rho = "" if hook is None else f"  rho {float(hook.last_rho):.3f}"
            print(f"[{i}/{opt.steps}] Loss_D {(errD_real + errD_fake).item():.4f}  Loss_G {errG.item():.4f}{rho}")

    netG.eval()
    netD.eval()
    with torch.no_grad():
        z = torch.randn(1024, nz)
        rho = ogan_plugin.pearson_correlation(z, netD.decompose(netG(z[:, :, None, None])).raw).mean()
        x_rec = netG((0.9 * netD.encode(held_out))[:, :, None, None])
        mse = (x_rec - held_out).pow(2).mean()
        baseline = (held_out - data.mean(0)).pow(2).mean()
    print(f"rho(z, E(G(z))) on fresh z: {rho.item():.3f}")
    print(f"held-out reconstruction MSE: {mse.item():.4f} (predicting the mean image: {baseline.item():.4f})")


if __name__ == "__main__":
    main()
