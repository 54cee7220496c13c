"""The compiled kernels on CUDA streams and in CUDA graphs (``gpu`` marker: these need a GPU;
without one they skip, with the reason)."""

from __future__ import annotations

import pytest
import torch

import ogan_plugin
from ogan_plugin.kernels import pearson as P
from ogan_plugin.kernels import single_loss as S

pytestmark = pytest.mark.gpu


def _inputs(B: int, n: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, n, generator=g)
    e = 0.5 * z + torch.randn(B, n, generator=g)
    e_real = torch.randn(B, n, generator=g) + 0.3
    dist = torch.rand(B, generator=g) + 0.05
    return tuple(t.cuda() for t in (z, e, e_real, dist))


def _all_kernels(z, e, e_real, dist) -> list[torch.Tensor]:
    """Every kernel once: pearson forward/backward, correlation_loss forward/backward, the objective."""
    e1 = e.clone().requires_grad_(True)
    z1 = z.clone().requires_grad_(True)
    rho = ogan_plugin.pearson_correlation(z1, e1, backend="triton")
    gz, ge = torch.autograd.grad(rho, (z1, e1), torch.linspace(-1, 1, len(z), device=z.device))
    e2 = e.clone().requires_grad_(True)
    loss = ogan_plugin.correlation_loss(z, e2, 0.7, backend="triton")
    (ge2,) = torch.autograd.grad(loss, (e2,))
    out = S.ogan_objective_triton(e_real, e, z, dist, "qp", 0.5, 1.5, P.EPS)
    return [rho, gz, ge, loss, ge2, *out]


@pytest.mark.parametrize("B,n", [(7, 33), (64, 1000), (300, 128), (5, 9000)])
def test_a_side_stream_gives_the_default_streams_bits(B: int, n: int) -> None:
    """The launches follow the current stream: on a side stream every result has the same bits
    as on the default stream (one chunked shape, 9000 > 8192, among them), and the ticket the
    forward kernels count with is back at 0 afterwards."""
    args = _inputs(B, n, seed=B + n)
    want = _all_kernels(*args)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = _all_kernels(*args)
        ticket = P._ticket(args[0].device).clone()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    assert int(ticket.item()) == 0
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"result {i} differs on the side stream"


def test_the_kernels_captured_in_a_cuda_graph_replay_like_eager() -> None:
    """Capture every kernel (forward, backward, objective) in one CUDA graph; replays on new
    data in the static inputs give the eager results bit for bit, replay after replay."""
    static_in = _inputs(64, 256, seed=1)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (compiles) off the default stream
        for _ in range(2):
            _all_kernels(*static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = _all_kernels(*static_in)
    for seed in (2, 3, 4):
        fresh = _inputs(64, 256, seed=seed)
        for dst, src in zip(static_in, fresh):
            dst.copy_(src)
        graph.replay()
        want = _all_kernels(*fresh)
        torch.cuda.synchronize()
        for i, (a, b) in enumerate(zip(static_out, want)):
            assert torch.equal(a, b), f"seed {seed}: result {i} of the replay differs from eager"
