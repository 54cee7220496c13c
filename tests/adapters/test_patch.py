"""The patch adapter: head convolutions that yield a map of patch scores (PatchGAN, lightweight-gan)."""

from __future__ import annotations

import io
import json

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import spectral_norm as old_spectral_norm
from torch.nn.utils.parametrizations import spectral_norm

import ogan_plugin
from ogan_plugin.adapters import patch
from ogan_plugin.head import EXTRA_STATE_BYTES, OGANDiscriminator


def patch_gan(head_norm=lambda m: m, sigmoid: bool = False) -> nn.Module:
    """A small PatchGAN: 16x16 -> 4x4 map of patch scores."""
    layers = [
        nn.Conv2d(1, 8, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(8, 16, 4, 2, 1), nn.LeakyReLU(0.2),
        head_norm(nn.Conv2d(16, 1, 3, 1, 1)),
    ]
    return nn.Sequential(*layers, *([nn.Sigmoid()] if sigmoid else []))


HEADS = {
    "plain": lambda m: m,
    "spectral_norm": spectral_norm,
    "old_spectral_norm": old_spectral_norm,
}


def _settled(d: nn.Module, x: torch.Tensor) -> nn.Module:
    d.train()
    d(x)  # settle the spectral norm's power iteration, as the zoo does
    return d.eval()


@pytest.mark.parametrize("norm", sorted(HEADS))
def test_every_patch_keeps_its_score_and_the_raw_output_is_the_map_mean(norm):
    torch.manual_seed(0)
    x = torch.randn(5, 1, 16, 16, dtype=torch.float64)
    d = _settled(patch_gan(HEADS[norm], sigmoid=True).double(), x)
    before = d(x).detach()
    assert before.shape == (5, 1, 4, 4)
    wrapped = ogan_plugin.wrap(d, z_dim=7)
    out = wrapped(x)
    assert out.shape == before.shape
    torch.testing.assert_close(out, before, rtol=1e-7, atol=1e-9)
    dec = wrapped.decompose(x)
    assert dec.raw.shape == (5, 7) and dec.code.shape == (5, 7)
    assert wrapped.head.patch_reduction is patch.patch_positional  # the default
    # the code: the widened map read through the reduction; the score: the mean patch logit
    widened = wrapped.head.layer(d[:4](x)) * wrapped.head.output_scale
    reduced = patch.patch_positional(widened)
    torch.testing.assert_close(dec.code, reduced - reduced.mean(dim=1, keepdim=True), rtol=1e-9, atol=1e-9)
    logits = torch.logit(before).mean(dim=(1, 2, 3))
    torch.testing.assert_close(dec.score, logits, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(dec.code.sum(dim=1), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-9)
    patch.set_patch_reduction(wrapped, "mean")  # the mean over the patches: raw is exactly the map's mean
    torch.testing.assert_close(wrapped.decompose(x).raw, widened.mean(dim=(2, 3)), rtol=1e-9, atol=1e-9)


def test_gradients_of_the_patch_code_pass_gradcheck():
    torch.manual_seed(1)
    d = patch_gan().double()
    wrapped = ogan_plugin.wrap(d, z_dim=4)
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: wrapped.decompose(t).raw, (x,))
    assert torch.autograd.gradcheck(lambda t: wrapped(t), (x,))


def test_single_loss_step_trains_a_patch_discriminator():
    torch.manual_seed(2)
    G = nn.Sequential(nn.Linear(6, 256), nn.Tanh(), nn.Unflatten(1, (1, 16, 16)))
    D = ogan_plugin.wrap(patch_gan(spectral_norm), z_dim=6)
    head_before = D.head.layer.parametrizations.weight.original.detach().clone()
    step = ogan_plugin.SingleLossStep(G, D, loss="hinge", corr_weight=1.0)
    for _ in range(3):
        r = step.step(torch.rand(8, 1, 16, 16) * 2 - 1)
    assert torch.isfinite(r.loss) and -1 <= float(r.rho) <= 1
    assert not torch.equal(D.head.layer.parametrizations.weight.original, head_before)


def test_set_patch_reduction_by_name_or_function_changes_only_the_code():
    torch.manual_seed(3)
    x = torch.randn(3, 1, 16, 16)
    wrapped = ogan_plugin.wrap(patch_gan(), z_dim=5)
    out_mean = wrapped(x).detach()
    widened = wrapped.head.layer(wrapped.discriminator[:4](x)).detach()
    score = wrapped.decompose(x).score
    torch.testing.assert_close(score, out_mean.mean(dim=(1, 2, 3)))
    for reduction, reduced in (("max", widened.amax(dim=(2, 3))), (lambda m: m[:, :, 0, 0], widened[:, :, 0, 0])):
        patch.set_patch_reduction(wrapped, reduction)
        torch.testing.assert_close(wrapped(x), out_mean)  # the patch scores do not depend on it
        dec = wrapped.decompose(x)
        torch.testing.assert_close(dec.score, score)  # nor does the score the losses see
        torch.testing.assert_close(dec.code, reduced - reduced.mean(dim=1, keepdim=True))  # only the code


def test_set_patch_reduction_rejects_bad_arguments():
    wrapped = ogan_plugin.wrap(patch_gan(), z_dim=5)
    with pytest.raises(ValueError, match="reduction must be one of"):
        patch.set_patch_reduction(wrapped, "median")
    with pytest.raises(TypeError, match="reduction must be a name or a function"):
        patch.set_patch_reduction(wrapped, 3)
    with pytest.raises(TypeError, match="wrapped_discriminator"):
        patch.set_patch_reduction(patch_gan(), "mean")
    linear = ogan_plugin.wrap(nn.Sequential(nn.Linear(4, 1)), z_dim=3)
    with pytest.raises(ValueError, match="not a convolution"):
        patch.set_patch_reduction(linear, "mean")


def test_competing_one_output_convolutions_ask_for_head_and_list_them():
    class TwoHeads(nn.Module):  # shaped like lightweight-gan's: a patch head and an auxiliary one
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.LeakyReLU(0.2))
            self.to_logits = nn.Sequential(nn.Conv2d(8, 8, 1), nn.LeakyReLU(0.1), nn.Conv2d(8, 1, 4))
            self.to_aux = nn.Sequential(nn.Conv2d(1, 4, 3, 1, 1), nn.AdaptiveAvgPool2d(4), nn.Conv2d(4, 1, 4))
            self.decoder = nn.Conv2d(8, 3, 3, 1, 1)

        def forward(self, x):
            return self.to_logits(self.body(x)).flatten(1), self.to_aux(x), None

    with pytest.raises(ValueError, match=r"several 1-output layers.*'to_logits.2', 'to_aux.2'.*head="):
        ogan_plugin.wrap(TwoHeads(), z_dim=4)
    d = TwoHeads()
    x = torch.randn(2, 1, 16, 16)
    before = d(x)
    wrapped = ogan_plugin.wrap(d, z_dim=4, head="to_logits.2")
    after = wrapped(x)
    assert isinstance(after, tuple) and len(after) == 3 and after[2] is None
    torch.testing.assert_close(after[0], before[0], rtol=1e-5, atol=1e-6)  # 5x5 patch logits, flattened
    torch.testing.assert_close(after[1], before[1])  # the auxiliary head is untouched
    assert wrapped.decompose(x).raw.shape == (2, 4)


