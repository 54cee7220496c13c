"""wrap(), OGANDiscriminator and OGANHead on a zoo of discriminators."""

from __future__ import annotations

import io
import re

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin.head import OGANDiscriminator, OGANHead
from ogan_plugin.layers import find_scalar_head

Z = 12


def test_wrap_keeps_scores_shape_and_parameters(zoo_case_on, device):
    name, d, x = zoo_case_on
    before = d(x).detach().clone()
    params_before = {n: p for n, p in d.named_parameters()}
    wrapped = ogan_plugin.wrap(d, z_dim=Z)
    wrapped.eval()
    after = wrapped(x)
    assert after.shape == before.shape
    # the widened head is made on the network's device
    assert all(t.device.type == device for t in [*wrapped.head.parameters(), *wrapped.head.buffers()])
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    # every parameter outside the head is the very same tensor object
    head_prefix = wrapped.head_path + "."
    for n, p in d.named_parameters():
        if not n.startswith(head_prefix):
            assert p is params_before[n], n


def test_decompose_parts_are_orthogonal(zoo_case_on):
    _, d, x = zoo_case_on
    wrapped = ogan_plugin.wrap(d, z_dim=Z).eval()
    dec = wrapped.decompose(x)
    b = x.shape[0]
    assert dec.raw.shape == (b, Z) and dec.code.shape == (b, Z) and dec.score.shape == (b,)
    torch.testing.assert_close(dec.code + dec.score[:, None], dec.raw.float())
    torch.testing.assert_close(dec.code.sum(dim=1), torch.zeros(b, device=x.device), atol=1e-5, rtol=0)
    torch.testing.assert_close(dec.output, wrapped(x))


def test_unwrap_restores_a_plain_head_with_the_same_scores(zoo_case_on):
    _, d, x = zoo_case_on
    wrapped = ogan_plugin.wrap(d, z_dim=Z).eval()
    with torch.no_grad():  # train the code part a little: unwrap must follow the current weights
        bias = wrapped.head.layer.bias
        bias.add_(torch.linspace(-1, 1, Z, dtype=bias.dtype, device=bias.device))
    scores = wrapped(x).detach()
    plain = wrapped.unwrap()
    assert not any(isinstance(m, OGANHead) for m in plain.modules())
    torch.testing.assert_close(plain(x), scores, rtol=1e-5, atol=1e-5)


def test_encode_is_standardized(device):
    torch.manual_seed(1)
    wrapped = ogan_plugin.wrap(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)).to(device), z_dim=Z)
    code = wrapped.encode(torch.randn(9, 8, device=device))
    torch.testing.assert_close(code.mean(dim=1), torch.zeros(9, device=device), atol=1e-6, rtol=0)
    torch.testing.assert_close(code.std(dim=1, unbiased=False), torch.ones(9, device=device), atol=1e-5, rtol=0)


def test_wrapped_score_is_the_mean_of_raw_and_gradients_flow():
    torch.manual_seed(2)
    d = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 1))
    wrapped = ogan_plugin.wrap(d, z_dim=4)
    x = torch.randn(3, 5, requires_grad=True)
    dec = wrapped.decompose(x)
    torch.testing.assert_close(dec.output.view(-1), dec.raw.mean(dim=1))
    dec.code.pow(2).sum().backward()
    assert x.grad is not None and wrapped.head.layer.weight.grad is not None
    assert d[0].weight.grad is not None


def test_several_one_output_layers_pick_the_sequential_ending_or_the_explicit_head():
    make = lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1), nn.Linear(1, 1))  # noqa: E731
    assert ogan_plugin.wrap(make(), z_dim=3).head_path == "3"
    d = make()
    wrapped = ogan_plugin.wrap(d, z_dim=3, head="2")
    assert wrapped.head_path == "2" and isinstance(d[2], OGANHead)


def test_ambiguous_head_asks_for_head_argument():
    d = nn.Sequential(nn.Linear(4, 1), nn.Linear(1, 1), nn.BatchNorm1d(1))
    with pytest.raises(ValueError, match=r"several 1-output layers.*head="):
        ogan_plugin.wrap(d, z_dim=3)


