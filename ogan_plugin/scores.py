"""Which score the O-GAN losses train on: D's whole output, not only the widened head.

METHOD.md section 7.  A class-conditional (projection) discriminator computes

    D(x, y) = mean(head(h)) + <embed(y), h>

and the adversarial losses must see all of it, or the class term silently drops out of
training.  The correlation term and the code use the head's raw outputs only.  So
:meth:`~ogan_plugin.head.OGANDiscriminator.decompose` reports

* ``raw``/``code``: from the widened head (unchanged);
* ``score``: picked from what D's forward returned, by the rule of ``wrap(..., score=)``:

``"auto"`` (default)
    D's output, averaged per sample (a patch map gives the mean of its patch scores).
    For a tuple, list or dict output: the first element that comes from the head, that
    is whose autograd graph reaches the head's parameters, or, when no element has such a
    graph (no gradients), whose per-sample mean equals the head's mean up to the rounding
    of its dtype.  An element found through the graph is remembered per output layout;
    one found by its values is not (the next call with gradients checks the graph).
    Exception: when D's output equals ``sigmoid`` of what the head returned, per sample or
    per patch (a discriminator ending in a Sigmoid, whose output is a probability), the
    score is the head's mean (the mean patch logit), the logit the losses expect.
``"head"``
    The head's mean alone (the O-GAN paper's score; D's output is ignored).
``"output"``
    D's output (a tensor) as it is, averaged per sample, without the Sigmoid check.
an ``int`` or another ``str``
    That element of a tuple/list output (index) or of a dict/namedtuple output (key).

The score must be per sample: a tensor whose first dimension is the batch.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Optional, Union

import torch
from torch import Tensor

__all__ = ["SCORE_MODES", "ScoreChoice", "check_score_choice", "pick_score"]

#: the named rules ``wrap(..., score=)`` accepts besides an element's index or key
SCORE_MODES = ("auto", "head", "output")

#: what ``wrap(..., score=)`` accepts
ScoreChoice = Union[str, int]


def check_score_choice(score: Any) -> ScoreChoice:
    """``score`` if :func:`ogan_plugin.wrap` accepts it, else ``TypeError`` naming ``score``."""
    if isinstance(score, bool) or not isinstance(score, (str, int)) or score == "":
        raise TypeError(
            f"score must be 'auto', 'head', 'output', an element index (int) or a key (str) of D's "
            f"output, got {score!r}"
        )
    return score


def _accumulate(t: Tensor) -> Tensor:
    """``t`` in its reduction dtype: float32, or float64 when it already is (the one place
    this rule lives; the head, the patch reductions and the score picking use it)."""
    return t if t.dtype == torch.float64 else t.float()


#: the plain containers' names, looked up by type: torch.compile traces the look-up, where
#: torch 2.11's Dynamo cannot hash ``type(output).__name__`` (a graph break under fullgraph)
_CONTAINER_NAMES = {tuple: "tuple", list: "list", dict: "dict"}


def _structure(output: Any) -> Hashable:
    """What identifies the layout of a container output (the cache key of "auto")."""
    kind = _CONTAINER_NAMES.get(type(output)) or type(output).__name__
    if isinstance(output, Mapping):
        return (kind, tuple(output))
    return (kind, len(output))


def _elements(output: Any) -> list[tuple[Any, Any]]:
    """(key, value) pairs of a tuple/list/dict output (one level)."""
    if isinstance(output, Mapping):
        return list(output.items())
    return list(enumerate(output))


def _element(output: Any, key: ScoreChoice) -> Tensor:
    """``output[key]`` with an error naming ``score`` when it is missing."""
    if isinstance(output, Tensor):
        raise ValueError(
            f"score={key!r} names an element of D's output, but D returns a single tensor; "
            "use score='auto' or score='output'"
        )
    if isinstance(output, Mapping):
        if key not in output:
            raise ValueError(f"score={key!r} is not a key of the discriminator's output; its keys: {list(output)}")
        return output[key]
    if isinstance(output, (tuple, list)):
        if isinstance(key, str):
            if key in getattr(output, "_fields", ()):  # a namedtuple
                return getattr(output, key)
            raise ValueError(
                f"score={key!r} names a key, but the discriminator returns a {type(output).__name__} of "
                f"{len(output)} elements: name one by its index (score=0 ... score={len(output) - 1})"
            )
        if not -len(output) <= key < len(output):
            raise ValueError(
                f"score={key} is out of range: the discriminator returns a {type(output).__name__} of "
                f"{len(output)} elements"
            )
        return output[key]
    raise TypeError(
        f"the discriminator returned a {type(output).__name__}; the O-GAN losses read the score from a "
        "tensor, or from an element of a tuple, list or dict (wrap(..., score=...))"
    )


def _uses(t: Tensor, params: frozenset) -> Optional[bool]:
    """Whether ``t``'s autograd graph reaches one of the parameters whose ids are
    ``params`` (None when there is no graph to follow: no grad mode, frozen head)."""
    if t.grad_fn is None or not params:
        return None
    # visited nodes by id, each kept alive: torch may hand out a new Python object for a node
    # on every access and free it after, and a freed object's id can be reused by another node
    seen: dict[int, Any] = {}
    stack = [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        variable = getattr(node, "variable", None)  # AccumulateGrad: a leaf tensor's node
        if variable is not None and id(variable) in params:
            return True
        stack.extend(n for n, _ in node.next_functions)
    return False


def _per_sample(o: Any, batch: int, where: str) -> Tensor:
    """The per-sample mean (B,) of a score tensor whose first dimension is the batch."""
    if not isinstance(o, Tensor) or not o.is_floating_point():
        what = f"dtype {o.dtype}" if isinstance(o, Tensor) else type(o).__name__
        raise TypeError(f"the score ({where}) must be a floating-point tensor, got {what}")
    if o.dim() == 0 and batch == 1:
        o = o.reshape(1)
    if o.dim() == 0 or o.shape[0] != batch:
        raise ValueError(
            f"the score ({where}) has shape {tuple(o.shape)} for a batch of {batch}: the O-GAN losses need "
            f"one score per sample, shape ({batch},) or ({batch}, ...) (a patch map is averaged). Name "
            "another element with wrap(..., score=...), or use score='head' for the head's mean"
        )
    if o.numel() == batch:  # one value per sample: the mean of one element is itself
        return _accumulate(o.reshape(batch))
    return _accumulate(o.reshape(batch, -1)).mean(dim=1)


#: autograd nodes that change a tensor's shape, layout or dtype but not which values it holds
_PASS_THROUGH = frozenset({
    "ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "UnsqueezeBackward0", "SqueezeBackward0",
    "SqueezeBackward1", "SqueezeBackward2", "TBackward0", "TransposeBackward0", "PermuteBackward0",
    "CloneBackward0", "ToCopyBackward0", "AliasBackward0",
})


def _through(node: Any) -> Any:
    """``node``, or the first node below it that is not a mere view, copy or cast."""
    while node is not None and type(node).__name__ in _PASS_THROUGH and node.next_functions:
        node = node.next_functions[0][0]
    return node


def _sigmoid_verdict(o: Tensor, logits: Tensor) -> Optional[bool]:
    """From the autograd graph alone (no values read): True when ``o`` is ``sigmoid(logits)``
    (up to views, copies and casts), False when ``o`` is ``logits`` itself, None when the
    graph does not say (no graph, or anything else between them): the values decide then."""
    top, head = _through(o.grad_fn), _through(logits.grad_fn)
    if top is None or head is None:
        return None
    if top is head:
        return False
    if type(top).__name__ == "SigmoidBackward0" and top.next_functions and _through(top.next_functions[0][0]) is head:
        return True
    return None


def output_is_head_mean(output: Any, head_score: Tensor, batch: int) -> bool:
    """Whether D's ``output`` is the head's mean ``head_score`` itself, up to views and
    copies: one value per sample, the same dtype, and the same autograd node, the head's
    ``mean`` (read from the graph, no values; eager only).  A node with several outputs (a
    compiled discriminator's graph) says nothing, and a head score changed in place by D (a
    projection's ``output += ...``) is a new node (``OGANDiscriminator._run`` then takes the
    head's mean again)."""
    if not (
        isinstance(output, Tensor)
        and output.dtype == head_score.dtype
        and output.numel() == batch
        and (output.dim() == 0 or output.shape[0] == batch)
        and not torch.compiler.is_compiling()
    ):
        return False
    node = _through(head_score.grad_fn)
    return node is not None and type(node).__name__ == "MeanBackward1" and _through(output.grad_fn) is node


def _exact(score: Tensor, o: Tensor, head_score: Tensor) -> Tensor:
    """``score`` with the head's mean at full precision: in half precision D computes its
    output from the head's mean rounded to ``o``'s dtype; swap in the float32 value (a
    value correction, zero in float32/float64; the gradient still flows through ``o``)."""
    if o.dtype in (torch.float32, torch.float64):
        return score
    rounding = head_score - head_score.to(o.dtype).to(head_score.dtype)
    return score + rounding.detach().to(score.dtype)


def _head_params(head: Any) -> frozenset:
    """Ids of the head's trainable parameters (what an element "comes from the head" uses)."""
    if head is None:
        return frozenset()
    return frozenset(id(p) for p in head.parameters() if p.requires_grad)


def _from_head(o: Any, raw: Tensor, head_score: Tensor, params: frozenset) -> Optional[str]:
    """How the element ``o`` is known to come from the head: ``"graph"`` when its autograd
    graph reaches the head's parameters; with no graph to follow, ``"value"`` when its
    per-sample mean equals the head's mean up to rounding (an eager value check); None when
    it does not come from the head.

    The value check compares in the reduction dtype (float32, float64 for float64 values).
    ``o`` holds values rounded to its own dtype, and the head's mean is the mean of ``raw``,
    rounded to the network's dtype: the tolerance is one unit in the last place of each,
    ``eps(o.dtype) * mean|o| + eps(raw.dtype) * mean|raw|`` per sample, plus 8 units of the
    comparison dtype times ``max|raw|`` for the sums (for bfloat16 values near 1 about
    0.016), so an element that is merely close to the head's mean does not match.
    """
    if not isinstance(o, Tensor) or not o.is_floating_point() or o.dim() == 0 or o.shape[0] != raw.shape[0]:
        return None
    used = _uses(o, params)
    if used is not None:
        return "graph" if used else None
    values = _accumulate(o.detach().reshape(o.shape[0], -1))
    raws = _accumulate(raw.detach())
    dtype = torch.promote_types(values.dtype, raws.dtype)
    values, raws = values.to(dtype), raws.to(dtype)
    tol = (
        torch.finfo(o.dtype).eps * values.abs().mean(dim=1)
        + torch.finfo(raw.dtype).eps * raws.abs().mean(dim=1)
        + 8 * torch.finfo(dtype).eps * raws.abs().amax(dim=1)
    )
    close = (values.mean(dim=1) - head_score.detach().to(dtype)).abs() <= tol
    return "value" if bool(close.all()) else None


#: what a cache lookup returns for an output layout not seen yet
_NOT_FOUND = object()


@torch.compiler.disable
def _find_head_element(output: Any, raw: Tensor, head_score: Tensor, cache: dict, head: Any, head_path: str) -> Any:
    """The key of the first element of a container output that comes from the head.

    The elements whose autograd graph reaches the head's parameters come first; that
    answer is remembered per output layout (``cache``).  Only when none has such a graph
    (no gradients) are values compared, and that answer is not remembered, so that a
    later call with gradients checks the graph.  (The caller looks the cache up first,
    outside this function, which ``torch.compile`` does not trace.)
    """
    items = _elements(output)
    params = _head_params(head)
    found = {key: _from_head(value, raw, head_score, params) for key, value in items}
    for key, how in found.items():
        if how == "graph":
            cache[_structure(output)] = key
            return key
    for key, how in found.items():
        if how == "value":
            return key
    shown = {k: (tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__) for k, v in items}
    raise ValueError(
        f"no tensor in the discriminator's output comes from its head {head_path!r} "
        f"(elements: {shown}); name the score with wrap(..., score=KEY)"
        + ("" if torch.is_grad_enabled() else " (without gradients only outputs equal to the head's mean are recognised)")
    )


@torch.compiler.disable
def _check_named_element(o: Any, key: ScoreChoice, head: Any, checked: dict, structure: Hashable) -> None:
    """Raise when a named element provably does not use the head (remembered once it does)."""
    if not isinstance(o, Tensor):
        return
    used = _uses(o, _head_params(head))
    if used is None:
        return
    if not used:
        raise ValueError(
            f"score={key!r} names an element of D's output that does not come from the widened head: the "
            "adversarial losses would not train the encoder. Name the element computed from the head"
        )
    checked[structure] = True


def pick_score(
    output: Any,
    raw: Tensor,
    head_score: Tensor,
    choice: ScoreChoice,
    cache: Optional[dict] = None,
    head: Optional[Any] = None,
    head_path: str = "head",
    head_out: Optional[Tensor] = None,
) -> Tensor:
    """The per-sample score (B,) the O-GAN losses use (module docstring).

    Args:
        output: what D's forward returned.
        raw: the head's raw outputs (B, z_dim) of that forward.
        head_score: ``raw``'s row mean, float32 (float64 for float64 networks).
        choice: the rule (``wrap(..., score=)``).
        cache: per-discriminator memory of the element "auto" found in a container output.
        head: the head module: an element "comes from the head" when its autograd graph
            reaches the head's parameters (None: only the value check is made).
        head_path: the head's name, for messages.
        head_out: what the head returned in that forward (its score, or a patch
            discriminator's map of patch scores), for the Sigmoid check of "auto" (None:
            the check compares per-sample outputs with the head's mean only).

    Returns:
        (B,) float32 (float64 for float64 outputs), differentiable through what it was
        computed from.
    """
    batch = raw.shape[0]
    cache = {} if cache is None else cache
    if choice == "head":
        return head_score
    if choice == "output":
        if not isinstance(output, Tensor):
            raise ValueError(
                f"score='output' needs a discriminator that returns a tensor, it returned a "
                f"{type(output).__name__}; name the element with score=KEY"
            )
        return _exact(_per_sample(output, batch, "D's output"), output, head_score)
    if choice == "auto":
        if isinstance(output, Tensor):
            if output_is_head_mean(output, head_score, batch):
                return head_score  # the common case
            o, where = output, "D's output"
        else:
            key = cache.get(_structure(output), _NOT_FOUND)  # traced: no graph break once found
            if key is _NOT_FOUND:
                key = _find_head_element(output, raw, head_score, cache, head, head_path)
            o, where = _element(output, key), f"element {key!r} of D's output"
        value = _per_sample(o, batch, where)
        score = _exact(value, o, head_score)
        # A Sigmoid after the head: D's output is a probability (per sample, or per patch of
        # a patch map), while the losses want the logit, the head's mean.  The autograd graph
        # tells at no device cost; without one (no gradients), or under torch.compile (which
        # traces no graph walk), the values decide, on the device, without a host read.
        logits = head_score if head_out is None else head_out
        if o.numel() != logits.numel():
            return score
        verdict = None if torch.compiler.is_compiling() else _sigmoid_verdict(o, logits)
        if verdict is not None:
            return head_score.to(score.dtype) if verdict else score
        prob = torch.sigmoid(logits.detach().reshape(-1).to(o.dtype))
        tol = 4 * torch.finfo(o.dtype).eps
        is_probability = ((o.detach().reshape(-1) - prob).abs() <= tol).all()
        return torch.where(is_probability, head_score.to(score.dtype), score)
    o = _element(output, choice)
    checked = cache.setdefault("checked", {})
    structure = (_structure(output), choice)
    if structure not in checked:  # traced: no graph break once checked
        _check_named_element(o, choice, head, checked, structure)
    return _exact(_per_sample(o, batch, f"element {choice!r} of D's output"), o, head_score)
