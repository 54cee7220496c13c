"""reconstruct() and interpolate()."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import ogan_plugin


@pytest.fixture
def pair():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(6, 12), nn.Unflatten(1, (3, 2, 2)))
    d = ogan_plugin.wrap(nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 1)), z_dim=6)
    return g, d


def test_reconstruct_is_generator_of_scaled_standardized_code(pair):
    g, d = pair
    x = torch.randn(5, 3, 2, 2)
    rec = ogan_plugin.reconstruct(g, d, x, scale=0.9)
    torch.testing.assert_close(rec, g(0.9 * d.encode(x)))
    assert not rec.requires_grad


def test_interpolate_endpoints_are_reconstructions(pair):
    g, d = pair
    a, b = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    out = ogan_plugin.interpolate(g, d, a, b, steps=5)
    assert out.shape == (4, 5, 3, 2, 2)
    torch.testing.assert_close(out[:, 0], ogan_plugin.reconstruct(g, d, a))
    torch.testing.assert_close(out[:, -1], ogan_plugin.reconstruct(g, d, b))
    # the middle column decodes the midpoint of the two codes
    mid = g(0.9 * 0.5 * (d.encode(a) + d.encode(b)))
    torch.testing.assert_close(out[:, 2], mid.detach())


def test_bad_arguments(pair):
    g, d = pair
    x = torch.randn(2, 3, 2, 2)
    with pytest.raises(TypeError, match="wrapped_discriminator must be an OGANDiscriminator"):
        ogan_plugin.reconstruct(g, d.discriminator, x)
    with pytest.raises(ValueError, match="scale"):
        ogan_plugin.reconstruct(g, d, x, scale=0)
    with pytest.raises(ValueError, match="steps"):
        ogan_plugin.interpolate(g, d, x, x, steps=1)
    with pytest.raises(ValueError, match="x_a and x_b"):
        ogan_plugin.interpolate(g, d, x, x[:1])


# --- invert() -----------------------------------------------------------------------------------
def orthogonal_pair(z_dim: int = 8, seed: int = 0):
    """An invertible G: x = Q z with Q orthogonal (float64), and a wrapped MLP D."""
    torch.manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(z_dim, z_dim, dtype=torch.float64))
    g = nn.Linear(z_dim, z_dim, bias=False).double()
    with torch.no_grad():
        g.weight.copy_(q)
    d = ogan_plugin.wrap(nn.Sequential(nn.Linear(z_dim, 16), nn.ReLU(), nn.Linear(16, 1)).double(), z_dim=z_dim)
    return g, d


@pytest.mark.parametrize("init", ["mean", "random", "encoder"])
def test_invert_recovers_a_known_z_of_an_invertible_generator(init):
    g, d = orthogonal_pair()
    z = torch.randn(6, 8, dtype=torch.float64)
    x = g(z).detach()
    r = ogan_plugin.invert(g, d, x, steps=400, lr=0.05, init=init, restarts=3 if init == "random" else 1)
    torch.testing.assert_close(r.z, z, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.reconstruction, x, atol=1e-5, rtol=0)
    assert r.z.dtype == torch.float64 and r.loss.shape == (6,) and r.steps.tolist() == [400] * 6
    assert r.history.shape == (401, 6)
    torch.testing.assert_close(r.loss, (r.reconstruction - x).pow(2).mean(1), rtol=0, atol=0)
    assert torch.equal(r.history[-1], r.loss)
    assert bool((r.history[1:] <= r.history[:-1]).all())  # the best so far never gets worse


def test_invert_with_a_prior_finds_the_shrunk_optimum():
    # mean((Qz - x)^2) + p * mean(z^2) with Q orthogonal is |z - z*|^2 / n + p |z|^2 / n:
    # minimised at z* / (1 + p)
    g, d = orthogonal_pair()
    z = torch.randn(4, 8, dtype=torch.float64)
    r = ogan_plugin.invert(g, d, g(z).detach(), steps=600, lr=0.02, init="mean", prior=0.5)
    torch.testing.assert_close(r.z, z / 1.5, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.loss, (g(r.z) - g(z)).pow(2).mean(1).detach(), rtol=1e-12, atol=0)


def test_invert_encoder_start_is_the_reconstruct_code_and_steps_0_changes_nothing(pair):
    g, d = pair
    x = torch.randn(5, 3, 2, 2)
    r = ogan_plugin.invert(g, d, x, steps=0)
    torch.testing.assert_close(r.start, 0.9 * d.encode(x).detach())
    assert torch.equal(r.z, r.start) and r.history.shape == (1, 5) and r.steps.tolist() == [0] * 5
    torch.testing.assert_close(r.reconstruction, ogan_plugin.reconstruct(g, d, x))
    torch.testing.assert_close(r.loss, (ogan_plugin.reconstruct(g, d, x) - x).pow(2).flatten(1).mean(1))
    given = torch.randn(5, 6)
    assert torch.equal(ogan_plugin.invert(g, d, x, steps=0, init=given).z, given)
    assert torch.equal(ogan_plugin.invert(g, d, x, steps=0, init="mean").z, torch.zeros(5, 6))


def test_invert_l1_and_custom_losses(pair):
    g, d = pair
    x = torch.randn(4, 3, 2, 2)
    r = ogan_plugin.invert(g, d, x, steps=20, loss="l1")
    torch.testing.assert_close(r.loss, (r.reconstruction - x).abs().flatten(1).mean(1), rtol=0, atol=0)
    assert bool((r.loss < r.history[0]).all())
    summed = ogan_plugin.invert(g, d, x, steps=20, loss=lambda rec, t: (rec - t).pow(2).flatten(1).sum(1))
    torch.testing.assert_close(summed.loss, (summed.reconstruction - x).pow(2).flatten(1).sum(1), rtol=0, atol=0)


def test_invert_keeps_the_best_restart_per_image():
    g, d = orthogonal_pair()
    g2 = nn.Sequential(g, nn.Tanh())  # not convex any more: restarts end in different places
    x = torch.tanh(g(torch.randn(5, 8, dtype=torch.float64))).detach()
    r = ogan_plugin.invert(g2, d, x, steps=15, lr=0.1, init="random", restarts=3, seed=7)
    starts = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(7)).double()
    single = [ogan_plugin.invert(g2, d, x, steps=15, lr=0.1, init=starts[k]) for k in range(3)]
    losses = torch.stack([s.loss for s in single])
    best = losses.argmin(0)
    torch.testing.assert_close(r.loss, losses.min(0).values)
    torch.testing.assert_close(r.start, starts[best, torch.arange(5)])
    torch.testing.assert_close(r.z, torch.stack([s.z for s in single])[best, torch.arange(5)])
    torch.testing.assert_close(r.history, torch.stack([s.history for s in single]).amin(0))


def test_invert_batches_give_the_same_codes_as_one_batch():
    g, d = orthogonal_pair()
    x = torch.tanh(g(torch.randn(7, 8, dtype=torch.float64))).detach()
    g2 = nn.Sequential(g, nn.Tanh())
    whole = ogan_plugin.invert(g2, d, x, steps=30)
    parts = ogan_plugin.invert(g2, d, x, steps=30, batch_size=3)
    for a, b in ((whole.z, parts.z), (whole.loss, parts.loss), (whole.history, parts.history)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_invert_stops_each_image_on_tol():
    g, d = orthogonal_pair()
    z = torch.randn(6, 8, dtype=torch.float64)
    x = g(z).detach()
    x[:3] = g(z[:3] * 0).detach()  # three images sit at the mean start: nothing to improve
    r = ogan_plugin.invert(g, d, x, steps=500, init="mean", tol=0.0, patience=5)
    assert r.steps[:3].tolist() == [5, 5, 5]  # no improvement at all in 5 steps
    assert bool((r.steps[3:] > 5).all())
    assert r.history.shape[0] == int(r.steps.max()) + 1 and r.history.shape[0] < 501  # the run ended early
    assert torch.equal(r.history[-1], r.loss)
    loose = ogan_plugin.invert(g, d, x, steps=500, init="mean", tol=0.5, patience=5)
    assert bool((loose.steps[3:] < r.steps[3:]).all())  # a looser tolerance stops sooner


class BatchNormG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 12), nn.Dropout(0.5))

    def forward(self, z):
        return self.net(z).view(-1, 3, 2, 2)


def test_invert_leaves_modes_flags_and_weights_as_they_were():
    from torch.nn.utils.parametrizations import spectral_norm

    torch.manual_seed(0)
    g = BatchNormG()
    g.net[0].bias.requires_grad_(False)  # a mixed set of flags must come back as it was
    d = ogan_plugin.wrap(
        nn.Sequential(nn.Flatten(), spectral_norm(nn.Linear(12, 16)), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1)),
        z_dim=4,
    )
    g.train()
    d.eval()
    d.discriminator[2].train()  # a submodule in another mode than its parent
    modes = {m: m.training for m in list(g.modules()) + list(d.modules())}
    flags = {p: p.requires_grad for p in list(g.parameters()) + list(d.parameters())}
    before = {k: v.clone() for k, v in list(g.state_dict().items()) + [("D." + k, v) for k, v in d.state_dict().items()]}
    x = torch.randn(5, 3, 2, 2)
    for init in ("encoder", "random", "mean"):
        r = ogan_plugin.invert(g, d, x, steps=10, init=init, restarts=2 if init == "random" else 1, tol=0.0)
        assert bool((r.loss <= r.history[0]).all())
    assert {m: m.training for m in modes} == modes
    assert {p: p.requires_grad for p in flags} == flags
    after = {k: v for k, v in list(g.state_dict().items()) + [("D." + k, v) for k, v in d.state_dict().items()]}
    for k, v in before.items():
        assert torch.equal(after[k], v), k  # weights, BatchNorm statistics, spectral-norm vectors
    assert all(p.grad is None for p in list(g.parameters()) + list(d.parameters()))
    # eval mode inside: the dropout is off, so the reconstruction is G(z) in eval mode, reproducibly
    g.eval()
    torch.testing.assert_close(r.reconstruction, g(r.z).detach())


class CondG(nn.Module):
    """x = Q z + E[y]: invertible for a known label."""

    def __init__(self, q: torch.Tensor, classes: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(q.shape[0], q.shape[0], bias=False).double()
        self.embed = nn.Embedding(classes, q.shape[0]).double()
        with torch.no_grad():
            self.lin.weight.copy_(q)

    def forward(self, z, y):
        return self.lin(z) + self.embed(y)


class ProjectionD(nn.Module):
    """D(x, y) = head(h) + <embed(y), h> (a projection discriminator); records its labels."""

    def __init__(self, n: int, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n, 16), nn.ReLU())
        self.head = nn.Linear(16, 1)
        self.embed = nn.Embedding(classes, 16)
        self.seen = []

    def forward(self, x, y):
        self.seen.append(y)
        h = self.body(x)
        return self.head(h) + (self.embed(y) * h).sum(1, keepdim=True)


def test_invert_a_conditional_pair_with_labels():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    g = CondG(q)
    d = ogan_plugin.wrap(ProjectionD(8).double(), z_dim=8)
    z, y = torch.randn(6, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    x = g(z, y).detach()
    r = ogan_plugin.invert(g, d, x, y=y, steps=400)
    assert torch.equal(d.discriminator.seen[0], y)  # the encoder saw the labels
    torch.testing.assert_close(r.start, 0.9 * d.encode(x, y).detach())
    torch.testing.assert_close(r.z, z, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.reconstruction, x, atol=1e-5, rtol=0)
    rr = ogan_plugin.invert(g, d, x, y=y, steps=20, init="random", restarts=2, batch_size=4)
    torch.testing.assert_close(rr.reconstruction, g(rr.z, y).detach())  # each image decoded with its own label
    # step 0 is reconstruct(..., y=y); one-hot labels work as well as indices
    start = ogan_plugin.invert(g, d, x, y=y, steps=0)
    torch.testing.assert_close(start.reconstruction, ogan_plugin.reconstruct(g, d, x, y=y))
    # steps_to_quality with conditional=True hands the data's labels to invert
    from ogan_plugin.evaluate import steps_to_quality

    r5 = steps_to_quality(g, d, (x, y), steps=5, restarts=2, conditional=True)
    want = ogan_plugin.invert(g, d, x, y=y, steps=5, init="random", restarts=2).history.double().mean(1).tolist()
    assert r5.curves["random"] == want


def test_invert_takes_one_hot_labels():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))

    class OneHotG(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8, bias=False).double()
            self.embed = nn.Linear(3, 8, bias=False).double()
            with torch.no_grad():
                self.lin.weight.copy_(q)

        def forward(self, z, y):
            return self.lin(z) + self.embed(y)

    class OneHotD(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
            self.head = nn.Linear(16, 1)
            self.embed = nn.Linear(3, 16, bias=False)

        def forward(self, x, y):
            h = self.body(x)
            return self.head(h) + (self.embed(y) * h).sum(1, keepdim=True)

    g, d = OneHotG(), ogan_plugin.wrap(OneHotD().double(), z_dim=8)
    z, y = torch.randn(4, 8, dtype=torch.float64), torch.eye(3, dtype=torch.float64)[[0, 2, 1, 2]]
    r = ogan_plugin.invert(g, d, g(z, y).detach(), y=y, steps=300, init="random", restarts=2)
    torch.testing.assert_close(r.z, z, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"steps": -1}, ValueError, "steps must be an int >= 0"),
        ({"steps": 2.5}, ValueError, "steps must be an int"),
        ({"lr": 0}, ValueError, "lr must be > 0"),
        ({"lr": float("nan")}, ValueError, "lr must be a finite number"),
        ({"loss": "huber"}, ValueError, "loss must be one of"),
        ({"loss": lambda r, x: (r - x).pow(2).mean()}, ValueError, "one value per image"),
        ({"init": "zeros"}, ValueError, "init must be one of"),
        ({"init": torch.zeros(3, 6)}, ValueError, r"init must have shape \(5, 6\)"),
        ({"init": torch.full((5, 6), float("inf"))}, ValueError, "init contains NaN or inf"),
        ({"restarts": 3}, ValueError, "restarts=3 needs init='random'"),
        ({"restarts": 0, "init": "random"}, ValueError, "restarts must be an int >= 1"),
        ({"tol": -1}, ValueError, "tol must be >= 0"),
        ({"prior": -0.1}, ValueError, "prior must be >= 0"),
        ({"patience": 0}, ValueError, "patience must be an int >= 1"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
        ({"y": torch.zeros(4, dtype=torch.long)}, ValueError, "y must have one label per sample: the batch has 5"),
        ({"y": torch.zeros(5, dtype=torch.long)}, ValueError, "y= was given but the discriminator's forward"),
        ({"optimizer": "lbfgs"}, ValueError, "optimizer must be one of"),
        ({"callback": 3}, TypeError, "callback must be callable"),
    ],
)
def test_invert_bad_arguments(pair, kwargs, error, message):
    g, d = pair
    with pytest.raises(error, match=message):
        ogan_plugin.invert(g, d, torch.randn(5, 3, 2, 2), **kwargs)


def test_invert_bad_images_and_modules(pair):
    g, d = pair
    x = torch.randn(5, 3, 2, 2)
    with pytest.raises(TypeError, match="wrapped_discriminator must be an OGANDiscriminator"):
        ogan_plugin.invert(g, d.discriminator, x)
    bad = x.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        ogan_plugin.invert(g, d, bad)
    with pytest.raises(ValueError, match="non-empty floating-point"):
        ogan_plugin.invert(g, d, x[:0])
    with pytest.raises(ValueError, match=r"the generator's images \(3, 2, 2\) differ from x's \(3, 4, 1\)"):
        ogan_plugin.invert(g, d, torch.randn(5, 3, 4, 1))


def tiny_trained_pair():
    """A 4-d O-GAN trained for 400 single-loss steps on 8-pixel vectors from a 2-d curve."""
    torch.manual_seed(0)
    mix = torch.randn(2, 8)

    def data(n):
        return torch.tanh(1.5 * (torch.rand(n, 2) * 2 - 1) @ mix)

    g = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 8), nn.Tanh())
    d = ogan_plugin.wrap(nn.Sequential(nn.Linear(8, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1)), z_dim=4)
    opt = torch.optim.RMSprop(list(g.parameters()) + list(d.parameters()), lr=1e-3)
    trainer = ogan_plugin.SingleLossStep(g, d, loss="qp", corr_weight=2.0, optimizer=opt,
                                         noise_generator=torch.Generator().manual_seed(1))
    for _ in range(400):
        trainer.step(data(64))
    return g, d, data(20)  # held-out images: never trained on


def test_invert_lowers_the_loss_of_the_encoder_start_on_a_trained_pair():
    g, d, x = tiny_trained_pair()
    encoder_only = (ogan_plugin.reconstruct(g, d, x) - x).pow(2).mean(1)
    assert float(encoder_only.mean()) < 0.5 * float((x - x.mean(0)).pow(2).mean())  # the encoder knows the images
    r = ogan_plugin.invert(g, d, x, steps=50, lr=0.05)
    torch.testing.assert_close(r.history[0], encoder_only)
    assert bool((r.loss < encoder_only).all())  # every image improves
    assert float(r.loss.mean()) < 0.5 * float(encoder_only.mean())
    # the same budget from the mean code ends worse: the encoder's start is a head start
    assert float(ogan_plugin.invert(g, d, x, steps=50, lr=0.05, init="mean").loss.mean()) > float(r.loss.mean())


def test_invert_with_an_optimizer_callable_takes_its_steps():
    # mean((Qz - x)^2) over n = 8 pixels has gradient (2 / 8) (z - z*): one plain gradient
    # step of lr 4 lands exactly on z*
    g, d = orthogonal_pair()
    z = torch.randn(3, 8, dtype=torch.float64)
    r = ogan_plugin.invert(g, d, g(z).detach(), steps=1, lr=4.0, init="mean",
                           optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr))
    torch.testing.assert_close(r.z, z, rtol=0, atol=1e-12)
