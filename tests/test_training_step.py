"""SingleLossStep: training, accumulation, mixed precision, EMA, checkpoints, bad inputs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin import EMA, SingleLossStep, StepResult

NZ = 6




def make_pair(dtype=torch.float64, batchnorm_g: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    G = nn.Sequential(
        nn.Linear(NZ, 32), *([nn.BatchNorm1d(32)] if batchnorm_g else []), nn.Tanh(),
        nn.Linear(32, 64), nn.Unflatten(1, (1, 8, 8)),
    ).to(dtype)  # fmt: skip
    D = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(64, 1)).to(dtype)
    return G, ogan_plugin.wrap(D, NZ)


def batch(n: int = 7, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g, dtype=dtype), torch.randn(n, NZ, generator=g, dtype=dtype)


def params(*modules):
    return [p for m in modules for p in m.parameters()]


def test_smoke_training_raises_the_correlation():
    # the official recipe (QP, lambda 0.5, RMSprop 1e-4 over both nets) on data from a
    # 4-dimensional linear manifold in 16 dimensions
    torch.manual_seed(0)
    nz = 8
    G = nn.Sequential(nn.Linear(nz, 32), nn.LeakyReLU(0.2), nn.Linear(32, 16))
    D = ogan_plugin.wrap(nn.Sequential(nn.Linear(16, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1)), nz)
    trainer = SingleLossStep(G, D)
    mixing = torch.randn(4, 16)
    first = trainer.step(torch.randn(64, 4) @ mixing)
    assert isinstance(first, StepResult) and first.step == 1 and abs(float(first.rho)) < 0.3
    for _ in range(299):
        r = trainer.step(torch.randn(64, 4) @ mixing)
    assert r.step == trainer.step_count == 300
    with torch.no_grad():
        z = torch.randn(256, nz)
        rho = ogan_plugin.pearson_correlation(z, D.decompose(G(z)).raw).mean()
    assert rho > 0.5 and float(r.rho) > 0.5
    assert all(torch.isfinite(t) for t in r[:4])


@pytest.mark.parametrize("corr_weight_g", [None, 0.2], ids=["one_weight", "generator_weight"])
def test_step_equals_single_loss_plus_optimizer_and_logs_the_terms(corr_weight_g):
    G, D = make_pair()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    x, z = batch()
    trainer = SingleLossStep(G, D, "bce", optimizer=torch.optim.SGD(params(G, D), lr=0.1), corr_weight_g=corr_weight_g)
    assert trainer.corr_weight_g == (0.5 if corr_weight_g is None else corr_weight_g)
    r = trainer.step(x, z)
    out = ogan_plugin.single_loss(G2, D2, x, z, "bce", corr_weight_g=corr_weight_g, return_terms=True)
    out.loss.backward()
    with torch.no_grad():
        for p in params(G2, D2):
            p -= 0.1 * p.grad
    for a, b in zip(params(G, D), params(G2, D2)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    torch.testing.assert_close(r.loss_d, out.loss_d)
    torch.testing.assert_close(r.loss_g, out.loss_g)
    torch.testing.assert_close(r.loss, out.loss.detach())
    torch.testing.assert_close(r.rho, out.rho.float().mean())
    assert not r.loss.requires_grad


def test_default_optimizer_is_the_official_rmsprop_over_both_networks():
    G, D = make_pair()
    opt = SingleLossStep(G, D).optimizer
    assert isinstance(opt, torch.optim.RMSprop)
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["alpha"] == 0.99
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in params(G, D)}


def test_accumulation_equals_the_full_batch_gradient():
    x, z = batch(n=7)  # 3 micro-batches of 3, 2, 2
    grads = []
    for k in (1, 3):
        G, D = make_pair()
        trainer = SingleLossStep(G, D, optimizer=torch.optim.SGD(params(G, D), lr=0.0), accumulation_steps=k)
        r = trainer.step(x, z)
        grads.append(([p.grad.clone() for p in params(G, D)], r))
    (g1, r1), (g3, r3) = grads
    scale = max(a.abs().max().item() for a in g1)  # the losses reduce in float32
    for a, b in zip(g1, g3):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(r3.loss_d, r1.loss_d, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(r3.rho, r1.rho, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="accumulation_steps=8 exceeds the batch size 7"):
        SingleLossStep(*make_pair(), accumulation_steps=8).step(x, z)


def test_bfloat16_autocast_on_cpu_is_finite_and_close_to_float32():
    G, D = make_pair(torch.float32)
    x, z = batch(n=16, dtype=torch.float32)
    ref_G, ref_D = copy.deepcopy(G), copy.deepcopy(D)
    SingleLossStep(ref_G, ref_D, optimizer=torch.optim.SGD(params(ref_G, ref_D), lr=0.0)).step(x, z)
    trainer = SingleLossStep(G, D, optimizer=torch.optim.SGD(params(G, D), lr=0.0), amp_dtype=torch.bfloat16)
    assert trainer.grad_scaler is None
    r = trainer.step(x, z)
    assert all(torch.isfinite(t) for t in r[:4])
    rel = []
    for a, b in zip(params(G, D), params(ref_G, ref_D)):
        assert a.grad.dtype == torch.float32 and torch.isfinite(a.grad).all()
        cos = torch.nn.functional.cosine_similarity(a.grad.flatten(), b.grad.flatten(), dim=0)
        assert cos > 0.99, cos
        rel.append(((a.grad - b.grad).norm() / b.grad.norm()).item())
    assert max(rel) > 1e-4  # the forwards really ran in bfloat16


def test_float16_gets_a_grad_scaler():
    G, D = make_pair(torch.float32)
    trainer = SingleLossStep(G, D, amp_dtype=torch.float16)
    assert isinstance(trainer.grad_scaler, torch.amp.GradScaler)
    r = trainer.step(*batch(n=8, dtype=torch.float32))
    assert torch.isfinite(r.loss)
    assert SingleLossStep(G, D, amp_dtype=torch.float16, grad_scaler=False).grad_scaler is None


def test_ema_tracks_the_generator():
    G, D = make_pair(batchnorm_g=True)
    trainer = SingleLossStep(G, D, ema_decay=0.75)
    assert isinstance(trainer.ema, EMA)
    expected = [p.detach().clone() for p in G.parameters()]
    for i in range(3):
        trainer.step(*batch(seed=i))
        expected = [0.75 * e + 0.25 * p.detach() for e, p in zip(expected, G.parameters())]
    for e, p in zip(expected, trainer.ema.module.parameters()):
        torch.testing.assert_close(p, e)
        assert not p.requires_grad
    # buffers (BatchNorm statistics) are copied, not averaged
    torch.testing.assert_close(trainer.ema.module[1].running_mean, G[1].running_mean)
    assert trainer.ema.num_updates == 3 and not trainer.ema.module.training
    assert SingleLossStep(G, D).ema is None
    with pytest.raises(ValueError, match="decay"):
        EMA(G, 1.0)


def test_state_dict_round_trip_resumes_exactly():
    def build(G, D):
        noise = torch.Generator().manual_seed(5)
        augment = ogan_plugin.RandomTranslate(1, p=0.5, seed=int(torch.randint(100, ())))  # seed: restored
        return SingleLossStep(G, D, ema_decay=0.9, noise_generator=noise, routing="split", augment=augment)

    G, D = make_pair(batchnorm_g=True)
    trainer = build(G, D)
    data = [batch(seed=i)[0] for i in range(6)]
    for x in data[:3]:
        trainer.step(x)
    saved = copy.deepcopy({"G": G.state_dict(), "D": D.state_dict(), "step": trainer.state_dict()})
    for x in data[3:]:
        trainer.step(x)

    G2, D2 = make_pair(batchnorm_g=True, seed=99)  # different initial weights, overwritten
    G2.load_state_dict(saved["G"])
    D2.load_state_dict(saved["D"])
    resumed = build(G2, D2)
    resumed.load_state_dict(saved["step"])
    assert resumed.step_count == 3
    for x in data[3:]:
        r = resumed.step(x)
    assert r.step == 6
    for a, b in zip([*G.state_dict().values(), *D.state_dict().values()], [*G2.state_dict().values(), *D2.state_dict().values()]):
        assert torch.equal(a, b)
    for a, b in zip(trainer.ema.module.state_dict().values(), resumed.ema.module.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="ema"):
        SingleLossStep(G2, D2, noise_generator=torch.Generator()).load_state_dict(saved["step"])
    with pytest.raises(ValueError, match="has augment state but this step has no augment"):
        SingleLossStep(G2, D2, ema_decay=0.9, noise_generator=torch.Generator()).load_state_dict(saved["step"])
    no_augment = SingleLossStep(G2, D2, ema_decay=0.9, noise_generator=torch.Generator()).state_dict()
    with pytest.raises(ValueError, match="has no augment state but this step has augment"):
        build(G2, D2).load_state_dict(no_augment)


# --- bad inputs ----------------------------------------------------------------------------
def test_nan_loss_raises_with_the_step_number_and_leaves_the_weights():
    G, D = make_pair()
    trainer = SingleLossStep(G, D)
    x, z = batch()
    trainer.step(x, z)
    before = [p.detach().clone() for p in params(G, D)]
    opt_state = copy.deepcopy(trainer.optimizer.state_dict())
    x_bad = x.clone()
    x_bad[2, 0, 3, 3] = float("nan")
    with pytest.raises(FloatingPointError, match="step 2"):
        trainer.step(x_bad, z)
    assert trainer.step_count == 1
    assert all(torch.equal(a, b) for a, b in zip(before, params(G, D)))
    assert all(p.grad is None for p in params(G, D))
    assert str(trainer.optimizer.state_dict()) == str(opt_state)
    trainer.step(x, z)  # usable afterwards
    assert trainer.step_count == 2


def test_optimizer_missing_parameters_is_named():
    G, D = make_pair()
    with pytest.raises(ValueError, match=r"lacks: generator\.0\.weight, generator\.0\.bias, generator\.2\.weight"):
        SingleLossStep(G, D, optimizer=torch.optim.SGD(D.parameters(), lr=0.1))
    # an optimizer built before wrap(): the widened head is new
    G, D0 = make_pair()
    plain = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(64, 1)).double()
    opt = torch.optim.SGD(params(G, plain), lr=0.1)
    with pytest.raises(ValueError, match=r"lacks: discriminator\.discriminator\.3\.layer\.weight.*before wrap"):
        SingleLossStep(G, ogan_plugin.wrap(plain, NZ), optimizer=opt)


def test_bad_step_inputs():
    G, D = make_pair()
    trainer = SingleLossStep(G, D)
    x, z = batch()
    with pytest.raises(ValueError, match=r"generator's output .*x_real has shape \(7, 1, 4, 4\)"):
        trainer.step(x[:, :, :4, :4], z)
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 6\).*z_dim is 6"):
        trainer.step(x, torch.randn(7, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="z_dim=4 differs from the wrapped discriminator's z_dim=6"):
        SingleLossStep(G, D, z_dim=4)
    with pytest.raises(ValueError, match="amp_dtype"):
        SingleLossStep(G, D, amp_dtype=torch.float64)
    with pytest.raises(ValueError, match="accumulation_steps"):
        SingleLossStep(G, D, accumulation_steps=0)
    with pytest.raises(TypeError, match="x_real"):
        trainer.step([1.0, 2.0])
    assert trainer.step_count == 0
