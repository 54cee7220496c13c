"""Class-conditional GANs: labels reach G(z, y) and D(x, y); the adversarial terms use D's
whole output (a projection discriminator's class term included), the correlation the head."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ogan_plugin
from ogan_plugin import losses as L
from ogan_plugin.evaluate import encode_batched, evaluate, generate, mean_correlation, reconstruction_error
from ogan_plugin.step import SingleLossStep
from ogan_plugin.training import ROUTINGS, single_loss

NZ, K = 6, 3
FUNCTIONAL = {
    "qp": (L.qp_d_loss, L.qp_g_loss),
    "hinge": (L.hinge_d_loss, L.hinge_g_loss),
    "bce": (L.bce_d_loss, L.bce_g_loss),
    "wgan": (L.wgan_d_loss, L.wgan_g_loss),
}


class ProjectionD(nn.Module):
    """SNGAN-projection style: D(x, y) = head(h) + <embed(y), h>, on 1x8x8 images."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.head = nn.Linear(16, 1)
        self.embed = nn.Embedding(K, 16)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.head(h).squeeze(1) + (self.embed(y) * h).sum(1)


class ConditionalG(nn.Module):
    """G(z, y): the noise modulated by a class embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(K, NZ)
        self.net = nn.Sequential(nn.Linear(NZ, 32), nn.Tanh(), nn.Linear(32, 64), nn.Unflatten(1, (1, 8, 8)))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(z * (1 + self.embed(y)))


def make_pair(seed: int = 0, score: str = "auto", device: str = "cpu"):
    torch.manual_seed(seed)
    G, D = ConditionalG().double(), ProjectionD().double()
    with torch.no_grad():
        D.embed.weight.mul_(2.0)  # a class term of the head's size, not a rounding error
    return G.to(device), ogan_plugin.wrap(D, NZ, score=score).to(device)


def batch(n: int = 7, seed: int = 1, device: str = "cpu"):
    """(x, z, y, y_fake) on ``device``, drawn on the CPU (the same values on every device)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    z = torch.randn(n, NZ, generator=g, dtype=torch.float64)
    y, y_fake = torch.randint(0, K, (n,), generator=g), torch.randint(0, K, (n,), generator=g)
    return x.to(device), z.to(device), y.to(device), y_fake.to(device)


def alternating_reference(G, D, x, z, y, y_fake, loss: str, corr_weight: float = 0.5):
    """The two-loss update by hand, the adversarial terms on D's whole output (float64)."""
    d_loss, g_loss = FUNCTIONAL[loss]
    fake = G(z, y_fake)
    real, sg = D.decompose(x, y), D.decompose(fake.detach(), y_fake)
    loss_d = d_loss(real.output, sg.output, L.pixel_distance(x, fake.detach())) + ogan_plugin.correlation_loss(
        z, sg.raw, corr_weight
    )
    grads_d = torch.autograd.grad(loss_d, list(D.parameters()))
    D.requires_grad_(False)
    try:
        gen = D.decompose(fake, y_fake)
        loss_g = g_loss(gen.output) + ogan_plugin.correlation_loss(z, gen.raw, corr_weight)
        grads_g = torch.autograd.grad(loss_g, list(G.parameters()))
    finally:
        D.requires_grad_(True)
    return grads_d, grads_g, loss_d.detach(), loss_g.detach()


def assert_grads_equal(expected, params, rel: float = 1e-9) -> None:
    params = list(params)
    assert len(expected) == len(params)
    scale = max(e.abs().max().item() for e in expected)
    for i, (e, p) in enumerate(zip(expected, params)):
        assert p.grad is not None, f"parameter {i} got no gradient"
        torch.testing.assert_close(p.grad, e, rtol=rel, atol=rel * scale, msg=lambda m: f"parameter {i}: {m}")


# --- training: the gradients of the alternating update on D's whole output -----------------
@pytest.mark.parametrize("concat", [False, True], ids=["separate", "concat"])
@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("loss", sorted(FUNCTIONAL))
def test_gradients_equal_the_alternating_update_on_the_whole_output(loss, routing, concat, device):
    G, D = make_pair(device=device)
    x, z, y, y_fake = batch(device=device)
    grads_d, grads_g, loss_d, loss_g = alternating_reference(G, D, x, z, y, y_fake, loss)
    out = single_loss(G, D, x, z, loss, routing=routing, concat_batches=concat, y=y, y_fake=y_fake, return_terms=True)
    out.loss.backward()
    assert_grads_equal(grads_d, D.parameters())
    assert_grads_equal(grads_g, G.parameters())
    torch.testing.assert_close(out.loss_d.double(), loss_d, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.loss_g.double(), loss_g, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.rho, ogan_plugin.pearson_correlation(z, D.decompose(G(z, y_fake), y_fake).raw))
    assert D.discriminator.embed.weight.grad.abs().max() > 1e-3  # the class term is trained


