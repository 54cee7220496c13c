"""SingleLossStep on a GPU: end to end, CUDA-graph capture of a whole step, fp16 with a
GradScaler, bf16 autocast.  Every test here needs CUDA (``gpu`` marker: skipped, with the
reason, elsewhere; the CPU versions of these behaviours are in test_training_step.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.step import SingleLossStep

pytestmark = pytest.mark.gpu

NZ = 16


def make_pair(device: str, seed: int = 0) -> tuple[nn.Module, ogan_plugin.OGANDiscriminator]:
    """A small float32 (G, wrapped D) on 1x8x8 images."""
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(NZ, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))
    D = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(256, 64),
                      nn.LeakyReLU(0.2), nn.Linear(64, 1))
    return G.to(device), ogan_plugin.wrap(D, NZ).to(device)


def data(n: int, device: str, seed: int = 1) -> torch.Tensor:
    """n images of 8x8 blobs at random places (structure a generator can learn)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, 1, 1, generator=g) * 6 + 1
    ii = torch.arange(8.0).view(1, 8, 1)
    jj = torch.arange(8.0).view(1, 1, 8)
    d2 = (ii - centre[:, 0]) ** 2 + (jj - centre[:, 1]) ** 2
    return (2 * torch.exp(-d2 / 4) - 1).unsqueeze(1).to(device)


def mean_rho(G: nn.Module, D: ogan_plugin.OGANDiscriminator, z: torch.Tensor) -> float:
    with torch.no_grad():
        return float(ogan_plugin.pearson_correlation(z, D.decompose(G(z)).raw).mean())


def train(step: SingleLossStep, x: torch.Tensor, steps: int, batch: int = 64, seed: int = 2) -> list:
    g = torch.Generator().manual_seed(seed)
    results = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g).to(x.device)
        results.append(step.step(x[idx]))
    return results


def test_single_loss_step_end_to_end_on_cuda() -> None:
    """A few hundred steps on the GPU (the Triton objective, chosen automatically): finite
    losses every step, and the encoder learns z (mean rho on fresh noise rises)."""
    G, D = make_pair("cuda")
    assert ogan_plugin.get_registry().resolve("ogan_objective", "cuda").name == "triton"
    x = data(512, "cuda")
    z_eval = torch.randn(256, NZ, generator=torch.Generator().manual_seed(9)).cuda()
    before = mean_rho(G, D, z_eval)
    opt = torch.optim.Adam([*G.parameters(), *D.parameters()], lr=1e-3, betas=(0.5, 0.999))
    step = SingleLossStep(G, D, loss="hinge", corr_weight=1.0, optimizer=opt)
    results = train(step, x, 300)
    losses = torch.stack([torch.stack([r.loss, r.loss_d, r.loss_g, r.rho]) for r in results])
    assert losses.device.type == "cuda" and bool(torch.isfinite(losses).all())
    after = mean_rho(G, D, z_eval)
    assert step.step_count == 300
    assert after > before + 0.3 and after > 0.5, (before, after)
    assert float(losses[-20:, 3].mean()) > 0.5  # the training batches' rho, too


