"""The wrapped discriminator as a drop-in replacement: attributes, methods, copies, and
frameworks that build their own optimizers (wrap inside the model factory, then attach)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.head import OGANDiscriminator


class FrameworkD(nn.Module):
    """A discriminator carrying what frameworks read: a label type, a resolution, a
    fade-in weight that the training loop sets between forwards, a helper method."""

    def __init__(self) -> None:
        super().__init__()
        self.label_type = "none"
        self.resolution = 8
        self.alpha = 1.0
        self.z_dim = 99  # the wrapper has its own z_dim
        self._private = "inner"
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.LeakyReLU(0.2))
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        return self.head(self.features(x)).view(-1) * self.alpha

    def describe(self) -> str:
        return f"{type(self).__name__} at {self.resolution}px"


def test_attributes_and_methods_the_wrapper_lacks_reach_the_wrapped_network():
    d = FrameworkD()
    wrapped = ogan_plugin.wrap(d, z_dim=5)
    assert wrapped.label_type == "none" and wrapped.resolution == 8
    assert wrapped.describe() == "FrameworkD at 8px"  # bound to the wrapped network
    assert wrapped.z_dim == 5 and wrapped.discriminator.z_dim == 99  # the wrapper's own names win
    assert "label_type" in dir(wrapped) and "describe" in dir(wrapped)
    with pytest.raises(AttributeError, match="'_private'"):
        wrapped._private  # private names are not forwarded
    with pytest.raises(AttributeError, match="no attribute 'nothing', and neither has the wrapped FrameworkD"):
        wrapped.nothing


def test_setting_an_attribute_of_the_wrapped_network_sets_it_there():
    torch.manual_seed(0)
    d = FrameworkD()
    wrapped = ogan_plugin.wrap(d, z_dim=5)
    x = torch.randn(3, 1, 8, 8)
    full = wrapped(x).detach()
    wrapped.alpha = 0.5  # a fade-in loop sets D.alpha: the forward must see it
    assert d.alpha == 0.5 and "alpha" not in wrapped.__dict__
    torch.testing.assert_close(wrapped(x), 0.5 * full)
    wrapped.new_flag = True  # a name D lacks stays on the wrapper
    assert wrapped.__dict__["new_flag"] is True and not hasattr(d, "new_flag")
    wrapped.z_dim = 5
    assert d.z_dim == 99


def test_copies_and_pickles_after_a_forward():
    d = FrameworkD()
    wrapped = ogan_plugin.wrap(d, z_dim=5)
    wrapped(torch.randn(2, 1, 8, 8))  # leaves the head's last output (part of a graph) behind
    clone = copy.deepcopy(wrapped)
    assert clone.label_type == "none" and clone.discriminator is not d
    buf = io.BytesIO()
    torch.save(wrapped, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert isinstance(loaded, OGANDiscriminator) and loaded.describe() == "FrameworkD at 8px"


def test_isinstance_and_state_dict_keys_are_as_documented():
    d = FrameworkD()
    plain_keys = set(d.state_dict())
    wrapped = ogan_plugin.wrap(d, z_dim=5)
    assert isinstance(wrapped, (nn.Module, OGANDiscriminator)) and not isinstance(wrapped, FrameworkD)
    assert isinstance(wrapped.discriminator, FrameworkD)
    keys = set(wrapped.state_dict())
    expected = {f"discriminator.{k}" for k in plain_keys if not k.startswith("head.")}
    expected |= {
        "discriminator.head.layer.weight",
        "discriminator.head.layer.bias",
        "discriminator.head.output_scale",
        "discriminator.head._extra_state",  # the name of its patch reduction (None for a linear head)
    }
    assert keys == expected


class Framework:
    """A trainer in the style of torchgan's: it builds each network from a factory and its
    optimizer from that object's parameters, then runs its own alternating BCE loop."""

    def __init__(self, make_generator, make_discriminator) -> None:
        self.generator = make_generator()
        self.discriminator = make_discriminator()
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=1e-3)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=1e-3)

    def train_iter(self, real: torch.Tensor) -> None:
        assert self.discriminator.label_type == "none"  # frameworks read their own attributes
        bce = nn.functional.binary_cross_entropy_with_logits
        z = torch.randn(real.shape[0], 6)
        fake = self.generator(z)
        self.opt_d.zero_grad()
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        (bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))).backward()
        self.opt_d.step()
        self.opt_g.zero_grad()
        d_fake = self.discriminator(fake)
        bce(d_fake, torch.ones_like(d_fake)).backward()
        self.opt_g.step()