@pytest.mark.parametrize("routing", ROUTINGS)
def test_the_head_mean_alone_would_drop_the_class_term(routing, device):
    # score="head" is the pre-conditional behaviour: the embedding gets no gradient at all
    # and every other gradient is off; the default trains the whole output.
    G, D = make_pair(score="head", device=device)
    x, z, y, _ = batch(device=device)
    grads_d, _, _, _ = alternating_reference(G, D, x, z, y, y, "hinge")
    single_loss(G, D, x, z, "hinge", routing=routing, y=y).backward()
    assert D.discriminator.embed.weight.grad is None or not D.discriminator.embed.weight.grad.any()
    assert any(not torch.allclose(p.grad, g, rtol=1e-3) for p, g in zip(D.parameters(), grads_d) if p.grad is not None)


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("loss", ["qp", "hinge"])
def test_fused_triton_objective_routes_conditional_scores_like_the_reference(loss, routing, triton_device):
    G, D = make_pair(device=triton_device)
    G.float(), D.float()
    x, z, y, y_fake = batch(device=triton_device)
    x, z = x.float(), z.float()
    results = []
    for backend in ("reference", "triton"):
        G.zero_grad(), D.zero_grad()
        out = single_loss(G, D, x, z, loss, routing=routing, backend=backend, y=y, y_fake=y_fake, return_terms=True)
        out.loss.backward()
        results.append([out.loss.detach(), out.rho, *(p.grad.clone() for p in [*D.parameters(), *G.parameters()])])
    for ref, fused in zip(*results):
        torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_shifting_rows_by_the_class_term_keeps_rho_and_gives_the_whole_scores(device):
    # The trick the single loss uses with the fused objective: code + score per row.
    from ogan_plugin.kernels.single_loss import ogan_objective_reference
    from ogan_plugin.training import _objective_input

    G, D = make_pair(device=device)
    x, z, y, _ = batch(device=device)
    d = D.decompose(G(z, y), y)
    e = _objective_input(d)
    torch.testing.assert_close(e.mean(1), d.output.detach())
    torch.testing.assert_close(ogan_plugin.pearson_correlation(z, e), ogan_plugin.pearson_correlation(z, d.raw.detach()))
    # the objective's gradient parts: a row-centred correlation part (the head's raw outputs)
    # and per-row slopes (the scores); together the dense gradients
    out = ogan_objective_reference(e, e, z.flatten(1), None, "hinge", 0.5, 2.0, ogan_plugin.EPS)
    scale = out.corr.abs().max().item() * e.shape[1]  # rounding of a sum of n terms of that size
    torch.testing.assert_close(out.corr.sum(1), torch.zeros(len(e), dtype=e.dtype, device=e.device), atol=8 * 2.0**-52 * scale, rtol=0)
    grad_real, grad_d, grad_g = out.gradients(0.5, 2.0)
    n = e.shape[1]
    torch.testing.assert_close(grad_d.sum(1), out.slope_fake_d.to(e.dtype))
    torch.testing.assert_close(grad_g - (out.slope_fake_g / n).unsqueeze(1).to(e.dtype), 2.0 * out.corr)
    torch.testing.assert_close(grad_real, (out.slope_real / n).unsqueeze(1).expand_as(e).to(e.dtype))


def test_step_with_labels_and_accumulation_equals_the_full_batch_step(device):
    params = []
    for k in (1, 2):
        G, D = make_pair(device=device)
        x, z, y, y_fake = batch(8, device=device)
        opt = torch.optim.SGD([*G.parameters(), *D.parameters()], lr=0.1)
        step = SingleLossStep(G, D, loss="hinge", optimizer=opt, accumulation_steps=k)
        embed = D.discriminator.embed.weight.detach().clone()
        r = step.step(x, z, y=y, y_fake=y_fake)
        assert r.step == 1
        assert not torch.equal(D.discriminator.embed.weight, embed)  # the class term was trained
        params.append([p.detach().clone() for p in [*G.parameters(), *D.parameters()]])
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# --- OGANLoss pipelines --------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["hinge", "bce"])
def test_oganloss_takes_decompositions_and_trains_the_whole_output(loss, device):
    G, D = make_pair(device=device)
    x, z, y, y_fake = batch(device=device)
    grads_d, grads_g, loss_d, loss_g = alternating_reference(G, D, x, z, y, y_fake, loss)
    crit = ogan_plugin.OGANLoss(loss, corr_weight=0.5)
    fake = G(z, y_fake)
    got_d = crit.discriminator_loss(D.decompose(x, y), D.decompose(fake.detach(), y_fake), z)
    torch.testing.assert_close(got_d.double(), loss_d)
    for g, e in zip(torch.autograd.grad(got_d, list(D.parameters())), grads_d):
        torch.testing.assert_close(g, e)
    got_g = crit.generator_loss(D.decompose(fake, y_fake), z)
    torch.testing.assert_close(got_g.double(), loss_g)
    for g, e in zip(torch.autograd.grad(got_g, list(G.parameters())), grads_g):
        torch.testing.assert_close(g, e)
    # raw outputs alone mean the head's score: a different (class-blind) loss
    raw_d = crit.discriminator_loss(D.decompose(x, y).raw, D.decompose(fake.detach(), y_fake).raw, z)
    assert not torch.allclose(raw_d, got_d)
    with pytest.raises(TypeError, match="e_real must be D.decompose"):
        crit.discriminator_loss(torch.zeros(7, device=device), D.decompose(fake.detach(), y_fake), z)


