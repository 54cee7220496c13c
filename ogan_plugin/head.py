"""The widened head, the wrapped discriminator and :func:`wrap`.

``wrap(D, z_dim)`` asks the adapters (``ogan_adapt_discriminator`` hook) to recognise D's
scalar head, replaces that head **in place** with an :class:`OGANHead` of ``z_dim``
outputs, and returns an :class:`OGANDiscriminator` around D.  The head returns the mean
of its outputs in the old head's output shape, so whatever D's forward does after it
(a Sigmoid, a ``view(-1)``) still works and calling the wrapped module gives the same
kind of score as before.  The head keeps its last raw output for :meth:`decompose`.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any, Callable, Mapping, NamedTuple, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin.scores import ScoreChoice, _accumulate, check_score_choice, pick_score

__all__ = [
    "Adaptation",
    "Decomposition",
    "OGANDiscriminator",
    "OGANHead",
    "as_wrapped",
    "find_scalar_head",
    "is_spectral_normed",
    "wrap",
]

#: Convolution types a head may be (with one output channel yielding a 1x1 map).
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class OGANHead(nn.Module):
    """A widened head: ``raw = output_scale * layer(h)``, returning ``mean(raw)``.

    The layer's output is one row of ``z_dim`` values per sample, ``(B, z_dim)``
    (``nn.Linear`` and custom linear layers), or a map ``(B, z_dim, *spatial)``
    (``nn.ConvNd``).  The head returns the mean over the ``z_dim`` outputs in the old
    head's output shape: ``(B, 1)`` for a row, ``(B, 1, *spatial)`` for a map, so every
    patch of a patch discriminator keeps its score.  ``last_raw`` (what
    :meth:`OGANDiscriminator.decompose` reads) is always ``(B, z_dim)``: the row, the
    flattened 1x1 map, or the map reduced over its positions by ``patch_reduction``,
    shifted per row so that ``mean(last_raw)`` is the mean of the patch scores (the
    reduction chooses the code, never the score the losses see; the shift is zero only
    when the reduction is the plain mean over the patches, ``"mean"``, not for the default
    ``"positional"``).

    The reduction is saved with the head: ``state_dict()`` holds its name under
    ``<head>._extra_state`` (see :meth:`get_extra_state`), and ``load_state_dict``
    restores it.

    Args:
        layer: the widened layer with ``z_dim`` outputs (``nn.Linear`` / ``nn.ConvNd``,
            possibly under spectral norm, or a custom linear module).
        z_dim: number of outputs.
        output_scale: constant factor on the outputs (1 except for spectral-normed heads,
            where it keeps the score's Lipschitz bound and value; see
            :mod:`ogan_plugin.adapters.spectral_norm`).
        patch_reduction: ``(B, z_dim, *spatial) -> (B, z_dim)``, used when a convolution
            yields a map larger than 1x1 (set by :mod:`ogan_plugin.adapters.patch`);
            ``None``: such a map raises ``ValueError``.

    Raises:
        ValueError: (at forward) the layer's output is not one row or map per sample, or
            a map larger than 1x1 without a ``patch_reduction``.
    """

    def __init__(
        self,
        layer: nn.Module,
        z_dim: int,
        output_scale: float = 1.0,
        patch_reduction: Optional[Callable[[Tensor], Tensor]] = None,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.z_dim = z_dim
        self.register_buffer("output_scale", torch.tensor(float(output_scale)))
        # decided at construction (a plain head skips the multiply): no device sync per forward
        self.scaled = float(output_scale) != 1.0
        self.patch_reduction = patch_reduction
        self.last_raw: Optional[Tensor] = None
        self.last_score: Optional[Tensor] = None  # what the last forward returned (a score, or a patch map)
        self.register_load_state_dict_pre_hook(_keep_reduction_without_extra_state)

    def forward(self, h: Tensor) -> Tensor:
        out = self.layer(h)
        if self.scaled:
            out = out * self.output_scale.to(out.dtype)
        spatial = conv_spatial_dims(self.layer)
        if spatial is None:
            # a row per sample: (B, z_dim) -> score (B, 1)
            if out.dim() != 2 or out.shape[1] != self.z_dim:
                raise ValueError(self._not_per_sample(h, out, f"(batch, {self.z_dim})"))
            raw = out
        else:
            # a map per sample: (B, z_dim, *spatial) -> score map (B, 1, *spatial)
            if out.dim() != spatial + 2 or out.shape[1] != self.z_dim:
                raise ValueError(self._not_per_sample(h, out, f"(batch, {self.z_dim}, {', '.join(['...'] * spatial)})"))
            if all(s == 1 for s in out.shape[2:]):
                raw = out.flatten(1)
            elif self.patch_reduction is None:
                raise ValueError(
                    f"the O-GAN head's convolution yields a {'x'.join(map(str, out.shape[2:]))} map per sample and "
                    "this head has no patch_reduction: it was built to give one value per sample (a 1x1 map). "
                    "Patch discriminators are handled by the built-in patch adapter "
                    "(ogan_plugin.adapters.patch, active unless it was blocked)"
                )
            else:
                # each patch's score; the code reads the map through the reduction, recentred so
                # that mean(raw), the score every loss sees, is the mean patch score whatever it is
                scores = _accumulate(out).mean(dim=1, keepdim=True)
                reduced = _accumulate(self.patch_reduction(out))
                raw = reduced - reduced.mean(dim=1, keepdim=True) + scores.flatten(1).mean(dim=1, keepdim=True)
                self.last_raw = raw.to(out.dtype)
                self.last_score = scores.to(out.dtype)
                return self.last_score
        self.last_raw = raw
        score = _accumulate(raw).mean(dim=1).to(raw.dtype)
        self.last_score = score.view(out.shape[0], 1, *([1] * (out.dim() - 2)))
        return self.last_score

    def get_extra_state(self) -> Tensor:
        """What the head's ``state_dict()`` holds besides its tensors: its patch reduction.

        Returns:
            The UTF-8 text of the JSON object ``{"patch_reduction": NAME}``, padded with
            zero bytes to :data:`EXTRA_STATE_BYTES`, as a 1-D ``uint8`` tensor: a tensor,
            so that every checkpoint format holds it (``torch.load(..., weights_only=True)``,
            safetensors), of one size whatever the name, so that loaders that fill the
            current state in place (``torch.distributed.checkpoint``) accept it.  ``NAME``
            is the reduction's key in :data:`ogan_plugin.adapters.patch.REDUCTIONS`,
            ``null`` for a head without one (a linear head), or
            ``{"custom": "module.function"}`` for another function, which a state dict
            cannot hold (see :meth:`set_extra_state`).  Read it with
            ``json.loads(bytes(t.tolist()).rstrip(b"\\0"))``.
        """
        from ogan_plugin.adapters.patch import reduction_name

        data = json.dumps({"patch_reduction": reduction_name(self.patch_reduction)}, ensure_ascii=False).encode()
        return torch.tensor(list(data.ljust(EXTRA_STATE_BYTES, b"\0")), dtype=torch.uint8)

    def set_extra_state(self, state: Any) -> None:
        """Restore the patch reduction saved by :meth:`get_extra_state` (called by
        ``load_state_dict``).

        A state dict saved before the head kept its reduction has no such entry: loading
        it, strict or not, keeps the head's reduction (the default after :func:`wrap`).

        Args:
            state: what :meth:`get_extra_state` returned.

        Raises:
            ValueError: ``state`` is not what :meth:`get_extra_state` returns, names a
                reduction that :data:`~ogan_plugin.adapters.patch.REDUCTIONS` lacks, or
                names a custom function while the head has none set (call
                ``set_patch_reduction(D, function)`` before loading).
        """
        from ogan_plugin.adapters.patch import reduction_named

        self.patch_reduction = reduction_named(_decode_extra_state(state)["patch_reduction"], self.patch_reduction)

    def __getstate__(self) -> dict[str, Any]:
        # the last forward's output (possibly part of an autograd graph) is not state:
        # copy.deepcopy and pickling would fail on it after a plain forward
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        return {**state, "last_raw": None, "last_score": None}

    def _not_per_sample(self, h: Tensor, out: Tensor, expected: str) -> str:
        return (
            f"the O-GAN head's output is not per-sample: its {type(self.layer).__name__} turned an input of "
            f"shape {tuple(h.shape)} into {tuple(out.shape)}, expected {expected} (one row or map of "
            f"{self.z_dim} outputs per sample). The head must see a batch of whole samples: an unbatched "
            "input, or extra leading dimensions (tokens, time steps), give no per-sample code; reduce them "
            "before the head, or pass wrap(..., head=...) on a layer that gives one output per sample"
        )

    def extra_repr(self) -> str:
        extra = f", patch_reduction={getattr(self.patch_reduction, '__name__', self.patch_reduction)}" if self.patch_reduction else ""
        return f"z_dim={self.z_dim}{extra}"


def _decode_extra_state(state: Any) -> dict[str, Any]:
    """The JSON object :meth:`OGANHead.get_extra_state` encoded (``ValueError`` otherwise)."""
    try:
        if not (isinstance(state, Tensor) and state.dtype == torch.uint8 and state.dim() == 1):
            raise ValueError
        data = json.loads(bytes(state.tolist()).rstrip(b"\0").decode("utf-8"))
        if not isinstance(data, dict) or "patch_reduction" not in data:
            raise ValueError
    except ValueError:  # also UnicodeDecodeError and json.JSONDecodeError
        what = f"a {state.dtype} tensor of shape {tuple(state.shape)}" if isinstance(state, Tensor) else type(state).__name__
        raise ValueError(
            "the O-GAN head's '_extra_state' entry must be what OGANHead.get_extra_state() returns "
            f"(a 1-D uint8 tensor holding JSON text with a 'patch_reduction'), got {what}"
        ) from None
    return data


def _keep_reduction_without_extra_state(head: "OGANHead", state_dict: dict, prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: a state dict from before the head kept its reduction
    has no ``<head>._extra_state`` entry; fill in the head's own, so that loading it,
    strict or not, keeps the reduction the head has."""
    key = prefix + EXTRA_STATE_KEY
    if key not in state_dict:
        state_dict[key] = head.get_extra_state()


