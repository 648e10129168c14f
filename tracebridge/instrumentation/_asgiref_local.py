"""The patches of asgiref's two ``Local`` classes: every get/set/delete recorded, as tracebridge's are.

Each of ``_DefaultLocal`` and ``_ThreadCriticalLocal`` gets three plain
functions for ``__getattr__``/``__setattr__``/``__delattr__``, all or nothing
per class.  An access is recorded in one call: the parent span read straight
from OpenTelemetry's context variable, one flat tuple pushed to the deferred
buffer, the span built off the hot path by
:func:`tracebridge.local._build_local_access`.  ``AsyncToSync.executors``
(asgiref's own bookkeeping, read on every hop) is never recorded, as
tracebridge does not record its own.

**Two kinds of replacement.**

* *Wrappers* (any asgiref 3.x): time and call asgiref's original method, then
  record.  A wrapped access costs asgiref's own (a lock, two or three Python
  frames of its storage class, and for a missing key a KeyError turned into an
  AttributeError) plus one frame.
* *Fused* (asgiref whose ``Local`` source is one we have checked, today 3.13.0):
  the same storage rules written out in the replacement itself, so an access is
  one frame and a missing key raises one exception.  Under Django, which reads
  ~20 Locals per request (most of them missing keys such as an unset
  translation), the wrapper path cost ~150 k more CPU instructions per request
  than the fused one (cachegrind, bench/README.md).  The rules are asgiref's,
  on asgiref's own objects: a ``_DefaultLocal`` keeps its data in an immutable
  per-thread snapshot (``_Storage``) in a ContextVar of its ``_CVar``, read and
  replaced under the Local's lock; a ``_ThreadCriticalLocal`` in a sync thread
  is a plain ``threading.local``; in a thread running a loop it goes through
  asgiref's own ``_get_storage``.  Keys that name an attribute of ``_CVar``
  itself (``_data``...) go to asgiref's original method, whose plain getattr
  finds them.  Any other source (a newer or older asgiref) gets the wrappers:
  a layout we have not read is never guessed at.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from time import time_ns
from types import ModuleType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation import _SPAN_KEY

from .. import _telemetry, semconv
from ..local import _build_local_access
from ._asgiref_source import checked_version, is_asgiref_own

__all__ = ["fused_layout", "local_methods", "set_internal_local"]

_get_tracer = _telemetry.get_tracer
_push = _telemetry.deferred.push  # the process's one buffer (a fork resets its contents, not the object)
_thread_ref = _telemetry.current_thread_ref
_get_ident = threading.get_ident
_get_running_loop = asyncio._get_running_loop

_OP_GET = semconv.LOCAL_OP_GET
_OP_SET = semconv.LOCAL_OP_SET
_OP_DELETE = semconv.LOCAL_OP_DELETE

# sha256 of the source of asgiref.local's _Storage, _CVar, _DefaultLocal and
# _ThreadCriticalLocal (see fused_layout): the layouts the fused methods were
# written against and checked on (tests/test_instrumentation_local.py).
_FUSED_SOURCES = {
    "0aaec63ed5a628378bbfc345c8f4c5b6287c2ce1b5f6a9d197aff1f0a903ce65": "asgiref 3.13.0",
}


def _otel_context_getter() -> Callable[[], Any]:
    # The current OpenTelemetry context, for a Local access's parent span.
    # With the API's default runtime context that is one ContextVar.get (the
    # API's get_current adds three Python calls around it); any other runtime
    # context goes through the API.
    try:
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

        runtime = otel_context._RUNTIME_CONTEXT  # type: ignore[attr-defined]
        if type(runtime) is ContextVarsRuntimeContext:
            return runtime._current_context.get  # type: ignore[no-any-return]
    except Exception:  # pragma: no cover - a custom OTEL_PYTHON_CONTEXT
        pass
    return otel_context.get_current


_current_otel_context = _otel_context_getter()

# asgiref's own bookkeeping Local (AsyncToSync.executors): never recorded.
_internal_local: object = None


def set_internal_local(local: object) -> None:
    """Name the Local that is asgiref's own bookkeeping (None: none any more)."""
    global _internal_local
    _internal_local = local