# --- using the encoder ---------------------------------------------------------------------
def test_reconstruct_and_interpolate_pass_the_labels():
    G, D = make_pair()
    x, _, y, y_b = batch()
    want = G(0.9 * D.encode(x, y), y)
    torch.testing.assert_close(ogan_plugin.reconstruct(G, D, x, y=y), want)
    path = ogan_plugin.interpolate(G, D, x, x.flip(0), steps=4, y=y)
    torch.testing.assert_close(path[:, 0], want)
    torch.testing.assert_close(path[:, -1], G(0.9 * D.encode(x.flip(0), y), y))
    with pytest.raises(ValueError, match="y_b: integer class labels cannot be interpolated"):
        ogan_plugin.interpolate(G, D, x, x.flip(0), y=y, y_b=y_b)


def test_interpolate_blends_one_hot_labels():
    class OneHotG(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(NZ + K, 64)

        def forward(self, z, c):
            return self.net(torch.cat([z, c], 1)).view(-1, 1, 8, 8)

    class OneHotD(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features, self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 + K, 16), nn.ReLU()), nn.Linear(16, 1)

        def forward(self, x, c):
            return self.head(self.features(torch.cat([x.flatten(1), c], 1)))

    torch.manual_seed(0)
    G, D = OneHotG().double(), ogan_plugin.wrap(OneHotD().double(), NZ)
    x, _, y, y_b = batch()
    ca, cb = F.one_hot(y, K).double(), F.one_hot(y_b, K).double()
    path = ogan_plugin.interpolate(G, D, x, x.flip(0), steps=3, y=ca, y_b=cb)
    mid = G(0.9 * (D.encode(x, ca) + D.encode(x.flip(0), cb)) / 2, (ca + cb) / 2)
    torch.testing.assert_close(path[:, 1], mid)
    torch.testing.assert_close(path[:, 2], G(0.9 * D.encode(x.flip(0), cb), cb))


def test_evaluate_functions_take_labels():
    G, D = make_pair()
    x, _, y, _ = batch(40)
    ys = torch.arange(30) % K
    torch.testing.assert_close(generate(G, NZ, 30, y=ys, batch_size=7), generate(G, NZ, 30, y=ys, batch_size=30).float())
    rho = mean_correlation(G, D, 30, y=ys, batch_size=16)
    z = torch.randn(30, NZ, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        want = ogan_plugin.pearson_correlation(z, D.decompose(G(z, ys), ys).raw).mean()
    assert rho == pytest.approx(float(want), rel=1e-6)
    codes = encode_batched(D, (x, y), conditional=True, batch_size=16)
    torch.testing.assert_close(codes, D.encode(x, y).float().detach())
    rec = reconstruction_error(G, D, (x, y), conditional=True)
    with torch.no_grad():
        want_mse = float((G(0.9 * D.encode(x, y), y).float() - x.float()).pow(2).mean())
    assert rec.mse == pytest.approx(want_mse, rel=1e-5)
    report = evaluate(G, D, (x.float(), y), (x[:20].float(), y[:20]), n_samples=30, conditional=True, batch_size=16)
    assert 0 <= report.class_agreement <= 1 and report.frechet >= 0 and report.probe_code_accuracy is not None
    with pytest.raises(ValueError, match="conditional=True needs labelled images"):
        reconstruction_error(G, D, x, conditional=True)
    with pytest.raises(ValueError, match="conditional=True needs labelled train data"):
        evaluate(G, D, x, (x, y), conditional=True)


# --- bad labels ----------------------------------------------------------------------------
def test_bad_labels_raise_errors_naming_the_argument(device):
    G, D = make_pair(device=device)
    x, z, y, _ = batch(device=device)
    with pytest.raises(ValueError, match=r"y must have one label per sample: the batch has 7 samples, y has 6 labels"):
        single_loss(G, D, x, z, y=y[:6])
    with pytest.raises(ValueError, match="y_fake must have one label per sample"):
        single_loss(G, D, x, z, y=y, y_fake=y[:1])
    with pytest.raises(ValueError, match="y must have one label per sample.*a scalar"):
        single_loss(G, D, x, z, y=y[0])
    with pytest.raises(TypeError, match="y must hold integer class indices or floating-point .* torch.bool"):
        single_loss(G, D, x, z, y=y > 0)
    with pytest.raises(TypeError, match="y must be a torch.Tensor of labels, got list"):
        single_loss(G, D, x, z, y=y.tolist())
    with pytest.raises(ValueError, match="y_fake was given without y"):
        single_loss(G, D, x, z, y_fake=y)
    with pytest.raises(ValueError, match=r"y must have one label per sample"):
        SingleLossStep(G, D).step(x, z, y=y[:3])
    with pytest.raises(ValueError, match="y must have one label per sample"):
        ogan_plugin.reconstruct(G, D, x, y=y[:2])


def test_labels_for_networks_that_take_none_are_refused():
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(NZ, 64), nn.Unflatten(1, (1, 8, 8))).double()
    D = ogan_plugin.wrap(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 1)).double(), NZ)
    x, z, y, _ = batch()
    with pytest.raises(ValueError, match=r"y= was given but the discriminator's forward\(input\) takes no labels"):
        single_loss(G, D, x, z, y=y)
    with pytest.raises(ValueError, match="y= was given but the discriminator's forward"):
        ogan_plugin.reconstruct(G, D, x, y=y)
    Gc, Dc = make_pair()
    with pytest.raises(ValueError, match="y= was given but the generator's forward"):
        single_loss(G, Dc, x, z, y=y)
    with pytest.raises(ValueError, match="y= was given but the discriminator's forward"):
        mean_correlation(Gc, D, 7, y=y)
    single_loss(G, D, x, z)  # unconditional: unchanged


