"""Hook mode's correlation weights (ogan_plugin.corr_weights): the ramp and the "auto" default.

In float64, a Ramp gives at each step exactly the gradients of a fixed weight equal to its
value at that step, added by hand to both losses; an explicit number still gives exactly the
old fixed-weight gradients at every step.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.corr_weights import AUTO_RAMP_STEPS, Ramp, auto_weight, resolve_hook_weights, weight_at

NZ = 6


def pair():
    torch.manual_seed(4)
    G = nn.Sequential(nn.Linear(NZ, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    D = nn.Sequential(nn.Linear(10, 12), nn.LeakyReLU(0.2), nn.Linear(12, 1), nn.Sigmoid()).double()
    return G, ogan_plugin.wrap(D, z_dim=NZ)


def example_step(G, D, z, x, weight_d: float = 0.0, weight_g: float = 0.0):
    """The DCGAN example's step (BCE on D's Sigmoid); adds the term by hand with the given
    weights.  Returns (D's grads, G's grads)."""
    bce = nn.BCELoss()
    ones, zeros = torch.ones(len(x), dtype=x.dtype), torch.zeros(len(x), dtype=x.dtype)
    D.zero_grad()
    G.zero_grad()
    bce(D(x).view(-1), ones).backward()
    fake = G(z)
    out = D.decompose(fake.detach())
    (bce(out.output.view(-1), zeros) + ogan_plugin.correlation_loss(z, out.raw, weight_d)).backward()
    d_grads = [p.grad.clone() for p in D.parameters()]
    D.zero_grad()
    out = D.decompose(fake)
    (bce(out.output.view(-1), ones) + ogan_plugin.correlation_loss(z, out.raw, weight_g)).backward()
    return d_grads, [p.grad.clone() for p in G.parameters()]


def assert_same(got, want) -> None:
    for a, b in zip(got[0] + got[1], want[0] + want[1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def batches(n: int):
    g = torch.Generator().manual_seed(7)
    return [(torch.randn(9, NZ, generator=g, dtype=torch.float64), torch.randn(9, 10, generator=g, dtype=torch.float64))
            for _ in range(n)]


def test_ramp_values_and_checks() -> None:
    r = Ramp(5, 4)
    assert r.weight == 5.0 and isinstance(r.weight, float)
    assert [r.at(k) for k in range(6)] == [0.0, 1.25, 2.5, 3.75, 5.0, 5.0]
    assert weight_at(r, 2) == 2.5 and weight_at(0.5, 1000) == 0.5
    for weight, steps in ((-1, 4), (float("inf"), 4), ("5", 4), (True, 4), (5, 0), (5, 2.0), (5, True)):
        with pytest.raises(ValueError, match="Ramp"):
            Ramp(weight, steps)


def test_a_ramp_gives_the_fixed_weight_of_each_step_exactly() -> None:
    G, D = pair()
    data = batches(5)
    with ogan_plugin.attach(D, G, corr_weight=Ramp(2.0, 3), corr_weight_g=Ramp(0.6, 2)) as hook:
        got = []
        for k, (z, x) in enumerate(data):
            got.append(example_step(G, D, z, x))
            with torch.no_grad():
                G(z)  # sampling without gradients does not advance the ramp
        assert hook.generator_steps == 5
    for k, (z, x) in enumerate(data):
        assert_same(got[k], example_step(G, D, z, x, 2.0 * min(1, k / 3), 0.6 * min(1, k / 2)))


def test_auto_is_a_ramp_to_a_weight_that_grows_with_z_dim() -> None:
    assert auto_weight(100) == 5.0 and auto_weight(16) == 2.0 and auto_weight(32) == pytest.approx(2.828427, abs=1e-6)
    G, D = pair()
    D = ogan_plugin.wrap(D, z_dim=NZ, generator=G)  # the one line
    hook = ogan_plugin.OGANHook.of(D)
    want = Ramp(auto_weight(NZ), AUTO_RAMP_STEPS)
    assert hook.corr_weight == hook.corr_weight_g == want and repr(want) in repr(hook)
    assert ogan_plugin.attach(D, G, corr_weight="auto") is hook  # the same rule: the attached hook
    with pytest.raises(ValueError, match="already attached"):
        ogan_plugin.attach(D, G, corr_weight=0.5)
    z, x = batches(1)[0]
    got = [example_step(G, D, z, x) for _ in range(3)]
    hook.detach()
    for k in range(3):
        assert_same(got[k], example_step(G, D, z, x, want.at(k), want.at(k)))


def test_an_explicit_number_gives_exactly_the_fixed_weight_gradients_at_every_step() -> None:
    G, D = pair()
    data = batches(3)
    with ogan_plugin.attach(D, G, corr_weight=0.5, corr_weight_g=2) as hook:
        assert (hook.corr_weight, hook.corr_weight_g) == (0.5, 2.0)
        got = [example_step(G, D, z, x) for z, x in data]
    for k, (z, x) in enumerate(data):
        assert_same(got[k], example_step(G, D, z, x, 0.5, 2.0))


def test_resolve_hook_weights_and_bad_values() -> None:
    auto = Ramp(auto_weight(8), AUTO_RAMP_STEPS)
    assert resolve_hook_weights("auto", None, 8) == (auto, auto)
    assert resolve_hook_weights(0.5, None, 8) == (0.5, 0.5) and isinstance(resolve_hook_weights(1, None, 8)[0], float)
    assert resolve_hook_weights(0.5, "auto", 8) == (0.5, auto)
    assert resolve_hook_weights(Ramp(2, 10), 1, 8) == (Ramp(2.0, 10), 1.0)
    for bad in (-1, "strong", None, True, float("nan")):
        with pytest.raises(ValueError, match="corr_weight"):
            resolve_hook_weights(bad, None, 8)
    for bad in (-2, "x"):
        with pytest.raises(ValueError, match="corr_weight_g"):
            resolve_hook_weights(0.5, bad, 8)
    G, D = pair()
    with pytest.raises(ValueError, match="corr_weight"):
        ogan_plugin.attach(D, G, corr_weight="strong")