#: the suffix under which ``state_dict()`` keeps a module's extra state (torch's name)
EXTRA_STATE_KEY = "_extra_state"

#: the size of :meth:`OGANHead.get_extra_state`'s tensor (a custom reduction's name is
#: cut to its last 100 characters, so its JSON text always fits)
EXTRA_STATE_BYTES = 512


def conv_spatial_dims(layer: nn.Module) -> Optional[int]:
    """Spatial dimensions of a ``nn.ConvNd`` layer (1, 2, 3); None for other layers."""
    for n, t in enumerate(CONV_TYPES, start=1):
        if isinstance(layer, t):
            return n
    return None


class Adaptation(NamedTuple):
    """An adapter's answer: where D's head is and the :class:`OGANHead` to put there."""

    path: str
    head: OGANHead


class Decomposition(NamedTuple):
    """The orthogonal parts of the encoder output (METHOD.md sections 1 and 7).

    ``score`` (B,) float32 (float64 for float64 networks): what the O-GAN losses train on,
    picked from D's output by ``wrap(..., score=)`` (:mod:`ogan_plugin.scores`): D's
    whole output (a projection discriminator's class term included), or the head's mean
    ``mean(raw)`` for a discriminator ending in a Sigmoid;
    ``code`` (B, z_dim) float32 = raw - mean(raw) (orthogonal to all-ones); ``raw``
    (B, z_dim) in the network's dtype: the widened head's outputs; ``output``: what D's
    own forward returned.
    """

    score: Tensor
    code: Tensor
    raw: Tensor
    output: Tensor


