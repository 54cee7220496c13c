"""The widened head and the wrapped discriminator.

:func:`ogan_plugin.wrap` (in :mod:`ogan_plugin.wrapping`) asks the adapters
(``ogan_adapt_discriminator`` hook) to recognise D's scalar head, replaces that head
**in place** with an :class:`OGANHead` of ``z_dim`` outputs, and returns an
:class:`OGANDiscriminator` around D.  The head returns the mean of its outputs in the old
head's output shape, so whatever D's forward does after it (a Sigmoid, a ``view(-1)``)
still works and calling the wrapped module gives the same kind of score as before.  The
head keeps its last raw output for :meth:`OGANDiscriminator.decompose`.

The layer helpers adapters use (:func:`find_scalar_head`, :func:`widen_layer`,
:func:`centered_rows`, ...) live in :mod:`ogan_plugin.layers`; they are importable from
here too, as plugins written for 0.2 import them.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, NamedTuple, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ogan_plugin.layers import (  # noqa: F401  (re-exported: plugins import these from here)
    CONV_TYPES,
    OUTPUT_COUNT_ATTRIBUTES,
    centered_rows,
    conv_spatial_dims,
    custom_linear_rows,
    find_scalar_head,
    has_plain_forward,
    is_spectral_normed,
    new_layer_like,
    out_features,
    set_submodule,
    spectral_norm_of,
    widen_layer,
)
from ogan_plugin.reductions import EXTRA_STATE_BYTES, decode_reduction, encode_reduction  # noqa: F401
from ogan_plugin.registry import get_registry
from ogan_plugin.scores import ScoreChoice, _accumulate, check_score_choice, output_is_head_mean, pick_score

__all__ = [
    "Adaptation",
    "Decomposition",
    "OGANDiscriminator",
    "OGANHead",
    "as_wrapped",
]


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
        self.last_mean: Optional[Tensor] = None  # mean(last_raw) per row, (B, 1), in float32 (float64)
        self.register_load_state_dict_pre_hook(_keep_reduction_without_extra_state)

    def forward(self, h: Tensor) -> Tensor:
        layer = self.layer
        out = layer(h)
        if self.scaled:
            out = out * self.output_scale.to(out.dtype)
        spatial = _SPATIAL.get(type(layer), None) if type(layer) in _SPATIAL else conv_spatial_dims(layer)
        state = self.__dict__  # the last forward's values: plain attributes, set without Module.__setattr__
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
                state["last_raw"] = raw.to(out.dtype)
                state["last_mean"] = None  # decompose takes the mean of last_raw itself (its rounding)
                state["last_score"] = scores.to(out.dtype)
                return state["last_score"]
        if raw.dtype == torch.float32 or raw.dtype == torch.float64:
            mean = raw.mean(dim=1, keepdim=True)  # (what _accumulate would give, without the copies)
        else:
            mean = _accumulate(raw).mean(dim=1, keepdim=True)
        state["last_raw"] = raw
        state["last_mean"] = mean  # (B, 1), float32 (float64): decompose's head score
        score = mean if mean.dtype == raw.dtype else mean.to(raw.dtype)
        if torch.compiler.is_compiling():  # D may change its output in place; eager _run sees the version
            score = score.clone()
        if out.dim() > 2:
            score = score.view(out.shape[0], 1, *([1] * (out.dim() - 2)))
        state["last_score"] = score
        return score

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
        return encode_reduction(self.patch_reduction)

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
        self.patch_reduction = decode_reduction(state, self.patch_reduction)

    def __getstate__(self) -> dict[str, Any]:
        # the last forward's output (possibly part of an autograd graph) is not state:
        # copy.deepcopy and pickling would fail on it after a plain forward
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        return {**state, "last_raw": None, "last_score": None, "last_mean": None}

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


#: the spatial dimensions of the plain layer types (ConvNd -> N, Linear -> None), looked up per forward
_SPATIAL = {nn.Linear: None, nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


def _keep_reduction_without_extra_state(head: "OGANHead", state_dict: dict, prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: a state dict from before the head kept its reduction
    has no ``<head>._extra_state`` entry; fill in the head's own, so that loading it,
    strict or not, keeps the reduction the head has."""
    key = prefix + EXTRA_STATE_KEY
    if key not in state_dict:
        state_dict[key] = head.get_extra_state()