def _generator() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))


def test_wrap_inside_the_model_factory_then_attach():
    torch.manual_seed(1)
    fw = Framework(_generator, lambda: ogan_plugin.wrap(FrameworkD(), z_dim=6))
    held = {id(p) for g in fw.opt_d.param_groups for p in g["params"]}
    head_weight = fw.discriminator.head.layer.weight
    assert head_weight.shape == (6, 16) and id(head_weight) in held  # the optimizer steps the widened head
    hook = ogan_plugin.attach(fw.discriminator, fw.generator, corr_weight=1.0)
    before = head_weight.detach().clone()
    for _ in range(3):
        fw.train_iter(torch.rand(16, 1, 8, 8) * 2 - 1)
    assert hook.calls == 6  # the discriminator's and the generator's update, every iteration
    assert hook.last_rho is not None and not torch.equal(head_weight, before)


def test_wrapping_after_the_framework_built_its_optimizer_leaves_the_head_out():
    fw = Framework(_generator, FrameworkD)
    wrapped = ogan_plugin.wrap(fw.discriminator, z_dim=6)
    held = {id(p) for g in fw.opt_d.param_groups for p in g["params"]}
    assert id(wrapped.head.layer.weight) not in held  # why the factory is the place to wrap


def test_a_view_around_data_parallel_forwards_to_the_network_inside():
    d = FrameworkD()
    wrapped = ogan_plugin.wrap(d, z_dim=5)
    view = OGANDiscriminator(nn.DataParallel(d), "module." + wrapped.head_path, 5)  # how distribute() builds its view
    assert view.label_type == "none" and view.describe() == "FrameworkD at 8px"
    view.alpha = 0.25
    assert d.alpha == 0.25


def test_an_error_inside_the_wrappers_own_property_is_not_answered_by_the_network():
    # D has a `head` attribute of its own (a name many discriminators use), and its scalar
    # head under `classifier.fc`: when that path no longer resolves, `wrapped.head` must
    # raise, not hand back D.head.
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.LeakyReLU(0.2))
            self.classifier = nn.Sequential()
            self.classifier.add_module("fc", nn.Linear(16, 1))
            self.head = "projection"  # something else entirely

        def forward(self, x):
            return self.classifier(self.features(x)).view(-1)

    d = TwoHeads()
    wrapped = ogan_plugin.wrap(d, z_dim=5, head="classifier.fc")
    assert wrapped.head is d.classifier.fc
    d.classifier = nn.Sequential()  # the head replaced after wrap()
    with pytest.raises(AttributeError, match=r"no module at head_path='classifier.fc'.*replaced after wrap"):
        wrapped.head
    assert not hasattr(wrapped, "head")
    assert wrapped.discriminator.head == "projection"  # D's own attribute, read through D


def test_dir_of_a_ddp_view_lists_the_networks_names(one_process_group):
    from ogan_plugin.head import as_wrapped

    d = FrameworkD()
    view = as_wrapped(nn.parallel.DistributedDataParallel(ogan_plugin.wrap(d, z_dim=5)))
    names = dir(view)
    assert {"label_type", "describe", "alpha", "decompose", "score_from"} <= set(names)
    assert "_private" not in names and view.describe() == "FrameworkD at 8px"


def test_a_wrapper_pickled_when_score_from_was_a_plain_attribute_still_loads():
    wrapped = ogan_plugin.wrap(FrameworkD(), z_dim=5, score="head")
    state = dict(wrapped.__dict__)
    state["score_from"] = state.pop("_score_from")  # how earlier versions held the rule
    state["_score_cache"] = state.pop("_score_memory")
    old = OGANDiscriminator.__new__(OGANDiscriminator)
    old.__setstate__(state)
    assert old.score_from == "head" and old._score_cache is wrapped._score_cache
    old.score_from = "auto"
    assert old.score_from == "auto" and "score_from" not in old.__dict__
