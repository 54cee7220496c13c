"""Hook mode follows fakes through the augmentation packages GAN code uses before D:
lightweight-gan's DiffAugment (each policy), its AugWrapper, and kornia's
AugmentationSequential (affine and colour).  Gradients equal adding
``correlation_loss(z_rows, D.decompose(x).raw[fake_rows])`` by hand (the harness is
tests/integrations/hook_parity.py).  Mirrors lightweight-gan 1.2.1 and kornia 0.9.0."""

from __future__ import annotations

import importlib
import importlib.util
import random
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import ogan_plugin

_spec = importlib.util.spec_from_file_location("hook_parity", Path(__file__).parents[1] / "integrations" / "hook_parity.py")
hp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hp)
B = 6


def data(size=16):
    torch.manual_seed(5)
    return torch.randn(B, hp.NZ, dtype=torch.float64), torch.rand(B, 3, size, size, dtype=torch.float64) * 2 - 1


@pytest.fixture(scope="module")
def diff_augment(lightweight_gan):
    return importlib.import_module("lightweight_gan.diff_augment").DiffAugment


@pytest.mark.parametrize("policy", [["color"], ["translation"], ["cutout"], ["color", "translation", "cutout"], ["offset"]])
def test_diffaugment_policies_get_the_by_hand_gradients(diff_augment, policy):
    G, D = hp.pair(size=16)
    z, real = data()
    hp.assert_parity(G, D, z, real, lambda f, r: [(diff_augment(f, types=policy), range(B), range(B))], calls=2)


def test_diffaugment_on_real_and_fake_concatenated(diff_augment):
    G, D = hp.pair(size=16)
    z, real = data()
    pattern = lambda f, r: [(diff_augment(torch.cat([r[:3], f]), types=["color", "translation", "cutout"]), range(3, 3 + B), range(B))]  # noqa: E731
    hp.assert_parity(G, D, z, real, pattern, calls=2)


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_kornia_augmentation_sequential_with_affine_and_colour(p):
    K = pytest.importorskip("kornia.augmentation")
    aug = K.AugmentationSequential(
        K.RandomAffine(degrees=15.0, translate=(0.1, 0.1), scale=(0.9, 1.1), p=p),
        K.ColorJitter(0.2, 0.2, 0.2, 0.05, p=p),
        K.RandomHorizontalFlip(),
    )
    G, D = hp.pair(size=16)
    z, real = data()
    hp.assert_parity(G, D, z, real, lambda f, r: [(aug(f), range(B), range(B))], calls=2)


class TupleD(nn.Module):
    """A discriminator returning a tuple, as lightweight-gan's does: (logits, an auxiliary loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten())
        self.to_logit = nn.Linear(6 * 8 * 8, 1)

    def forward(self, x, calc_aux_loss=False):
        h = self.features(x)
        return self.to_logit(h), (h.pow(2).mean() if calc_aux_loss else None)


def test_augwrapper_augments_then_calls_the_wrapped_discriminator(lightweight_gan, diff_augment):
    """lightweight-gan's AugWrapper(D): a random flip and DiffAugment, then D, returning D's
    tuple; the user's code calls the wrapper, the hook is on D inside it."""
    G, _ = hp.pair(size=16)
    torch.manual_seed(0)
    inner = TupleD().double()
    D = ogan_plugin.wrap(inner, z_dim=hp.NZ, head="to_logit")
    D_aug = lightweight_gan.AugWrapper(inner, 16)
    types = ["color", "translation", "cutout"]
    z, real = data()

    def by_hand(f, r):  # what AugWrapper(prob=1) feeds D, written out for the reference
        assert random.random() < 1.0  # AugWrapper's draw: `if random() < prob`
        return [(diff_augment(lightweight_gan.random_hflip(f, prob=0.5), types=types), range(B), range(B))]

    call = lambda D_, x: D_aug(x, prob=1.0, types=types)[0]  # noqa: E731  (hook mode: the wrapper augments)
    want = hp.step_grads(G, D, z, real, by_hand, reference_weight=0.5)
    with ogan_plugin.attach(D, G, 0.5) as hook:
        got = hp.step_grads(G, D, z, real, lambda f, r: [(f, range(B), range(B))], call=call)
        assert hook.calls == 2
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "name, kept",
    [("RandomRotation", True), ("RandomPerspective", True), ("RandomResizedCrop", True), ("RandomCrop", True),
     ("RandomErasing", True), ("RandomGrayscale", True), ("RandomSharpness", True), ("ColorJiggle", True),
     ("RandomGaussianNoise", False), ("RandomGaussianBlur", False), ("RandomMixUpV2", False)],
)
def test_kornia_transforms_keep_or_lose_the_rows_as_documented(name, kept):
    """What docs/hook-mode.md says of each kornia transform (rows kept, or lost and named)."""
    K = pytest.importorskip("kornia.augmentation")
    from ogan_plugin.provenance import track
    from ogan_plugin.rows import GeneratorCall, Provenance, identity, provenance

    args = {"RandomRotation": (20.0,), "RandomPerspective": (0.3,), "RandomResizedCrop": ((16, 16),), "RandomCrop": ((12, 12),),
            "RandomGaussianBlur": ((3, 3), (0.1, 2.0)), "ColorJiggle": (0.3, 0.3, 0.3, 0.1)}.get(name, ())
    kwargs = {} if name == "RandomMixUpV2" else {"p": 0.7}
    torch.manual_seed(0)
    x = track(torch.rand(B, 3, 16, 16), Provenance((GeneratorCall(torch.randn(B, 4), None, False),), identity(B), False))
    out = getattr(K, name)(*args, **kwargs)(x)
    p = provenance(out[0] if isinstance(out, (tuple, list)) else out)
    if kept:
        assert p.rows == identity(B) and not p.lost
    else:
        assert p.lost and min(p.rows) == -1
