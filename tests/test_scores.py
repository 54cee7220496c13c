"""How the O-GAN losses pick the score from D's output (ogan_plugin.scores, wrap(score=))."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin import losses as L
from ogan_plugin.training import ROUTINGS, single_loss

NZ = 5


def features() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.LeakyReLU(0.2))


class TupleD(nn.Module):
    """lightweight-gan style: (logits, aux_logits, aux_loss); only the logits use the head."""

    def __init__(self) -> None:
        super().__init__()
        self.features, self.to_logits, self.aux = features(), nn.Linear(10, 1), nn.Linear(10, 3)

    def forward(self, x):
        h = self.features(x)
        return self.to_logits(h).squeeze(1), self.aux(h), h.pow(2).mean()


class DictD(nn.Module):
    """StudioGAN style: a dict whose first entry is the features, the score a projection."""

    def __init__(self, n_classes: int = 4) -> None:
        super().__init__()
        self.features, self.linear1, self.embedding = features(), nn.Linear(10, 1), nn.Embedding(n_classes, 10)

    def forward(self, x, label):
        h = self.features(x)
        adv = self.linear1(h).squeeze(1) + (self.embedding(label) * h).sum(1)
        return {"h": h, "adv_output": adv, "label": label}


Out = namedtuple("Out", ["features", "score"])


class NamedTupleD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features, self.head = features(), nn.Linear(10, 1)

    def forward(self, x):
        h = self.features(x)
        return Out(h, self.head(h))


def data(n: int = 6):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 12, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


def test_plain_discriminator_score_is_the_head_mean_and_its_output():
    torch.manual_seed(0)
    D = ogan_plugin.wrap(nn.Sequential(features(), nn.Linear(10, 1)).double(), NZ)
    x, _ = data()
    d = D.decompose(x)
    torch.testing.assert_close(d.score, d.raw.mean(1), rtol=0, atol=0)
    torch.testing.assert_close(d.score, d.output.view(-1), rtol=0, atol=0)
    torch.testing.assert_close(d.code, d.raw - d.raw.mean(1, keepdim=True), rtol=0, atol=0)


@pytest.mark.parametrize("routing", ROUTINGS)
def test_a_discriminator_ending_in_a_sigmoid_trains_on_the_logit(routing):
    # D's output is a probability; the losses want the logit, the head's mean.
    torch.manual_seed(0)
    D = ogan_plugin.wrap(nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 1), nn.Sigmoid()).double(), NZ)
    G = nn.Sequential(nn.Linear(NZ, 12), nn.Tanh()).double()
    x, _ = data()
    z = torch.randn(6, NZ, dtype=torch.float64)
    d = D.decompose(x)
    torch.testing.assert_close(d.score, d.raw.mean(1), rtol=0, atol=0)
    torch.testing.assert_close(torch.sigmoid(d.score), d.output.view(-1))
    # gradients: the alternating BCE update on the logit
    fake = G(z)
    r, f = D.decompose(x), D.decompose(fake.detach())
    loss_d = L.bce_d_loss(r.raw.mean(1), f.raw.mean(1)) + ogan_plugin.correlation_loss(z, f.raw, 0.5)
    want = torch.autograd.grad(loss_d, list(D.parameters()))
    single_loss(G, D, x, z, "bce", routing=routing).backward()
    for p, w in zip(D.parameters(), want):
        torch.testing.assert_close(p.grad, w, rtol=1e-9, atol=1e-12)
    # score="output" takes the probability as it is (what "auto" avoids)
    D.score_from = "output"
    torch.testing.assert_close(D.decompose(x).score, D.decompose(x).output.view(-1))


def test_half_precision_output_gets_the_float32_head_mean_and_sigmoid_is_recognised():
    torch.manual_seed(0)
    for tail in ([], [nn.Sigmoid()]):
        D = ogan_plugin.wrap(nn.Sequential(features(), nn.Linear(10, 1), *tail).to(torch.bfloat16), NZ)
        d = D.decompose(data()[0].to(torch.bfloat16))
        assert d.score.dtype == torch.float32
        torch.testing.assert_close(d.score, d.raw.float().mean(1), rtol=1e-6, atol=1e-6)


def test_tuple_output_uses_the_element_that_comes_from_the_head():
    torch.manual_seed(0)
    D = ogan_plugin.wrap(TupleD().double(), NZ)
    x, _ = data()
    with torch.no_grad():  # without a graph: the element equal to the head's mean
        d = D.decompose(x)
    torch.testing.assert_close(d.score, d.raw.mean(1))
    assert isinstance(d.output, tuple) and len(d.output) == 3
    D.score_from = 1  # the aux logits: not computed from the head
    with pytest.raises(ValueError, match="score=1 names an element of D's output that does not come from the widened head"):
        D.decompose(x)
    D.score_from = 2
    with torch.no_grad(), pytest.raises(ValueError, match=r"score \(element 2 of D's output\) has shape \(\) for a batch of 6"):
        D.decompose(x)
    D.score_from = 5
    with pytest.raises(ValueError, match="score=5 is out of range: the discriminator returns a tuple of 3"):
        D.decompose(x)
    D.score_from = "logits"
    with pytest.raises(ValueError, match="score='logits' names a key, but the discriminator returns a tuple"):
        D.decompose(x)
    D.score_from = "output"
    with pytest.raises(ValueError, match="score='output' needs a discriminator that returns a tensor"):
        D.decompose(x)


def test_an_element_computed_beside_the_raw_outputs_from_the_head_counts():
    # A patch head's score map and its per-image raw outputs are two reductions of one
    # widened map: the map does not pass through `raw`, but it uses the head's weights.
    class Beside(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features, self.head = features(), nn.Linear(10, 1)

        def forward(self, x):
            h = self.features(x)
            self.head(h)  # the head runs (raw is recorded) ...
            widened = self.head.layer(h)  # ... and the score is another reduction of its layer
            return h, widened.mean(1)

    torch.manual_seed(0)
    D = ogan_plugin.wrap(Beside().double(), NZ)
    x, _ = data()
    d = D.decompose(x)
    torch.testing.assert_close(d.score, d.output[1], rtol=0, atol=0)
    assert D._score_cache[("tuple", 2)] == 1


def test_dict_output_projection_found_through_the_graph_and_remembered():
    torch.manual_seed(0)
    D = ogan_plugin.wrap(DictD().double(), NZ)
    x, y = data()
    with torch.no_grad(), pytest.raises(ValueError, match="no tensor in the discriminator's output comes from its head"):
        D.decompose(x, y)  # no graph, and the projection is not the head's mean
    d = D.decompose(x, y)
    torch.testing.assert_close(d.score, d.output["adv_output"], rtol=0, atol=0)
    with torch.no_grad():  # remembered
        torch.testing.assert_close(D.decompose(x, y).score, d.output["adv_output"].detach(), rtol=0, atol=0)
    named = ogan_plugin.wrap(DictD().double(), NZ, score="adv_output")
    with torch.no_grad():
        dn = named.decompose(x, y)
    torch.testing.assert_close(dn.score, dn.output["adv_output"], rtol=0, atol=0)
    named.score_from = "logits"
    with pytest.raises(ValueError, match=r"score='logits' is not a key of the discriminator's output; its keys: \['h', 'adv_output', 'label'\]"):
        named.decompose(x, y)
    named.score_from = "h"
    with pytest.raises(ValueError, match=r"score \(element 'h' of D's output\) has shape \(6, 10\)|does not come from the widened head"):
        named.decompose(x, y)


def test_dict_output_trains_like_the_reference():
    torch.manual_seed(0)
    D = ogan_plugin.wrap(DictD().double(), NZ)
    G = nn.Sequential(nn.Linear(NZ, 12), nn.Tanh()).double()

    class CondG(nn.Module):
        def __init__(self):
            super().__init__()
            self.g = G

        def forward(self, z, label):
            return self.g(z)

    Gc = CondG()
    x, y = data()
    z = torch.randn(6, NZ, dtype=torch.float64)
    fake = Gc(z, y)
    r, f = D.decompose(x, y), D.decompose(fake.detach(), y)
    loss_d = L.hinge_d_loss(r.output["adv_output"], f.output["adv_output"]) + ogan_plugin.correlation_loss(z, f.raw, 0.5)
    want = torch.autograd.grad(loss_d, list(D.parameters()))
    single_loss(Gc, D, x, z, "hinge", y=y).backward()
    for p, w in zip(D.parameters(), want):
        torch.testing.assert_close(p.grad, w, rtol=1e-9, atol=1e-12)


def test_namedtuple_keys_and_patch_maps():
    torch.manual_seed(0)
    D = ogan_plugin.wrap(NamedTupleD().double(), NZ, score="score")
    x, _ = data()
    d = D.decompose(x)
    torch.testing.assert_close(d.score, d.raw.mean(1))

    class MapD(nn.Module):  # a per-sample map after the head: averaged per sample
        def __init__(self):
            super().__init__()
            self.features, self.head = features(), nn.Linear(10, 1)

        def forward(self, x):
            s = self.head(self.features(x))
            return torch.cat([s, s + 1.0], 1)  # (B, 2)

    D2 = ogan_plugin.wrap(MapD().double(), NZ)
    d2 = D2.decompose(x)
    torch.testing.assert_close(d2.score, d2.raw.mean(1) + 0.5)

    class NotPerSample(nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.head = features(), nn.Linear(10, 1)

        def forward(self, x):
            return self.head(self.features(x)).mean()

    D3 = ogan_plugin.wrap(NotPerSample().double(), NZ)
    with pytest.raises(ValueError, match=r"the score \(D's output\) has shape \(\) for a batch of 6: the O-GAN losses need one score per sample"):
        D3.decompose(x)
    D3.score_from = "head"
    torch.testing.assert_close(D3.decompose(x).score, D3.decompose(x).raw.mean(1))


def test_rewrapping_keeps_the_score_rule_unless_given():
    # OGANModule and OGANCallback call wrap() on what they get: a named score must survive.
    torch.manual_seed(0)
    D = ogan_plugin.wrap(DictD().double(), NZ, score="adv_output")
    assert ogan_plugin.wrap(D, NZ) is D and D.score_from == "adv_output"
    assert ogan_plugin.wrap(D, NZ, score="head") is D and D.score_from == "head"
    assert ogan_plugin.wrap(nn.Sequential(nn.Linear(3, 1)), NZ).score_from == "auto"


def test_bad_score_choices_are_named():
    for bad in (1.5, True, "", ["a"]):
        with pytest.raises(TypeError, match="score must be 'auto', 'head', 'output', an element index"):
            ogan_plugin.wrap(nn.Sequential(nn.Linear(3, 1)), NZ, score=bad)
    single = ogan_plugin.wrap(nn.Sequential(nn.Linear(3, 1)), NZ, score=0)
    with pytest.raises(ValueError, match="score=0 names an element of D's output, but D returns a single tensor"):
        single.decompose(torch.randn(2, 3))


@pytest.mark.parametrize("ending", ["none", "sigmoid", "sigmoid_flat"])
def test_auto_on_a_patch_map_takes_the_mean_patch_logit_also_behind_a_sigmoid(ending):
    """A patch discriminator's map: the losses' score is the mean patch logit, whether D returns
    the logits, their sigmoid, or the sigmoid flattened (the check runs patch by patch)."""
    tail = {"none": [], "sigmoid": [nn.Sigmoid()], "sigmoid_flat": [nn.Sigmoid(), nn.Flatten()]}[ending]
    torch.manual_seed(0)
    d = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3, 1, 1), *tail).double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    logits = d[:3](x).detach()  # (3, 1, 4, 4) patch logits before the wrap
    wrapped = ogan_plugin.wrap(d, z_dim=5)
    dec = wrapped.decompose(x)
    torch.testing.assert_close(dec.score, logits.mean(dim=(1, 2, 3)), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dec.score, dec.raw.mean(dim=1), rtol=1e-9, atol=1e-9)


class TwinD(nn.Module):
    """A tuple whose first element is close to the head's mean without coming from the head:
    a twin of the head (its own weights) shifted by 0.05; the second is the head's output."""

    def __init__(self) -> None:
        super().__init__()
        self.features, self.head = features(), nn.Linear(10, 1)
        self.twin = nn.Linear(10, 1)
        with torch.no_grad():
            self.twin.weight.copy_(self.head.weight)
            self.twin.bias.copy_(self.head.bias + 0.05)

    def forward(self, x):
        h = self.features(x)
        return self.twin(h).squeeze(1), self.head(h).squeeze(1)


