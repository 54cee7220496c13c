"""PyTorch Lightning: the ready OGANModule and the OGANCallback for manual-optimization GANs."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import lightning.pytorch as pl  # the optional extra 'lightning' (installed by CI)
from lightning.pytorch.loggers import Logger

import ogan_plugin
from ogan_plugin.integrations.lightning import OGANCallback, OGANModule, image_grid_tensor
from ogan_plugin.training import single_loss

NZ = 16


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|does not have many workers).*")
        yield


class RecordingLogger(Logger):
    """Keeps every logged metric and image in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int, dict]] = []
        self.images: list[tuple[str, int, torch.Tensor]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_image(self, key: str, images: list, step: int | None = None) -> None:
        self.images += [(key, step, img) for img in images]


def digits_loader(batch_size: int = 64) -> torch.utils.data.DataLoader:
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch_size, shuffle=True)


def mlp_pair(sigmoid: bool = False) -> tuple[nn.Module, nn.Module]:
    G = nn.Sequential(nn.Linear(NZ, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))
    D = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1), *([nn.Sigmoid()] if sigmoid else []))
    return G, D


def trainer(**kwargs) -> "pl.Trainer":
    opts = dict(
        accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, log_every_n_steps=10,
    )
    opts.update(kwargs)
    return pl.Trainer(**opts)


def fresh_rho(G: nn.Module, D: ogan_plugin.OGANDiscriminator) -> float:
    with torch.no_grad():
        z = torch.randn(512, NZ)
        return float(ogan_plugin.pearson_correlation(z, D.decompose(G(z)).raw).mean())


def test_ogan_module_fits_and_rho_rises_with_image_grids() -> None:
    torch.manual_seed(0)
    G, D = mlp_pair()
    model = OGANModule(G, D, z_dim=NZ, image_every_n_steps=100, num_images=8)
    assert isinstance(model.discriminator, ogan_plugin.OGANDiscriminator)
    rho_before = fresh_rho(G, model.discriminator)
    logger = RecordingLogger()
    trainer(max_steps=300, logger=logger).fit(model, digits_loader())
    rhos = [(s, m["ogan/rho"]) for s, m in logger.metrics if "ogan/rho" in m]
    assert rhos[0][0] < 20 and rhos[-1][0] > 280
    assert rhos[-1][1] > 0.5 and rhos[-1][1] > rhos[0][1] + 0.3
    assert abs(rho_before) < 0.3 and fresh_rho(G, model.discriminator) > 0.5
    assert {"ogan/loss", "ogan/loss_d", "ogan/loss_g"} <= set(logger.metrics[-1][1])
    # grids at steps 100, 200, 300: samples (8 in a row) and real/reconstruction row pairs
    assert [(k, s) for k, s, _ in logger.images] == [
        (k, s) for s in (100, 200, 300) for k in ("ogan/samples", "ogan/reconstructions")
    ]
    assert model.last_images["samples"].shape == (1, 12, 82)
    assert model.last_images["reconstructions"].shape == (1, 22, 82)
    assert G.training and model.discriminator.training  # modes restored after the grids


def test_ogan_module_fast_dev_run(monkeypatch) -> None:
    import ogan_plugin.integrations.lightning as lightning_module

    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return single_loss(*args, **kwargs)

    monkeypatch.setattr(lightning_module, "single_loss", spy)
    torch.manual_seed(0)
    G, D = mlp_pair()
    seen = []
    model = OGANModule(G, D, z_dim=NZ, loss="hinge", routing="three_forward", optimizer=lambda p: torch.optim.Adam(p, 1e-3),
                       augment=lambda t: seen.append(t.shape) or t, corr_weight_g=0.25)
    before = [p.detach().clone() for p in model.parameters()]
    trainer(fast_dev_run=True, logger=False).fit(model, digits_loader(16))
    after = list(model.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after))  # both networks stepped once
    assert len(seen) == 2 and seen[0] == seen[1]  # the real and the generated batch, once each
    assert [c["corr_weight_g"] for c in calls] == [0.25]  # G's correlation weight reaches the loss


class ConditionalMLP(nn.Module):
    """G(z, y) or a projection D(x, y) on 8x8 digits (10 classes); records the labels it saw."""

    def __init__(self, generator: bool) -> None:
        super().__init__()
        self.generator = generator
        self.embed = nn.Embedding(10, NZ if generator else 32)
        if generator:
            self.net = nn.Sequential(nn.Linear(NZ, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))
        else:
            self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.LeakyReLU(0.2))
            self.head = nn.Linear(32, 1)
        self.seen: list[torch.Tensor] = []

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.seen.append(y)
        if self.generator:
            return self.net(t + self.embed(y))
        h = self.features(t)
        return self.head(h).squeeze(1) + (self.embed(y) * h).sum(1)


