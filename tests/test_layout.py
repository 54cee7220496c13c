"""Generators that take (B, nz, 1, 1): z_shape= on every function that feeds G a code,
the layout inferred from hook mode and SingleLossStep, and the one error naming z_shape.

The generator is the PyTorch DCGAN example's layout (pytorch/examples dcgan/main.py:
``ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False)`` first, BatchNorm, ReLU, ...,
Tanh), shrunk to 8x8 images.  Every result must equal the same function run on a flat
view of that generator (``FlatG``: the same module fed ``z.view(B, nz, 1, 1)``), which
takes ``(B, nz)`` codes as the functions always did.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin import evaluate as ev
from ogan_plugin.layout import GeneratorFeed, Layout, register_layout_source, remember_layout, resolve_z_shape

NZ, NGF, NDF, NC = 8, 4, 4, 1
ZS = (NZ, 1, 1)


def dcgan_generator() -> nn.Module:
    """The DCGAN example's Generator, two stages (4x4 -> 8x8)."""
    return nn.Sequential(
        nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(NGF * 8), nn.ReLU(True),
        nn.ConvTranspose2d(NGF * 8, NC, 4, 2, 1, bias=False), nn.Tanh(),
    )


def dcgan_discriminator() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(NC, NDF, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(NDF, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
    )


class FlatG(nn.Module):
    """The same generator, taking flat codes (B, nz): the reference."""

    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        self.g = g

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.g(z.view(z.shape[0], NZ, 1, 1))


@pytest.fixture
def pair():
    torch.manual_seed(0)
    G, D = dcgan_generator(), ogan_plugin.wrap(dcgan_discriminator(), z_dim=NZ)
    G(torch.randn(16, *ZS))  # running BatchNorm statistics that are not the init's
    return G.eval(), D.eval()


@pytest.fixture
def digits():
    torch.manual_seed(1)
    x = torch.rand(40, NC, 8, 8) * 2 - 1
    y = torch.arange(40) % 4
    x = x + y.view(-1, 1, 1, 1).float() * 0.3  # classes a pixel classifier can tell apart
    return x, y


def test_raw_pytorch_error_becomes_one_error_naming_z_shape(pair) -> None:
    G, D = pair
    x = torch.rand(4, NC, 8, 8)
    with pytest.raises(ValueError, match=r"z_shape=\(8, 1, 1\)") as info:
        ogan_plugin.reconstruct(G, D, x)
    assert "(4, 8)" in str(info.value) and "conv_transpose2d" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)  # the generator's own error, chained


@pytest.mark.parametrize(
    "call",
    [
        lambda G, D, x: ogan_plugin.reconstruct(G, D, x),
        lambda G, D, x: ogan_plugin.interpolate(G, D, x, x, 3),
        lambda G, D, x: ogan_plugin.invert(G, D, x, steps=2),
        lambda G, D, x: ev.generate(G, NZ, 8),
        lambda G, D, x: ev.mean_correlation(G, D, 8),
        lambda G, D, x: ev.reconstruct_batched(G, D, x),
        lambda G, D, x: ev.reconstruction_error(G, D, x),
        lambda G, D, x: ev.steps_to_quality(G, D, x, steps=2, restarts=1),
    ],
    ids=["reconstruct", "interpolate", "invert", "generate", "mean_correlation", "reconstruct_batched",
         "reconstruction_error", "steps_to_quality"],
)
def test_every_function_names_z_shape_when_the_generator_rejects_flat_codes(pair, call) -> None:
    G, D = pair
    with pytest.raises(ValueError, match="z_shape"):
        call(G, D, torch.rand(4, NC, 8, 8))


def test_reconstruct_and_interpolate_take_z_shape(pair) -> None:
    G, D = pair
    x, x2 = torch.rand(5, NC, 8, 8), torch.rand(5, NC, 8, 8)
    assert torch.equal(ogan_plugin.reconstruct(G, D, x, z_shape=ZS), ogan_plugin.reconstruct(FlatG(G), D, x))
    got = ogan_plugin.interpolate(G, D, x, x2, 4, z_shape=ZS)
    assert got.shape == (5, 4, NC, 8, 8)
    assert torch.equal(got, ogan_plugin.interpolate(FlatG(G), D, x, x2, 4))


