"""The rules of :mod:`ogan_plugin.provenance`: how each torch operation moves row provenance.

A rule reads one call (:class:`Op`: the function's name, its arguments, its result and
the provenance of its tracked operands) and answers the result's provenance: a
:class:`~ogan_plugin.rows.Provenance`, None (not tracked), :data:`LOST` (the rows are lost
at this op), or a list with one answer per output.  :func:`rule_for` picks the rule;
:func:`written` is the rule of an in-place write ``x[index] = value``.  The rules are
listed, by operation, in :mod:`ogan_plugin.provenance`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ogan_plugin.rows import (
    Provenance,
    cat_rows,
    compact,
    gather,
    grouped,
    interleave,
    lost_rows,
    merge,
    on_device,
    on_host,
    provenance,
    unify,
)

__all__ = ["LOST", "Op", "rule_for", "written"]

_disabled = torch._C.DisableTorchFunctionSubclass

# --- a call --------------------------------------------------------------------------------
LOST = object()  # a rule's answer: the rows are lost at this op


class Op:
    """One torch call on tracked tensors: what the rules read."""

    __slots__ = ("name", "func", "args", "kwargs", "out", "operands", "provs")

    def __init__(self, name: str, func: Callable, args: tuple, kwargs: dict, out: Any, operands: list) -> None:
        self.name, self.func, self.args, self.kwargs, self.out, self.operands = name, func, args, kwargs, out, operands
        self.provs = [p for p in map(provenance, operands) if p is not None]

    def arg(self, i: int, key: str, default: Any = None) -> Any:
        return self.args[i] if len(self.args) > i else self.kwargs.get(key, default)

    @property
    def first(self) -> Tensor:
        return self.out if isinstance(self.out, Tensor) else self.out[0]

    @property
    def device(self) -> torch.device:
        return self.first.device


# --- dimensions ------------------------------------------------------------------------------
def _dims(value: Any, ndim: int) -> Optional[set]:
    """Dimensions named by a ``dim`` argument, normalised (None: all of them)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, torch.Size)):
        return {int(d) % max(ndim, 1) for d in value}
    return {int(value) % max(ndim, 1)}


def _keep_unless_dim0(op: Op, dims: Optional[set], p: Provenance) -> Any:
    return LOST if dims is None or 0 in dims else p


# --- rules -------------------------------------------------------------------------------------
def _same(op: Op) -> Any:
    """The result has the rows of the first argument (``real.to(fake)`` stays untracked)."""
    return provenance(op.args[0]) if op.args else None


#: elementwise ops that combine their operands additively: an untracked operand of the
#: output's full shape is other data (real images), mixed into the fakes
_COMBINING = frozenset(
    "add sub subtract rsub lerp where maximum minimum fmax fmin max min addcmul addcdiv hypot logaddexp logaddexp2".split()
)


def _pointwise(op: Op) -> Any:
    out = op.first
    nd = out.dim()
    combining = op.name.rstrip("_") in _COMBINING
    provs = []
    for t in op.operands:
        p = provenance(t)
        if p is None:
            if combining and nd and t.dtype != torch.bool and t.dim() == nd and t.numel() == out.numel():
                return LOST  # real data (or plain noise) of the fakes' full shape
            continue
        if not p.sample and t.dim() != nd:
            return LOST  # its rows are not the output's dimension 0
        provs.append(p)
    if any(p.sample for p in provs) and not all(p.sample for p in provs):
        return LOST
    return merge(op.name, provs, out.shape[0] if nd else 1, op.device)