def labelled_digits_loader(batch_size: int = 16) -> torch.utils.data.DataLoader:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    y = torch.tensor(digits.target)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def test_conditional_ogan_module_passes_the_batch_labels(monkeypatch) -> None:
    import ogan_plugin.integrations.lightning as lightning_module

    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs["y"])
        return single_loss(*args, **kwargs)

    monkeypatch.setattr(lightning_module, "single_loss", spy)
    torch.manual_seed(0)
    G, D = ConditionalMLP(generator=True), ConditionalMLP(generator=False)
    model = OGANModule(G, D, z_dim=NZ, loss="hinge", conditional=True, image_every_n_steps=1, num_images=4)
    embed = D.embed.weight.detach().clone()
    trainer(fast_dev_run=True, logger=False).fit(model, labelled_digits_loader())
    first = next(iter(labelled_digits_loader()))[1]
    assert len(calls) == 1 and torch.equal(calls[0], first)
    assert any(torch.equal(s, first) for s in G.seen) and any(torch.equal(s, first) for s in D.seen)
    assert not torch.equal(D.embed.weight, embed)  # the projection was trained
    assert set(model.last_images) == {"samples", "reconstructions"}
    with pytest.raises(TypeError, match="OGANModule\\(conditional=True\\) expects \\(images, labels\\) batches"):
        model.get_labels(torch.zeros(2, 1, 8, 8))


class ManualGAN(pl.LightningModule):
    """A user's GAN module in Lightning 2 style: manual optimization, BCE, two optimizers."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator = mlp_pair(sigmoid=True)
        self.criterion = nn.BCELoss()

    def training_step(self, batch, batch_idx):
        (x,) = batch
        opt_d, opt_g = self.optimizers()
        ones, zeros = torch.ones(len(x), 1), torch.zeros(len(x), 1)
        fake = self.generator(torch.randn(len(x), NZ))
        d_loss = self.criterion(self.discriminator(x), ones) + self.criterion(self.discriminator(fake.detach()), zeros)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss = self.criterion(self.discriminator(fake), ones)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()

    def configure_optimizers(self):
        return (
            torch.optim.Adam(self.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
            torch.optim.Adam(self.generator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
        )


def test_callback_adds_the_term_to_a_manual_optimization_gan() -> None:
    torch.manual_seed(0)
    module = ManualGAN()
    callback = OGANCallback(z_dim=NZ)
    logger = RecordingLogger()
    trainer(max_steps=400, logger=logger, callbacks=[callback]).fit(module, digits_loader())
    D = module.discriminator
    assert isinstance(D, ogan_plugin.OGANDiscriminator)
    assert ogan_plugin.OGANHook.of(D) is None and callback.hook is None  # detached at the end
    rhos = [m["ogan/rho"] for _, m in logger.metrics if "ogan/rho" in m]
    # manual optimization counts 2 optimizer steps per batch: max_steps=400 is 200 batches
    assert len(rhos) >= 15 and rhos[-1] > 0.5
    assert fresh_rho(module.generator, D) > 0.5


def test_callback_passes_the_generator_weight_to_the_hook(monkeypatch) -> None:
    import ogan_plugin.integrations.lightning as lightning

    seen = []
    real_attach = lightning.attach
    monkeypatch.setattr(lightning, "attach", lambda *a, **k: seen.append(k) or real_attach(*a, **k))
    trainer(fast_dev_run=True, logger=False, callbacks=[OGANCallback(NZ, corr_weight=2.0, corr_weight_g=0.5)]).fit(
        ManualGAN(), digits_loader(16)
    )
    assert [k["corr_weight_g"] for k in seen] == [0.5]
    with pytest.raises(ValueError, match="corr_weight_g"):
        OGANCallback(NZ, corr_weight_g=-1.0)


def test_callback_names_a_missing_network() -> None:
    module = ManualGAN()
    with pytest.raises(AttributeError, match=r"no network attribute 'netD'.*\['generator', 'discriminator', 'criterion'\]"):
        trainer(fast_dev_run=True, logger=False, callbacks=[OGANCallback(NZ, discriminator="netD")]).fit(
            module, digits_loader(16)
        )


def test_image_grid_tensor() -> None:
    imgs = torch.stack([torch.full((3, 2, 2), v) for v in (-1.0, 0.0, 1.0)])
    grid = image_grid_tensor(imgs, nrow=2, padding=1)
    assert grid.shape == (3, 1 + 2 * 3, 1 + 2 * 3)
    assert grid[:, 1:3, 1:3].eq(0).all() and grid[:, 1:3, 4:6].eq(0.5).all() and grid[:, 4:6, 1:3].eq(1).all()
    assert grid[:, 4:6, 4:6].eq(1).all() and grid[:, 0].eq(1).all()  # empty cell and padding are white
    with pytest.raises(ValueError, match="images must be a"):
        image_grid_tensor(torch.zeros(3, 4))


def test_missing_lightning_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "ogan_plugin.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install 'ogan-plugin\[lightning\]'"):
        importlib.import_module("ogan_plugin.integrations.lightning")