#: the suffix under which ``state_dict()`` keeps a module's extra state (torch's name)
EXTRA_STATE_KEY = "_extra_state"


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
        module = self.__dict__["_modules"]["discriminator"]
        for name in self.head_path.split("."):  # the path through the modules' own tables: a few dict lookups
            module = module.__dict__["_modules"].get(name) if isinstance(module, nn.Module) else None
            if module is None:
                break
        if isinstance(module, OGANHead):
            return module
        try:
            return self.discriminator.get_submodule(self.head_path)  # type: ignore[return-value]
        except AttributeError as exc:
            raise AttributeError(
                f"the wrapped discriminator has no module at head_path={self.head_path!r} ({exc}); "
                "was its head replaced after wrap()?"
            ) from None

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.discriminator(x, *args, **kwargs)

    def _run(self, x: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor, Any, Tensor]:
        """D's forward on ``x``: (the head's raw outputs, what the head returned, D's output,
        the head's mean per row, (B, 1), in float32 or float64)."""
        head = self.head
        state = head.__dict__
        state["last_raw"] = state["last_score"] = state["last_mean"] = None
        output = self(x, *args, **kwargs)  # through forward: a patched forward (accelerate's autocast) applies
        raw, head_out, mean = state["last_raw"], state["last_score"], state.get("last_mean")
        state["last_raw"] = state["last_score"] = state["last_mean"] = None
        if raw is None:
            raise RuntimeError(f"the discriminator's forward did not call its head {self.head_path!r}")
        # a patch map's head, a head subclass that sets last_raw only, or a head score that D
        # changed in place (a projection's ``output += ...`` bumps its version): the mean again
        if mean is None or (not torch.compiler.is_compiling() and mean._version):
            mean = _accumulate(raw).mean(dim=1, keepdim=True)
        return raw, head_out, output, mean

    def raw_outputs(self, x: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Any]:
        """Run D on ``x`` (extra arguments, such as labels, go to D's forward); return the
        head's raw outputs (B, z_dim) and D's own output.  No score is picked."""
        raw, _, output, _ = self._run(x, *args, **kwargs)
        return raw, output

    def decompose(self, x: Tensor, *args: Any, **kwargs: Any) -> Decomposition:
        """Run D on ``x`` and return :class:`Decomposition` (score, code, raw, output).

        Extra arguments go to D's forward: ``decompose(x, y)`` for a conditional D.  The
        score is picked by the wrapper's ``score_from`` rule (see :func:`wrap`).
        """
        return self._decomposition(*self._run(x, *args, **kwargs))

    def _decomposition(self, raw: Tensor, head_out: Tensor, output: Any, mean: Tensor) -> Decomposition:
        """:meth:`decompose` of the parts :meth:`_run` returned."""
        rule, head = self.score_from, self.head
        score = pick_score(output, raw, mean.view(-1), rule, self._score_cache, head, self.head_path, head_out=head_out)
        return Decomposition(score, _accumulate(raw) - mean, raw, output)

    def _score_is_mean(self, raw: Tensor, head_out: Tensor, output: Any, mean: Tensor) -> bool:
        """Whether the score :meth:`_decomposition` picks is ``mean`` (raw's row mean, float32 or
        float64) itself: then d score / d raw = 1 / z_dim, and :func:`ogan_plugin.single_loss`
        sends the score's gradient into raw's.  ``score="head"``, or ``"auto"`` with D's output
        the head's score up to views (read from the autograd graph, no values)."""
        if raw.dtype not in (torch.float32, torch.float64) or mean.dtype != raw.dtype or mean.grad_fn is None:
            return False
        choice = self.score_from
        return choice == "head" or (choice == "auto" and output_is_head_mean(output, mean, raw.shape[0]))

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
        set_submodule(self.discriminator, self.head_path, plain)
        return self.discriminator

    # -- checkpoints ------------------------------------------------------------------------
    #: ``OGANDiscriminator.from_state_dict(discriminator, state_dict, *, generator=None,
    #: score=None)``: rebuild a wrapped discriminator from a plain one and a wrapped one's
    #: ``state_dict()``.  It wraps, so it is :func:`ogan_plugin.wrapping.from_state_dict`,
    #: set on this class by :mod:`ogan_plugin.wrapping` (this module cannot import ``wrap``,
    #: which imports it).
    from_state_dict: ClassVar[Callable[..., "OGANDiscriminator"]]

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
            style, sn = spectral_norm_of(head.layer)
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
