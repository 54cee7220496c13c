"""single_loss(): both routings give the alternating update's gradients, for every loss."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin import Backend, hookimpl
from ogan_plugin import losses as L
from ogan_plugin.registry import BackendUnavailableError
from ogan_plugin.training import ROUTINGS, single_loss

NZ = 6
#: the adversarial losses by hand, from the functional forms
FUNCTIONAL = {
    "qp": (L.qp_d_loss, L.qp_g_loss),
    "hinge": (L.hinge_d_loss, L.hinge_g_loss),
    "bce": (L.bce_d_loss, L.bce_g_loss),
    "wgan": (L.wgan_d_loss, L.wgan_g_loss),
}


def make_pair(batchnorm: bool = False, dropout: float = 0.0, seed: int = 0, device: str = "cpu"):
    """float64 (G, wrapped D) on 1x8x8 images, on ``device``; D is a small conv net."""
    torch.manual_seed(seed)
    D = nn.Sequential(
        nn.Conv2d(1, 4, 3, 2, 1),
        *([nn.BatchNorm2d(4)] if batchnorm else []),
        nn.LeakyReLU(0.2),
        *([nn.Dropout(dropout)] if dropout else []),
        nn.Flatten(),
        nn.Linear(64, 1),
    ).double()
    G = nn.Sequential(nn.Linear(NZ, 32), nn.Tanh(), nn.Linear(32, 64), nn.Unflatten(1, (1, 8, 8))).double()
    G, Dw = G.to(device), ogan_plugin.wrap(D, NZ).to(device)
    if batchnorm:  # non-trivial running statistics and affine parameters
        with torch.no_grad():
            Dw.train()(torch.randn(16, 1, 8, 8, dtype=torch.float64).to(device) * 2 + 0.5)
            bn = D[1]
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    return G, Dw


def batch(n: int = 7, seed: int = 1, device: str = "cpu"):
    """(x, z) in float64 on ``device``, drawn on the CPU (the same values on every device)."""
    g = torch.Generator().manual_seed(seed)
    x, z = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64), torch.randn(n, NZ, generator=g, dtype=torch.float64)
    return x.to(device), z.to(device)


def alternating_reference(G, D, x, z, loss: str, corr_weight: float = 0.5, augment=lambda t: t, corr_weight_g=None):
    """Gradients of the usual two-loss update, by hand: (D grads, G grads, L_D, L_G)."""
    corr_weight_g = corr_weight if corr_weight_g is None else corr_weight_g
    d_loss, g_loss = FUNCTIONAL[loss]
    x, fake = augment(x), augment(G(z))
    e_real, e_fake = D.decompose(x).raw, D.decompose(fake.detach()).raw
    loss_d = d_loss(e_real.mean(1), e_fake.mean(1), L.pixel_distance(x, fake.detach())) + ogan_plugin.correlation_loss(
        z, e_fake, corr_weight
    )
    grads_d = torch.autograd.grad(loss_d, list(D.parameters()))
    D.requires_grad_(False)  # D frozen for the generator's update
    try:
        e_gen = D.decompose(fake).raw
        loss_g = g_loss(e_gen.mean(1)) + ogan_plugin.correlation_loss(z, e_gen, corr_weight_g)
        grads_g = torch.autograd.grad(loss_g, list(G.parameters()))
    finally:
        D.requires_grad_(True)
    return grads_d, grads_g, loss_d.detach(), loss_g.detach()


def assert_grads_equal(expected, params, rel: float = 1e-5) -> None:
    """Equal to ``rel`` relative, the absolute floor scaled by the network's largest gradient
    (a conv bias before training-mode BatchNorm has a gradient of ~1e-17: pure rounding)."""
    params = list(params)
    assert len(expected) == len(params)
    scale = max(e.abs().max().item() for e in expected)
    assert scale > 0
    for i, (e, p) in enumerate(zip(expected, params)):
        assert p.grad is not None, f"parameter {i} got no gradient"
        torch.testing.assert_close(p.grad, e, rtol=rel, atol=rel * scale, msg=lambda m: f"parameter {i}: {m}")


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("loss", sorted(FUNCTIONAL))
def test_gradients_equal_the_alternating_update(loss, routing, batchnorm, device):
    G, D = make_pair(batchnorm, device=device)
    D.eval()
    x, z = batch(device=device)
    grads_d, grads_g, loss_d, loss_g = alternating_reference(G, D, x, z, loss)
    out = single_loss(G, D, x, z, loss=loss, routing=routing, return_terms=True)
    out.loss.backward()
    assert_grads_equal(grads_d, D.parameters())
    assert_grads_equal(grads_g, G.parameters())
    # value: the sum of the two players' losses
    torch.testing.assert_close(out.loss_d.double(), loss_d.double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.loss_g.double(), loss_g.double(), rtol=1e-6, atol=1e-7)
    assert out.loss.item() == pytest.approx((out.loss_d + out.loss_g).item(), rel=1e-6)


@pytest.mark.parametrize("score", ["auto", "head", "output"])
@pytest.mark.parametrize("loss", sorted(FUNCTIONAL))
def test_float32_on_the_cpu_gives_the_float64_update_with_the_scores_folded_into_the_rows(loss, score, monkeypatch):
    """float32 CPU networks whose score is the head's mean ("auto" here, "head") take the
    NumPy path with dense row gradients (objective_dense: no score stream); "output" keeps
    the score stream.  Both give the float64 alternating update."""
    import copy

    from ogan_plugin import training

    G, D = make_pair()
    D.eval()
    x, z = batch()
    grads_d, grads_g, loss_d, loss_g = alternating_reference(G, D, x, z, loss)
    G32, D32 = copy.deepcopy(G).float(), copy.deepcopy(D).float()
    D32.score_from = score
    calls = []
    monkeypatch.setattr(training, "objective_dense", _counting(training.objective_dense, calls))
    out = single_loss(G32, D32, x.float(), z.float(), loss=loss, return_terms=True)
    out.loss.backward()
    assert len(calls) == (0 if score == "output" else 1)
    assert_grads_equal([g.float() for g in grads_d], D32.parameters(), rel=2e-4)
    assert_grads_equal([g.float() for g in grads_g], G32.parameters(), rel=2e-4)
    torch.testing.assert_close(out.loss_d.double(), loss_d, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss_g.double(), loss_g, rtol=1e-5, atol=1e-6)
    assert out.loss.dtype == torch.float32 and out.rho.shape == (x.shape[0],)


class _ProjectionD(nn.Module):
    """An SNGAN-style projection discriminator, its class term added in place (as
    pytorch.sngan_projection and mimicry write it) or not."""

    def __init__(self, in_place: bool) -> None:
        super().__init__()
        self.in_place = in_place
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.LeakyReLU(0.2))
        self.l, self.embed = nn.Linear(16, 1), nn.Embedding(3, 16)

    def forward(self, x, y):
        h = self.body(x)
        out = self.l(h)
        proj = (self.embed(y) * h).sum(1, keepdim=True)
        if self.in_place:
            out += proj
            return out
        return out + proj


class _LabelG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(NZ, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))

    def forward(self, z, y):
        return self.net(z)


@pytest.mark.parametrize("routing", ROUTINGS)
def test_a_class_term_added_in_place_to_the_head_score_is_trained(routing):
    """``output += proj`` changes the tensor the head returned: the code is still centred on
    the head's own mean, the score still holds the class term, and single_loss gives the
    gradients of the same discriminator written out of place (float32 on the CPU)."""
    torch.manual_seed(3)
    x, z, y = torch.randn(8, 1, 8, 8), torch.randn(8, NZ), torch.randint(0, 3, (8,))
    grads, terms = [], []
    for in_place in (True, False):
        torch.manual_seed(0)
        G, D = _LabelG(), ogan_plugin.wrap(_ProjectionD(in_place), NZ)
        d = D.decompose(x, y)
        torch.testing.assert_close(d.code.mean(1), torch.zeros(8), atol=1e-6, rtol=0)
        torch.testing.assert_close(d.code, d.raw - d.raw.mean(1, keepdim=True))
        torch.testing.assert_close(d.score, d.output.view(-1))
        out = single_loss(G, D, x, z, loss="hinge", routing=routing, y=y, return_terms=True)
        out.loss.backward()
        assert D.discriminator.embed.weight.grad is not None
        grads.append([p.grad for p in [*D.parameters(), *G.parameters()]])
        terms.append((out.loss_d, out.loss_g))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms[0], terms[1])


def test_a_compiled_projection_discriminator_keeps_its_class_term():
    """A compiled D returns its output and the head's mean from one autograd node (the
    compiled graph's): that node says nothing about which is which, so the score stays D's
    output, and single_loss gives the eager gradients."""
    import copy

    torch.manual_seed(0)
    x, z, y = torch.randn(8, 1, 8, 8), torch.randn(8, NZ), torch.randint(0, 3, (8,))
    G0, D0 = _LabelG(), ogan_plugin.wrap(_ProjectionD(in_place=False), NZ)
    grads = []
    for compiled in (False, True):
        G, D = copy.deepcopy(G0), copy.deepcopy(D0)
        if compiled:
            torch._dynamo.reset()
            D.discriminator.compile(backend="aot_eager")
        d = D.decompose(x, y)
        torch.testing.assert_close(d.score, d.output.view(-1))
        single_loss(G, D, x, z, loss="hinge", y=y).backward()
        grads.append([p.grad for p in [*D.parameters(), *G.parameters()]])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_class_term_added_in_place_is_kept_under_torch_compile():
    """Compiled, the head hands D a copy of its score (no version counter is read there)."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    D = ogan_plugin.wrap(_ProjectionD(in_place=True), NZ)
    eager = D.decompose(x, y)
    torch._dynamo.reset()
    compiled = torch.compile(D.decompose, backend="aot_eager")(x, y)
    for a, b in zip(compiled[:3], eager[:3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("routing", ROUTINGS)
def test_a_discriminator_that_squeezes_its_output_works_on_one_sample(routing):
    """``D(x).squeeze()`` is 0-d for a batch of one (the last batch of an epoch)."""
    torch.manual_seed(0)
    D = ogan_plugin.wrap(_Squeezed(), NZ)
    G = nn.Sequential(nn.Linear(NZ, 64), nn.Unflatten(1, (1, 8, 8)))
    x, z = torch.randn(1, 1, 8, 8), torch.randn(1, NZ)
    d = D.decompose(x)
    assert d.score.shape == (1,) and d.output.dim() == 0
    with torch.no_grad():
        assert D.decompose(x).score.shape == (1,)
    single_loss(G, D, x, z, loss="wgan", routing=routing).backward()
    assert all(p.grad is not None for p in D.parameters())


class _Squeezed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x).squeeze()


def _counting(fn, calls: list):
    def counted(*args):
        calls.append(1)
        return fn(*args)

    return counted


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("loss", ["qp", "bce"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_generator_corr_weight_gives_the_alternating_update_with_two_weights(loss, routing, backend, device,
                                                                             triton_device):
    G, D = make_pair(device=device)
    x, z = batch(device=device)
    if backend == "triton" and device != triton_device:
        # a GPU machine: Triton runs compiled on CUDA tensors only; forced on CPU ones it says so
        with pytest.raises(BackendUnavailableError, match="backend='triton'.*'cpu'"):
            single_loss(G, D, x, z, loss=loss, corr_weight=2.5, corr_weight_g=1.0, routing=routing, backend=backend)
        return
    grads_d, grads_g, loss_d, loss_g = alternating_reference(G, D, x, z, loss, corr_weight=2.5, corr_weight_g=1.0)
    out = single_loss(G, D, x, z, loss=loss, corr_weight=2.5, corr_weight_g=1.0, routing=routing, backend=backend,
                      return_terms=True)
    out.loss.backward()
    assert_grads_equal(grads_d, D.parameters())
    assert_grads_equal(grads_g, G.parameters())
    torch.testing.assert_close(out.loss_d.double(), loss_d.double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.loss_g.double(), loss_g.double(), rtol=1e-6, atol=1e-7)
    # the generator's weight did matter, and corr_weight_g=corr_weight is the one-weight loss
    same = single_loss(G, D, x, z, loss=loss, corr_weight=2.5, corr_weight_g=2.5, return_terms=True)
    one = single_loss(G, D, x, z, loss=loss, corr_weight=2.5, return_terms=True)
    assert not torch.allclose(same.loss_g, out.loss_g)
    assert torch.equal(same.loss_g, one.loss_g) and torch.equal(same.loss_d, one.loss_d)
    for bad in (-1, "1", True):
        with pytest.raises(ValueError, match="corr_weight_g must be a number >= 0 or None"):
            single_loss(G, D, x, z, corr_weight_g=bad)


def fixed_translate(t):
    """A deterministic augmentation: the same seeded random shifts on every call."""
    return ogan_plugin.augment.translate(t, 1, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("loss", ["qp", "hinge"])
def test_augment_gives_the_alternating_update_on_augmented_batches(loss, routing, device):
    G, D = make_pair(device=device)
    x, z = batch(device=device)
    grads_d, grads_g, loss_d, _ = alternating_reference(G, D, x, z, loss, augment=fixed_translate)
    plain = single_loss(G, D, x, z, loss=loss, routing=routing, return_terms=True)
    out = single_loss(G, D, x, z, loss=loss, routing=routing, augment=fixed_translate, return_terms=True)
    out.loss.backward()
    assert_grads_equal(grads_d, D.parameters())
    assert_grads_equal(grads_g, G.parameters())
    torch.testing.assert_close(out.loss_d.double(), loss_d.double(), rtol=1e-6, atol=1e-7)
    assert not torch.allclose(out.loss_d, plain.loss_d)  # the augmentation did change what D saw
    torch.testing.assert_close(out.x_fake, G(z))  # x_fake is G's output, not the augmented batch
    with pytest.raises(TypeError, match="augment must be a callable"):
        single_loss(G, D, x, z, augment="translate")
    with pytest.raises(ValueError, match="augment must map"):
        single_loss(G, D, x, z, augment=lambda t: None)


@pytest.mark.parametrize("routing", ROUTINGS)
def test_training_mode_batchnorm_with_separate_forwards_is_exact(routing, device):
    # Separate forwards normalise the real and the fake batch with their own statistics,
    # as the alternating loop does, so even training-mode BatchNorm gives equal gradients.
    G, D = make_pair(batchnorm=True, device=device)
    D.train()
    x, z = batch(device=device)
    grads_d, grads_g, _, _ = alternating_reference(G, D, x, z, "qp")
    single_loss(G, D, x, z, routing=routing).backward()
    assert_grads_equal(grads_d, D.parameters())
    assert_grads_equal(grads_g, G.parameters())


@pytest.mark.parametrize("routing", ROUTINGS)
def test_concat_batches_equal_separate_forwards_in_eval_mode_and_differ_in_training_mode(routing):
    G, D = make_pair(batchnorm=True)
    x, z = batch()
    grads = {}
    for mode in ("eval", "train"):
        for concat in (False, True):
            getattr(D, mode)()
            G.zero_grad(), D.zero_grad()
            single_loss(G, D, x, z, routing=routing, concat_batches=concat).backward()
            grads[mode, concat] = [p.grad.clone() for p in [*D.parameters(), *G.parameters()]]
    for a, b in zip(grads["eval", False], grads["eval", True]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # mixed-batch statistics are a different model: the gradients change
    assert any(not torch.allclose(a, b, rtol=1e-3) for a, b in zip(grads["train", False], grads["train", True]))


def test_split_is_exact_with_dropout_and_three_forward_warns():
    G, D = make_pair(dropout=0.5)
    D.train()
    x, z = batch()
    # Reference for the split semantics: the same two forwards (same dropout masks), D's
    # gradient from L_D and G's from L_G.
    torch.manual_seed(123)
    fake = G(z)
    e_real, e_fake = D.decompose(x).raw, D.decompose(fake).raw
    loss_d = L.qp_d_loss(e_real.mean(1), e_fake.mean(1), L.pixel_distance(x, fake.detach()))
    loss_d = loss_d + ogan_plugin.correlation_loss(z, e_fake, 0.5)
    loss_g = L.qp_g_loss(e_fake.mean(1)) + ogan_plugin.correlation_loss(z, e_fake, 0.5)
    grads_d = torch.autograd.grad(loss_d, list(D.parameters()), retain_graph=True)
    grads_g = torch.autograd.grad(loss_g, list(G.parameters()))

    torch.manual_seed(123)
    single_loss(G, D, x, z, routing="split").backward()
    assert_grads_equal(grads_d, D.parameters())
    assert_grads_equal(grads_g, G.parameters())

    with pytest.warns(RuntimeWarning, match="routing='split'"):
        single_loss(G, D, x, z, routing="three_forward")
    D.eval()  # no randomness in eval mode: no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single_loss(G, D, x, z, routing="three_forward")


@pytest.mark.parametrize("routing", ROUTINGS)
def test_gradient_is_linear_in_the_incoming_scale(routing, device):
    # GradScaler multiplies the loss; accumulation divides it: both must scale every gradient.
    G, D = make_pair(device=device)
    x, z = batch(device=device)
    single_loss(G, D, x, z, routing=routing).backward()
    ref = [p.grad.clone() for p in [*G.parameters(), *D.parameters()]]
    G.zero_grad(), D.zero_grad()
    (single_loss(G, D, x, z, routing=routing) * -2.5).backward()
    for r, p in zip(ref, [*G.parameters(), *D.parameters()]):
        torch.testing.assert_close(p.grad, -2.5 * r)


def test_autograd_grad_and_rho_terms(device):
    # torch.autograd.grad (not only .backward()) sees every parameter; rho is E(G(z))'s correlation.
    G, D = make_pair(device=device)
    D.eval()
    x, z = batch(device=device)
    grads_d, grads_g, _, _ = alternating_reference(G, D, x, z, "hinge")
    out = single_loss(G, D, x, z, "hinge", return_terms=True)
    got = torch.autograd.grad(out.loss, [*D.parameters(), *G.parameters()])
    for e, g in zip([*grads_d, *grads_g], got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5 * e.abs().max().item())
    torch.testing.assert_close(out.rho, ogan_plugin.pearson_correlation(z, D.decompose(G(z)).raw).detach())
    assert out.x_fake.shape == x.shape and out.loss.dtype == torch.float32 and out.loss.dim() == 0


def test_objective_comes_from_the_registry():
    calls = []
    reference = ogan_plugin.get_registry().resolve("ogan_objective", "cpu", "reference").fn

    def spy(*args):
        calls.append(args[4:7])  # loss, corr_weight, corr_weight_g
        return reference(*args)

    plugin = types.SimpleNamespace(ogan_backends=hookimpl(lambda: [Backend("ogan_objective", "spy", spy, priority=-5)]))
    reg = ogan_plugin.get_registry()
    reg.register(plugin, name="spy-objective")
    try:
        G, D = make_pair()
        x, z = batch()
        single_loss(G, D, x, z, "wgan", backend="spy").backward()
        assert calls == [("wgan", 0.5, 0.5)]
        single_loss(G, D, x, z, "wgan", corr_weight=2.0, corr_weight_g=0.25, backend="spy")
        assert calls[-1] == ("wgan", 2.0, 0.25)  # both weights reach the operation
        single_loss(G, D, x, z, "wgan")  # the automatic choice is not the low-priority spy
        assert len(calls) == 2
    finally:
        reg.unregister(name="spy-objective")


def test_dcgan_style_noise_shape_is_accepted(device):
    """z of shape (B, z_dim, 1, 1) gives the alternating update of the same generator fed flat z."""
    torch.manual_seed(0)
    G = nn.Sequential(nn.ConvTranspose2d(NZ, 1, 8), nn.Tanh()).double().to(device)
    D = ogan_plugin.wrap(nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 1, 4)).double(), NZ).to(device)
    x, z = batch(device=device)
    G_flat = nn.Sequential(nn.Unflatten(1, (NZ, 1, 1)), G)  # the same generator (same parameters), flat z
    grads_d, grads_g, loss_d, loss_g = alternating_reference(G_flat, D, x, z, "qp")
    out = single_loss(G, D, x, z.view(-1, NZ, 1, 1), return_terms=True)
    out.loss.backward()
    assert_grads_equal(grads_d, D.parameters())
    assert_grads_equal(grads_g, G.parameters())
    torch.testing.assert_close(out.loss_d.double(), loss_d.double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.loss_g.double(), loss_g.double(), rtol=1e-6, atol=1e-7)
    flat = single_loss(G_flat, D, x, z, return_terms=True)  # the flat-z run: the very same numbers
    for name in ("loss", "loss_d", "loss_g", "rho", "x_fake"):
        assert torch.equal(getattr(out, name), getattr(flat, name)), name


# --- bad inputs ----------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    G, D = make_pair()
    x, z = batch()
    with pytest.raises(ValueError, match=r"generator's output .*\(7, 1, 8, 8\).*x_real has shape \(7, 64\)"):
        single_loss(G, D, x.flatten(1), z)
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 6\).*z_dim is 6.*\(7, 5\)"):
        single_loss(G, D, x, z[:, :5])
    with pytest.raises(ValueError, match="z has batch size 6 but x_real has 7"):
        single_loss(G, D, x, z[:6])
    with pytest.raises(TypeError, match="wrapped_discriminator must be an OGANDiscriminator"):
        single_loss(G, D.discriminator, x, z)
    with pytest.raises(TypeError, match="z must be a floating-point"):
        single_loss(G, D, x, z.long())
    with pytest.raises(ValueError, match="routing must be one of"):
        single_loss(G, D, x, z, routing="fused")
    with pytest.raises(ValueError, match="loss must be one of"):
        single_loss(G, D, x, z, loss="lsgan")
    with pytest.raises(ValueError, match="corr_weight"):
        single_loss(G, D, x, z, corr_weight=-1)


def test_split_frees_its_forward_after_one_backward_and_respects_frozen_parameters():
    G, D = make_pair()
    D.eval()
    x, z = batch()
    loss = single_loss(G, D, x, z)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward per loss"):
        loss.backward()
    # a frozen discriminator: G still gets exactly L_G's gradient, D nothing
    _, grads_g, _, _ = alternating_reference(G, D, x, z, "qp")
    G.zero_grad(), D.zero_grad()
    D.requires_grad_(False)
    single_loss(G, D, x, z).backward()
    assert all(p.grad is None for p in D.parameters())
    assert_grads_equal(grads_g, G.parameters())


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("loss", ["qp", "hinge"])
def test_fused_triton_objective_routes_like_the_reference(loss, routing, triton_device):
    # Triton's interpreter on CPU-only machines (tests/conftest.py sets TRITON_INTERPRET), CUDA otherwise
    G, D = make_pair(batchnorm=True, device=triton_device)
    G.float(), D.float().eval()
    x, z = (t.float() for t in batch(device=triton_device))
    results = []
    for backend in ("reference", "triton"):
        G.zero_grad(), D.zero_grad()
        out = single_loss(G, D, x, z, loss, routing=routing, backend=backend, return_terms=True)
        out.loss.backward()
        results.append([out.loss.detach(), out.rho, *(p.grad.clone() for p in [*D.parameters(), *G.parameters()])])
    for ref, fused in zip(*results):
        torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