def is_spectral_normed(layer: nn.Module) -> bool:
    """True when ``layer.weight`` carries spectral norm (parametrization or old hook)."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import _SpectralNorm
    from torch.nn.utils.spectral_norm import SpectralNorm

    if parametrize.is_parametrized(layer, "weight"):
        return any(isinstance(p, _SpectralNorm) for p in layer.parametrizations.weight)
    return any(isinstance(h, SpectralNorm) for h in layer._forward_pre_hooks.values())


def out_features(m: nn.Module) -> Optional[int]:
    """Outputs of a Linear / ConvNd layer or of a custom linear module (None for others).

    A custom linear module (StyleGAN2-ADA's ``FullyConnectedLayer``, rosinality's
    ``EqualLinear``, ...) is recognised by its parameters alone (see
    :func:`custom_linear_rows`); whether its forward is affine is probed by
    :mod:`ogan_plugin.adapters.custom_linear`.
    """
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, CONV_TYPES):
        return m.out_channels
    return custom_linear_rows(m)


def has_plain_forward(layer: nn.Module) -> bool:
    """True when ``layer`` is an ``nn.Linear`` / ``nn.ConvNd`` computing what that class
    computes: a subclass that overrides ``forward`` (or a convolution's
    ``_conv_forward``), e.g. one normalising its weight on the fly, is not plain."""
    if isinstance(layer, nn.Linear):
        return type(layer).forward is nn.Linear.forward
    for t in CONV_TYPES:
        if isinstance(layer, t):
            return type(layer).forward is t.forward and type(layer)._conv_forward is t._conv_forward
    return False


def custom_linear_rows(m: nn.Module) -> Optional[int]:
    """Rows of ``m.weight`` when ``m`` looks like a custom linear layer, else None.

    That is: its own parameters are a 2-D ``weight`` (rows = outputs) and optionally a
    1-D ``bias`` with one entry per row, and its submodules hold no parameters.  A plain
    ``nn.Linear`` (see :func:`has_plain_forward`) and an ``nn.Embedding`` (its weight is
    a lookup table) are not custom; an ``nn.Linear`` subclass with its own forward is.
    """
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) or has_plain_forward(m):
        return None
    own = dict(m.named_parameters(recurse=False))
    weight, bias = own.pop("weight", None), own.pop("bias", None)
    if own or weight is None or weight.dim() != 2:
        return None
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        return None
    if any(True for c in m.children() for _ in c.parameters()):
        return None
    return int(weight.shape[0])


def find_scalar_head(discriminator: nn.Module, head: Optional[str] = None) -> tuple[str, nn.Module]:
    """Locate the candidate scalar head of ``discriminator``: (dotted path, module).

    With ``head`` given, that submodule.  Otherwise the single layer with one output
    (``nn.Linear``, ``nn.ConvNd`` or a custom linear module, see :func:`out_features`);
    when there are several, the last registered one is
    the head only if it is also the last layer with parameters (a Sequential ending);
    anything else is ambiguous and raises, asking for ``head=``.
    """
    if head is not None:
        if not isinstance(head, str) or not head:
            raise TypeError(f"head must be a dotted submodule path (str), got {head!r}")
        try:
            return head, discriminator.get_submodule(head)
        except AttributeError:
            names = [n for n, _ in discriminator.named_modules() if n and "parametrizations" not in n]
            raise ValueError(f"head={head!r} is not a submodule of the discriminator; submodules: {names}") from None
    ones = [(n, m) for n, m in discriminator.named_modules() if n and out_features(m) == 1]
    if len(ones) == 1:
        return ones[0]
    layers = [
        (n, m)
        for n, m in discriminator.named_modules()
        if n and "parametrizations" not in n and (any(True for _ in m.parameters(recurse=False)) or out_features(m))
    ]
    if ones and layers and layers[-1][0] == ones[-1][0]:
        return ones[-1]
    if not ones and out_features(discriminator) == 1:
        raise LookupError(
            "the discriminator is itself a single 1-output layer; wrap a module that contains it, "
            "e.g. nn.Sequential(layer)"
        )
    if not ones:
        raise LookupError(
            "no scalar head found: looked for an nn.Linear(in, 1) or nn.ConvNd(in, 1, ...) "
            f"(last layers seen: {[f'{n}: {type(m).__name__}' for n, m in layers[-3:]]}). "
            "Pass wrap(D, z_dim, head='path.to.layer') or register an adapter plugin "
            "(hook ogan_adapt_discriminator, entry-point group 'ogan_plugin')"
        )
    raise LookupError(
        f"several 1-output layers could be the head: {[n for n, _ in ones]}; "
        "pass wrap(D, z_dim, head='path.to.layer')"
    )


def centered_rows(z_dim: int, like: Tensor) -> Tensor:
    """``z_dim`` random perturbations shaped like ``like`` (1, ...) whose sum is zero.

    Drawn like a fresh layer's default init (uniform, fan-in scaled), so the code part
    of the widened head starts as a freshly initialised layer would.
    """
    fan_in = like[0].numel()
    bound = 1.0 / math.sqrt(fan_in)
    d = torch.empty((z_dim, *like.shape[1:]), dtype=torch.float64, device=like.device).uniform_(-bound, bound)
    return d - d.mean(dim=0, keepdim=True)


#: integer attributes naming a custom linear module's output count, kept in step with its rows
OUTPUT_COUNT_ATTRIBUTES = ("out_features", "out_dim", "out_channels", "output_dim")


def new_layer_like(layer: nn.Module, out_features: int) -> nn.Module:
    """A fresh layer of ``layer``'s type and input geometry with ``out_features`` outputs
    (no spectral norm), on ``layer``'s device and dtype.

    For a custom linear module (:func:`custom_linear_rows`): a deep copy whose ``weight``
    has ``out_features`` rows and whose ``bias`` (if any) as many entries, all zero (the
    caller fills them), with integer :data:`OUTPUT_COUNT_ATTRIBUTES` that held the old row
    count updated; its own forward is kept.
    """
    if has_plain_forward(layer) and isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, out_features, bias=layer.bias is not None)
    elif has_plain_forward(layer):
        conv_type = next(t for t in CONV_TYPES if isinstance(layer, t))
        new = conv_type(
            layer.in_channels,
            out_features,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
        )
    else:
        rows = custom_linear_rows(layer)
        if rows is None:
            raise TypeError(f"cannot build a layer like {type(layer).__name__}: not a Linear, ConvNd or custom linear module")
        new = copy.deepcopy(layer)
        weight, bias = layer.weight, getattr(layer, "bias", None)
        new.weight = nn.Parameter(weight.new_zeros(out_features, weight.shape[1]), requires_grad=weight.requires_grad)
        if isinstance(bias, Tensor):
            new.bias = nn.Parameter(bias.new_zeros(out_features), requires_grad=bias.requires_grad)
        for attr in OUTPUT_COUNT_ATTRIBUTES:
            if type(getattr(new, attr, None)) is int and getattr(new, attr) == rows:
                setattr(new, attr, out_features)
        return new
    return new.to(device=layer.weight.device, dtype=layer.weight.dtype)


def widen_layer(layer: nn.Module, z_dim: int) -> nn.Module:
    """A 1-output Linear/ConvNd widened to ``z_dim`` outputs whose mean output equals the
    old output: each new weight row is the old row plus a perturbation, the perturbations
    summing to zero; every new bias equals the old bias."""
    new = new_layer_like(layer, z_dim)
    with torch.no_grad():
        w = layer.weight.detach().double()
        new.weight.copy_(w + centered_rows(z_dim, w))
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach().expand(z_dim))
    return new


class OGANDiscriminator(nn.Module):
    """A discriminator whose scalar head was widened to ``z_dim`` outputs (O-GAN encoder).

    Calling it returns what the original discriminator returned (same shape, same
    meaning: a probability if it ended in a Sigmoid, a logit otherwise), so existing loss
    code keeps working.  :meth:`decompose` gives the score, the code and the raw outputs;
    :meth:`encode` the standardized code used for reconstruction.

    The wrapped module is ``self.discriminator`` (the original object, with its head
    replaced in place); its other parameters are the very same tensors as before.
    ``score_from`` is the rule that picks the losses' score (``wrap(..., score=)``); it is
    checked when set, and a view made by :func:`as_wrapped` reads and sets the rule of the
    wrapped discriminator inside the DDP module.

    A drop-in replacement: public attributes and methods this class does not define
    reach the wrapped network (``wrap(D, 32).label_type`` reads ``D.label_type``;
    ``wrapped.sampler(...)`` calls ``D.sampler``), and assigning such an attribute sets
    it on the wrapped network, so code that sets ``D.alpha`` between forwards keeps
    working.  Names that start with ``_`` and names this class defines are not forwarded
    (an ``AttributeError`` inside one of its own properties is raised as it is).  The wrapper is not an
    instance of D's class (``isinstance(wrapped, type(D))`` is False; use
    ``wrapped.discriminator``), and its ``state_dict`` keys are D's with the prefix
    ``discriminator.`` (the head's are ``discriminator.<head>.layer.weight``, ``...bias``,
    ``discriminator.<head>.output_scale`` and ``discriminator.<head>._extra_state``, the
    name of its patch reduction, see :meth:`OGANHead.get_extra_state`); see docs/wrapping.md.
    """

    def __init__(
        self, discriminator: nn.Module, head_path: str, z_dim: int, score: Optional[ScoreChoice] = None
    ) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.head_path = head_path
        self.z_dim = z_dim
        if self._rule_owner() is self:
            self._score_from = check_score_choice("auto" if score is None else score)
            self._score_memory: dict = {}  # the element "auto" found in a container output
        elif score is not None:  # a view (as_wrapped): the rule is the wrapped discriminator's
            self.score_from = score
        # from here on, public names the wrapper lacks are read from / written to D
        # (keep this the last line of __init__: attributes set above stay the wrapper's)
        self.__dict__["_forward_attributes"] = True

    # -- the score rule: the wrapper's own, or for a DDP view the wrapped one's -------------
    def _rule_owner(self) -> "OGANDiscriminator":
        """The wrapper whose score rule this one uses: itself, or for a view around
        DistributedDataParallel (:func:`as_wrapped`) the wrapped discriminator inside."""
        inner = self._modules.get("discriminator")
        if isinstance(inner, _PARALLEL) and isinstance(inner.module, OGANDiscriminator):
            return inner.module
        return self

    @property
    def score_from(self) -> ScoreChoice:
        """The rule that picks the losses' score from D's output (``wrap(..., score=)``,
        :mod:`ogan_plugin.scores`); setting it checks the value (``TypeError`` naming
        ``score`` otherwise).  A view made by :func:`as_wrapped` reads and sets the wrapped
        discriminator's rule."""
        return self._rule_owner()._score_from

    @score_from.setter
    def score_from(self, value: ScoreChoice) -> None:
        self._rule_owner()._score_from = check_score_choice(value)

    @property
    def _score_cache(self) -> dict:
        """The memory of the element "auto" found in a container output (a view uses the
        wrapped discriminator's)."""
        return self._rule_owner()._score_memory

    def __setstate__(self, state: dict[str, Any]) -> None:
        # wrappers pickled before score_from became a property held it as a plain attribute
        if "score_from" in state:
            state["_score_from"] = state.pop("score_from")
        if "_score_cache" in state:
            state["_score_memory"] = state.pop("_score_cache")
        super().__setstate__(state)

    # -- drop-in: attributes the wrapper lacks belong to the wrapped network ----------------
    def _forward_target(self) -> Optional[nn.Module]:
        """The network names are forwarded to (the one inside DataParallel /
        DistributedDataParallel for a view made by :func:`as_wrapped`); None while
        ``__init__`` runs."""
        if not self.__dict__.get("_forward_attributes"):
            return None
        inner = self.__dict__["_modules"].get("discriminator")
        if isinstance(inner, _PARALLEL):
            inner = inner.module
        return inner

    def _wrapped_for(self, name: str) -> Optional[nn.Module]:
        """The wrapped network when ``name`` may be forwarded to it, else None: names
        starting with ``_`` and names this class defines are never forwarded."""
        if name.startswith("_") or _class_attribute(type(self), name) is not None:
            return None
        return self._forward_target()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules
        except AttributeError:
            own = _class_attribute(type(self), name)
            if hasattr(own, "__get__"):
                # one of the wrapper's own properties raised AttributeError, and Python then
                # asked __getattr__: run it again so that its own error propagates (D may
                # have an attribute of that name, which is not what was asked for)
                return own.__get__(self, type(self))
            inner = self._wrapped_for(name)
            if inner is None:
                raise
        try:
            return getattr(inner, name)
        except AttributeError:
            raise AttributeError(
                f"'{type(self).__name__}' object has no attribute {name!r}, and neither has the wrapped "
                f"{type(inner).__name__}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        inner = self._wrapped_for(name)
        if (
            inner is not None
            and name not in self.__dict__
            and not any(name in self.__dict__[d] for d in ("_parameters", "_buffers", "_modules"))
            and hasattr(inner, name)
        ):
            setattr(inner, name, value)
        else:
            super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        inner = self._forward_target()
        extra = [n for n in dir(inner) if self._wrapped_for(n) is not None] if inner is not None else []
        return sorted(set(super().__dir__()) | set(extra))

    @property
    def head(self) -> OGANHead:
        """The installed :class:`OGANHead`.

        Raises:
            AttributeError: ``head_path`` no longer names a submodule of the wrapped
                discriminator (its head was replaced after :func:`wrap`).
        """
        try:
            return self.discriminator.get_submodule(self.head_path)  # type: ignore[return-value]
        except AttributeError as exc:
            raise AttributeError(
                f"the wrapped discriminator has no module at head_path={self.head_path!r} ({exc}); "
                "was its head replaced after wrap()?"
            ) from None

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.discriminator(x, *args, **kwargs)

    def _run(self, x: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor, Any]:
        """D's forward on ``x``: (the head's raw outputs, what the head returned, D's output)."""
        head = self.head
        head.last_raw = head.last_score = None
        output = self(x, *args, **kwargs)  # through forward: a patched forward (accelerate's autocast) applies
        raw, head_out = head.last_raw, head.last_score
        head.last_raw = head.last_score = None
        if raw is None:
            raise RuntimeError(f"the discriminator's forward did not call its head {self.head_path!r}")
        return raw, head_out, output

    def raw_outputs(self, x: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Any]:
        """Run D on ``x`` (extra arguments, such as labels, go to D's forward); return the
        head's raw outputs (B, z_dim) and D's own output.  No score is picked."""
        raw, _, output = self._run(x, *args, **kwargs)
        return raw, output

    def decompose(self, x: Tensor, *args: Any, **kwargs: Any) -> Decomposition:
        """Run D on ``x`` and return :class:`Decomposition` (score, code, raw, output).

        Extra arguments go to D's forward: ``decompose(x, y)`` for a conditional D.  The
        score is picked by the wrapper's ``score_from`` rule (see :func:`wrap`).
        """
        raw, head_out, output = self._run(x, *args, **kwargs)
        acc = _accumulate(raw)
        head_score = acc.mean(dim=1)
        score = pick_score(
            output, raw, head_score, self.score_from, self._score_cache, self.head, self.head_path, head_out=head_out
        )
        return Decomposition(score, acc - head_score[:, None], raw, output)

    def encode(self, x: Tensor, *args: Any, eps: float = 1e-6, **kwargs: Any) -> Tensor:
        """The standardized code ``(code - mean) / std`` per row (METHOD.md section 5).

        ``std`` is the population standard deviation (``unbiased=False``), floored at
        ``eps``.  Feed ``scale * encode(x)`` to the generator to reconstruct.  Extra
        arguments (labels) go to D's forward.
        """
        code = _accumulate(self.raw_outputs(x, *args, **kwargs)[0])
        code = code - code.mean(dim=1, keepdim=True)
        return code / code.std(dim=1, unbiased=False, keepdim=True).clamp_min(eps)

    def unwrap(self) -> nn.Module:
        """Put back a plain 1-output head and return the original discriminator object.

        The new head's weight and bias are the means of the widened ones (times the
        head's output scale), so the scores do not change.  Spectral norm on the head is
        not re-applied (its effective weight is baked in).  This wrapper is unusable after.
        """
        head = self.head
        layer = head.layer
        w = (layer.weight.detach() * head.output_scale).mean(dim=0, keepdim=True)
        plain = new_layer_like(layer, 1)
        with torch.no_grad():
            plain.weight.copy_(w)
            if layer.bias is not None:
                plain.bias.copy_((layer.bias.detach() * head.output_scale).mean().view(1))
        _set_submodule(self.discriminator, self.head_path, plain)
        return self.discriminator

    # -- checkpoints ------------------------------------------------------------------------
    @classmethod
    def from_state_dict(
        cls,
        discriminator: nn.Module,
        state_dict: Mapping[str, Any],
        *,
        generator: Optional[nn.Module] = None,
        score: Optional[ScoreChoice] = None,
    ) -> "OGANDiscriminator":
        """Rebuild a wrapped discriminator from a plain one and a wrapped one's ``state_dict()``.

        ``discriminator`` is a freshly built discriminator of the same architecture (not
        wrapped); the head's path and ``z_dim`` are read from the state dict, the
        discriminator is wrapped (``generator`` and ``score`` as in :func:`wrap`) and the
        state loaded.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        scales = [k for k in state_dict if k.startswith("discriminator.") and k.endswith(".output_scale")]
        if len(scales) != 1:
            raise ValueError(
                "state_dict is not a wrapped discriminator's state_dict(): expected one "
                f"'discriminator.<head>.output_scale' entry, found {len(scales)}"
                + (" (for a plain discriminator's checkpoint load it before wrap())" if not scales else "")
            )
        head_path = scales[0][len("discriminator.") : -len(".output_scale")]
        prefix = scales[0][: -len("output_scale")] + "layer."
        for name in ("weight", "weight_orig", "parametrizations.weight.original"):
            if prefix + name in state_dict:
                z_dim = int(state_dict[prefix + name].shape[0])
                break
        else:
            raise ValueError(f"state_dict has no weight for the head {head_path!r} (looked under {prefix!r})")
        wrapped = wrap(discriminator, z_dim, head=head_path, generator=generator, score=score)
        wrapped.load_state_dict(state_dict)
        return wrapped

    def load_unwrapped_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load a checkpoint of the *unwrapped* discriminator (a plain GAN's D) into this one.

        The checkpoint's head entries (``<head>.weight``/``bias``, or a spectral norm's
        ``weight_orig``/``parametrizations...``) go into a fresh 1-output layer of the head's
        kind, which the adapters widen again: the scores equal the checkpointed
        discriminator's, and the code part of the head starts afresh.  Every other entry is
        loaded as is.  With ``strict`` the keys must match the plain discriminator's
        exactly (``RuntimeError`` otherwise, before anything is loaded).  Hooks on the head
        (hook mode) stay in place.  (Loading the checkpoint into the plain discriminator
        and then calling :func:`wrap` gives the same scores.)
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        prefix = self.head_path + "."
        if any(k.startswith("discriminator.") for k in state_dict) and not any(k.startswith(prefix) for k in state_dict):
            raise ValueError(
                "state_dict looks like a wrapped discriminator's state_dict() (keys start with "
                "'discriminator.'): use load_state_dict() for it"
            )
        head_sd = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        rest = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
        head = self.head
        plain = new_layer_like(head.layer, 1)
        if is_spectral_normed(head.layer):
            from ogan_plugin.adapters.spectral_norm import _spectral_norm_of

            style, sn = _spectral_norm_of(head.layer)
            if style == "parametrization":
                from torch.nn.utils.parametrizations import spectral_norm
            else:
                from torch.nn.utils import spectral_norm
            plain = spectral_norm(plain, n_power_iterations=sn.n_power_iterations, eps=sn.eps, dim=sn.dim)
        expected = {k for k in self.discriminator.state_dict() if not k.startswith(prefix)}
        expected |= {prefix + k for k in plain.state_dict()}
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"state_dict does not match the unwrapped discriminator: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        if not head_sd:
            raise ValueError(f"state_dict has no entries for the head {self.head_path!r}")
        plain.load_state_dict(head_sd, strict=strict)
        from ogan_plugin.registry import get_registry

        holder = nn.Module()
        holder.head = plain
        adaptation = get_registry().pm.hook.ogan_adapt_discriminator(discriminator=holder, z_dim=self.z_dim, head="head")
        if adaptation is None:
            raise ValueError(f"no adapter recognises the checkpoint's head {type(plain).__name__}")
        self.discriminator.load_state_dict(rest, strict=False)
        new = adaptation.head.to(head.output_scale.device)
        head.layer = new.layer
        head.scaled = new.scaled
        with torch.no_grad():
            head.output_scale.copy_(new.output_scale)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, head={self.head_path!r}"


#: the data-parallel wrappers a view (:func:`as_wrapped`) may hold
_PARALLEL = (nn.DataParallel, nn.parallel.DistributedDataParallel)


def _class_attribute(cls: type, name: str) -> Any:
    """What ``cls`` or one of its bases defines under ``name`` (a method, a property), else None."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def wrap(
    discriminator: nn.Module,
    z_dim: int,
    *,
    head: Optional[str] = None,
    generator: Optional[nn.Module] = None,
    score: Optional[ScoreChoice] = None,
) -> OGANDiscriminator:
    """Turn ``discriminator`` into an O-GAN encoder with ``z_dim`` outputs.

    Args:
        discriminator: any ``nn.Module`` whose score comes from a 1-output
            ``nn.Linear`` / ``nn.ConvNd`` (a 1x1 or a patch map, also under spectral norm)
            or a custom linear module with a ``(1, in)`` weight; other heads need an
            adapter plugin.  Its forward may return a tuple or dict: every output is kept.
        z_dim: the generator's noise size (>= 2).
        head: dotted path of the head layer, to skip automatic detection.
        generator: when given, turn on hook mode (:func:`ogan_plugin.attach` with its
            default weight, ``"auto"``: a ramp to ``0.5 * sqrt(z_dim)``): an unchanged alternating
            loop then gets the correlation term in both updates (see
            :mod:`ogan_plugin.integrations.hook`).
        score: which score the O-GAN losses train on (:mod:`ogan_plugin.scores`):
            ``"auto"`` (D's whole output, averaged per sample, so a projection
            discriminator's class term counts; the head's mean when D ends in a Sigmoid;
            for tuple/dict outputs the first element computed from the head), ``"head"``
            (the head's mean only), ``"output"`` (D's tensor output as it is), or the
            index / key of the element of a tuple / dict output.  None: ``"auto"``, or
            the rule an already wrapped discriminator has.

    Returns:
        :class:`OGANDiscriminator`.  The discriminator is modified in place (its head is
        replaced); its other parameters keep their identity and values, and its scores
        are unchanged at wrap time (the widened head's mean equals the old output).

    Wrapping an :class:`OGANDiscriminator` again with the same ``z_dim`` (and no ``head``,
    or its own head's path) returns it unchanged (its ``score`` rule set to ``score`` when
    given); with another ``z_dim`` or another ``head`` it raises ``ValueError``.

    Raises:
        TypeError: ``z_dim`` is not an int, ``score`` is not a str/int, or
            ``discriminator`` is not an ``nn.Module`` (or is already under DDP).
        ValueError: ``z_dim`` < 2, no adapter recognises the head, or ``discriminator``
            is already wrapped with another ``z_dim`` or at another ``head``.
    """
    if score is not None:
        check_score_choice(score)
    if isinstance(z_dim, bool) or not isinstance(z_dim, int):
        raise TypeError(f"z_dim must be an int, got {type(z_dim).__name__}")
    if z_dim < 2:
        raise ValueError(f"z_dim must be >= 2 (the code lives in z_dim - 1 dimensions), got {z_dim}")
    if isinstance(discriminator, OGANDiscriminator):
        if z_dim != discriminator.z_dim:
            raise ValueError(
                f"discriminator is already wrapped with z_dim={discriminator.z_dim}; "
                f"call .unwrap() first to wrap it with z_dim={z_dim}"
            )
        if head is not None and head != discriminator.head_path:
            raise ValueError(
                f"head={head!r}: the discriminator is already wrapped with its head at "
                f"{discriminator.head_path!r}, and head= cannot be changed on a wrapped discriminator; "
                "call .unwrap() first to wrap it at another head"
            )
        if score is not None:
            discriminator.score_from = score
        return _attach_hook(discriminator, generator)
    if not isinstance(discriminator, nn.Module):
        raise TypeError(f"discriminator must be an nn.Module, got {type(discriminator).__name__}")
    if isinstance(discriminator, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise TypeError(
            "wrap the discriminator before DataParallel/DistributedDataParallel (and before "
            "accelerator.prepare), not after"
        )
    if any(isinstance(m, OGANHead) for m in discriminator.modules()):
        raise ValueError("discriminator already contains an OGANHead (it was wrapped before)")

    from ogan_plugin.registry import get_registry

    reg = get_registry()
    adaptation = reg.pm.hook.ogan_adapt_discriminator(discriminator=discriminator, z_dim=z_dim, head=head)
    if adaptation is None:
        try:
            path, found = find_scalar_head(discriminator, head)
            what = f"its head candidate {path!r} is a {type(found).__name__}"
            if out_features(found) not in (None, 1):
                what += f" with {out_features(found)} outputs (an O-GAN head must have 1 output)"
        except LookupError as exc:
            what = str(exc)
        adapters = [n for n, p in reg.pm.list_name_plugin() if hasattr(p, "ogan_adapt_discriminator")]
        raise ValueError(
            f"no adapter recognised this discriminator's head: {what}. Adapters tried: {adapters}. "
            "Built-ins handle a 1-output nn.Linear or nn.ConvNd (1x1 or patch map; with or without spectral "
            "norm) and custom linear modules with a (1, in) weight. Register your own with the "
            "ogan_adapt_discriminator hook (docs/wrapping.md)."
        )
    old = discriminator.get_submodule(adaptation.path)
    device = next(old.parameters(), torch.empty(0)).device
    _set_submodule(discriminator, adaptation.path, adaptation.head.to(device))
    return _attach_hook(OGANDiscriminator(discriminator, adaptation.path, z_dim, "auto" if score is None else score), generator)


def _attach_hook(wrapped: OGANDiscriminator, generator: Optional[nn.Module]) -> OGANDiscriminator:
    if generator is not None:
        from ogan_plugin.integrations.hook import attach

        attach(wrapped, generator)
    return wrapped


def as_wrapped(discriminator: Any, name: str = "wrapped_discriminator") -> OGANDiscriminator:
    """The :class:`OGANDiscriminator` the O-GAN functions work with, from what the user holds.

    ``discriminator`` itself when it is one.  For ``DistributedDataParallel`` around one
    (what ``accelerator.prepare`` returns in a distributed run, or ``DDP(wrap(D, z))``),
    a view whose every forward (``decompose``, ``encode``, calls) runs *through* the DDP
    module, so gradients are synchronised, and whose head is the wrapped one; the view is
    made once per DDP module and shares all parameters.  Its ``score_from`` is the
    wrapped discriminator's own: a rule set on either is the rule of both.

    Raises:
        TypeError: naming ``name``, for anything else (a plain network, DataParallel).
    """
    if isinstance(discriminator, OGANDiscriminator):
        return discriminator
    if isinstance(discriminator, nn.parallel.DistributedDataParallel) and isinstance(
        discriminator.module, OGANDiscriminator
    ):
        inner = discriminator.module
        view = discriminator.__dict__.get("_ogan_view")
        if view is None:  # its score rule and memory are the inner wrapper's (score_from)
            view = OGANDiscriminator(discriminator, "module.discriminator." + inner.head_path, inner.z_dim)
            discriminator.__dict__["_ogan_view"] = view  # a plain attribute: not a submodule, not in state_dict
        return view
    hint = ""
    if isinstance(discriminator, nn.DataParallel):
        hint = " (DataParallel is not supported: use DistributedDataParallel)"
    elif isinstance(discriminator, nn.Module):
        hint = " (D = ogan_plugin.wrap(D, z_dim) first)"
    raise TypeError(
        f"{name} must be an OGANDiscriminator (from ogan_plugin.wrap), or DistributedDataParallel / "
        f"accelerator.prepare around one, got {type(discriminator).__name__}{hint}"
    )
