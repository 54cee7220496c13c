"""Row maps: for each row of a batch, which row of the generator's noise made it.

The data :mod:`ogan_plugin.provenance` carries on tracked tensors: a :class:`Provenance`
holds one entry per row of dimension 0, the index of the ``z`` row that made it (into the
recorded :class:`GeneratorCall` objects' noise), or ``-1`` for a row that is not a fake.
The functions here combine row maps; the rules that decide which to apply for each torch
operation are in :mod:`ogan_plugin.provenance`.

Row maps are tuples of ints on the host.  On the CPU every rule keeps them so (reading a
small index tensor costs nothing there).  On a GPU, indexing dimension 0 by a tensor gives a
row map that is a small ``long`` tensor on the device instead, and the rules keep it there:
no host synchronisation.  Whether such a map had rows mixed is then a device flag, read
later (hook mode reads it every :data:`CHECK_EVERY` generator calls to warn; the
correlation term never uses mixed rows, whether or not the flag was read).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "CHECK_EVERY",
    "GeneratorCall",
    "Provenance",
    "cat_rows",
    "compact",
    "gather",
    "grouped",
    "identity",
    "interleave",
    "lost_rows",
    "merge",
    "on_device",
    "on_host",
    "provenance",
    "repeat",
    "shift",
    "unify",
]

#: hook mode reads a GPU row map's "rows were mixed" flag every this many generator calls
CHECK_EVERY = 100

#: a row map: a tuple of ints (host) or a 1-D long tensor (device); -1 for "not a fake"
Rows = Union[tuple, Tensor]

#: read index tensors on the CPU at once (tuples), as is free there; False keeps CPU row maps
#: as tensors, as on a GPU (the tests use it to run the GPU path on the CPU)
READ_ON_CPU = True


def on_host(t: Tensor) -> bool:
    """True when rules read ``t``'s values at once (a CPU tensor, unless :data:`READ_ON_CPU`
    is off); otherwise they stay on its device."""
    return READ_ON_CPU and t.device.type == "cpu"


class GeneratorCall:
    """One recorded generator output: its noise ``z`` (detached, ``(B, z_dim)``) and the hook."""

    __slots__ = ("z", "owner", "with_grad", "seen", "units", "step", "__weakref__")

    def __init__(self, z: Tensor, owner: Any, with_grad: bool, step: int = 0) -> None:
        self.z = z
        self.step = step  # the generator's training calls before this one (a Ramp weight's clock)
        self.units: dict = {}  # z's unit rows by (dtype, eps), for hook mode's host path
        self.owner = owner  # the OGANHook that recorded it (other hooks ignore its rows)
        self.with_grad = with_grad  # made with autograd on (a generator step's output)
        self.seen = False  # a discriminator call received rows of it

    def __deepcopy__(self, memo: dict) -> "GeneratorCall":
        return self


class Provenance:
    """The row map of one tensor: ``rows[i]`` indexes ``cat([c.z for c in calls])``, or is -1.

    Attributes:
        calls: the :class:`GeneratorCall` objects the rows point into.
        rows: the row map (tuple, or a device tensor on a GPU).
        attached: some row comes from a generator output with its autograd graph (not
            ``.detach()``-ed): a discriminator call on it feeds the generator's loss.
        lost: names of the operations where fake rows lost their provenance.
        flag: on a GPU, a device bool: rows were mixed at one of ``flag_ops``.
        sample: one sample without a batch dimension (``x[i]``, ``unbind``, iteration);
            ``torch.stack``, or a new leading dimension of size 1 (``x[i][None]``), makes
            it a batch again.
        ndim: a sample's number of dimensions (to tell ``x[i][None]`` from ops within it).

    Immutable: the rules make new ones.
    """

    __slots__ = ("calls", "rows", "attached", "lost", "flag", "flag_ops", "sample", "ndim", "_detached")

    def __init__(
        self,
        calls: tuple,
        rows: Rows,
        attached: bool,
        lost: tuple = (),
        flag: Optional[Tensor] = None,
        flag_ops: tuple = (),
        sample: bool = False,
        ndim: int = 0,
    ) -> None:
        self.calls, self.rows, self.attached = calls, rows, attached
        self.lost, self.flag, self.flag_ops, self.sample, self.ndim = lost, flag, flag_ops, sample, ndim
        self._detached: Optional[Provenance] = None

    def detached(self) -> "Provenance":
        """The same rows, no longer feeding the generator's loss (``.detach()``; made once)."""
        if not self.attached:
            return self
        if self._detached is None:
            self._detached = self.but(self.rows, attached=False)
        return self._detached

    def __len__(self) -> int:
        return len(self.rows) if isinstance(self.rows, tuple) else int(self.rows.shape[0])

    def alive(self) -> bool:
        """Worth following: it may hold fake rows, or has a loss to report."""
        return bool(self.lost) or self.flag is not None or not isinstance(self.rows, tuple) or max(self.rows, default=-1) >= 0

    def but(self, rows: Rows, **changes: Any) -> "Provenance":
        """A copy with other ``rows`` (and other fields as given)."""
        fields = {s: getattr(self, s) for s in self.__slots__ if s != "_detached"}
        fields.update(rows=rows, **changes)
        return Provenance(**fields)

    def __deepcopy__(self, memo: dict) -> "Provenance":
        return self

    def __repr__(self) -> str:
        rows = self.rows if isinstance(self.rows, tuple) else f"<device tensor {tuple(self.rows.shape)}>"
        return f"Provenance(rows={rows}, attached={self.attached}, lost={self.lost}, sample={self.sample})"