def _record_access(
    tracer: Tracer, local: object, key: str, operation: str, thread_critical: bool, found: bool, start_ns: int
) -> None:
    # The accessing thread, inside the accessing context, right after the
    # access: the same record tracebridge.local._record_access makes (built
    # by the same _build_local_access), with the parent read in one call.
    try:
        _push(
            (
                _build_local_access,
                tracer,
                _current_otel_context().get(_SPAN_KEY),  # resolved on the drain thread
                start_ns,
                time_ns(),
                id(local), key, operation, thread_critical, found, _thread_ref(),
            )
        )
    except Exception:
        _telemetry.tracing_failed("Local access span")


# ---------------------------------------------------------------------------
# Which replacement


def fused_layout(module: ModuleType | None) -> str | None:
    """The checked asgiref whose ``Local`` layout ``module`` has (fused methods apply), else None."""
    if module is None:
        return None
    names = ("_Storage", "_CVar", "_DefaultLocal", "_ThreadCriticalLocal")
    return checked_version(lambda: [getattr(module, name) for name in names], _FUSED_SOURCES)


def local_methods(cls: type, thread_critical: bool, module: ModuleType | None) -> dict[str, Callable[..., Any]]:
    """The three replacements for one of asgiref's Local classes: fused when the layout is a checked one
    and the methods are asgiref's own (else wrappers, which call whatever is there)."""
    originals = {name: cls.__dict__[name] for name in ("__getattr__", "__setattr__", "__delattr__")}
    if fused_layout(module) is not None and all(is_asgiref_own(method, module) for method in originals.values()):
        assert module is not None
        if thread_critical:
            methods = _fused_thread_critical()
        else:
            methods = _fused_default(_wrappers(originals, False), module._Storage, module._CVar)  # type: ignore[attr-defined]
    else:
        methods = _wrappers(originals, thread_critical)
    for name, method in methods.items():
        functools.update_wrapper(method, originals[name])  # __wrapped__ points at asgiref's
    return methods


# ---------------------------------------------------------------------------
# Wrappers: any asgiref


def _wrappers(originals: dict[str, Any], thread_critical: bool) -> dict[str, Callable[..., Any]]:
    original_get = originals["__getattr__"]
    original_set = originals["__setattr__"]
    original_del = originals["__delattr__"]

    def __getattr__(self: Any, key: str) -> Any:
        __traceback_hide__ = True  # noqa: F841
        # asgiref's own bookkeeping first: the bridges read it on every hop.
        tracer = None if self is _internal_local else _get_tracer()
        if tracer is None:
            return original_get(self, key)
        start_ns = time_ns()
        try:
            value = original_get(self, key)
        except AttributeError:
            _record_access(tracer, self, key, _OP_GET, thread_critical, False, start_ns)
            raise
        _record_access(tracer, self, key, _OP_GET, thread_critical, True, start_ns)
        return value

    def __setattr__(self: Any, key: str, value: Any) -> None:
        __traceback_hide__ = True  # noqa: F841
        tracer = None if self is _internal_local else _get_tracer()
        if tracer is None:
            return original_set(self, key, value)  # type: ignore[no-any-return]
        start_ns = time_ns()
        original_set(self, key, value)
        _record_access(tracer, self, key, _OP_SET, thread_critical, True, start_ns)
        return None

    def __delattr__(self: Any, key: str) -> None:
        __traceback_hide__ = True  # noqa: F841
        tracer = None if self is _internal_local else _get_tracer()
        if tracer is None:
            return original_del(self, key)  # type: ignore[no-any-return]
        start_ns = time_ns()
        try:
            original_del(self, key)
        except AttributeError:
            _record_access(tracer, self, key, _OP_DELETE, thread_critical, False, start_ns)
            raise
        _record_access(tracer, self, key, _OP_DELETE, thread_critical, True, start_ns)
        return None

    return {"__getattr__": __getattr__, "__setattr__": __setattr__, "__delattr__": __delattr__}


# ---------------------------------------------------------------------------
# Fused: asgiref 3.13's layout


_MISSING: Any = object()


