"""ogan_plugin.evaluate on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin import evaluate as ev

Z = 16


class ToImage(nn.Module):
    """A 'generator' that writes z into a 1x4x4 image (so the image *is* the noise)."""

    def forward(self, z):
        return z.view(z.shape[0], 1, 4, 4)


class MeanImage(nn.Module):
    """A generator that ignores z and returns one fixed image."""

    def __init__(self, image):
        super().__init__()
        self.register_buffer("image", image)

    def forward(self, z):
        return self.image.expand(z.shape[0], *self.image.shape)


def identity_encoder() -> ogan_plugin.OGANDiscriminator:
    """A wrapped D whose raw output is the flattened input (E(G(z)) = z with ToImage)."""
    D = ogan_plugin.wrap(nn.Sequential(nn.Flatten(), nn.Linear(Z, 1)), Z)
    with torch.no_grad():
        D.head.layer.weight.copy_(torch.eye(Z))
        D.head.layer.bias.zero_()
    return D


class SignClassifier:
    """A stand-in classifier: label 1 where the pixel sum is positive."""

    def predict(self, x):
        return (x.flatten(1).sum(1) > 0).long()


def test_true_z_encoder_gives_rho_one():
    rho = ev.mean_correlation(ToImage(), identity_encoder(), 300, batch_size=64)
    assert rho == pytest.approx(1.0, abs=1e-6)


def test_unrelated_encoder_gives_rho_near_zero():
    torch.manual_seed(0)
    D = ogan_plugin.wrap(nn.Sequential(nn.Flatten(), nn.Linear(Z, 1)), Z)
    # an encoder of a different image: scrambles the pixels through a random map
    G = nn.Sequential(nn.Linear(Z, Z), nn.Tanh(), nn.Linear(Z, Z), nn.Unflatten(1, (1, 4, 4)))
    rho_random = ev.mean_correlation(G, D, 2000)
    assert abs(rho_random) < 0.2


def test_mean_correlation_is_seeded_and_restores_train_mode():
    G = nn.Sequential(nn.Linear(Z, Z), nn.BatchNorm1d(Z), nn.Unflatten(1, (1, 4, 4)))
    D = ogan_plugin.wrap(nn.Sequential(nn.Flatten(), nn.Linear(Z, 8), nn.BatchNorm1d(8), nn.Linear(8, 1)), Z)
    G.train(), D.train()
    before = G[1].running_mean.clone()
    a = ev.mean_correlation(G, D, 100, seed=3)
    b = ev.mean_correlation(G, D, 100, seed=3)
    assert a == b
    assert G.training and G[1].training and D.training and D.discriminator[2].training
    assert torch.equal(G[1].running_mean, before), "eval mode must not update BatchNorm statistics"


def test_generator_of_the_mean_image_gives_the_mean_image_mse():
    torch.manual_seed(0)
    x = torch.rand(50, 1, 4, 4) * 2 - 1
    mean = x.mean(0)
    res = ev.reconstruction_error(MeanImage(mean), identity_encoder(), x)
    expected = float((x.double() - mean.double()).pow(2).mean())
    assert res.mse == pytest.approx(expected, rel=1e-6)
    assert res.mean_image_mse == pytest.approx(expected, rel=1e-6)
    # a given mean image (e.g. the training set's) is used as given
    other = torch.zeros(1, 4, 4)
    res0 = ev.reconstruction_error(MeanImage(mean), identity_encoder(), x, mean_image=other)
    assert res0.mean_image_mse == pytest.approx(float(x.double().pow(2).mean()), rel=1e-6)


def test_reconstruction_runs_the_generator_on_scaled_standardized_codes():
    torch.manual_seed(0)
    x = torch.randn(10, 1, 4, 4)
    rec = ev.reconstruct_batched(ToImage(), identity_encoder(), x, scale=0.5, batch_size=3)
    flat = x.flatten(1).double()
    code = flat - flat.mean(1, keepdim=True)
    code = code / code.std(1, unbiased=False, keepdim=True)
    torch.testing.assert_close(rec.flatten(1).double(), 0.5 * code, rtol=1e-5, atol=1e-5)


def test_class_agreement_known_fraction():
    x = torch.cat([torch.full((30, 1, 4, 4), 0.5), torch.full((20, 1, 4, 4), -0.5)])
    # every reconstruction is the positive image: exactly the first 30 keep their label
    G = MeanImage(torch.full((1, 4, 4), 0.25))
    assert ev.class_agreement(SignClassifier(), G, identity_encoder(), x) == pytest.approx(30 / 50)


def test_frechet_identical_sets_is_zero():
    torch.manual_seed(0)
    f = torch.randn(500, 6)
    assert ev.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)


def test_frechet_known_answers():
    torch.manual_seed(0)
    f = torch.randn(400, 5, dtype=torch.float64) @ torch.randn(5, 5, dtype=torch.float64) + 1.0
    mu = f.mean(0).numpy()
    cov = np.cov(f.numpy(), rowvar=False)
    # a pure shift: |shift|^2
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    assert ev.frechet_distance(f, f + shift) == pytest.approx(float(shift.pow(2).sum()), rel=1e-7)
    # doubling: |mu|^2 + tr(S) (covariance 4S, tr(S + 4S - 2*2S) = tr(S))
    assert ev.frechet_distance(f, 2 * f) == pytest.approx(float(mu @ mu + np.trace(cov)), rel=1e-7)
    # symmetric
    g = torch.randn(300, 5, dtype=torch.float64)
    assert ev.frechet_distance(f, g) == pytest.approx(ev.frechet_distance(g, f), rel=1e-7)
    with pytest.raises(ValueError, match="feature sizes"):
        ev.frechet_distance(f, g[:, :3])


def _two_blobs(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 4, 4, generator=g) * 0.3 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
    return x.clamp(-1, 1), y


def test_linear_probe_separable_and_random():
    x, y = _two_blobs()
    assert ev.linear_probe(x[:150], y[:150], x[150:], y[150:]) == 1.0
    noise = torch.randn(200, 8, generator=torch.Generator().manual_seed(1))
    acc = ev.linear_probe(noise[:150], y[:150], noise[150:], y[150:])
    assert 0.2 < acc < 0.8


def test_pixel_classifier_and_sample_quality():
    x, y = _two_blobs()
    clf = ev.PixelClassifier().fit(x, y)
    assert clf.accuracy(x, y) == 1.0
    # a generator that only draws class 1: one class present, all counts there
    G = MeanImage(torch.full((1, 4, 4), 0.9))
    sq = ev.sample_quality(G, clf, x, z_dim=Z, n_samples=100)
    assert sq.classes_present == 1 and sq.class_counts == [0, 100]
    assert 0.5 < sq.confidence <= 1.0
    assert sq.frechet > 0
    with pytest.raises(RuntimeError, match="fit"):
        ev.PixelClassifier().predict(x)


def test_collect_from_loader_and_errors():
    x, y = _two_blobs(20)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=6)
    cx, cy = ev.collect(loader)
    assert torch.equal(cx, x) and torch.equal(cy, y)
    cx, cy = ev.collect(loader, limit=7)
    assert cx.shape[0] == 7 and torch.equal(cy, y[:7])
    assert ev.collect(x)[1] is None
    with pytest.raises(ValueError, match="empty"):
        ev.collect([])
    with pytest.raises(TypeError, match="batch"):
        ev.collect([1, 2])
    with pytest.raises(TypeError, match="OGANDiscriminator"):
        ev.mean_correlation(ToImage(), nn.Linear(Z, 1))


def test_evaluate_reports_every_field():
    x, y = _two_blobs(120)
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(Z, Z), nn.Tanh(), nn.Unflatten(1, (1, 4, 4)))
    D = ogan_plugin.wrap(nn.Sequential(nn.Flatten(), nn.Linear(Z, 8), nn.LeakyReLU(), nn.Linear(8, 1)), Z)
    report = ev.evaluate(G, D, (x[:90], y[:90]), (x[90:], y[90:]), n_samples=64)
    d = report.as_dict()
    for key, value in d.items():
        if key == "sample_class_counts":
            assert sum(value) == 64
        else:
            assert value is not None and math.isfinite(value), key
    assert d["n_classes"] == 2
    # without labels only the label-free metrics
    bare = ev.evaluate(G, D, x[:90], x[90:], n_samples=64)
    assert bare.class_agreement is None and math.isfinite(bare.mean_rho)


# --- steps to quality ---------------------------------------------------------------------------
def test_quality_match_reads_the_curves():
    curves = {"encoder": [5.0, 3.0, 2.0, 1.0, 1.0], "mean": [9.0, 6.0, 4.0, 3.0, 2.0], "random": [8.0, 7.0, 5.0, 2.5, 1.5]}
    times = {"encoder": [0.5, 1.0, 2.0, 3.0, 4.0], "mean": [0.1, 1.0, 2.0, 3.0, 4.0], "random": [0.2, 4.0, 8.0, 12.0, 16.0]}
    r = ev.StepsToQuality(4, curves, times)
    # after 4 steps the best baseline is random (1.5); the encoder start is <= 1.5 from step 3
    assert r.match == ev.QualityMatch(4, 1.5, "random", 3, 4 / 3, 16.0, 3.0, 16.0 / 3.0)
    # cut at 2 steps the best baseline is mean (4.0); the encoder start is below it after 1 step
    assert r.at(2) == ev.QualityMatch(2, 4.0, "mean", 1, 2.0, 2.0, 1.0, 2.0)
    never = ev.StepsToQuality(4, {**curves, "random": [8.0, 7.0, 5.0, 2.5, 0.5]}, times)
    assert never.match.encoder_steps is None and never.match.ratio is None and never.match.time_ratio is None
    head_start = ev.StepsToQuality(4, {**curves, "encoder": [1.0] * 5}, times).at(1)
    assert head_start.encoder_steps == 0 and head_start.ratio == math.inf
    with pytest.raises(ValueError, match="steps must be <= the budget 4"):
        r.at(5)


def test_quality_match_times_by_the_clock_given():
    curves = {"encoder": [5.0, 3.0, 2.0, 1.0, 1.0], "mean": [9.0, 6.0, 4.0, 3.0, 2.0], "random": [8.0, 7.0, 5.0, 2.5, 1.5]}
    times = {k: [1.0] * 5 for k in curves}  # the run's own clock: not read when a clock is given
    costs = {"encoder": (0.5, 1.0), "mean": (0.25, 0.5), "random": (1.0, 4.0)}  # (to start, per step)

    def clock(start, steps):
        return costs[start][0] + steps * costs[start][1]

    r = ev.StepsToQuality(4, curves, times)
    # the same steps as with the run's clock, times from the costs: random 1 + 4 * 4 = 17 s,
    # the encoder to its step 3: 0.5 + 3 * 1 = 3.5 s
    assert r.at(4, clock) == ev.QualityMatch(4, 1.5, "random", 3, 4 / 3, 17.0, 3.5, 17.0 / 3.5)
    assert r.at(2, clock) == ev.QualityMatch(2, 4.0, "mean", 1, 2.0, 1.25, 1.5, 1.25 / 1.5)
    never = ev.StepsToQuality(4, {**curves, "random": [8.0, 7.0, 5.0, 2.5, 0.5]}, times)
    assert never.at(4, clock).time_ratio is None and never.at(4, clock).seconds == 17.0


def test_steps_to_quality_runs_every_start_like_invert():
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(Z, Z), nn.Tanh(), nn.Unflatten(1, (1, 4, 4)))
    D = ogan_plugin.wrap(nn.Sequential(nn.Flatten(), nn.Linear(Z, 8), nn.LeakyReLU(), nn.Linear(8, 1)), Z)
    x = torch.tanh(torch.randn(9, 1, 4, 4))
    seen = []
    r = ev.steps_to_quality(G, D, x, steps=6, restarts=2, lr=0.05, seed=3,
                            callback=lambda start, step, z: seen.append((start, step, tuple(z.shape))))
    assert set(r.curves) == set(r.times) == {"encoder", "random", "mean"}
    for start in r.curves:
        want = ogan_plugin.invert(G, D, x, steps=6, lr=0.05, init=start, restarts=2 if start == "random" else 1, seed=3)
        assert r.curves[start] == want.history.double().mean(1).tolist()
        assert len(r.times[start]) == 7 and r.times[start] == sorted(r.times[start]) and r.times[start][0] > 0
    assert seen == [(s, t, (9, Z)) for s in ("encoder", "random", "mean") for t in range(7)]
    assert r.match == r.at(6)
    batched = ev.steps_to_quality(G, D, x, steps=6, restarts=2, lr=0.05, seed=3, batch_size=4)
    for start in r.curves:
        assert batched.curves[start] == pytest.approx(r.curves[start], rel=1e-6)
        assert len(batched.times[start]) == 7 and batched.times[start] == sorted(batched.times[start])
    with pytest.raises(ValueError, match="baselines must be distinct names"):
        ev.steps_to_quality(G, D, x, steps=2, baselines=("random", "encoder"))
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        ev.steps_to_quality(G, D, x, steps=0)


# --- one resolver: every function that takes the wrapped D names the argument --------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda G, D, x: ogan_plugin.reconstruct(G, D, x),
        lambda G, D, x: ogan_plugin.interpolate(G, D, x, x),
        lambda G, D, x: ogan_plugin.invert(G, D, x, steps=1),
        lambda G, D, x: ev.mean_correlation(G, D, 8),
        lambda G, D, x: ev.reconstruct_batched(G, D, x),
        lambda G, D, x: ev.reconstruction_error(G, D, x),
        lambda G, D, x: ev.encode_batched(D, x),
        lambda G, D, x: ev.evaluate(G, D, x, x, n_samples=8),
        lambda G, D, x: ev.steps_to_quality(G, D, x, steps=1),
        lambda G, D, x: ogan_plugin.single_loss(G, D, x, torch.randn(len(x), Z)),
        lambda G, D, x: ogan_plugin.SingleLossStep(G, D),
    ],
)
def test_every_function_taking_the_wrapped_d_names_the_argument(call):
    G, x = ToImage(), torch.randn(6, 1, 4, 4)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(Z, 1))
    for bad, hint in ((plain, "wrap"), (nn.DataParallel(identity_encoder()), "DataParallel")):
        with pytest.raises(TypeError, match=rf"^wrapped_discriminator must be an OGANDiscriminator .*{hint}"):
            call(G, bad, x)