def test_functions_that_run_one_network_check_the_labels_for_that_network():
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(NZ, 64), nn.Unflatten(1, (1, 8, 8))).double()
    D = ogan_plugin.wrap(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 1)).double(), NZ)
    Gc, Dc = make_pair()
    x, _, y, _ = batch()
    with pytest.raises(ValueError, match="y= was given but the generator's forward"):
        generate(G, NZ, 7, y=y)
    with pytest.raises(ValueError, match="y must have one label per sample: the batch has 8 samples, y has 7"):
        generate(Gc, NZ, 8, y=y)
    with pytest.raises(ValueError, match="y= was given but the discriminator's forward"):
        encode_batched(D, (x, y), conditional=True)
    with pytest.raises(TypeError, match="y must be a torch.Tensor of labels"):
        generate(Gc, NZ, 7, y=y.tolist())
    # encode_batched runs no generator, generate no discriminator: neither is asked about
    encode_batched(Dc, (x, y), conditional=True)
    generate(Gc, NZ, 7, y=y)


def test_label_acceptance_is_read_once_per_forward_function(monkeypatch):
    import inspect

    from ogan_plugin import labels

    class FreshG(ConditionalG):  # new forward functions: nothing cached for them yet
        def forward(self, z, y):
            return super().forward(z, y)

    class FreshD(ProjectionD):
        def forward(self, x, y):
            return super().forward(x, y)

    class NoLabels(nn.Module):
        def forward(self, x):
            return x

    calls = []
    signature = inspect.signature

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return signature(fn, *args, **kwargs)

    monkeypatch.setattr(labels.inspect, "signature", counting)
    torch.manual_seed(0)
    G, D = FreshG().double(), ogan_plugin.wrap(FreshD().double(), NZ)
    step = SingleLossStep(G, D)
    x, z, y, _ = batch()
    for _ in range(3):
        step.step(x, z, y=y)
    single_loss(G, D, x, z, y=y)
    assert len(calls) == 2  # G's forward and D's, once each, for four steps of both networks
    for _ in range(2):  # a refusal is remembered too, and still raised
        with pytest.raises(ValueError, match=r"the generator's forward\(x\) takes no labels"):
            labels.check_takes_labels(NoLabels(), "generator")
    assert len(calls) == 3


def test_reconstruct_batched_checks_the_labels_once(monkeypatch):
    from ogan_plugin import labels
    from ogan_plugin.evaluate import reconstruct_batched

    G, D = make_pair()
    x, _, y, _ = batch(9)
    seen = []
    check = labels.check_labels
    monkeypatch.setattr(labels, "check_labels", lambda *a, **k: seen.append(a[1]) or check(*a, **k))
    rec = reconstruct_batched(G, D, (x, y), conditional=True, batch_size=2)
    assert seen == [9]  # the whole set, not once more per batch of 2
    with torch.no_grad():
        torch.testing.assert_close(rec, G(0.9 * D.encode(x, y), y).float())
