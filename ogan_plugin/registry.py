"""The one plugin manager of ogan-plugin, and backend selection.

The registry loads the built-in plugins and every entry point of the group
``ogan_plugin``; it collects backends (implementations of the fused operations),
adversarial losses and adapters from their hooks.

Backend resolution for an operation on a device, in this order:

1. the explicit ``backend=`` argument of the call;
2. the environment variable ``OGAN_PLUGIN_BACKEND`` (a name, e.g. ``triton``);
3. the available backend with the highest priority that serves the device.

A backend is available on a device type when its ``check()`` passes and, if it has a
``probe``, when its probe passes for that device type.  The probe runs at most once per
process and device type (its answer is cached): the ``triton`` backends use it on CUDA to
compile and launch a tiny kernel, so a broken GPU environment (a driver too old for the
ptxas in the Triton wheel, no C compiler for Triton's launcher, no ``libcuda.so``) is
found before the first real call instead of raising in it.  A probe that cannot test now
(nothing can be launched and read back while a CUDA graph is being captured) answers
:data:`NOT_PROBED`: the backend counts as available for that call, and neither the answer
nor the resolution is cached, so the next call probes.

An explicit request that cannot run raises :class:`BackendUnavailableError` naming what
is available.  When the preferred automatic choice is unavailable (e.g. Triton missing or
broken) the next one is used with a one-time warning.  ``ogan-plugin plugins`` shows why
a backend is unavailable.  Resolution is cached per (operation, device type, request), so
it costs a dict lookup per call.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Optional

import pluggy
import torch

from ogan_plugin import hookspecs

#: Operations a backend can implement, with the signature its callable must have.
OPS: dict[str, str] = {
    "pearson": "fn(z: Tensor[B, n], e: Tensor[B, n], eps: float) -> rho: float32 Tensor[B] "
    "(differentiable w.r.t. z and e)",
    "correlation_loss": "fn(z, e, weight: float, eps: float) -> float32 scalar "
    "= -weight * mean(rho) (differentiable)",
    "ogan_objective": "fn(e_real, e_fake, z, dist | None, loss: str, corr_weight: float, corr_weight_g: float, "
    "eps: float) "
    "-> ObjectiveOutput (values and gradient parts, see ogan_plugin.kernels.single_loss)",
}

#: Environment variable that overrides automatic backend selection.
ENV_BACKEND = "OGAN_PLUGIN_BACKEND"

#: Built-in plugin modules, registered before entry points.
BUILTIN_PLUGINS = (
    "ogan_plugin.adapters.spectral_norm",
    "ogan_plugin.adapters.linear",
    "ogan_plugin.adapters.conv",
    "ogan_plugin.adapters.patch",
    "ogan_plugin.adapters.custom_linear",
    "ogan_plugin.kernels.pearson",
    "ogan_plugin.kernels.single_loss",
    "ogan_plugin.losses",
)


class _NotProbed(str):
    """The type of :data:`NOT_PROBED` (a ``str``, so that it fits a probe's return type)."""

    def __repr__(self) -> str:
        return "NOT_PROBED"


#: What a backend's probe returns when it cannot test now (e.g. during CUDA-graph
#: capture): the backend counts as available for this call, and the next call probes.
NOT_PROBED: str = _NotProbed("not probed")


def _serves_everywhere(device_type: str, explicit: bool) -> bool:
    return True


@dataclass(frozen=True)
class Backend:
    """One implementation of one operation.

    Attributes:
        op: the operation's name, a key of :data:`OPS`.
        name: the backend's name (``"reference"``, ``"triton"``, ...).
        fn: the implementation, with the signature given in :data:`OPS`.
        priority: higher is preferred by automatic selection.
        serves: ``serves(device_type, explicit) -> bool``; ``explicit`` is True when the
            user asked for this backend by name (e.g. Triton on CPU under
            ``TRITON_INTERPRET=1`` is only used on explicit request).
        check: returns ``None`` when the backend can run here, else the reason it cannot.
        description: one line for ``ogan-plugin plugins``.
        probe: optional ``probe(device_type) -> None | reason``: a one-time run-time test
            (e.g. compile and launch a tiny kernel on the GPU).  The registry calls it at
            most once per process and device type, the first time the backend is
            considered there, and caches the answer; a probe that cannot test now
            returns :data:`NOT_PROBED` (not cached: asked again on the next call).
    """

    op: str
    name: str
    fn: Callable[..., Any]
    priority: int = 0
    serves: Callable[[str, bool], bool] = _serves_everywhere
    check: Callable[[], Optional[str]] = lambda: None
    description: str = ""
    plugin: str = field(default="", compare=False)
    probe: Optional[Callable[[str], Optional[str]]] = field(default=None, compare=False)


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run for this call."""


class Registry:
    """Owns the pluggy ``PluginManager`` and the caches built from its hooks."""

    def __init__(self, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        #: plugin name -> reason, for plugins that failed to load
        self.failed: dict[str, str] = {}
        self._lock = threading.RLock()
        self._backends: Optional[dict[str, list[Backend]]] = None
        self._losses: Optional[dict[str, Any]] = None
        self._cache: dict[tuple[str, str, Optional[str]], Backend] = {}
        self._warned: set[tuple[str, str, str]] = set()
        #: (probe, device type) -> its answer (probes run once per process and device type)
        self._probed: dict[tuple[Callable[[str], Optional[str]], str], Optional[str]] = {}
        for modname in BUILTIN_PLUGINS:
            self._register_module(modname, modname)
        if load_entry_points:
            self._load_entry_points()

    # -- loading ---------------------------------------------------------------------
    def _register_module(self, name: str, modname: str) -> None:
        try:
            self.pm.register(importlib.import_module(modname), name=name)
        except Exception as exc:  # a broken plugin must not break the package
            self.failed[name] = f"{type(exc).__name__}: {exc}"

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group=hookspecs.PROJECT):
            if self.pm.get_plugin(ep.name) is not None or self.pm.is_blocked(ep.name):
                continue
            try:
                self.pm.register(ep.load(), name=ep.name)
            except Exception as exc:
                self.failed[ep.name] = f"{type(exc).__name__}: {exc}"

    def register(self, plugin: object, name: Optional[str] = None) -> str:
        """Register a plugin object or module at run time (clears the caches)."""
        with self._lock:
            registered = self.pm.register(plugin, name=name)
            self._invalidate()
            return registered

    def unregister(self, plugin: object = None, name: Optional[str] = None) -> None:
        """Remove a plugin registered with :meth:`register` (clears the caches)."""
        with self._lock:
            self.pm.unregister(plugin, name=name)
            self._invalidate()

    def _invalidate(self) -> None:
        self._backends = None
        self._losses = None
        self._cache.clear()

    # -- collections -------------------------------------------------------------------
    def backends(self, op: Optional[str] = None) -> dict[str, list[Backend]] | list[Backend]:
        """All registered backends, by operation (or the list for one ``op``)."""
        table = self._backends
        if table is not None:  # fast path: no lock (also keeps torch.compile tracing)
            if op is None:
                return table
            _check_op(op)
            return table[op]
        with self._lock:
            if self._backends is None:
                table: dict[str, list[Backend]] = {name: [] for name in OPS}
                for impl in self.pm.hook.ogan_backends.get_hookimpls():
                    for b in impl.function() or ():
                        if b.op not in OPS:
                            raise ValueError(
                                f"plugin {impl.plugin_name!r} registers a backend for unknown "
                                f"op {b.op!r}; known ops: {sorted(OPS)}"
                            )
                        table[b.op].append(_with_plugin(b, impl.plugin_name))
                for lst in table.values():
                    lst.sort(key=lambda b: -b.priority)
                    _IMPLS.update({(b.op, b.name): b.fn for b in lst})
                self._backends = table
            if op is None:
                return self._backends
            _check_op(op)
            return self._backends[op]

    def losses(self) -> dict[str, Any]:
        """Adversarial losses by name, from every plugin's ``ogan_losses`` hook."""
        if self._losses is not None:  # fast path: no lock (also keeps torch.compile tracing)
            return self._losses
        with self._lock:
            if self._losses is None:
                table: dict[str, Any] = {}
                for impl in reversed(self.pm.hook.ogan_losses.get_hookimpls()):
                    for name, loss in (impl.function() or {}).items():
                        if name in table:
                            raise ValueError(
                                f"plugin {impl.plugin_name!r} registers loss {name!r}, "
                                "which another plugin already registered"
                            )
                        table[name] = loss
                self._losses = table
            return self._losses

    # -- selection ---------------------------------------------------------------------
    def problem(self, backend: Backend, device_type: str) -> Optional[str]:
        """Why ``backend`` cannot run on ``device_type`` tensors (``None`` when it can).

        Runs the backend's ``check()`` and, the first time for this device type, its
        ``probe`` (cached; a probe that raises counts as failed, with the exception as
        the reason; one that answers :data:`NOT_PROBED` counts as passed for this call
        and is asked again next time).
        """
        return self._problem(backend, device_type)[0]

    def _problem(self, backend: Backend, device_type: str) -> tuple[Optional[str], bool]:
        """:meth:`problem`'s answer, and whether it is final (False: the probe could not test now)."""
        reason = backend.check()
        if reason is not None or backend.probe is None:
            return reason, True
        key = (backend.probe, device_type)
        if key not in self._probed:
            with self._lock:
                if key not in self._probed:
                    try:
                        answer = backend.probe(device_type)
                    except Exception as exc:  # a probe must not break resolution
                        answer = f"its probe raised {type(exc).__name__}: {exc}"
                    if answer is NOT_PROBED:
                        return None, False
                    self._probed[key] = answer
        return self._probed[key], True

    def resolve(self, op: str, device_type: str, backend: Optional[str] = None) -> Backend:
        """Pick the backend for ``op`` on ``device_type`` (see the module docstring)."""
        request = backend if backend is not None else (os.environ.get(ENV_BACKEND) or None)
        key = (op, device_type, request)
        found = self._cache.get(key)
        if found is None:
            with self._lock:
                found, final = self._resolve(op, device_type, request)
                if final:  # not when a probe could not test now: the next call probes
                    self._cache[key] = found
        return found

    def _resolve(self, op: str, device_type: str, request: Optional[str]) -> tuple[Backend, bool]:
        """The backend for ``op``, and whether every probe consulted gave a final answer."""
        final = True

        def problem(b: Backend) -> Optional[str]:
            nonlocal final
            reason, answered = self._problem(b, device_type)
            final = final and answered
            return reason

        candidates = self.backends(op)
        if request is not None:
            named = [b for b in candidates if b.name == request]
            if not named:
                raise BackendUnavailableError(
                    f"backend={request!r} is not registered for op {op!r}; registered: "
                    f"{[b.name for b in candidates]} (from the backend= argument or "
                    f"${ENV_BACKEND})"
                )
            for b in named:
                if not b.serves(device_type, True):
                    reason = b.check() or f"it does not run on {device_type!r} tensors"
                    continue
                reason = problem(b)
                if reason is None:
                    return b, final
            usable = [b.name for b in candidates if b.serves(device_type, True) and problem(b) is None]
            raise BackendUnavailableError(
                f"backend={request!r} cannot run op {op!r} here: {reason}; "
                f"available on {device_type!r}: {usable}"
            )
        skipped: list[tuple[Backend, str]] = []
        for b in candidates:
            if not b.serves(device_type, False):
                continue
            reason = problem(b)
            if reason is None:
                for s, why in skipped:
                    wkey = (op, s.name, why)
                    if wkey not in self._warned:
                        self._warned.add(wkey)
                        warnings.warn(
                            f"ogan_plugin: backend {s.name!r} for {op!r} is unavailable "
                            f"({why}); using {b.name!r} instead",
                            RuntimeWarning,
                            stacklevel=4,
                        )
                return b, final
            skipped.append((b, reason))
        raise BackendUnavailableError(
            f"no backend for op {op!r} serves {device_type!r} tensors; registered: "
            f"{[b.name for b in candidates]}"
        )

    def active(self, device_type: str) -> dict[str, Optional[str]]:
        """The backend each operation would use on ``device_type`` right now (or None)."""
        out: dict[str, Optional[str]] = {}
        for op in OPS:
            try:
                out[op] = self.resolve(op, device_type).name
            except BackendUnavailableError:
                out[op] = None
        return out


def _with_plugin(b: Backend, plugin_name: str) -> Backend:
    return b if b.plugin else Backend(**{**b.__dict__, "plugin": plugin_name})


def _check_op(op: str) -> None:
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; known ops: {sorted(OPS)}")


_REGISTRY: Optional[Registry] = None
_REGISTRY_LOCK = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry (created on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        with _REGISTRY_LOCK:
            if _REGISTRY is None:
                _REGISTRY = Registry()
    return _REGISTRY


#: (op, backend name) -> callable, filled when backends are collected (read by compiled code).
_IMPLS: dict[tuple[str, str], Callable[..., Any]] = {}


@torch.compiler.assume_constant_result
def _resolve_name(op: str, device_type: str, backend: Optional[str]) -> str:
    return get_registry().resolve(op, device_type, backend).name


def dispatch(op: str, device_type: str, backend: Optional[str] = None) -> Callable[..., Any]:
    """The callable implementing ``op`` for tensors on ``device_type``.

    Under ``torch.compile`` the choice is made once, at trace time (the backend's name is
    a trace-time constant), and the chosen callable is traced without a graph break;
    changing the backend afterwards needs a recompile (``torch._dynamo.reset()``).
    """
    if torch.compiler.is_compiling():
        return _IMPLS[(op, _resolve_name(op, device_type, backend))]
    return get_registry().resolve(op, device_type, backend).fn


def _reset_for_tests() -> None:  # pragma: no cover - used by the test-suite only
    global _REGISTRY
    _REGISTRY = None
