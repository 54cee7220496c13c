"""The least host work an eager O-GAN step can do, written by hand, next to the plain GAN
step and the plugin's variants: what bounds the host-cost targets on this machine.

``by_hand_alternating`` is the alternating O-GAN loop with no plugin at all: the plain
discriminator with a widened last layer, scores as row means, and the correlation term in
torch ops with its gradient computed in the forward (one cheap autograd node).
``by_hand_single`` is the single-loss step by hand: one forward per batch, the D loss's
backward to D's parameters, the G loss's product to G's output, one optimizer step.
Two more variants of the alternating loop by hand take one piece from the plugin each, to
show what each costs: ``by_hand_with_decompose`` (``wrap(D)`` and ``D.decompose``) and
``by_hand_with_correlation_loss`` (``ogan_plugin.correlation_loss``: float64 NumPy on the CPU).
Same tiny networks, batch, noise and optimizer as ``ogan-plugin bench --step --host-cost``,
interleaved, process CPU time, one thread.

    python benchmarks/host_floor.py --iters 400 --warmup 40
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.bench.step import PAIRS, _adam, _build
from ogan_plugin.losses import get_loss

B = Z = 16


class _Given(torch.autograd.Function):
    """``value``, whose gradient in ``e`` is ``g`` (computed in the forward)."""

    @staticmethod
    def forward(ctx, e: torch.Tensor, value: torch.Tensor, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.g = g
        return value

    @staticmethod
    def backward(ctx, go: torch.Tensor):  # type: ignore[override]
        return ctx.g * go, None, None


def correlation_by_hand(z: torch.Tensor, e: torch.Tensor, w: float = 0.5, eps: float = 1e-8) -> torch.Tensor:
    """``-w * mean(rho(z, e))`` in the fewest torch calls (no overflow guard)."""
    with torch.no_grad():
        zc, ec = z - z.mean(1, keepdim=True), e - e.mean(1, keepdim=True)
        en = torch.linalg.vector_norm(ec, dim=1, keepdim=True).clamp_min_(eps)
        u = zc / torch.linalg.vector_norm(zc, dim=1, keepdim=True).clamp_min_(eps)
        v = ec / en
        rho = (u * v).sum(1, keepdim=True)
        g = torch.addcmul(u, rho, v, value=-1).mul_((-w / z.shape[0]) / en)
        value = rho.mean() * -w
    return _Given.apply(e, value, g)


def _widened(D0: nn.Module) -> nn.Module:
    D = copy.deepcopy(D0)
    D[-1] = nn.Linear(D[-1].in_features, Z)
    return D


def by_hand_alternating(G0: nn.Module, D0: nn.Module, decompose: bool = False, correlation=None):
    """The alternating loop by hand; ``decompose``: D wrapped, scores and rows from
    ``D.decompose``; ``correlation``: the correlation term (default :func:`correlation_by_hand`)."""
    correlation = correlation or correlation_by_hand
    G = copy.deepcopy(G0)
    D = ogan_plugin.wrap(copy.deepcopy(D0), Z) if decompose else _widened(D0)
    opt_d, opt_g, adv = _adam(D.parameters()), _adam(G.parameters()), get_loss("hinge")

    def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if decompose:
            d = D.decompose(x)
            return d.score, d.raw
        e = D(x)
        return e.mean(1), e

    def step(x: torch.Tensor) -> None:
        z = torch.randn(x.shape[0], Z)
        fake = G(z)
        opt_d.zero_grad(set_to_none=True)
        (s_real, _), (s_fake, e_fake) = encode(x), encode(fake.detach())
        (adv.d_loss(s_real, s_fake, None).mean() + correlation(z, e_fake)).backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        s_gen, e_gen = encode(fake)
        (adv.g_loss(s_gen).mean() + correlation(z, e_gen)).backward()
        opt_g.step()

    return step


def by_hand_single(G0: nn.Module, D0: nn.Module):
    G, D = copy.deepcopy(G0), _widened(D0)
    d_params = list(D.parameters())
    opt, adv = _adam([*G.parameters(), *d_params]), get_loss("hinge")

    def step(x: torch.Tensor) -> None:
        z = torch.randn(x.shape[0], Z)
        opt.zero_grad(set_to_none=True)
        fake = G(z)
        leaf = fake.detach().requires_grad_()
        e_real, e_fake = D(x), D(leaf)
        corr = correlation_by_hand(z, e_fake)
        s_fake = e_fake.mean(1)
        loss_d = adv.d_loss(e_real.mean(1), s_fake, None).mean() + corr
        loss_g = adv.g_loss(s_fake).mean() + corr
        torch.autograd.backward(loss_d, inputs=d_params, retain_graph=True)
        (grad_x,) = torch.autograd.grad(loss_g, leaf)
        fake.backward(grad_x)
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    factory, shape, z_shape = PAIRS["tiny"]
    torch.manual_seed(0)
    G0, D0 = factory(Z)
    x = torch.rand(B, *shape) * 2 - 1
    cpu = torch.device("cpu")
    steps = {v: _build(v, G0, D0, Z, z_shape(Z), "hinge", None, cpu)
             for v in ("plain_alternating", "ogan_alternating", "hook", "single_split")}
    steps["by_hand_alternating"] = by_hand_alternating(G0, D0)
    steps["by_hand_with_decompose"] = by_hand_alternating(G0, D0, decompose=True)
    steps["by_hand_with_correlation_loss"] = by_hand_alternating(
        G0, D0, correlation=lambda z, e: ogan_plugin.correlation_loss(z, e, 0.5))
    steps["by_hand_single"] = by_hand_single(G0, D0)
    names, times = list(steps), {v: [] for v in steps}
    for r in range(args.warmup + args.iters):
        for v in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.process_time()
            steps[v](x)
            if r >= args.warmup:
                times[v].append(time.process_time() - t0)
    base = statistics.median(times["plain_alternating"])
    print(f"tiny pair, batch {B}, z {Z}, hinge, Adam, 1 thread, {args.iters} interleaved rounds, process CPU time")
    print(f"{'variant':30s} {'median us':>10s} {'x plain':>8s}")
    for v in names:
        med = statistics.median(times[v])
        print(f"{v:30s} {1e6 * med:10.0f} {med / base:8.3f}")


if __name__ == "__main__":
    main()