def provenance(t: Any) -> Optional[Provenance]:
    """The provenance a tensor carries (hook mode's tracked tensors), else None."""
    return t.__dict__.get("_ogan_prov") if isinstance(t, Tensor) else None


# --- row maps ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def identity(n: int) -> tuple:
    """``(0, 1, ..., n - 1)``: the rows of a generator output."""
    return tuple(range(n))


def on_device(rows: Rows, device: torch.device) -> Tensor:
    """The row map as a long tensor on ``device`` (a tuple is copied once and cached)."""
    return rows if isinstance(rows, Tensor) else _device_rows(rows, torch.device(device))


@functools.lru_cache(maxsize=256)
def _device_rows(rows: tuple, device: torch.device) -> Tensor:
    t = torch.tensor(rows, dtype=torch.long)
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)  # an asynchronous copy: no synchronisation


def shift(rows: Rows, offset: int) -> Rows:
    """Rows re-indexed into a longer ``calls`` list (``-1`` stays)."""
    if offset == 0:
        return rows
    if isinstance(rows, tuple):
        return tuple(r + offset if r >= 0 else -1 for r in rows)
    return torch.where(rows >= 0, rows + offset, rows)


def repeat(rows: Rows, n: int) -> Rows:
    """One row broadcast to ``n``."""
    return rows * n if isinstance(rows, tuple) else rows.expand(n)


def interleave(rows: Rows, k: int) -> Rows:
    """Each row ``k`` times in a row (a reshape that splits every row into ``k``)."""
    return tuple(r for r in rows for _ in range(k)) if isinstance(rows, tuple) else rows.repeat_interleave(k)


def grouped(name: str, prov: Provenance, k: int) -> Provenance:
    """Rows made of ``k`` consecutive rows each (a reshape that merges them): a row keeps
    its source when its ``k`` rows agree, else it is lost at ``name``."""
    rows = prov.rows
    if isinstance(rows, tuple):
        out = tuple(g[0] if len(set(g)) == 1 else -1 for g in (rows[i : i + k] for i in range(0, len(rows), k)))
        mixed = any(len(set(rows[i : i + k])) > 1 for i in range(0, len(rows), k))
        return prov.but(out, lost=tuple(dict.fromkeys(prov.lost + ((name,) if mixed else ()))))
    groups = rows.reshape(-1, k)
    lo, hi = groups.amin(dim=1), groups.amax(dim=1)
    mixed = ~((lo == hi) | (hi < 0)).all()
    flag = mixed if prov.flag is None else prov.flag | mixed
    return prov.but(torch.where(lo == hi, lo, -1), flag=flag, flag_ops=tuple(dict.fromkeys(prov.flag_ops + (name,))))


def cat_rows(parts: Sequence[Rows], device: torch.device) -> Rows:
    """Row maps one after the other (on the device as soon as one part is there)."""
    if all(isinstance(p, tuple) for p in parts):
        return sum(parts, ())
    return torch.cat([on_device(p, device) for p in parts])


def unify(provs: Sequence[Provenance]) -> tuple[tuple, list]:
    """One ``calls`` tuple for several provenances, with each one's rows re-indexed to it."""
    calls = provs[0].calls
    if all(p.calls is calls or p.calls == calls for p in provs):
        return calls, [p.rows for p in provs]
    union: list = []
    out = []
    for p in provs:
        k = len(p.calls)
        start = next((i for i in range(len(union) - k + 1) if tuple(union[i : i + k]) == p.calls), None)
        if start is None:
            start = len(union)
            union.extend(p.calls)
        out.append(shift(p.rows, sum(int(c.z.shape[0]) for c in union[:start])))
    return tuple(union), out


