"""torchgan (pip install --no-deps torchgan): its DCGAN discriminator wrapped, trained with the
single-loss step, and inside torchgan's own Trainer (wrap in the model factory, then attach).

Runs against the real torchgan; torchvision may be a stand-in (see conftest.py)."""

from __future__ import annotations

import torch

import ogan_plugin

Z = 16


def _pair(torchgan, channels: int = 3):
    from torchgan.models import DCGANDiscriminator, DCGANGenerator

    G = DCGANGenerator(encoding_dims=Z, out_size=32, out_channels=channels, step_channels=8)
    D = DCGANDiscriminator(in_size=32, in_channels=channels, step_channels=8)
    return G, D


def test_dcgan_discriminator_wraps_keeps_scores_and_trains(torchgan):
    torch.manual_seed(0)
    G, D = _pair(torchgan)
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    D.eval()
    before = D(x).detach()
    wrapped = ogan_plugin.wrap(D, z_dim=Z)
    assert wrapped.head_path == "disc.0"  # its 1-output Conv2d on the 4x4 map
    torch.testing.assert_close(wrapped(x), before, rtol=1e-5, atol=1e-5)
    assert wrapped.decompose(x).code.shape == (6, Z)
    assert wrapped.label_type == "none"  # torchgan's losses read this attribute on D
    wrapped.train()
    step = ogan_plugin.SingleLossStep(G, wrapped, loss="hinge", corr_weight=1.0)
    for _ in range(3):
        r = step.step(x)
    assert r.step == 3 and torch.isfinite(r.loss)


def test_torchgan_trainer_with_the_factory_and_attach_pattern(torchgan, tmp_path):
    from torchgan.losses import MinimaxDiscriminatorLoss, MinimaxGeneratorLoss
    from torchgan.models import DCGANDiscriminator, DCGANGenerator
    from torchgan.trainer import Trainer

    torch.manual_seed(1)

    def make_discriminator(**kwargs):  # torchgan builds the optimizer from what this returns
        return ogan_plugin.wrap(DCGANDiscriminator(**kwargs), z_dim=Z)

    adam = {"name": torch.optim.Adam, "args": {"lr": 2e-4, "betas": (0.5, 0.999)}}
    models = {
        "generator": {"name": DCGANGenerator, "optimizer": adam,
                      "args": {"encoding_dims": Z, "out_size": 32, "out_channels": 1, "step_channels": 8}},
        "discriminator": {"name": make_discriminator, "optimizer": adam,
                          "args": {"in_size": 32, "in_channels": 1, "step_channels": 8}},
    }
    trainer = Trainer(models, [MinimaxGeneratorLoss(), MinimaxDiscriminatorLoss()], device=torch.device("cpu"),
                      checkpoints=str(tmp_path / "gan"), recon=str(tmp_path))
    D, G = trainer.discriminator, trainer.generator
    held = {id(p) for g in trainer.optimizer_discriminator.param_groups for p in g["params"]}
    assert all(id(p) in held for p in D.parameters())  # the widened head included
    hook = ogan_plugin.attach(D, G, corr_weight=1.0)
    head_before = D.head.layer.weight.detach().clone()
    trainer.batch_size = 8
    for _ in range(3):  # torchgan's own iteration: its losses, backward calls and optimizers
        trainer.real_inputs = torch.rand(8, 1, 32, 32) * 2 - 1
        trainer.train_iter()
    assert hook.calls == 6 and hook.last_rho is not None  # D's and G's update in every iteration
    assert not torch.equal(D.head.layer.weight, head_before)


def test_the_example_runs_and_prints_rho(torchgan):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "torchgan_single_loss.py"
    done = subprocess.run(
        [sys.executable, str(script), "--steps", "3", "--threads", "1", "--torchvision-stand-in"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "step     3" in done.stdout and "mean rho on 1000 fresh z:" in done.stdout
    assert "held-out reconstruction MSE:" in done.stdout