def test_state_dict_round_trip():
    torch.manual_seed(3)
    make = lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))  # noqa: E731
    a = ogan_plugin.wrap(make(), z_dim=5)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = ogan_plugin.wrap(make(), z_dim=5)
    b.load_state_dict(torch.load(buf))
    x = torch.randn(4, 6)
    torch.testing.assert_close(b.decompose(x).raw, a.decompose(x).raw, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores_are_reduced_in_float32(dtype, device):
    torch.manual_seed(4)
    d = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1)).to(device, dtype)
    wrapped = ogan_plugin.wrap(d, z_dim=6)
    x = torch.randn(3, 6, dtype=dtype, device=device)
    dec = wrapped.decompose(x)
    assert dec.raw.dtype == dtype and dec.score.dtype == torch.float32
    torch.testing.assert_close(dec.score, dec.raw.float().mean(dim=1))


def test_wrapping_twice_is_a_no_op_or_an_error():
    w = ogan_plugin.wrap(nn.Sequential(nn.Linear(4, 1)), z_dim=3)
    assert ogan_plugin.wrap(w, z_dim=3) is w
    with pytest.raises(ValueError, match="already wrapped"):
        ogan_plugin.wrap(w, z_dim=4)
    with pytest.raises(ValueError, match="already contains an OGANHead"):
        ogan_plugin.wrap(nn.Sequential(w.discriminator), z_dim=3)


@pytest.mark.parametrize("z_dim, err", [(1, ValueError), (0, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_z_dim(z_dim, err):
    with pytest.raises(err, match="z_dim"):
        ogan_plugin.wrap(nn.Sequential(nn.Linear(4, 1)), z_dim=z_dim)


def test_head_with_several_outputs_is_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="3 outputs"):
        ogan_plugin.wrap(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3)), z_dim=4, head="1")
    with pytest.raises(ValueError, match="no scalar head found"):
        ogan_plugin.wrap(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3)), z_dim=4)


def test_unknown_head_path_and_non_modules():
    with pytest.raises(ValueError, match="not a submodule"):
        ogan_plugin.wrap(nn.Sequential(nn.Linear(4, 1)), z_dim=3, head="fc")
    with pytest.raises(ValueError, match="itself a single 1-output layer"):
        ogan_plugin.wrap(nn.Linear(4, 1), z_dim=3)
    with pytest.raises(TypeError, match="discriminator must be an nn.Module"):
        ogan_plugin.wrap(lambda x: x, z_dim=3)


def test_a_head_without_patch_reduction_rejects_maps_larger_than_1x1():
    head = OGANHead(nn.Conv2d(4, 3, 3, 1, 1), z_dim=3)  # built outside the adapters: no reduction
    assert head(torch.randn(2, 4, 1, 1)).shape == (2, 1, 1, 1)
    with pytest.raises(ValueError, match="8x8 map per sample.*no patch_reduction"):
        head(torch.randn(2, 4, 8, 8))


@pytest.mark.parametrize(
    "d, x",
    [
        (nn.Sequential(nn.Linear(4, 1)), torch.randn(4)),  # unbatched
        (nn.Sequential(nn.Linear(4, 1)), torch.randn(2, 5, 4)),  # one output per token
        (nn.Sequential(nn.Conv2d(2, 1, 3)), torch.randn(2, 5, 5)),  # unbatched image
    ],
    ids=["unbatched_linear", "tokens", "unbatched_conv"],
)
def test_a_head_output_that_is_not_per_sample_is_named(d, x):
    wrapped = ogan_plugin.wrap(d, z_dim=3)
    with pytest.raises(ValueError, match="not per-sample.*" + re.escape(str(tuple(x.shape)))):
        wrapped(x)


def test_find_scalar_head_prefers_the_single_one_output_layer():
    class D(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.out = nn.Linear(8, 1)
            self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))

    assert find_scalar_head(D())[0] == "out"


def test_decompose_reports_a_forward_that_skips_the_head():
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 1)

        def forward(self, x):
            return x.sum(dim=1)

    wrapped = ogan_plugin.wrap(Skips(), z_dim=3)
    with pytest.raises(RuntimeError, match="did not call its head"):
        wrapped.decompose(torch.randn(2, 3))


def test_wrapped_is_an_ogan_discriminator_module():
    w = ogan_plugin.wrap(nn.Sequential(nn.Linear(4, 1)), z_dim=3)
    assert isinstance(w, OGANDiscriminator) and isinstance(w, nn.Module)
    assert "z_dim=3" in repr(w)


