"""Tracked tensors: generator outputs that carry their rows' provenance through torch ops.

Hook mode (:mod:`ogan_plugin.hook`) returns the generator's output as a :class:`Tracked`
tensor, an alias of it (``Tensor.as_subclass``: the same storage and autograd graph) that
holds a :class:`~ogan_plugin.rows.Provenance`: for each row of dimension 0, the row of
``z`` that made it, or ``-1`` for a row that is not a fake.  ``__torch_function__`` runs
each torch operation on the plain tensors and gives its result the provenance the rules
below decide; the discriminator's forward pre-hook takes it off (:func:`untrack`), so D
runs on a plain tensor and its own forward pays nothing.

The rules, by operation (the name torch gives the function or method):

* **the same rows**: ``detach``, ``clone``, ``to``, ``contiguous``, memory formats, every
  elementwise op (what ATen tags ``pointwise``, and ``add``/``mul``/``where``/...), the
  ``*_like`` factories (``randn_like(x)`` is noise for ``x``'s rows), per-sample functions
  (``F.pad``, ``F.interpolate``, ``F.grid_sample``, convolutions, ``F.linear``, pooling,
  instance/layer/group norm, dropout), reshapes that keep dimension 0 (``view``,
  ``reshape``, ``flatten``, ``(un)squeeze``), ``permute``/``transpose``/``movedim`` that
  leave it first, reductions and ``softmax``/``cumsum``/``sort``/``normalize`` over other
  dimensions, ``flip``/``roll``/``rot90`` over other dimensions;
* **rows rearranged**: slices, ``narrow``, ``chunk``, ``split``, ``tensor_split`` and
  ``unbind`` on dimension 0; ``torch.cat`` / ``stack`` (untracked parts, real images, get
  ``-1``); ``flip``/``roll`` over dimension 0; indexing dimension 0 by an int, a list, a
  mask or index tensors (DiffAugment indexes with ``meshgrid(arange(B), ...)``: each output
  row keeps its source when all its entries come from one row), ``index_select``;
  in-place writes (``x[mask] = y``, kornia's ``out[to_apply] = ...``, ``buffer.copy_(fake)``;
  a plain tensor fakes are written into becomes tracked, and keeps only the generator calls
  its rows still point into);
* **lost** (those rows become ``-1``; the op is named in a warning if D sees them): two
  different row maps combined elementwise (mixup: ``lam * x + (1 - lam) * x[perm]``), a
  fake combined additively (``add``, ``sub``, ``lerp``, ``where``, ``maximum``, ...) with
  an untracked tensor of its full shape (real images, as in a gradient penalty's
  interpolation; also ``torch.randn(x.shape)`` noise: ``torch.randn_like(x)`` follows
  ``x``), reductions, ``softmax``, ``cumsum``, ``sort`` or training-mode batch norm over
  dimension 0, and every operation the rules do not know.

Untracked operands with one entry per sample (``(B, 1, 1, 1)`` random factors, cutout
masks, a ``grid_sample`` grid) or none (constants, weights) do not mix rows.  Writes through
a view of a plain tensor (``buffer[:n].copy_(fake)``) are not followed: only the view is
written to.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from ogan_plugin.provenance_rules import LOST, Op, rule_for, written
from ogan_plugin.rows import Provenance, lost_rows, provenance, repeat

__all__ = ["Tracked", "propagate", "provenance", "set_provenance", "track", "untrack"]

_disabled = torch._C.DisableTorchFunctionSubclass


class Tracked(Tensor):
    """A tensor made from a generator output that knows its rows' provenance.

    Made by hook mode; it behaves as the plain tensor it aliases (same storage, dtype,
    device and autograd graph).  ``copy.deepcopy`` keeps the provenance; pickling and
    ``torch.save`` store a plain tensor.
    """

    @classmethod
    @torch.compiler.disable  # the row rules are Python bookkeeping: eager (a graph break) under torch.compile
    def __torch_function__(cls, func: Callable, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        return propagate(func, args, kwargs or {})

    def __deepcopy__(self, memo: dict) -> Tensor:
        with _disabled():
            plain = copy.deepcopy(self.as_subclass(Tensor), memo)
        prov = provenance(self)
        return plain if prov is None else track(plain, prov)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return untrack(self).__reduce_ex__(protocol)

    def __repr__(self, **kwargs: Any) -> str:  # prints as the tensor it is
        return untrack(self).__repr__(**kwargs)


def track(t: Tensor, prov: Provenance) -> Tensor:
    """An alias of ``t`` (same storage and autograd graph) that carries ``prov``."""
    with _disabled():
        out = t.as_subclass(Tracked)
    out._ogan_prov = prov
    return out


def untrack(t: Tensor) -> Tensor:
    """A plain tensor aliasing ``t`` (the same storage and autograd graph)."""
    with _disabled():
        return t.as_subclass(Tensor)


def set_provenance(t: Tensor, prov: Optional[Provenance], inputs: Sequence[Any]) -> Tensor:
    """Give an operation's result ``t`` its provenance, in place; returns ``t``.

    A fresh plain result becomes :class:`Tracked` (its class is set: no alias, no autograd
    node); a tracked result (an in-place op on a tracked tensor) gets the new provenance;
    a result that *is* one of the untracked inputs is the user's own tensor: left alone.
    """
    if type(t) is Tracked:
        t._ogan_prov = prov if prov is not None and prov.alive() else None
    elif prov is not None and type(t) is Tensor and prov.alive() and not any(t is a for a in inputs):
        t.__class__ = Tracked
        t._ogan_prov = prov
    return t


# --- dispatch ------------------------------------------------------------------------------
def propagate(func: Callable, args: tuple, kwargs: dict) -> Any:
    """Run ``func`` on plain tensors and give its tensor results their provenance."""
    name = _name(func)
    with _disabled():  # the rules read shapes and flags without coming back here
        if name == "setitem":
            func(*args, **kwargs)
            if type(args[0]) is Tracked or (type(args[0]) is Tensor and provenance(args[2]) is not None):
                _adopt(args[0], _attached(written(*args), args[0]))  # (kornia: out[i] = crop)
            return None
        out = func(*args, **kwargs)
        if type(out) is Tensor and len(args) == 1 and not kwargs and name in _SAME_ROWS:
            # the common one-argument case (detach, contiguous, clone, float, ...): no rule machinery
            prov = args[0].__dict__.get("_ogan_prov") if isinstance(args[0], Tracked) else None
            if prov is not None and out.dim() and out.shape[0] == len(prov) and not prov.sample:
                return set_provenance(out, _attached(prov, out), args)
        if isinstance(out, Tensor):
            outs: Sequence[Any] = (out,)
        elif isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
            outs = out
        else:
            return out  # sizes, dtypes, numbers, strings, None
        operands = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        operands += [x for a in (*args, *kwargs.values()) if isinstance(a, (list, tuple)) for x in a if isinstance(x, Tensor)]
        op = Op(name, func, args, kwargs, out, operands)
        if not op.provs:
            return out
        answer = rule_for(func, name)(op)
        if name == "copy_" and out is args[0] and type(out) is Tensor and args[0].dim():
            _adopt(out, _attached(_resolve(op, answer, out), out))  # buffer.copy_(fake): it holds fakes now
            return out
        answers = answer if isinstance(answer, list) else [answer] * len(outs)
        for t, a in zip(outs, answers):
            if isinstance(t, Tensor):
                set_provenance(t, _attached(_resolve(op, a, t), t), operands)
        return out


def _adopt(t: Tensor, prov: Optional[Provenance]) -> None:
    """A tensor fakes were written into (a plain ``torch.Tensor``, or a tracked one) carries the
    rows it holds now: a plain one becomes :class:`Tracked` in place.  Not a parameter, not a
    tensor subclass (their class is theirs), not a view's base (a write through a view of a
    plain tensor is not followed: only the view is the written object)."""
    if type(t) is Tracked:
        t._ogan_prov = prov if prov is not None and prov.alive() else None
    elif type(t) is Tensor and prov is not None and prov.alive():
        t.__class__ = Tracked
        t._ogan_prov = prov


def _attached(prov: Optional[Provenance], t: Tensor) -> Optional[Provenance]:
    """A result without an autograd graph (``.detach()``, no_grad) no longer feeds G's loss."""
    return prov.detached() if prov is not None and prov.attached and not t.requires_grad else prov