def test_checkpoints_and_unwrap_keep_the_patch_head():
    torch.manual_seed(4)
    x = torch.randn(2, 1, 16, 16)
    d = patch_gan(spectral_norm)
    _settled(d, x)
    wrapped = ogan_plugin.wrap(d, z_dim=6)
    fresh = _settled(patch_gan(spectral_norm), x)
    restored = OGANDiscriminator.from_state_dict(fresh, wrapped.state_dict())
    torch.testing.assert_close(restored.decompose(x).raw, wrapped.decompose(x).raw)
    out = wrapped(x).detach()
    plain = wrapped.unwrap()
    torch.testing.assert_close(plain(x), out, rtol=1e-5, atol=1e-6)


def test_half_precision_maps_are_reduced_in_float32():
    d = patch_gan().to(torch.bfloat16)
    wrapped = ogan_plugin.wrap(d, z_dim=8)
    x = torch.randn(2, 1, 16, 16, dtype=torch.bfloat16)
    patch.set_patch_reduction(wrapped, "mean")
    raw = wrapped.decompose(x).raw
    widened = wrapped.head.layer(d[:4](x))
    assert raw.dtype == torch.bfloat16
    torch.testing.assert_close(raw, widened.float().mean(dim=(2, 3)).to(torch.bfloat16))


@pytest.mark.parametrize("z_dim, patches", [(32, 16), (32, 25), (8, 20), (4, 4), (3, 7), (5, 1)])
def test_positional_weights_split_every_patch_among_the_channels(z_dim, patches):
    w = patch.positional_weights(z_dim, patches, torch.device("cpu"), torch.float64)
    assert w.shape == (z_dim, patches)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(z_dim, dtype=torch.float64))
    assert (w.sum(dim=0) > 0).all()  # no patch is left out
    for row in w:  # each channel reads one contiguous run of patches, in equal parts
        idx = row.nonzero().flatten()
        assert torch.equal(idx, torch.arange(int(idx[0]), int(idx[-1]) + 1))
        torch.testing.assert_close(row[idx], torch.full((len(idx),), 1.0 / len(idx), dtype=torch.float64))