def _reshape(op: Op) -> Any:
    """Row-major reshapes: dimension 0 of the same size holds the same rows; ``k`` times as
    many rows split each row (kornia's ``(B, C, H, W) -> (B * C, 1, H, W)``); ``k`` times
    fewer merge ``k`` consecutive rows (and keep them when those agree)."""
    p = provenance(op.args[0])
    out = op.first
    if p is None or p.sample or out.dim() == 0:
        return p
    n, m = len(p), out.shape[0]
    if m == n:
        return p
    if n and m % n == 0:
        return p.but(interleave(p.rows, m // n))
    if m and n % m == 0:
        return grouped(op.name, p, n // m)
    return LOST


def _expand(op: Op) -> Any:
    p = provenance(op.args[0])
    x, out = op.args[0], op.first
    if p is None or p.sample:
        return p
    return p if out.dim() == x.dim() else LOST  # new leading dimensions


def _layout(op: Op) -> Any:
    """``permute``/``transpose``/``movedim``/``.T``/...: replay on a meta tensor whose
    dimension 0 has size 2 and see where that dimension goes."""
    x = op.args[0]
    p = provenance(x)
    if p is None or p.sample:
        return p
    probe = torch.empty((2,) + (1,) * (x.dim() - 1), device="meta")
    with _disabled():
        moved = op.func(probe, *op.args[1:], **op.kwargs)
    return p if moved.dim() and moved.shape[0] == 2 else LOST


def _reversed(p: Provenance) -> Provenance:
    return p.but(p.rows[::-1] if isinstance(p.rows, tuple) else p.rows.flip(0))


def _flip(op: Op) -> Any:
    p = provenance(op.args[0])
    if p is None or p.sample:
        return p
    dims = op.args[1:] if len(op.args) > 1 else (op.kwargs.get("dims"),)
    if len(dims) == 1 and isinstance(dims[0], (list, tuple, torch.Size)):
        dims = dims[0]
    return _reversed(p) if 0 in _dims(list(dims), op.args[0].dim()) else p


def _roll(op: Op) -> Any:
    p, x = provenance(op.args[0]), op.args[0]
    if p is None or p.sample:
        return p
    shifts, dims = op.arg(1, "shifts"), op.arg(2, "dims")
    if dims is None:
        return LOST if x.dim() > 1 else _rolled(p, int(shifts if not isinstance(shifts, (list, tuple)) else shifts[0]))
    shifts = list(shifts) if isinstance(shifts, (list, tuple)) else [shifts]
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    total = sum(int(s) for s, d in zip(shifts, dims) if int(d) % x.dim() == 0)
    return _rolled(p, total)


def _rolled(p: Provenance, s: int) -> Provenance:
    n = len(p)
    s %= max(n, 1)
    if s == 0:
        return p
    return p.but(p.rows[-s:] + p.rows[:-s] if isinstance(p.rows, tuple) else torch.roll(p.rows, s))


def _rot90(op: Op) -> Any:
    p, x = provenance(op.args[0]), op.args[0]
    if p is None or p.sample:
        return p
    k, dims = int(op.arg(1, "k", 1)) % 4, _dims(op.arg(2, "dims", (0, 1)), x.dim())
    if 0 not in dims or k == 0:
        return p
    return _reversed(p) if k == 2 else LOST


#: where the ``dim`` argument is for functions that do not take it second
_DIM_POSITION = {"topk": 2, "kthvalue": 2, "normalize": 2, "diff": 2, "quantile": 2, "nanquantile": 2, "norm": 2, "vector_norm": 2, "linalg_vector_norm": 2}
#: the default ``dim`` of functions that act along one dimension (reductions default to all)
_DIM_DEFAULT = {"sort": -1, "argsort": -1, "topk": -1, "kthvalue": -1, "mode": -1, "normalize": 1, "diff": -1, "glu": -1, "unbind": 0}


def _along(op: Op) -> Any:
    """Reductions and ops along a dimension: the rows stay unless dimension 0 is involved."""
    x = op.args[0]
    p = provenance(x)
    if op.name in ("max", "min") and len(op.args) > 1 and isinstance(op.args[1], Tensor):
        return _pointwise(op)  # torch.max(a, b): elementwise
    if p is None:
        return LOST
    if p.sample:
        return p
    value = op.arg(_DIM_POSITION.get(op.name, 1), "dim", op.kwargs.get("axis", _DIM_DEFAULT.get(op.name)))
    if isinstance(value, bool) or (value is None and op.name in ("softmax", "log_softmax", "softmin")):
        value = None if isinstance(value, bool) else (0 if x.dim() in (0, 1, 3) else 1)  # torch's implicit dim
    return _keep_unless_dim0(op, _dims(value, x.dim()), p)


def _per_sample(op: Op) -> Any:
    """Functions of a batch whose output row i is made from input row i only."""
    x = op.args[0] if op.args else op.kwargs.get("input")
    p = provenance(x)
    if p is None or p.sample:
        return LOST if p is None else p
    if op.name == "batch_norm" and op.arg(5, "training", False):
        return LOST  # statistics over the batch
    provs = [p]
    for t in op.operands:
        q = provenance(t)
        if q is not None and t is not x:
            if t.dim() == 0 or t.shape[0] != x.shape[0]:
                return LOST
            provs.append(q)
    return merge(op.name, provs, x.shape[0], op.device)


def _unfold(op: Op) -> Any:
    if op.func is F.unfold:
        return _per_sample(op)
    p, x = provenance(op.args[0]), op.args[0]
    return _keep_unless_dim0(op, _dims(op.arg(1, "dimension"), x.dim()), p) if p is not None else LOST


def _matmul(op: Op) -> Any:
    a, b, out = op.args[0], op.args[1], op.first
    pa, pb = provenance(a), provenance(b)
    if pa is not None and not (a.dim() >= 2 and a.dim() == out.dim()):
        return LOST
    if pb is not None and not (b.dim() >= 3 and b.dim() == out.dim()):
        return LOST
    return merge(op.name, [p for p in (pa, pb) if p is not None], out.shape[0], op.device)


def _einsum(op: Op) -> Any:
    equation = op.args[0]
    operands = list(op.args[1]) if len(op.args) == 2 and isinstance(op.args[1], (list, tuple)) else list(op.args[1:])
    lhs, _, rhs = equation.replace(" ", "").partition("->")
    inputs = lhs.split(",")
    if not rhs:
        letters = [c for c in lhs if c.isalpha()]
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    provs = []
    for sub, t in zip(inputs, operands):
        p = provenance(t)
        if p is not None:
            if p.sample or not sub or not rhs or sub[0] != rhs[0] or sub[0] == ".":
                return LOST
            provs.append(p)
    return merge(op.name, provs, op.first.shape[0], op.device) if provs else None


def _like(op: Op) -> Any:
    return provenance(op.args[0]) if op.name.endswith("_like") else None  # new_zeros, ...: untracked


def _cleared(op: Op) -> Any:
    return None  # fill_ / zero_: constant rows, not fakes


def _copy(op: Op) -> Any:
    return provenance(op.args[1])  # the destination now holds the source's rows (or none)


def _select(op: Op) -> Any:
    """``narrow``/``select``/``index_select``: dimension 0 picks rows, others keep them."""
    x = op.args[0]
    p = provenance(x)
    if p is None or p.sample:
        return p
    dim = int(op.arg(1, "dim")) % x.dim()
    if dim:
        return p
    if op.name == "narrow":
        start = int(op.arg(2, "start")) % max(len(p), 1)
        return p.but(p.rows[start : start + int(op.arg(3, "length"))])
    if op.name == "select":
        i = int(op.arg(2, "index")) % len(p)
        return p.but(p.rows[i : i + 1], sample=True, ndim=x.dim() - 1)
    return gather(op.name, p, op.arg(2, "index"))


def _pieces(op: Op) -> Any:
    """``split``/``chunk``/``tensor_split``/``unbind``: consecutive pieces of the rows."""
    x = op.args[0]
    p = provenance(x)
    outs = list(op.out)
    if p is None or p.sample:
        return [p] * len(outs)
    default = {"vsplit": 0, "hsplit": 1 if x.dim() > 1 else 0, "dsplit": 2}.get(op.name, 0)
    dim = op.arg(1 if op.name == "unbind" else 2, "dim", default) if op.name not in ("vsplit", "hsplit", "dsplit") else default
    if int(dim) % x.dim() != 0:
        return [p] * len(outs)
    if op.name == "unbind":
        return [p.but(p.rows[i : i + 1], sample=True, ndim=x.dim() - 1) for i in range(len(outs))]
    answers, start = [], 0
    for t in outs:
        answers.append(p.but(p.rows[start : start + t.shape[0]]))
        start += t.shape[0]
    return answers


def _cat(op: Op) -> Any:
    parts = list(op.arg(0, "tensors"))
    out = op.first
    dim = int(op.arg(1, "dim", op.kwargs.get("axis", 0)))
    stack = op.name == "stack"
    if op.name in ("vstack", "row_stack", "hstack", "column_stack", "dstack"):
        if any(t.dim() < 2 for t in parts):
            return LOST
        stack, dim = False, (0 if op.name in ("vstack", "row_stack") else 1)
    dim %= out.dim()
    provs = [provenance(t) for t in parts]
    live = [p for p in provs if p is not None]
    if dim:  # along another dimension: the parts' rows side by side
        if any(p.sample for p in live) and not stack:
            return LOST
        return merge(op.name, live, out.shape[0], op.device)
    if any(p.sample != stack for p in live):
        return LOST  # stacking batches, or concatenating samples
    calls, rows = unify(live)
    it = iter(rows)
    parts_rows = [next(it) if p is not None else (-1,) * (1 if stack else (t.shape[0] if t.dim() else 0)) for p, t in zip(provs, parts)]
    base = live[0]
    flags = [p.flag for p in live if p.flag is not None]
    return Provenance(
        calls,
        cat_rows(parts_rows, op.device),
        any(p.attached for p in live),
        tuple(dict.fromkeys(sum((p.lost for p in live), ()))),
        functools.reduce(torch.logical_or, flags) if flags else None,
        tuple(dict.fromkeys(sum((p.flag_ops for p in live), base.flag_ops))),
    )


def _sizes(op: Op) -> list[int]:
    """The sizes of ``x.repeat(2, 1)`` / ``x.repeat((2, 1))`` / ``torch.tile(x, (2, 1))``."""
    sizes = op.args[1:] or (op.kwargs.get("dims", op.kwargs.get("repeats", ())),)
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple, torch.Size)):
        sizes = sizes[0]
    return [int(r) for r in sizes]


def _repeat(op: Op) -> Any:
    """``repeat``/``tile`` copy the whole batch along dimension 0; ``repeat_interleave`` each row."""
    p, x = provenance(op.args[0]), op.args[0]
    if p is None or p.sample:
        return p
    if op.name == "repeat_interleave":
        dim, reps = op.arg(2, "dim"), op.arg(1, "repeats")
        if dim is not None and int(dim) % x.dim():
            return p
        if dim is None or isinstance(reps, Tensor):
            return LOST  # flattened, or a different count per row
        k = int(reps)
        return p.but(interleave(p.rows, k))
    sizes = _sizes(op)
    if len(sizes) > x.dim():
        return LOST  # new leading dimensions
    k = ([1] * (x.dim() - len(sizes)) + sizes)[0]
    return p.but(p.rows * k if isinstance(p.rows, tuple) else p.rows.repeat(k))


def _getitem(op: Op) -> Any:
    x, index = op.args[0], op.args[1]
    p = provenance(x)
    if p is None or p.sample:
        return p
    items = index if isinstance(index, tuple) else (index,)
    if not items:
        return p
    advanced = [isinstance(i, (Tensor, list)) for i in items]
    if items[0] is None or items[0] is True or items[0] is False:
        return LOST  # a new leading dimension
    if items[0] is Ellipsis:
        used = sum(i.dim() if isinstance(i, Tensor) and i.dtype == torch.bool else 0 if i is None or i is Ellipsis else 1 for i in items)
        if x.dim() - used >= 1:
            items = (slice(None),) + items
            advanced = [False] + advanced
        else:
            items, advanced = items[1:], advanced[1:]
    spots = [k for k, a in enumerate(advanced) if a]
    apart = bool(spots) and spots[-1] - spots[0] + 1 != len(spots)
    first = items[0]
    if isinstance(first, slice):
        return LOST if apart else p.but(p.rows[first])
    if isinstance(first, int) or (isinstance(first, Tensor) and first.dim() == 0 and not first.is_floating_point() and first.dtype != torch.bool and first.device.type == "cpu"):
        i = int(first) % len(p)
        return p.but(p.rows[i : i + 1], sample=True, ndim=x.dim() - 1)
    if isinstance(first, Tensor) and first.dtype == torch.bool:
        if first.dim() != 1 or len(spots) > 1:
            return LOST
        if isinstance(p.rows, tuple) and on_host(first):
            return p.but(tuple(r for r, m in zip(p.rows, first.tolist()) if m))
        return p.but(on_device(p.rows, first.device)[first])
    tensors = [torch.as_tensor(items[k], device=x.device if not isinstance(items[k], Tensor) else items[k].device) for k in spots]
    with _disabled():
        index0 = torch.broadcast_tensors(*tensors)[0] if len(tensors) > 1 else tensors[0]
    if index0.dim() == 0:  # one row: a sample
        g = gather(op.name, p, index0.reshape(1))
        return g.but(g.rows, sample=True, ndim=x.dim() - 1)
    return gather(op.name, p, index0)


def _positions(first: Any, n: int) -> Any:
    """Rows an index's first entry writes: a list (host), a long tensor (device), or None."""
    if isinstance(first, slice):
        return list(range(n))[first]
    if isinstance(first, int):
        return [first % n]
    if isinstance(first, list):
        first = torch.tensor(first)
    if isinstance(first, Tensor):
        if first.dtype == torch.bool:
            if first.dim() != 1:
                return None
            first = torch.tensor([k for k, m in enumerate(first.tolist()) if m]) if on_host(first) else first.nonzero().flatten()
        if first.dim() > 1:
            return None
        return [int(k) % n for k in first.tolist()] if on_host(first) else first % n
    return None


def _device_write(base: Provenance, positions: Any, new: Optional[Provenance], n: int, device: torch.device) -> Provenance:
    rows = on_device(base.rows, device).clone()
    index = positions if isinstance(positions, Tensor) else torch.tensor(positions, device=device)
    if new is None:
        rows[index] = -1
        return base.but(rows)
    calls, (_, vrows) = unify([base, new])
    rows[index] = on_device(vrows, device)
    return compact(base.but(rows, calls=calls, attached=base.attached or new.attached))


def _scatter(op: Op) -> Any:
    x = op.args[0]
    p = provenance(x)
    if p is None or int(op.arg(1, "dim")) % x.dim() == 0:
        return LOST
    src = op.args[3] if len(op.args) > 3 else op.kwargs.get("src", op.kwargs.get("source"))
    if isinstance(src, Tensor) and provenance(src) is None and src.dim() > 0:
        return LOST  # other data written into the rows
    return _pointwise(op)


def _unknown(op: Op) -> Any:
    return LOST


_RULES: dict[str, Callable[[Op], Any]] = {}
for _names, _r in (
    ("detach detach_ clone contiguous to type type_as float double half bfloat16 long int short byte char bool cpu cuda requires_grad_ "
     "pin_memory share_memory_ get_data get_real get_imag conj resolve_conj resolve_neg positive dropout "
     "dropout_ alpha_dropout feature_alpha_dropout dropout1d dropout2d dropout3d bernoulli bernoulli_ "
     "clone_ coalesce contiguous_ retain_grad as_subclass", _same),
    ("view view_as reshape reshape_as flatten unflatten squeeze squeeze_ unsqueeze unsqueeze_ ravel", _reshape),
    ("expand expand_as broadcast_to", _expand),
    ("permute transpose transpose_ swapaxes swapdims movedim moveaxis t t_ get_T get_mT get_H get_mH adjoint", _layout),
    ("flip fliplr flipud", _flip), ("roll", _roll), ("rot90", _rot90),
    ("sum mean nansum nanmean amax amin max min prod std var std_mean var_mean norm logsumexp all any "
     "argmax argmin median nanmedian mode count_nonzero vector_norm linalg_vector_norm aminmax quantile "
     "nanquantile softmax log_softmax softmin cumsum cumsum_ cumprod cummax cummin logcumsumexp sort "
     "argsort msort topk kthvalue normalize diff glu", _along),
    ("pad interpolate upsample upsample_nearest upsample_bilinear grid_sample conv1d conv2d conv3d "
     "conv_transpose1d conv_transpose2d conv_transpose3d linear bilinear avg_pool1d avg_pool2d avg_pool3d "
     "max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices "
     "adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d "
     "adaptive_max_pool3d lp_pool1d lp_pool2d pixel_shuffle pixel_unshuffle channel_shuffle "
     "native_channel_shuffle instance_norm layer_norm group_norm rms_norm local_response_norm batch_norm fold", _per_sample),
    ("unfold", _unfold), ("matmul mm bmm", _matmul), ("einsum", _einsum),
    ("zeros_like ones_like empty_like full_like rand_like randn_like randint_like new_zeros new_ones "
     "new_empty new_full new_tensor", _like),
    ("fill_ zero_", _cleared), ("copy_", _copy),
    ("narrow select index_select", _select),
    ("split chunk tensor_split split_with_sizes unsafe_split unbind vsplit hsplit dsplit", _pieces),
    ("cat concat concatenate stack vstack row_stack hstack column_stack dstack", _cat),
    ("repeat tile repeat_interleave", _repeat),
    ("getitem", _getitem),
    ("scatter scatter_ scatter_add scatter_add_ scatter_reduce scatter_reduce_ index_fill index_fill_ "
     "index_copy index_copy_ index_add index_add_", _scatter),
):
    for _n in _names.split():
        _RULES[_n] = _r

#: elementwise ops the ATen tags do not mark ``pointwise`` on every overload
_POINTWISE_EXTRA = frozenset(
    "add sub subtract rsub mul multiply div divide true_divide floor_divide where eq ne lt gt le ge remainder "
    "fmod copysign hardswish masked_fill clamp clip nan_to_num positive".split()
)


@functools.lru_cache(maxsize=None)
def rule_for(func: Callable, name: str) -> Callable[[Op], Any]:
    if name in _RULES:
        return _RULES[name]
    base = name[:-1] if name.endswith("_") and not name.endswith("__") else name
    if base in _POINTWISE_EXTRA or _aten_pointwise(base):
        return _pointwise
    return _unknown


def _aten_pointwise(name: str) -> bool:
    packet = getattr(torch.ops.aten, name, None)
    if packet is None or not hasattr(packet, "overloads"):
        return False
    try:
        return any(torch.Tag.pointwise in getattr(packet, o).tags for o in packet.overloads())
    except Exception:  # an operator without readable tags
        return False


def written(x: Tensor, index: Any, value: Any) -> Optional[Provenance]:
    """The provenance of ``x`` after ``x[index] = value``: the written rows take the value's
    rows (whole rows), keep theirs (a constant in part of each row: cutout), or lose them
    (other data written into part of them).  For an ``x`` that was not tracked, its other
    rows are not fakes."""
    p, q = provenance(x), provenance(value)
    if p is None and q is None:
        return None
    n = x.shape[0]
    items = index if isinstance(index, tuple) else (index,)
    first, rest = (items[0] if items else slice(None)), items[1:]
    if first is Ellipsis:
        if x.dim() > len([i for i in rest if i is not None]):
            first = slice(None)  # the ellipsis covers dimension 0
        else:
            first, rest = (rest[0] if rest else slice(None)), rest[1:]
    whole = all(i is Ellipsis or (isinstance(i, slice) and i == slice(None)) for i in rest)
    constant = not isinstance(value, Tensor) or (q is None and value.numel() == 1)
    base = p if p is not None else Provenance(q.calls, (-1,) * n, q.attached)
    if constant and not whole:
        return p  # cutout-style: the rows stay
    positions = _positions(first, n)
    if positions is None:
        return lost_rows("setitem", [base] + ([q] if q else []), n)
    if constant or q is None:  # whole rows replaced by constants / other data; data in part of rows
        new = None if whole else "lost"
    else:
        new = q
    rows = list(base.rows) if isinstance(base.rows, tuple) else None
    if rows is None or isinstance(positions, Tensor) or (new not in (None, "lost") and not isinstance(new.rows, tuple)):
        return lost_rows("setitem", [base], n) if new == "lost" else _device_write(base, positions, new, n, x.device)
    lost = base.lost
    if new is None:
        for k in positions:
            rows[k] = -1
    elif new == "lost":
        for k in positions:
            rows[k] = -1
        lost = tuple(dict.fromkeys(lost + ("setitem",)))
    else:
        calls, (base_rows, vrows) = unify([base, new])
        rows = list(base_rows)
        vrows = vrows * len(positions) if len(vrows) == 1 else vrows
        for k, r in zip(positions, vrows):
            rows[k] = r if whole or rows[k] == r else -1
        return compact(base.but(tuple(rows), calls=calls, attached=base.attached or new.attached))
    return base.but(tuple(rows), lost=lost)