def _resolve(op: Op, answer: Any, t: Tensor) -> Optional[Provenance]:
    """A rule's answer for one output, checked against the output's shape."""
    if answer is None:
        return None
    if answer is LOST:
        return lost_rows(op.name, op.provs, t.shape[0]) if t.dim() else None
    if answer.sample:
        if t.dim() == answer.ndim + 1 and t.shape[0] == 1:
            return answer.but(answer.rows, sample=False, ndim=0)  # x[i][None]: a batch of one
        return answer if t.dim() == answer.ndim else answer.but(answer.rows, ndim=t.dim())
    if t.dim() == 0:
        return None
    n = len(answer)
    if t.shape[0] == n:
        return answer
    if n == 1:
        return answer.but(repeat(answer.rows, t.shape[0]))
    return lost_rows(op.name, [answer], t.shape[0])


#: one-argument ops that keep the rows as they are (propagate's fast path)
_SAME_ROWS = frozenset(
    "detach clone contiguous float double half bfloat16 cpu cuda requires_grad_ get_data neg abs sigmoid tanh "
    "relu exp sqrt".split()
)


# --- names ---------------------------------------------------------------------------------
_DUNDER = {
    "__add__": "add", "__radd__": "add", "__iadd__": "add_", "__sub__": "sub", "__rsub__": "rsub",
    "__isub__": "sub_", "__mul__": "mul", "__rmul__": "mul", "__imul__": "mul_", "__truediv__": "div",
    "__rtruediv__": "div", "__itruediv__": "div_", "__floordiv__": "floor_divide",
    "__rfloordiv__": "floor_divide", "__pow__": "pow", "__rpow__": "pow", "__ipow__": "pow_",
    "__mod__": "remainder", "__rmod__": "remainder", "__neg__": "neg", "__pos__": "positive",
    "__abs__": "abs", "__invert__": "bitwise_not", "__and__": "bitwise_and", "__rand__": "bitwise_and",
    "__or__": "bitwise_or", "__ror__": "bitwise_or", "__xor__": "bitwise_xor", "__rxor__": "bitwise_xor",
    "__lt__": "lt", "__le__": "le", "__gt__": "gt", "__ge__": "ge", "__eq__": "eq", "__ne__": "ne",
    "__matmul__": "matmul", "__rmatmul__": "matmul", "__getitem__": "getitem", "__setitem__": "setitem",
}


@functools.lru_cache(maxsize=None)
def _name(func: Callable) -> str:
    name = getattr(func, "__name__", "") or ""
    if name == "__get__":  # a property: Tensor.data, .T, .grad, ...
        return "get_" + str(getattr(getattr(func, "__self__", None), "__name__", "?"))
    return _DUNDER.get(name, name)