def test_positional_reduction_reads_each_channel_at_its_own_patches():
    m = torch.arange(2 * 4 * 2 * 2, dtype=torch.float64).view(2, 4, 2, 2)  # z = 4 channels, 4 patches
    torch.testing.assert_close(patch.patch_positional(m), torch.stack([m[:, i].flatten(1)[:, i] for i in range(4)], 1))
    m2 = m[:, :2]  # z = 2: channel 0 averages patches 0-1, channel 1 patches 2-3
    expected = torch.stack([m2[:, 0].flatten(1)[:, :2].mean(1), m2[:, 1].flatten(1)[:, 2:].mean(1)], 1)
    torch.testing.assert_close(patch.patch_positional(m2), expected)


def test_the_positional_reduction_traces_without_a_graph_break():
    wrapped = ogan_plugin.wrap(patch_gan(), z_dim=6)
    x = torch.randn(3, 1, 16, 16)
    traced = torch.compile(lambda t: wrapped.decompose(t).raw, backend="eager", fullgraph=True)
    torch.testing.assert_close(traced(x), wrapped.decompose(x).raw)


def test_hook_mode_adds_the_correlation_gradient_through_the_patch_map():
    torch.manual_seed(5)
    G = nn.Sequential(nn.Linear(6, 256), nn.Tanh(), nn.Unflatten(1, (1, 16, 16)))
    D = ogan_plugin.wrap(patch_gan(), z_dim=6)  # an unchanged loop's per-patch loss
    ogan_plugin.attach(D, G, corr_weight=0.5)  # a fixed weight ("auto" ramps up from 0)
    z = torch.randn(8, 6)
    fake = G(z)
    out = D(fake.detach())
    assert out.shape == (8, 1, 4, 4)
    (0.0 * out).sum().backward()  # the loop's own loss contributes nothing here ...
    grad = D.head.layer.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # ... the correlation term still reaches the head
    expected = torch.autograd.grad(
        ogan_plugin.correlation_loss(z, D.decompose(fake.detach()).raw, 0.5), D.head.layer.weight
    )[0]
    torch.testing.assert_close(grad, expected)


