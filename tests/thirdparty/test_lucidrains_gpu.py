"""lucidrains' lightweight-gan ``Trainer``, unchanged, with ``ogan_plugin.enable`` (GPU only).

The package's ``Trainer`` moves its networks and batches to CUDA itself, so its own
``train()`` runs on a GPU only; tests/thirdparty/test_lightweight_gan.py checks the same
loop written out on the CPU.  Here the real one trains on a folder of scikit-learn's digits
(32x32, three channels, written as PNG files) with DiffAugment, and the encoder must learn:
rho(z, E(G(z))) on fresh z well above 0 (an untrained head gives about 0).

On a machine without the packages, install the wheels ``bash benchmarks/gpu_wheels.sh``
downloads (lightweight-gan 1.2.1, kornia 0.9.0, kornia-rs 0.2.0, adabelief-pytorch 0.2.1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ogan_plugin
from ogan_plugin.evaluate import mean_correlation

STEPS = 300


def digits_folder(root, n: int = 1024):
    """scikit-learn's digits as 32x32 RGB PNG files (what the Trainer's ImageDataset reads)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = root / "digits"
    folder.mkdir()
    for i, image in enumerate(load_digits().images[:n]):
        a = (image / 16.0 * 255).astype(np.uint8)
        Image.fromarray(a).resize((32, 32), Image.BILINEAR).convert("RGB").save(folder / f"{i:04d}.png")
    return folder


@pytest.mark.gpu
def test_the_real_trainer_trains_an_encoder_on_digits(lightweight_gan, tmp_path):
    torch.manual_seed(0)
    trainer = lightweight_gan.Trainer(
        name="ogan", base_dir=str(tmp_path), image_size=32, latent_dim=32, batch_size=32, fmap_inverse_coef=9,
        aug_prob=0.25, aug_types=["translation", "cutout", "color"], num_workers=2, num_image_tiles=2,
        save_every=10**6, evaluate_every=10**6, use_aim=False,
    )
    trainer.set_data_src(str(digits_folder(tmp_path)))
    hook = ogan_plugin.enable(trainer)  # the one call; the package's train() below is its own
    assert hook.discriminator.head_path == "to_logits.2"
    before = mean_correlation(trainer.GAN.G, hook.discriminator, 512)
    for _ in range(STEPS):
        trainer.train()
    assert math.isfinite(trainer.d_loss) and math.isfinite(trainer.g_loss)
    assert hook.calls == 2 * STEPS  # D's call on the augmented fakes and G's, each step
    rho = mean_correlation(trainer.GAN.G, hook.discriminator, 512)
    print(f"lightweight-gan Trainer, {STEPS} steps: rho on fresh z {before:.3f} -> {rho:.3f}")
    assert abs(before) < 0.2 and rho > 0.25, (before, rho)
