"""``ogan_plugin.enable(trainer)``: dispatch to the trainer adapters, and what it refuses.

The built-in adapters run against the packages themselves in tests/thirdparty
(test_lightweight_gan.py, test_stylegan2_pytorch.py); here a plugin's own adapter shows the
dispatch, with a stand-in trainer that builds its networks itself.
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.integrations import trainers
from ogan_plugin.integrations.trainers import TrainerAdapter, swap_parameters, wrap_once

NZ = 8


class ToyTrainer:
    """A package's trainer: it builds G, D and D's optimizer, and trains them itself."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.G = nn.Sequential(nn.Linear(NZ, 12), nn.Tanh())
        self.D = nn.Sequential(nn.Linear(12, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
        self.D_opt = torch.optim.Adam(self.D.parameters(), lr=1e-3)

    def train(self) -> None:  # the package's own step, which enable() must not change
        z = torch.randn(6, NZ)
        self.D_opt.zero_grad()
        torch.relu(1 + self.D(self.G(z).detach())).mean().backward()
        self.D_opt.step()


def toy_enable(trainer: ToyTrainer, corr_weight="auto") -> ogan_plugin.OGANHook:
    wrapped, old = wrap_once(trainer.D, NZ, "2")
    swap_parameters(trainer.D_opt, old, list(wrapped.head.parameters()))
    return trainers.attach_once(trainer, wrapped, trainer.G, corr_weight=corr_weight)


@pytest.fixture
def toy_plugin():
    plugin = types.SimpleNamespace(
        ogan_trainer_adapters=ogan_plugin.hookimpl(
            lambda: [TrainerAdapter("toy-gan", "test_enable.ToyTrainer", lambda t: isinstance(t, ToyTrainer), toy_enable)]
        )
    )
    reg = ogan_plugin.get_registry()
    reg.register(plugin, name="toy-gan")
    yield
    reg.unregister(name="toy-gan")


def test_an_unknown_trainer_is_refused_naming_what_is_supported() -> None:
    with pytest.raises(TypeError, match=r"does not know a builtins\.object; it supports: "
                       r"lightweight-gan \(lightweight_gan\.Trainer\), stylegan2-pytorch \(stylegan2_pytorch\.Trainer\)"):
        ogan_plugin.enable(object())
    assert "lightweight-gan (lightweight_gan.Trainer)" in trainers.supported_trainers()


def test_a_plugin_adds_a_package_and_enable_dispatches_to_it(toy_plugin) -> None:
    trainer = ToyTrainer()
    old_head = list(trainer.D[2].parameters())
    assert "toy-gan (test_enable.ToyTrainer)" in trainers.supported_trainers()
    hook = ogan_plugin.enable(trainer, corr_weight=0.3)
    assert isinstance(hook, ogan_plugin.OGANHook) and hook.corr_weight == 0.3
    params = trainer.D_opt.param_groups[0]["params"]
    assert not any(p is q for p in params for q in old_head)  # the optimizer trains the widened head
    assert all(any(p is q for q in params) for p in hook.discriminator.head.parameters())
    trainer.train()  # the package's step, unchanged, now with the term
    assert hook.calls == 1
    # enabling again: the same hook, D not wrapped twice
    assert ogan_plugin.enable(trainer, corr_weight=0.3) is hook
    assert sum(isinstance(m, ogan_plugin.OGANHead) for m in trainer.D.modules()) == 1
    assert len(trainer.D_opt.param_groups[0]["params"]) == len(list(trainer.D.parameters()))
    # other weights: a new hook replaces it (never two on one discriminator)
    again = ogan_plugin.enable(trainer, corr_weight=1.0)
    assert again is not hook and not hook.active and again.corr_weight == 1.0
    trainer.train()
    assert again.calls == 1 and hook.calls == 1
    again.detach()


def test_a_discriminator_wrapped_by_the_user_is_not_wrapped_again(toy_plugin) -> None:
    trainer = ToyTrainer()
    mine = ogan_plugin.wrap(trainer.D, z_dim=NZ, generator=trainer.G)
    head = mine.head
    hook = ogan_plugin.enable(trainer)
    assert hook is ogan_plugin.OGANHook.of(mine)  # the user's hook: same settings, kept
    assert hook.discriminator.head is head
    with pytest.raises(ValueError, match="already wrapped with z_dim=8, but the generator's latent size is 4"):
        wrap_once(trainer.D, 4, "2")
    hook.detach()


def test_swap_parameters_keeps_the_other_groups_and_drops_the_old_state() -> None:
    a, b, old = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [a]}, {"params": [b, old], "lr": 0.1}])
    opt.state[old]["step"] = torch.tensor(1.0)
    new = nn.Parameter(torch.zeros(4))
    swap_parameters(opt, [old], [new])
    assert opt.param_groups[0]["params"] == [a] and opt.param_groups[1]["params"] == [b, new]
    assert old not in opt.state and opt.param_groups[1]["lr"] == 0.1