def test_a_value_match_is_tight_in_bfloat16_and_is_not_remembered():
    # bfloat16 rounds to ~0.4% (eps 0.0078): "auto" without a graph used to accept anything
    # within 16 eps (0.125) of the head's mean, took the twin, and remembered it for calls
    # with gradients too.
    torch.manual_seed(0)
    D = ogan_plugin.wrap(TwinD().to(torch.bfloat16), NZ, head="head")
    x = data()[0].to(torch.bfloat16)
    with torch.no_grad():
        d = D.decompose(x)
    torch.testing.assert_close(d.score, d.raw.float().mean(1), rtol=1e-6, atol=1e-6)  # the head's element
    assert (d.output[0].float() - d.output[1].float()).abs().max() < 0.125  # the twin is that close
    assert D._score_cache == {}  # a match by values is not remembered
    d = D.decompose(x)  # with gradients: found through the graph, and remembered
    torch.testing.assert_close(d.score, d.raw.float().mean(1), rtol=1e-6, atol=1e-6)
    assert D._score_cache == {("tuple", 2): 1}


def test_with_gradients_the_graph_wins_over_an_element_equal_in_value():
    # Without gradients the first element equal to the head's mean is taken, and not
    # remembered; a later call with gradients follows the graph: here the first element
    # equals the head's mean in value (a detached copy), the second is computed from the head.
    class CopyFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features, self.head = features(), nn.Linear(10, 1)

        def forward(self, x):
            s = self.head(self.features(x)).squeeze(1)
            return s.detach().clone(), s

    torch.manual_seed(0)
    D = ogan_plugin.wrap(CopyFirst().double(), NZ)
    x, _ = data()
    with torch.no_grad():
        D.decompose(x)
    assert D._score_cache == {}
    d = D.decompose(x)
    assert D._score_cache == {("tuple", 2): 1}  # element 1: the detached copy has no graph to the head
    (grad,) = torch.autograd.grad(d.score.sum(), D.head.layer.weight, retain_graph=True)
    torch.testing.assert_close(grad, torch.autograd.grad(d.raw.mean(1).sum(), D.head.layer.weight)[0])


def test_a_remembered_element_is_read_without_a_graph_break():
    # After a first eager call has found the score's element, decompose of a tuple-output D
    # compiles into one graph: the cache lookup is traced, the search is not called.
    torch._dynamo.reset()
    torch.manual_seed(0)
    D = ogan_plugin.wrap(TupleD(), NZ)
    named = ogan_plugin.wrap(TupleD(), NZ, score=0)
    x = data()[0].float()
    for wrapped in (D, named):
        want = wrapped.decompose(x)  # eager, with gradients: found (or checked) and remembered
        got = torch.compile(wrapped.decompose, fullgraph=True, backend="eager")(x)
        torch.testing.assert_close(got.score, want.score, rtol=0, atol=0)
        torch.testing.assert_close(got.score, want.raw.mean(1))
    torch._dynamo.reset()
