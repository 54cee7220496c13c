"""Row provenance rules (ogan_plugin.provenance, ogan_plugin.provenance_rules, ogan_plugin.rows):
what each kind of torch operation does to the row map of a tracked tensor."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F

import ogan_plugin.rows as rows_module
from ogan_plugin.provenance import Tracked, track, untrack
from ogan_plugin.rows import GeneratorCall, Provenance, identity, provenance

B = 4


def tracked(shape=(B, 3, 5, 5), attached=True):
    call = GeneratorCall(torch.randn(shape[0], 8), None, True)
    x = torch.randn(*shape, requires_grad=attached)
    return track(x, Provenance((call,), identity(shape[0]), attached))


def rows(t):
    p = provenance(t)
    return None if p is None else p.rows


@pytest.mark.parametrize(
    "op, want",
    [
        (lambda x: x.detach(), (0, 1, 2, 3)),
        (lambda x: x.to(torch.float64).contiguous(memory_format=torch.channels_last), (0, 1, 2, 3)),
        (lambda x: x.view(B, -1).reshape(B, 3, 5, 5).flatten(1).unsqueeze(1), (0, 1, 2, 3)),
        (lambda x: x.permute(0, 2, 3, 1).transpose(1, 2).movedim(3, 1), (0, 1, 2, 3)),
        (lambda x: x.mT, (0, 1, 2, 3)),
        (lambda x: torch.sigmoid(x * 2 + 1).clamp(0.1, 0.9).pow(2), (0, 1, 2, 3)),
        (lambda x: torch.where(x > 0, x, torch.zeros_like(x)), (0, 1, 2, 3)),
        (lambda x: x.masked_fill(x > 0, 0.0), (0, 1, 2, 3)),
        (lambda x: x.mean(dim=(1, 2, 3), keepdim=True) - x.amax(dim=1, keepdim=True), (0, 1, 2, 3)),
        (lambda x: F.softmax(x, dim=1) + x.sort(dim=-1).values + x.cumsum(2), (0, 1, 2, 3)),
        (lambda x: F.normalize(x.flatten(1)), (0, 1, 2, 3)),
        (lambda x: F.conv2d(x, torch.randn(2, 3, 3, 3)), (0, 1, 2, 3)),
        (lambda x: F.avg_pool2d(F.interpolate(x, scale_factor=2), 2), (0, 1, 2, 3)),
        (lambda x: F.instance_norm(x) + F.group_norm(x, 3), (0, 1, 2, 3)),
        (lambda x: torch.einsum("bchw,c->bhw", x, torch.randn(3)), (0, 1, 2, 3)),
        (lambda x: x.flatten(1) @ torch.randn(75, 2), (0, 1, 2, 3)),
        (lambda x: x[..., 0], (0, 1, 2, 3)),
        (lambda x: x[:, None], (0, 1, 2, 3)),
        (lambda x: x[:, torch.tensor([2, 0])], (0, 1, 2, 3)),
        (lambda x: x[1:3], (1, 2)),
        (lambda x: x[torch.tensor([3, 3, 0])], (3, 3, 0)),
        (lambda x: x[[1, 2]], (1, 2)),
        (lambda x: x.index_select(0, torch.tensor([2, 1])), (2, 1)),
        (lambda x: x.flip(0), (3, 2, 1, 0)),
        (lambda x: torch.rot90(x, 2, (0, 1)), (3, 2, 1, 0)),
        (lambda x: x.repeat(2, 1, 1, 1), (0, 1, 2, 3) * 2),
        (lambda x: x.repeat_interleave(2, dim=0), (0, 0, 1, 1, 2, 2, 3, 3)),
        (lambda x: torch.tile(x, (1, 2, 1)), (0, 1, 2, 3)),
        (lambda x: torch.cat([torch.zeros(2, 3, 5, 5), x, torch.zeros(1, 3, 5, 5)]), (-1, -1, 0, 1, 2, 3, -1)),
        (lambda x: torch.cat([x, torch.zeros(B, 1, 5, 5)], dim=1), (0, 1, 2, 3)),
        (lambda x: torch.vstack([x[:1], x[3:]]), (0, 3)),
        (lambda x: torch.stack([x[2], torch.zeros(3, 5, 5), x[0]]), (2, -1, 0)),
        (lambda x: torch.stack(list(x.unbind(0))[::-1]), (3, 2, 1, 0)),
        (lambda x: torch.cat([x[1][None], x[0].unsqueeze(0)]), (1, 0)),
        (lambda x: x.narrow(0, 1, 2), (1, 2)),
        (lambda x: x[1:2].expand(3, -1, -1, -1), (1, 1, 1)),
        (lambda x: x.reshape(B * 3, 5, 5).reshape(B, 3, 5, 5), (0, 1, 2, 3)),
        (lambda x: x.reshape(2, 2 * 3 * 5 * 5), (-1, -1)),
    ],
)
def test_rules_keep_or_rearrange_rows(op, want) -> None:
    assert rows(op(tracked())) == want


def test_chunk_split_and_unbind() -> None:
    x = tracked()
    assert [rows(c) for c in x.chunk(2)] == [(0, 1), (2, 3)]
    assert [rows(c) for c in torch.tensor_split(x, [1, 3])] == [(0,), (1, 2), (3,)]
    assert [rows(c) for c in x.split(1, dim=1)] == [(0, 1, 2, 3)] * 3
    assert [provenance(s).sample for s in x.unbind(0)] == [True] * B


@pytest.mark.parametrize(
    "op, lost",
    [
        (lambda x: 0.5 * x + 0.5 * x[torch.tensor([1, 2, 3, 0])], "add"),
        (lambda x: x + torch.randn(x.shape), "add"),
        (lambda x: x - x.mean(0, keepdim=True), "mean"),
        (lambda x: x.sum(0, keepdim=True).expand_as(x) + x, "sum"),
        (lambda x: F.softmax(x, dim=0), "softmax"),
        (lambda x: F.batch_norm(x, None, None, training=True), "batch_norm"),
        (lambda x: torch.cummax(x, dim=0).values, "cummax"),
        (lambda x: x.flatten(1).T, "get_T"),
        (lambda x: x.transpose(0, 1), "transpose"),
        (lambda x: x[None], "getitem"),
        (lambda x: torch.stack([x, x]), "stack"),
    ],
)
def test_ops_that_mix_rows_lose_them_and_name_the_op(op, lost) -> None:
    p = provenance(op(tracked()))
    assert p is not None and lost in p.lost and all(r < 0 for r in p.rows), p


def test_a_half_mixed_batch_keeps_the_untouched_rows() -> None:
    x = tracked()
    p = provenance(0.5 * x + 0.5 * x[torch.tensor([1, 0, 2, 3])])
    assert p.rows == (-1, -1, 2, 3) and p.lost == ("add",)


def test_meshgrid_indexing_keeps_rows_and_loses_mixed_ones() -> None:
    x = tracked()
    gb, gx, gy = torch.meshgrid(torch.arange(B), torch.arange(5), torch.arange(5), indexing="ij")
    assert rows(x.permute(0, 2, 3, 1)[gb, gx, gy]) == (0, 1, 2, 3)
    gb = gb.clone()
    gb[1, 0, 0] = 2  # row 1 takes one pixel of row 2
    p = provenance(x.permute(0, 2, 3, 1)[gb, gx, gy])
    assert p.rows == (0, -1, 2, 3) and p.lost == ("getitem",)


def test_device_row_maps_stay_tensors_and_flag_mixing(monkeypatch) -> None:
    monkeypatch.setattr(rows_module, "READ_ON_CPU", False)
    x = tracked()
    y = x[torch.tensor([3, 1, 2, 0])]
    assert isinstance(rows(y), torch.Tensor) and rows(y).tolist() == [3, 1, 2, 0]
    z = torch.cat([torch.zeros(1, 3, 5, 5), y])
    assert rows(z).tolist() == [-1, 3, 1, 2, 0]
    mixed = provenance(y + x)
    assert mixed.rows.tolist() == [-1, 1, 2, -1] and mixed.flag_ops == ("add",) and bool(mixed.flag)
    clean = provenance(y * 2 + y)
    assert clean.flag is None or not bool(clean.flag)


def test_in_place_writes() -> None:
    x = tracked(attached=False)
    x[torch.tensor([True, False, False, False])] = torch.zeros(1, 3, 5, 5)  # a real row written in
    assert rows(x) == (-1, 1, 2, 3)
    x[:, :, 1:3, 1:3] = 0.0  # a cutout: the rows stay
    assert rows(x) == (-1, 1, 2, 3)
    x[2:3] = x[3:4].clone()  # row 2 now holds fake 3
    assert rows(x) == (-1, 1, 3, 3)
    x[:, :, :2] = torch.randn(B, 3, 2, 5)  # other data into part of every row
    assert rows(x) == (-1, -1, -1, -1) and provenance(x).lost == ("setitem",)
    buf = torch.zeros(B + 1, 3, 5, 5)
    fake = tracked(attached=False)
    for i in (3, 1):
        buf[i] = fake[i]  # a plain tensor fakes are written into row by row (kornia's crops) follows them
    assert type(buf) is Tracked and rows(buf) == (-1, 1, -1, 3, -1)
    other = torch.zeros(B, 3, 5, 5)
    other.copy_(fake.flip(0))
    assert type(other) is Tracked and rows(other) == (3, 2, 1, 0)
    view_base = torch.zeros(B, 3, 5, 5)
    view_base[1:3].copy_(fake[:2])  # through a view: only the view object is written, not followed
    assert type(view_base) is torch.Tensor
    weight = torch.nn.Parameter(torch.zeros(B, 3, 5, 5), requires_grad=False)
    weight[:] = fake  # a parameter keeps its class
    assert type(weight) is torch.nn.Parameter


def test_a_buffer_written_step_after_step_keeps_only_the_calls_its_rows_point_into() -> None:
    buffer = torch.zeros(4, 2)
    for step in range(50):
        call = GeneratorCall(torch.randn(2, 8), None, False)
        fake = track(torch.randn(2, 2), Provenance((call,), identity(2), False))
        buffer[(2 * step) % 4 : (2 * step) % 4 + 2] = fake  # a replay buffer of the last two batches
    p = provenance(buffer)
    assert len(p.calls) == 2 and p.rows in ((0, 1, 2, 3), (2, 3, 0, 1))
    assert p.calls[-1] is call


def test_detach_and_no_grad_results_no_longer_feed_the_generator() -> None:
    x = tracked()
    assert provenance(x * 2).attached and not provenance(x.detach()).attached
    with torch.no_grad():
        assert not provenance(x * 2).attached
    assert not provenance(x.detach().requires_grad_()).attached


def test_untracked_results_stay_plain_and_inputs_are_not_changed() -> None:
    x, real = tracked(), torch.randn(B, 3, 5, 5)
    assert type(real.to(x)) is torch.Tensor and real.to(x) is real  # returns the user's own tensor
    assert type(x.new_zeros(2)) is torch.Tensor
    assert type(torch.cat([x, real])[B:]) is torch.Tensor  # reals only: no longer followed
    assert isinstance(x.sum().item(), float) and type(x.sum()) is torch.Tensor
    assert x.shape == (B, 3, 5, 5) and len(x) == B and repr(x).startswith("tensor(")


def test_copies_pickles_and_aliases() -> None:
    x = tracked()
    y = copy.deepcopy(x.detach())
    assert type(y) is Tracked and rows(y) == (0, 1, 2, 3) and y.data_ptr() != x.data_ptr()
    buffer = io.BytesIO()
    torch.save(x.detach(), buffer)
    buffer.seek(0)
    assert type(torch.load(buffer, weights_only=True)) is torch.Tensor
    assert type(pickle.loads(pickle.dumps(x.detach()))) is torch.Tensor
    plain = untrack(x)
    assert type(plain) is torch.Tensor and plain.data_ptr() == x.data_ptr() and plain.grad_fn is not None