def test_invert_takes_z_shape_and_returns_codes_in_the_generators_layout(pair) -> None:
    G, D = pair
    x = torch.rand(6, NC, 8, 8)
    seen = []
    got = ogan_plugin.invert(G, D, x, steps=5, z_shape=ZS, callback=lambda t, z: seen.append(z.shape))
    want = ogan_plugin.invert(FlatG(G), D, x, steps=5)
    assert got.z.shape == got.start.shape == (6, *ZS) and seen[0] == (6, *ZS)
    assert torch.equal(got.z.flatten(1), want.z) and torch.equal(got.start.flatten(1), want.start)
    assert torch.equal(got.history, want.history) and torch.equal(got.reconstruction, want.reconstruction)
    with torch.no_grad():
        assert torch.equal(G(got.z), got.reconstruction)  # G takes the result as it is
    # an init in either layout; random starts with restarts and batches
    for init in (want.start, got.start):
        assert torch.equal(ogan_plugin.invert(G, D, x, steps=2, init=init, z_shape=ZS).z.flatten(1),
                           ogan_plugin.invert(FlatG(G), D, x, steps=2, init=want.start).z)
    r = ogan_plugin.invert(G, D, x, steps=3, init="random", restarts=2, batch_size=4, z_shape=ZS)
    assert torch.equal(r.z.flatten(1), ogan_plugin.invert(FlatG(G), D, x, steps=3, init="random", restarts=2,
                                                          batch_size=4).z)
    with pytest.raises(ValueError, match="init must have shape"):
        ogan_plugin.invert(G, D, x, steps=1, init=torch.zeros(6, NZ, 2), z_shape=ZS)


def test_evaluate_helpers_take_z_shape(pair, digits) -> None:
    G, D = pair
    x, y = digits
    flat = FlatG(G)
    assert torch.equal(ev.generate(G, NZ, 20, z_shape=ZS), ev.generate(flat, NZ, 20))
    assert ev.mean_correlation(G, D, 50, z_shape=ZS) == ev.mean_correlation(flat, D, 50)
    assert torch.equal(ev.reconstruct_batched(G, D, x, z_shape=ZS), ev.reconstruct_batched(flat, D, x))
    assert ev.reconstruction_error(G, D, x, z_shape=ZS) == ev.reconstruction_error(flat, D, x)
    clf = ev.PixelClassifier().fit(x, y)
    assert ev.class_agreement(clf, G, D, x, z_shape=ZS) == ev.class_agreement(clf, flat, D, x)
    assert ev.sample_quality(G, clf, x, NZ, 30, z_shape=ZS) == ev.sample_quality(flat, clf, x, NZ, 30)
    got = ev.evaluate(G, D, (x[:30], y[:30]), (x[30:], y[30:]), n_samples=30, z_shape=ZS)
    want = ev.evaluate(flat, D, (x[:30], y[:30]), (x[30:], y[30:]), n_samples=30)
    assert got.as_dict() == want.as_dict()
    s_got = ev.steps_to_quality(G, D, x[:6], steps=3, restarts=2, z_shape=ZS)
    s_want = ev.steps_to_quality(flat, D, x[:6], steps=3, restarts=2)
    assert s_got.curves == s_want.curves


def test_hook_mode_makes_the_layout_known(pair) -> None:
    G, D = pair
    x = torch.rand(5, NC, 8, 8)
    hook = ogan_plugin.attach(D, G)
    assert hook.z_shape is None  # not seen yet: the functions still fall back to flat codes
    with pytest.raises(ValueError, match="z_shape"):
        ogan_plugin.reconstruct(G, D, x)
    G.train()
    fake = G(torch.randn(4, *ZS))  # one training call is enough
    D(fake.detach())
    G.eval()
    assert hook.z_shape == ZS and ogan_plugin.OGANHook.of(D).z_shape == ZS
    want = ogan_plugin.reconstruct(FlatG(G), D, x)
    assert torch.equal(ogan_plugin.reconstruct(G, D, x), want)
    assert ogan_plugin.invert(G, D, x, steps=1).z.shape == (5, *ZS)
    assert torch.equal(ev.generate(G, NZ, 10), ev.generate(FlatG(G), NZ, 10))  # G alone: found from G
    ema = ogan_plugin.EMA(G, 0.9).module  # a copy of G: found through D
    assert torch.equal(ogan_plugin.reconstruct(ema, D, x), ogan_plugin.reconstruct(FlatG(ema), D, x))
    assert ev.evaluate(G, D, x[:3], x[3:], n_samples=10).mean_rho == ev.mean_correlation(FlatG(G), D, 10)
    # an explicit z_shape wins over the known one (and G's own error is left as it is)
    with pytest.raises(RuntimeError, match="conv_transpose2d"):
        ogan_plugin.reconstruct(G, D, x, z_shape=(NZ,))
    hook.detach()
    del hook, ema
    gc.collect()
    assert torch.equal(ogan_plugin.reconstruct(G, D, x), want)  # still known after detach


