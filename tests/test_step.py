"""SingleLossStep's lean iteration: one backward per step, the deferred finite check, and
the captured step (compiled on the CPU, a CUDA graph on CUDA) against the eager one."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.bench.step import tiny_pair
from ogan_plugin.step import CAPTURE_WARMUP, SingleLossStep

Z = 16


def _pair(seed: int = 0, device: str = "cpu"):
    torch.manual_seed(seed)
    G, D = tiny_pair(Z)
    return G.to(device), ogan_plugin.wrap(D, Z).to(device)


def _step(G, D, **kw) -> SingleLossStep:
    opt = torch.optim.Adam([*G.parameters(), *D.parameters()], lr=2e-3, betas=(0.5, 0.999))
    return SingleLossStep(G, D, kw.pop("loss", "hinge"), optimizer=opt, **kw)


def _batches(n: int, device: str = "cpu", batch: int = 8):
    g = torch.Generator().manual_seed(123)
    return [(torch.rand(batch, 1, 8, 8, generator=g).to(device) * 2 - 1, torch.randn(batch, Z, generator=g).to(device))
            for _ in range(n)]


@pytest.mark.parametrize("routing", ["split", "three_forward"])
def test_one_backward_per_step_and_one_nested_product_for_split(monkeypatch, routing):
    """The step runs the engine once from its own call (torch.autograd.backward); the split
    routing adds one nested product (D's fake forward w.r.t. its input), three_forward none."""
    G, D = _pair()
    trainer = _step(G, D, routing=routing)
    calls = {"backward": 0, "grad": 0}
    real_backward, real_grad = torch.autograd.backward, torch.autograd.grad

    def backward(*a, **k):
        calls["backward"] += 1
        return real_backward(*a, **k)

    def grad(*a, **k):
        calls["grad"] += 1
        return real_grad(*a, **k)

    monkeypatch.setattr(torch.autograd, "backward", backward)
    monkeypatch.setattr(torch.autograd, "grad", grad)
    x, z = _batches(1)[0]
    trainer.step(x, z)
    assert calls == {"backward": 1, "grad": 1 if routing == "split" else 0}


def test_only_the_optimizer_parameters_get_gradients():
    """The backward fills the optimizer's tensors only (inputs=): D's fake input gets none."""
    G, D = _pair()
    trainer = _step(G, D)
    x, z = _batches(1)[0]
    trainer.step(x, z)
    assert all(p.grad is not None for p in trainer._params)


def test_deferred_finite_check_reports_the_steps_at_its_read():
    """check_every=3: no read before the third step; the message names the steps since the
    last read; check() and state_dict() read it at once."""
    G, D = _pair()
    trainer = _step(G, D, check_every=3)
    batches = _batches(6)
    bad = batches[1][0].clone()
    bad[0, 0, 0, 0] = float("nan")
    trainer.step(*batches[0])
    trainer.step(bad, batches[1][1])  # NaN at step 2: taken, not read yet
    with pytest.raises(FloatingPointError, match=r"one of steps 1 to 3 .*check_every"):
        trainer.step(*batches[2])
    # a fresh step: the flag was cleared by the read
    G, D = _pair()
    trainer = _step(G, D, check_every=100)
    trainer.step(*batches[3])
    trainer.step(bad, batches[4][1])
    with pytest.raises(FloatingPointError, match=r"one of steps 1 to 2"):
        trainer.state_dict()
    trainer.check()  # read: nothing new since


def test_default_on_cpu_checks_every_step_before_the_backward():
    G, D = _pair()
    trainer = _step(G, D)
    x, z = _batches(1)[0]
    x[0, 0, 0, 0] = float("inf")
    before = [p.detach().clone() for p in trainer._params]
    with pytest.raises(FloatingPointError, match="at step 1 .*weights are unchanged"):
        trainer.step(x, z)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer._params))


def test_capture_arguments_are_checked():
    G, D = _pair()
    with pytest.raises(ValueError, match="capture=True cannot use a GradScaler"):
        _step(G, D, capture=True, amp_dtype=torch.float16, grad_scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match="check_every"):
        _step(G, D, check_every=0)


@pytest.mark.parametrize("routing", ["split", "three_forward"])
def test_captured_step_on_the_cpu_equals_eager_after_20_steps(routing):
    """On the CPU capture=True compiles the networks and the optimizer step: after 20 steps on
    the same batches and noise, the weights are those of the eager step (float tolerance)."""
    G, D = _pair()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    eager = _step(G, D, routing=routing, ema_decay=0.9)
    captured = _step(G2, D2, routing=routing, ema_decay=0.9, capture=True)
    for x, z in _batches(20):
        a, b = eager.step(x, z), captured.step(x, z)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-4, atol=1e-5)
    for p, q in zip([*G.parameters(), *D.parameters()], [*G2.parameters(), *D2.parameters()]):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    for p, q in zip(eager.ema.module.parameters(), captured.ema.module.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


# --- CUDA graphs (a GPU only) ------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("routing", ["split", "three_forward"])
def test_cuda_graph_step_equals_eager_after_20_steps(routing):
    """capture=True on CUDA: the first steps eager, then one graph per batch shape, replayed;
    after 20 steps (the last batch partial: a second graph) the weights, the EMA and the
    logged values are the eager step's within float tolerance."""
    G, D = _pair(device="cuda")
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    eager = _step(G, D, routing=routing, ema_decay=0.9)
    captured = _step(G2, D2, routing=routing, ema_decay=0.9, capture=True)
    batches = _batches(20, "cuda")
    batches[-1] = tuple(t[:5] for t in batches[-1])
    for i, (x, z) in enumerate(batches):
        a, b = eager.step(x, z), captured.step(x, z)
        torch.testing.assert_close(b.loss, a.loss, rtol=1e-4, atol=1e-5, msg=f"step {i + 1}")
    assert len(captured.captured) == 1  # the partial batch (one step) is still warming up eagerly
    for p, q in zip([*G.parameters(), *D.parameters()], [*G2.parameters(), *D2.parameters()]):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    for p, q in zip(eager.ema.module.parameters(), captured.ema.module.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    assert captured.ema.num_updates == eager.ema.num_updates == 20


@pytest.mark.gpu
def test_cuda_graph_step_recaptures_on_a_new_learning_rate_and_reads_no_host_value():
    G, D = _pair(device="cuda")
    trainer = _step(G, D, capture=True)
    batches = _batches(CAPTURE_WARMUP + 3, "cuda")
    for x, z in batches[:-1]:
        trainer.step(x, z)
    assert trainer.captured
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e-4
    with pytest.warns(RuntimeWarning, match="learning rate changed .* captured again"):
        trainer.step(*batches[-1])
    # a captured replay makes no host synchronisation: it runs under the sync debug mode
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, z in batches[:CAPTURE_WARMUP + 1]:
            trainer.step(x, z)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_eager_cuda_step_makes_no_host_synchronisation():
    """The default on CUDA: no host read per step (the finite check is a device flag)."""
    G, D = _pair(device="cuda")
    trainer = _step(G, D)
    batches = _batches(3, "cuda")
    trainer.step(*batches[0])  # first step: lazy initialisation (probe, optimizer state)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, z in batches[1:]:
            trainer.step(x, z)
    finally:
        torch.cuda.set_sync_debug_mode("default")