def test_dict_outputs_are_kept_and_decompose_uses_the_wrapped_head():
    class DictD(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
            self.fc = nn.Linear(8, 1)

        def forward(self, x, scale=1.0):
            h = self.body(x)
            return {"logits": self.fc(h).view(-1) * scale, "features": h}

    torch.manual_seed(0)
    d = DictD()
    x = torch.randn(4, 6)
    before = d(x, scale=2.0)
    wrapped = ogan_plugin.wrap(d, z_dim=5)
    after = wrapped(x, scale=2.0)
    assert set(after) == {"logits", "features"}
    torch.testing.assert_close(after["logits"], before["logits"])
    torch.testing.assert_close(after["features"], before["features"])
    dec = wrapped.decompose(x, scale=2.0)  # extra arguments reach D's forward
    assert isinstance(dec.output, dict) and dec.raw.shape == (4, 5)
    # the losses' score is the element computed from the head, as D returns it (wrap's score rule);
    # the head's own mean is what D scaled
    torch.testing.assert_close(dec.score, after["logits"])
    torch.testing.assert_close(2.0 * dec.raw.float().mean(dim=1), after["logits"])
    G = nn.Sequential(nn.Linear(5, 6))
    r = ogan_plugin.SingleLossStep(G, wrapped, loss="hinge").step(torch.randn(4, 6))
    assert torch.isfinite(r.loss)


def test_rewrapping_at_another_head_says_head_cannot_change():
    d = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    w = ogan_plugin.wrap(d, z_dim=3)
    assert ogan_plugin.wrap(w, z_dim=3, head="2") is w  # its own head: nothing changes
    with pytest.raises(ValueError, match=r"head='0': the discriminator is already wrapped with its head at '2', and "
                                         r"head= cannot be changed on a wrapped discriminator"):
        ogan_plugin.wrap(w, z_dim=3, head="0")
    with pytest.raises(ValueError, match="already wrapped with z_dim=3; call .unwrap"):
        ogan_plugin.wrap(w, z_dim=4, head="0")


class ProjectionD(nn.Module):
    """D(x, y) = head(h) + <embed(y), h>: "auto" and "head" give different scores."""

    def __init__(self) -> None:
        super().__init__()
        self.features, self.head, self.embed = nn.Sequential(nn.Linear(6, 8), nn.Tanh()), nn.Linear(8, 1), nn.Embedding(3, 8)

    def forward(self, x, y):
        h = self.features(x)
        return self.head(h).squeeze(1) + (self.embed(y) * h).sum(1)


def test_score_from_is_checked_when_set():
    w = ogan_plugin.wrap(ProjectionD(), z_dim=4)
    for bad in (1.5, None, "", ["head"]):
        with pytest.raises(TypeError, match="score must be 'auto', 'head', 'output'"):
            w.score_from = bad
    assert w.score_from == "auto"
    w.score_from = "head"
    assert w.score_from == "head"


def test_a_ddp_view_uses_the_wrapped_discriminators_score_rule(one_process_group):
    from ogan_plugin.head import as_wrapped
    from ogan_plugin.step import SingleLossStep

    torch.manual_seed(0)
    inner = ogan_plugin.wrap(ProjectionD(), z_dim=4)
    ddp = nn.parallel.DistributedDataParallel(inner)
    G = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
    step = SingleLossStep(G, ddp, "hinge")
    view = step.discriminator
    assert view is as_wrapped(ddp) and view is not inner
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    whole = inner.decompose(x, y)
    torch.testing.assert_close(view.decompose(x, y).score, whole.output)  # "auto": the whole output
    # a rule set later on the wrapped discriminator reaches the existing step's view ...
    ogan_plugin.wrap(inner, 4, score="head")
    assert view.score_from == "head"
    torch.testing.assert_close(view.decompose(x, y).score, whole.raw.mean(1))
    inner.score_from = "output"
    assert view.score_from == "output"
    # ... one set on the view is the wrapped discriminator's, and survives as_wrapped again
    view.score_from = "head"
    assert inner.score_from == "head" and as_wrapped(ddp).score_from == "head"
    with pytest.raises(TypeError, match="score must be"):
        view.score_from = 2.5
    assert inner.score_from == "head"
    assert view._score_cache is inner._score_cache  # one memory of the score's element
    assert "score_from" not in view.__dict__ and "_score_from" not in view.__dict__