def compact(prov: Provenance, limit: int = 16) -> Provenance:
    """Drop the generator calls no row points into any more (a buffer written with fakes step
    after step would otherwise keep every call's ``z``).  A device row map cannot be read
    without a synchronisation: past ``limit`` calls its rows are given up as lost instead."""
    calls = prov.calls
    if len(calls) <= 1:
        return prov
    if not isinstance(prov.rows, tuple):
        return prov if len(calls) <= limit else lost_rows("setitem", [prov], len(prov))
    starts, total = [], 0
    for c in calls:
        starts.append(total)
        total += int(c.z.shape[0])
    owner = [next(k for k in range(len(calls) - 1, -1, -1) if r >= starts[k]) if r >= 0 else -1 for r in prov.rows]
    used = sorted({k for k in owner if k >= 0})
    if len(used) == len(calls):
        return prov
    new_start, offset = {}, 0
    for k in used:
        new_start[k] = offset
        offset += int(calls[k].z.shape[0])
    rows = tuple(r - starts[k] + new_start[k] if k >= 0 else -1 for r, k in zip(prov.rows, owner))
    return prov.but(rows, calls=tuple(calls[k] for k in used))


def merge(name: str, provs: Sequence[Provenance], n: int, device: torch.device) -> Provenance:
    """One provenance for operands combined row by row (elementwise ops, ``cat`` along
    another dimension): rows all operands agree on stay, the others become -1 and ``name``
    is recorded as where they were lost (on a GPU: as a device flag)."""
    first = provs[0]
    if all(p is first for p in provs) and (len(first) == n or first.sample):
        return first
    calls, rows = unify(provs)
    rows = [repeat(r, n) if len(p) == 1 and n != 1 and not p.sample else r for p, r in zip(provs, rows)]
    lost = tuple(dict.fromkeys(sum((p.lost for p in provs), ())))
    flags = [p.flag for p in provs if p.flag is not None]
    flag_ops = tuple(dict.fromkeys(sum((p.flag_ops for p in provs), ())))
    merged = rows[0]
    for r in rows[1:]:
        if isinstance(merged, tuple) and isinstance(r, tuple):
            if r != merged:
                merged = tuple(a if a == b else -1 for a, b in zip(merged, r))
                if not lost:  # (rows lost earlier are named where they were lost)
                    lost = (name,)
        else:
            a, b = on_device(merged, device), on_device(r, device)
            same = a == b
            merged = torch.where(same, a, -1)
            flags.append(~same.all())
            flag_ops = tuple(dict.fromkeys(flag_ops + (name,)))
    flag = functools.reduce(torch.logical_or, flags) if flags else None
    sample = all(p.sample for p in provs)
    return Provenance(calls, merged, any(p.attached for p in provs), lost, flag, flag_ops, sample, first.ndim)


def gather(name: str, prov: Provenance, index: Tensor) -> Provenance:
    """The rows ``rows[index]`` for an index tensor on dimension 0.

    ``index`` of shape ``(M,)`` gives M rows.  An index of more dimensions, ``(M, ...)``
    (DiffAugment's ``meshgrid(arange(B), ...)``), gives M rows each made of several input
    rows: a row keeps its source when all its entries agree, else it becomes -1 (lost).
    On the CPU the result is a tuple; elsewhere a device tensor with a lazily read flag.
    """
    full = on_device(prov.rows, index.device)[index]
    if full.dim() <= 1:
        rows, mixed = full, None
    else:
        flat = full.flatten(1)
        lo, hi = flat.amin(dim=1), flat.amax(dim=1)
        same = lo == hi
        rows, mixed = torch.where(same, lo, -1), ~(same | (hi < 0)).all()
    if on_host(full):  # (a device row map indexed by a CPU index stays on its device)
        lost = prov.lost + ((name,) if mixed is not None and bool(mixed) else ())
        return prov.but(tuple(rows.tolist()), lost=tuple(dict.fromkeys(lost)))
    if mixed is None:
        return prov.but(rows)
    flag = mixed if prov.flag is None else prov.flag | mixed
    return prov.but(rows, flag=flag, flag_ops=tuple(dict.fromkeys(prov.flag_ops + (name,))))


def lost_rows(name: str, provs: Sequence[Provenance], n: int) -> Optional[Provenance]:
    """``n`` rows whose provenance was lost at ``name`` (None when nothing was lost)."""
    live = [p for p in provs if p.alive()]
    if not live:
        return None
    base = live[0]
    lost = tuple(dict.fromkeys(sum((p.lost for p in live), ()) + (name,)))
    flag_ops = tuple(dict.fromkeys(sum((p.flag_ops for p in live), ())))
    flags = [p.flag for p in live if p.flag is not None]
    flag = functools.reduce(torch.logical_or, flags) if flags else None
    return Provenance(base.calls, (-1,) * n, any(p.attached for p in live), lost, flag, flag_ops)