def _through_disk(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def saved_state(t: torch.Tensor) -> dict:
    """The JSON object a head's ``_extra_state`` tensor holds (zero-padded to a fixed size)."""
    assert t.dtype == torch.uint8 and t.shape == (EXTRA_STATE_BYTES,)
    return json.loads(bytes(t.tolist()).rstrip(b"\0"))


def double_mean(out: torch.Tensor) -> torch.Tensor:
    """A custom reduction (a function a state dict cannot hold)."""
    return 2 * out.flatten(2).mean(dim=2)


def test_the_patch_reduction_is_saved_and_restored_with_the_state_dict():
    torch.manual_seed(5)
    x = torch.randn(3, 1, 16, 16)
    wrapped = ogan_plugin.wrap(patch_gan(), z_dim=6)
    patch.set_patch_reduction(wrapped, "mean")
    want = wrapped.decompose(x).raw
    state = _through_disk(wrapped.state_dict())
    key = f"discriminator.{wrapped.head_path}._extra_state"
    assert saved_state(state[key]) == {"patch_reduction": "mean"}

    other = ogan_plugin.wrap(patch_gan(), z_dim=6)  # how the demo's load_pair reloads
    assert other.head.patch_reduction is patch.patch_positional  # the default ...
    other.load_state_dict(state)
    assert other.head.patch_reduction is patch.patch_mean  # ... replaced by the saved one
    assert torch.equal(other.decompose(x).raw, want)

    rebuilt = OGANDiscriminator.from_state_dict(patch_gan(), state)
    assert rebuilt.head.patch_reduction is patch.patch_mean
    assert torch.equal(rebuilt.decompose(x).raw, want)
    rebuilt.load_unwrapped_state_dict(patch_gan().state_dict())  # a plain D's checkpoint: code fresh, reduction kept
    assert rebuilt.head.patch_reduction is patch.patch_mean

    linear = ogan_plugin.wrap(nn.Sequential(nn.Linear(4, 1)), z_dim=3)
    assert saved_state(linear.state_dict()["discriminator.0._extra_state"]) == {"patch_reduction": None}


def test_a_state_dict_without_the_reduction_loads_and_keeps_the_heads():
    # saved before the reduction was part of the state: strict or not, it loads, and the
    # head keeps the reduction it has (the default after wrap)
    torch.manual_seed(6)
    x = torch.randn(2, 1, 16, 16)
    wrapped = ogan_plugin.wrap(patch_gan(), z_dim=6)
    old = {k: v for k, v in wrapped.state_dict().items() if not k.endswith("._extra_state")}
    for strict in (True, False):
        other = ogan_plugin.wrap(patch_gan(), z_dim=6)
        patch.set_patch_reduction(other, "max")
        other.load_state_dict(old, strict=strict)
        assert other.head.patch_reduction is patch.patch_max
    rebuilt = OGANDiscriminator.from_state_dict(patch_gan(), old)
    assert rebuilt.head.patch_reduction is patch.patch_positional
    assert torch.equal(rebuilt.decompose(x).raw, wrapped.decompose(x).raw)
    assert "discriminator.4._extra_state" not in old  # the caller's dict is left alone
    with pytest.raises(RuntimeError, match="Unexpected key"):  # other keys are still checked
        ogan_plugin.wrap(patch_gan(), z_dim=6).load_state_dict({**old, "discriminator.9.weight": x})


def test_a_custom_reduction_must_be_set_again_before_loading():
    torch.manual_seed(7)
    x = torch.randn(2, 1, 16, 16)
    wrapped = ogan_plugin.wrap(patch_gan(), z_dim=6)
    patch.set_patch_reduction(wrapped, double_mean)
    want = wrapped.decompose(x).raw
    state = _through_disk(wrapped.state_dict())
    saved = saved_state(state["discriminator.4._extra_state"])["patch_reduction"]
    assert saved["custom"].endswith("double_mean")
    fresh = ogan_plugin.wrap(patch_gan(), z_dim=6)
    with pytest.raises(ValueError, match=r"custom patch reduction \S*double_mean, which a state dict cannot hold: "
                                         r"wrap the discriminator, call set_patch_reduction"):
        fresh.load_state_dict(state)
    with pytest.raises(ValueError, match="custom patch reduction"):
        OGANDiscriminator.from_state_dict(patch_gan(), state)
    fresh = ogan_plugin.wrap(patch_gan(), z_dim=6)
    patch.set_patch_reduction(fresh, double_mean)
    fresh.load_state_dict(state)
    assert fresh.head.patch_reduction is double_mean
    assert torch.equal(fresh.decompose(x).raw, want)


def test_a_reduction_the_loader_does_not_know_is_named():
    wrapped = ogan_plugin.wrap(patch_gan(), z_dim=6)
    state = wrapped.state_dict()
    key = "discriminator.4._extra_state"
    unknown = torch.tensor(list(json.dumps({"patch_reduction": "median"}).encode()), dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"patch reduction 'median' is not one of REDUCTIONS \['max', 'mean', 'positional'\]"):
        wrapped.load_state_dict({**state, key: unknown})
    for bad in (torch.zeros(3), torch.tensor([1, 2, 3], dtype=torch.uint8), "mean"):
        with pytest.raises(ValueError, match=r"'_extra_state' entry must be what OGANHead.get_extra_state\(\) returns"):
            wrapped.load_state_dict({**state, key: bad})


def test_the_reduction_loads_in_place_through_torch_distributed_checkpoint(tmp_path):
    # torch.distributed.checkpoint fills the current state dict in place: the extra state
    # must have the same size whatever the reduction's name
    import torch.distributed.checkpoint as dcp

    torch.manual_seed(8)
    wrapped = ogan_plugin.wrap(patch_gan(), z_dim=6)
    patch.set_patch_reduction(wrapped, "max")
    dcp.save(wrapped.state_dict(), checkpoint_id=tmp_path)
    other = ogan_plugin.wrap(patch_gan(), z_dim=6)  # "positional": a longer name
    state = other.state_dict()
    dcp.load(state, checkpoint_id=tmp_path)
    other.load_state_dict(state)
    assert other.head.patch_reduction is patch.patch_max
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(other.decompose(x).raw, wrapped.decompose(x).raw)


def test_a_long_custom_name_keeps_its_end():
    def reduction(out):
        return out.flatten(2).mean(dim=2)

    reduction.__qualname__ = "x" * 300 + ".mine"
    name = patch.reduction_name(reduction)["custom"]
    assert len(name) == 100 and name.startswith("...") and name.endswith(".mine")
    wrapped = ogan_plugin.wrap(patch_gan(), z_dim=6)
    patch.set_patch_reduction(wrapped, reduction)
    assert saved_state(wrapped.state_dict()["discriminator.4._extra_state"]) == {"patch_reduction": {"custom": name}}


def test_set_patch_reduction_accepts_ddp_and_its_view(one_process_group):
    from ogan_plugin.head import as_wrapped

    wrapped = ogan_plugin.wrap(patch_gan(), z_dim=6)
    ddp = nn.parallel.DistributedDataParallel(wrapped)
    patch.set_patch_reduction(ddp, "mean")
    assert wrapped.head.patch_reduction is patch.patch_mean
    patch.set_patch_reduction(as_wrapped(ddp), "max")
    assert wrapped.head.patch_reduction is patch.patch_max