def _fused_default(
    wrappers: dict[str, Callable[..., Any]], storage_cls: type, cvar_cls: type
) -> dict[str, Callable[..., Any]]:
    """``_DefaultLocal``'s methods with ``_CVar``'s storage rules written in (see the module docstring)."""
    wrapped_get = wrappers["__getattr__"]
    # getattr(cvar, key) finds these on the _CVar object itself before its
    # __getattr__ looks in the data: asgiref's method (wrapped) handles them.
    cvar_names = frozenset(dir(cvar_cls)) | {"_data"}

    def __getattr__(self: Any, key: str) -> Any:
        __traceback_hide__ = True  # noqa: F841
        if key in cvar_names:
            return wrapped_get(self, key)
        tracer = None if self is _internal_local else _get_tracer()
        start_ns = time_ns() if tracer is not None else 0
        cvar = self._storage
        lock = self._lock
        lock.acquire()
        try:
            # The snapshot counts only on the thread that made it (asgiref
            # re-homes it when a bridge moves the context to another thread).
            stored = cvar._data.get(None)
            if stored is not None and stored.thread_id == _get_ident():
                value = stored.data.get(key, _MISSING)
            else:
                value = _MISSING
        finally:
            lock.release()
        if tracer is not None:
            _record_access(tracer, self, key, _OP_GET, False, value is not _MISSING, start_ns)
        if value is _MISSING:
            raise AttributeError(f"{cvar!r} object has no attribute {key!r}")
        return value

    def __setattr__(self: Any, key: str, value: Any) -> None:
        __traceback_hide__ = True  # noqa: F841
        tracer = None if self is _internal_local else _get_tracer()
        start_ns = time_ns() if tracer is not None else 0
        lock = self._lock
        lock.acquire()
        try:
            if key == "_data":
                raise AttributeError("Cannot set attribute '_data' on Local")
            var = self._storage._data
            ident = _get_ident()
            stored = var.get(None)
            # Never mutated in place: a context copied earlier keeps its snapshot.
            data = stored.data.copy() if stored is not None and stored.thread_id == ident else {}
            data[key] = value
            var.set(storage_cls(ident, data))
        finally:
            lock.release()
        if tracer is not None:
            _record_access(tracer, self, key, _OP_SET, False, True, start_ns)

    def __delattr__(self: Any, key: str) -> None:
        __traceback_hide__ = True  # noqa: F841
        tracer = None if self is _internal_local else _get_tracer()
        start_ns = time_ns() if tracer is not None else 0
        cvar = self._storage
        lock = self._lock
        lock.acquire()
        try:
            var = cvar._data
            ident = _get_ident()
            stored = var.get(None)
            found = stored is not None and stored.thread_id == ident and key in stored.data
            if found:
                data = stored.data.copy()
                del data[key]
                var.set(storage_cls(ident, data))
        finally:
            lock.release()
        if tracer is not None:
            _record_access(tracer, self, key, _OP_DELETE, False, found, start_ns)
        if not found:
            raise AttributeError(f"{cvar!r} object has no attribute {key!r}")

    return {"__getattr__": __getattr__, "__setattr__": __setattr__, "__delattr__": __delattr__}


def _fused_thread_critical() -> dict[str, Callable[..., Any]]:
    """``_ThreadCriticalLocal``'s methods, the sync-thread case (a threading.local) written in."""

    def __getattr__(self: Any, key: str) -> Any:
        __traceback_hide__ = True  # noqa: F841
        # No running loop: the thread's threading.local (asgiref asks
        # get_running_loop and catches its RuntimeError; this asks without one).
        storage = self._storage if _get_running_loop() is None else self._get_storage()
        tracer = _get_tracer()
        if tracer is None:
            return getattr(storage, key)
        start_ns = time_ns()
        try:
            value = getattr(storage, key)
        except AttributeError:
            _record_access(tracer, self, key, _OP_GET, True, False, start_ns)
            raise
        _record_access(tracer, self, key, _OP_GET, True, True, start_ns)
        return value

    def __setattr__(self: Any, key: str, value: Any) -> None:
        __traceback_hide__ = True  # noqa: F841
        storage = self._storage if _get_running_loop() is None else self._get_storage()
        tracer = _get_tracer()
        if tracer is None:
            setattr(storage, key, value)
            return
        start_ns = time_ns()
        setattr(storage, key, value)
        _record_access(tracer, self, key, _OP_SET, True, True, start_ns)

    def __delattr__(self: Any, key: str) -> None:
        __traceback_hide__ = True  # noqa: F841
        storage = self._storage if _get_running_loop() is None else self._get_storage()
        tracer = _get_tracer()
        if tracer is None:
            delattr(storage, key)
            return
        start_ns = time_ns()
        try:
            delattr(storage, key)
        except AttributeError:
            _record_access(tracer, self, key, _OP_DELETE, True, False, start_ns)
            raise
        _record_access(tracer, self, key, _OP_DELETE, True, True, start_ns)

    return {"__getattr__": __getattr__, "__setattr__": __setattr__, "__delattr__": __delattr__}
