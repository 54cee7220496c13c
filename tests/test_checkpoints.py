"""Checkpoints of wrapped discriminators: round trips, rebuilds, plain checkpoints."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin import OGANDiscriminator

Z = 8


def clone(d: nn.Module, x: torch.Tensor) -> nn.Module:
    """``copy.deepcopy(d)``; a no-grad forward first makes the old hook-based spectral
    norm's computed ``weight`` a plain tensor (deepcopy refuses non-leaf tensors)."""
    with torch.no_grad():
        d(x)
    return copy.deepcopy(d)


def scrambled(d: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy of ``d`` (same architecture) with every parameter and buffer redrawn."""
    fresh = clone(d, x)
    torch.manual_seed(123)
    with torch.no_grad():
        for t in list(fresh.parameters()) + [b for b in fresh.buffers() if b.is_floating_point()]:
            t.copy_(torch.randn_like(t).abs() + 0.5)
    return fresh


def through_disk(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_state_dict_round_trip_and_rebuild_from_plain(zoo_case) -> None:
    name, d, x = zoo_case
    plain_copy = clone(d, x)
    wrapped = ogan_plugin.wrap(d, z_dim=Z).eval()
    with torch.no_grad():
        wrapped.head.layer.weight.add_(0.01 * torch.randn_like(wrapped.head.layer.weight))  # "trained"
    want = wrapped.decompose(x).raw
    state = through_disk(wrapped.state_dict())

    # load into another wrapped discriminator of the same architecture
    other = ogan_plugin.wrap(scrambled(plain_copy, x), z_dim=Z).eval()
    other.load_state_dict(state)
    assert torch.equal(other.decompose(x).raw, want)
    assert_same_state(other, wrapped)

    # rebuild from a plain discriminator + the saved state (z_dim and head read from it)
    rebuilt = OGANDiscriminator.from_state_dict(scrambled(plain_copy, x), state).eval()
    assert rebuilt.z_dim == Z and rebuilt.head_path == wrapped.head_path
    assert torch.equal(rebuilt.decompose(x).raw, want)
    assert_same_state(rebuilt, wrapped)


def test_plain_checkpoint_then_wrap_keeps_scores(zoo_case) -> None:
    name, d, x = zoo_case
    want = d(x)
    checkpoint = through_disk(d.state_dict())  # a pretrained GAN's discriminator
    fresh = scrambled(d, x).eval()
    fresh.load_state_dict(checkpoint)
    wrapped = ogan_plugin.wrap(fresh, z_dim=Z).eval()
    torch.testing.assert_close(wrapped(x), want)


def test_load_unwrapped_checkpoint_into_wrapped_keeps_scores(zoo_case) -> None:
    name, d, x = zoo_case
    want = d(x)
    checkpoint = through_disk(d.state_dict())
    wrapped = ogan_plugin.wrap(scrambled(d, x), z_dim=Z).eval()
    head = wrapped.head
    hook = ogan_plugin.attach(wrapped, nn.Linear(Z, 1))
    wrapped.load_unwrapped_state_dict(checkpoint)
    assert wrapped.head is head  # hooks on the head (hook mode) survive
    out = wrapped.decompose(x)
    torch.testing.assert_close(wrapped(x), want)
    assert float(out.code.detach().std()) > 0  # the code part is a fresh encoder, not collapsed
    # the non-head weights are the checkpoint's
    inner = wrapped.discriminator.state_dict()
    for k, v in checkpoint.items():
        if not k.startswith(wrapped.head_path + "."):
            assert torch.equal(inner[k], v), k
    hook.detach()


def test_checkpoint_errors_name_the_problem() -> None:
    torch.manual_seed(0)
    d = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1))
    plain_state = copy.deepcopy(d.state_dict())
    wrapped = ogan_plugin.wrap(d, z_dim=Z)
    with pytest.raises(ValueError, match="load it before wrap"):
        OGANDiscriminator.from_state_dict(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1)), plain_state)
    with pytest.raises(ValueError, match="use load_state_dict"):
        wrapped.load_unwrapped_state_dict(wrapped.state_dict())
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        wrapped.load_unwrapped_state_dict([1, 2])  # type: ignore[arg-type]
    before = copy.deepcopy(wrapped.state_dict())
    bad = dict(plain_state)
    bad.pop("0.bias")
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r"missing keys \['0.bias'\], unexpected keys \['extra.weight'\]"):
        wrapped.load_unwrapped_state_dict(bad)
    after = wrapped.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing loaded