def test_wrap_with_generator_one_line_then_reconstruct(pair) -> None:
    """The new user's path: the one line, a step of the example's loop, then reconstruct."""
    torch.manual_seed(2)
    G = dcgan_generator()
    D = ogan_plugin.wrap(dcgan_discriminator(), z_dim=NZ, generator=G)
    fake = G(torch.randn(4, NZ, 1, 1))
    nn.BCELoss()(D(fake).view(-1), torch.ones(4)).backward()
    x = torch.rand(3, NC, 8, 8)
    assert ogan_plugin.reconstruct(G.eval(), D.eval(), x).shape == x.shape


def test_single_loss_step_built_with_z_shape_makes_the_layout_known(pair) -> None:
    G, D = pair
    x = torch.rand(5, NC, 8, 8)
    ogan_plugin.SingleLossStep(G, D, loss="bce")  # without z_shape= it records nothing
    with pytest.raises(ValueError, match="z_shape"):
        ogan_plugin.reconstruct(G, D, x)
    ogan_plugin.SingleLossStep(G, D, loss="bce", z_shape=ZS)
    assert torch.equal(ogan_plugin.reconstruct(G, D, x), ogan_plugin.reconstruct(FlatG(G), D, x))
    assert torch.equal(ev.generate(G, NZ, 10), ev.generate(FlatG(G), NZ, 10))


def test_resolve_z_shape_checks_and_order() -> None:
    class Source:
        z_shape = None

    G, D = nn.Linear(1, 1), nn.Linear(1, 1)
    other = nn.Linear(1, 1)
    remember_layout((4, 1, 1, 1), other)
    assert resolve_z_shape(None, 4, other) == Layout((4, 1, 1, 1), True)
    assert resolve_z_shape(None, 4, G, D) == Layout((4,), False)
    assert resolve_z_shape([4, 1, 1], 4, G) == Layout((4, 1, 1), True)
    src = Source()
    register_layout_source(src, G, D)
    assert resolve_z_shape(None, 4, G) == Layout((4,), False)  # the source does not know it yet
    src.z_shape = (4, 1)
    assert resolve_z_shape(None, 4, G) == Layout((4, 1), True)
    assert resolve_z_shape(None, 4, nn.Linear(1, 1), D) == Layout((4, 1), True)  # through D
    assert resolve_z_shape(None, 5, G) == Layout((5,), False)  # another z_dim: not this layout
    register_layout_source(src, object.__new__(type("Slotted", (), {"__slots__": ()})))  # not weak-referenceable
    del src
    gc.collect()
    assert resolve_z_shape(None, 4, G) == Layout((4,), False)  # a source that is gone counts no more
    for bad, err in (((4, 2), ValueError), ((0, 4), ValueError), ((4.0,), ValueError), ("44", TypeError),
                     (4, TypeError), ((), ValueError), ((True, 4), ValueError)):
        with pytest.raises(err, match="z_shape"):
            resolve_z_shape(bad, 4)


def test_feed_checks_only_the_first_call_and_only_the_flat_fallback() -> None:
    calls = []

    def g(z):
        calls.append(z.shape)
        if len(calls) > 1:
            raise RuntimeError("later failure")
        return z

    feed = GeneratorFeed(g, Layout((3,), False))
    feed(torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match="later failure"):  # raw after the first success
        feed(torch.zeros(2, 3))

    def bad(z):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):  # a known layout: the error as it is
        GeneratorFeed(bad, Layout((3, 1, 1), True))(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="z_shape") as info:
        GeneratorFeed(bad, Layout((3,), False))(torch.zeros(2, 3))
    assert str(info.value.__cause__) == "shape mismatch"


def test_invert_command_outputs_keep_flat_codes(tmp_path, pair) -> None:
    """``ogan-plugin invert``'s writer takes an Inversion in G's layout; codes.npz holds rows."""
    from ogan_plugin.demo.invert import write_outputs

    G, D = pair
    x = torch.rand(3, NC, 8, 8)
    result = ogan_plugin.invert(G, D, x, steps=2, z_shape=ZS)
    write_outputs(tmp_path, G, x, ["a", "b", "c"], result, grid=3)
    codes = np.load(tmp_path / "codes.npz")
    assert codes["z"].shape == (3, NZ) and codes["encoder"].shape == (3, NZ)
    np.testing.assert_array_equal(codes["z"], result.z.flatten(1).numpy())