def _head_dtypes(D: ogan_plugin.OGANDiscriminator) -> list:
    """A forward hook recording the dtype of the widened head's raw outputs."""
    seen: list = []
    D.head.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_autocast_steps_follow_the_float32_step(amp_dtype: torch.dtype) -> None:
    """amp_dtype runs the forwards under CUDA autocast (the head computes in that dtype); with
    float16 the step makes and uses a GradScaler.  The first step matches the float32 step
    within half-precision error, and training stays finite."""
    x = data(64, "cuda")
    z = torch.randn(64, NZ, generator=torch.Generator().manual_seed(3)).cuda()
    runs = {}
    for dt in (None, amp_dtype):
        G, D = make_pair("cuda")
        dtypes = _head_dtypes(D)
        start = [p.detach().clone() for p in [*G.parameters(), *D.parameters()]]
        opt = torch.optim.SGD([*G.parameters(), *D.parameters()], lr=0.05)
        step = SingleLossStep(G, D, loss="qp", optimizer=opt, amp_dtype=dt)
        r = step.step(x, z)
        update = [p.detach() - p0 for p, p0 in zip([*G.parameters(), *D.parameters()], start)]
        runs[dt] = (r, update, dtypes, step)
    (r32, u32, d32, _), (rh, uh, dh, step) = runs[None], runs[amp_dtype]
    assert set(d32) == {torch.float32} and set(dh) == {amp_dtype}
    if amp_dtype == torch.float16:
        assert isinstance(step.grad_scaler, torch.amp.GradScaler)
        assert step.grad_scaler.get_scale() == 65536.0  # no inf/NaN gradients: the scale kept
    else:
        assert step.grad_scaler is None
    tol = 2e-2 if amp_dtype == torch.bfloat16 else 5e-3
    for name in ("loss_d", "loss_g", "rho"):
        a, b = float(getattr(r32, name)), float(getattr(rh, name))
        assert abs(a - b) <= tol * max(1.0, abs(a)), (name, a, b)
    # the update (SGD: lr * gradient, unscaled) agrees with float32's to half-precision accuracy
    # (relative norm of the difference; bf16 keeps 8 bits of mantissa, fp16 11)
    bound = 0.1 if amp_dtype == torch.bfloat16 else 0.02
    for i, (a, b) in enumerate(zip(u32, uh)):
        assert a.norm() > 0, i
        assert (a - b).norm() <= bound * a.norm(), (i, ((a - b).norm() / a.norm()).item())
    more = train(step, x, 30, batch=32)
    assert all(bool(torch.isfinite(torch.stack([r.loss_d, r.loss_g, r.rho])).all()) for r in more)


def test_a_whole_training_step_captured_in_a_cuda_graph_replays_like_eager() -> None:
    """torch.cuda.graph around SingleLossStep.step (static input buffers, Adam with
    capturable=True, check_finite=False: no host read inside the step).  Replays on new data
    give the parameters the same steps give eagerly, within float32 rounding."""
    G, D = make_pair("cuda")
    params = [*G.parameters(), *D.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3, capturable=True)
    step = SingleLossStep(G, D, loss="qp", optimizer=opt, check_finite=False)
    x_all = data(64 * 6, "cuda")
    gz = torch.Generator().manual_seed(5)
    z_all = torch.randn(64 * 6, NZ, generator=gz).cuda()
    x_s, z_s = x_all[:64].clone(), z_all[:64].clone()  # the static input buffers

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as torch.cuda.graph asks
        for _ in range(3):
            step.step(x_s, z_s)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = step.step(x_s, z_s)
    torch.cuda.synchronize()

    # the state after the warm-up: parameters and optimizer state, restored in place below
    saved_params = [p.detach().clone() for p in params]
    saved_state = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in params}

    def restore() -> None:
        with torch.no_grad():
            for p, s in zip(params, saved_params):
                p.copy_(s)
                for k, v in saved_state[id(p)].items():
                    opt.state[p][k].copy_(v)

    batches = [(x_all[64 * i:64 * (i + 1)], z_all[64 * i:64 * (i + 1)]) for i in range(1, 6)]
    restore()
    replayed = []
    for x, z in batches:
        x_s.copy_(x)
        z_s.copy_(z)
        graph.replay()
        replayed.append(torch.stack([static.loss_d, static.loss_g, static.rho]).clone())
    torch.cuda.synchronize()
    graph_params = [p.detach().clone() for p in params]

    restore()
    eager = [torch.stack([r.loss_d, r.loss_g, r.rho]) for r in (step.step(x, z) for x, z in batches)]
    for i, (a, b) in enumerate(zip(replayed, eager)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"step {i}: {m}")
    for i, (a, b) in enumerate(zip(graph_params, params)):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5, msg=lambda m: f"parameter {i}: {m}")
    assert any(not torch.equal(a, s) for a, s in zip(graph_params, saved_params))  # the replays did train
