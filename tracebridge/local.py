"""``Local``: asgiref-compatible task- and thread-local storage, with traced accesses.

A drop-in for ``asgiref.local`` (3.13): ``Local(thread_critical=False)`` returns a
``_DefaultLocal`` or a ``_ThreadCriticalLocal``; ``Local`` itself cannot be
subclassed.

**Default Locals** keep their values in one ContextVar per Local.  The value of
that variable is a ``_Storage``: a dict that is never mutated (every set or
delete stores a new one, so a child task's writes and deletes never reach its
parent, asgiref #478/#523), tagged with the thread that owns it.  A thread only
sees storage it owns, so a thread that merely *inherited* a copy of another
thread's context (``copy_context().run`` in a new thread, Python 3.14's
``thread_inherit_context``) starts empty.  The bridges in ``tracebridge.sync``
move work between threads on purpose; they call :func:`rehome` at each hop so
the values follow the work and writes made across the hop flow back.

**Thread-critical Locals** never follow a hop: in a thread without a running
event loop they are a plain ``threading.local`` (same values anywhere in the
thread, whatever the context); in a loop thread they are a ContextVar private to
that thread (task-local, like contextvars).  Django keeps DB connections here.

**Tracing.**  Every get, set and delete of a Local attribute is one
``semconv.LOCAL_ACCESS`` span carrying the attribute's *name*, never its value.
These are leaf spans, so the hot path only appends a tuple to
``_telemetry.deferred`` and the span is built later off the hot path.  With
tracing off the only cost is :func:`_telemetry.get_tracer`.

Nothing here may create a reference cycle (asgiref #487, a gc test forbids it):
no stored exceptions, frames or bound methods of the Local.
"""

from __future__ import annotations

import contextvars
import os
import threading
import weakref
from asyncio import _get_running_loop
from time import time_ns
from typing import TYPE_CHECKING, Any, final

from . import _telemetry, semconv

__all__ = ["Local", "rehome"]

_get_ident = threading.get_ident
_thread_ref = _telemetry.current_thread_ref
_object_setattr = object.__setattr__
_MISSING: Any = object()

# The one attribute name asgiref reserves (it backs its storage helper);
# refused for drop-in compatibility.
_RESERVED = "_data"
# Names of our ContextVars, for reprs of contexts.  Built, not spelled, so the
# package's "no stray tracebridge.* literals" check stays meaningful.
_VAR_NAME = f"{__name__}.Local"
_THREAD_VAR_NAME = f"{__name__}.Local(thread_critical=True)"


# The value of a default Local's ContextVar: (owner, data).
#
# ``data`` is never mutated once stored (copy-on-write), so readers may use it
# without the lock and contexts copied from each other share it safely.
# ``owner`` is the ``threading.get_ident()`` of the only thread allowed to see
# ``data``; rehome() hands it to another thread.  A plain tuple: building it is
# part of every set, and a class with __init__ would cost ~100 ns more.
_Storage = tuple[int, dict[str, Any]]


# ---------------------------------------------------------------------------
# Registry of the ContextVars of live default Locals, for rehome().
#
# rehome() runs on every bridge hop, so it reads one immutable tuple and takes
# no lock.  Writers (Local creation on any thread, the weakref callback when a
# Local is collected, on whichever thread the collector runs) hold the RLock:
# re-entrant because a collection, and so _forget, can start inside
# _register's own allocations on the same thread.

_registry: dict[weakref.ref[Local], contextvars.ContextVar[_Storage]] = {}
_registry_lock = threading.RLock()
_registered_vars: tuple[contextvars.ContextVar[_Storage], ...] = ()


def _publish() -> None:
    global _registered_vars
    while True:
        try:
            _registered_vars = tuple(_registry.values())
            return
        except RuntimeError:  # a nested _forget resized the dict mid-copy; copy again
            continue


def _register(local: Local, var: contextvars.ContextVar[_Storage]) -> None:
    with _registry_lock:
        _registry[weakref.ref(local, _forget)] = var
        _publish()


def _forget(ref: weakref.ref[Local]) -> None:
    # Weakref callback: the Local is gone, so its values are unreachable and
    # rehome() need not move them any more.  Drop the ContextVar (contexts that
    # still hold it keep it alive on their own, and free it with themselves).
    try:
        with _registry_lock:
            _registry.pop(ref, None)
            _publish()
    except Exception:  # interpreter shutdown: module globals may be gone
        pass


def _after_fork_in_child() -> None:
    # A thread that held the lock at fork time does not exist in the child.
    global _registry_lock
    _registry_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def rehome() -> None:
    """Hand every default-Local storage in the current context to the current thread.

    The bridges call this on the thread about to run user code, inside the
    context it will run in (callee entry, both directions), and in the caller
    right after copying the callee's changed contextvars back.  That is what
    makes values set before a hop visible after it, and writes made across a hop
    visible to the caller, while a thread that merely inherited a context copy
    still sees nothing.  Thread-critical Locals are never moved.

    Cheap when nothing needs moving: one tuple read, then one ``ContextVar.get``
    per live default Local.
    """
    variables = _registered_vars
    if not variables:
        return
    ident = _get_ident()
    for var in variables:
        storage = var.get(None)
        if storage is not None and storage[0] != ident:
            var.set((ident, storage[1]))


# ---------------------------------------------------------------------------
# Tracing: deferred leaf spans.
#
# Each access method records its own span inline (no helper call: with tracing
# on the whole budget is a few hundred ns): when get_tracer() is not None it
# takes time_ns() before and after, the current span context (the parent) and
# the current Thread, and appends one tuple through _telemetry.deferred.record.
# The payload holds the Local's id() and the attribute name, never the value,
# and no exception or frame (a gc test forbids cycles on this path).

_OP_GET = semconv.LOCAL_OP_GET
_OP_SET = semconv.LOCAL_OP_SET
_OP_DELETE = semconv.LOCAL_OP_DELETE
_WHERE = "Local access span"


def _build_local_access(record: tuple[Any, ...]) -> tuple[str, _telemetry.Attributes]:
    # Runs on the drain thread (or in flush()), never on the traced code's path.
    # The record is flat (DeferredSpans.push): builder, tracer, parent, start,
    # end, then the access.  The thread travels as its cached ThreadRef
    # (current_thread_ref): no Thread object kept alive, no name read per access.
    # Fields 5..10: the Local's id, key, operation, thread_critical, found, thread (a ThreadRef).
    thread = record[10]
    return semconv.LOCAL_ACCESS, {
        semconv.LOCAL_ID: hex(record[5]),
        semconv.LOCAL_ATTRIBUTE: record[6],
        semconv.LOCAL_OPERATION: record[7],
        semconv.LOCAL_THREAD_CRITICAL: record[8],
        semconv.LOCAL_FOUND: record[9],
        semconv.THREAD_ID: thread.ident,
        semconv.THREAD_NAME: thread.name,
    }


def _record_access(
    tracer: Any, local: object, key: str, operation: str, thread_critical: bool, found: bool, start_ns: int
) -> None:
    """Record one access to a Local tracebridge does not implement, as the same span ours make.

    For :mod:`tracebridge.instrumentation`, which traces the real asgiref's
    Locals: it times the access itself and calls this right after, on the
    accessing thread, inside the accessing context (the current span is the
    parent).  Never raises.
    """
    try:
        _telemetry.deferred.push(
            (_build_local_access, tracer, _telemetry.current_parent(), start_ns, time_ns(),
             id(local), key, operation, thread_critical, found, _thread_ref())
        )
    except Exception:
        _telemetry.tracing_failed(_WHERE)


def _missing(local: Local, key: str) -> AttributeError:
    return AttributeError(f"{local!r} object has no attribute {key!r}")


# ---------------------------------------------------------------------------
# The public class and its two implementations.


@final
class Local:
    """Local storage for async tasks and threads (a namespace, like ``threading.local``).

    In a thread running an event loop, values are local in the ``contextvars``
    sense: a value set in an async frame is visible to code it awaits, to tasks
    it spawns (``create_task``, ``gather``, ``wait_for``: a snapshot taken at
    creation), and to sync code it calls through ``sync_to_async``; writes made
    there flow back.  In a thread without a loop, values are thread-local, but
    shared with async code the thread runs through ``async_to_sync``.

    With ``thread_critical=True`` values never leave their thread: exactly
    ``threading.local`` in sync threads, contextvar-like in loop threads, and not
    carried by ``sync_to_async``/``async_to_sync`` (for things like DB handles).

    Unlike a bare ContextVar, a Local is thread-safe.  Every attribute get, set
    and delete is traced as a ``tracebridge.local`` span (names, never values).
    """

    __slots__ = ()

    def __new__(cls, thread_critical: bool = False) -> Local:
        if cls is not Local:
            raise TypeError(
                f"{__name__}.Local cannot be subclassed; keep a Local as an "
                "attribute of your own class instead"
            )
        # Local(...) builds one of the two implementations; type.__call__ then
        # runs that instance's __init__ (it is an instance of Local).
        return object.__new__(_ThreadCriticalLocal if thread_critical else _DefaultLocal)

    def __init__(self, thread_critical: bool = False) -> None:
        # The signature every implementation shares; they do the work.
        pass

    if TYPE_CHECKING:  # the implementations define these for real

        def __getattr__(self, key: str) -> Any: ...

        def __setattr__(self, key: str, value: Any) -> None: ...

        def __delattr__(self, key: str) -> None: ...


class _DefaultLocal(Local):  # type: ignore[misc]  # Local is @final for users only
    """``Local(thread_critical=False)``: thread-tagged, copy-on-write ContextVar storage."""

    # (RLock, ContextVar) in one slot, read through the slot descriptor: our own
    # reads never go through __getattribute__, so they are never traced.
    __slots__ = ("_tb_state", "__weakref__")

    _tb_state: tuple[threading.RLock, contextvars.ContextVar[_Storage]]

    def __init__(self, thread_critical: bool = False) -> None:
        var: contextvars.ContextVar[_Storage] = contextvars.ContextVar(_VAR_NAME)
        # The RLock guards read-copy-store of the storage, keeping asgiref's
        # promise that a Local is thread-safe (a bare ContextVar makes none).
        _object_setattr(self, "_tb_state", (threading.RLock(), var))
        _register(self, var)

    # __getattribute__ rather than __getattr__: on CPython 3.11 falling through
    # a failed normal lookup to __getattr__ costs ~300 ns per access, most of
    # a Local get.  Names the class defines (dunders, our slot) keep their
    # normal meaning, exactly as they shadow stored values in asgiref.
    def __getattribute__(self, key: str) -> Any:
        if key in _DEFAULT_CLASS_NAMES:
            return _object_getattribute(self, key)
        tracer = _telemetry.get_tracer()
        if tracer is not None:
            start_ns = time_ns()
        lock, var = _default_state(self)
        lock.acquire()
        try:
            storage = var.get(None)
        finally:
            lock.release()
        # The dict is never mutated after it is stored: safe to read unlocked.
        if storage is not None and storage[0] == _get_ident():
            value = storage[1].get(key, _MISSING)
        else:  # nothing set, or storage inherited by a thread that does not own it
            value = _MISSING
        if tracer is not None:
            try:  # inlined on purpose: a call costs ~10% of the budget
                _telemetry.deferred.push(
                    (_build_local_access, tracer, _telemetry.current_parent(), start_ns, time_ns(),
                     id(self), key, _OP_GET, False, value is not _MISSING, _thread_ref())
                )
            except Exception:
                _telemetry.tracing_failed(_WHERE)
        if value is _MISSING:
            raise _missing(self, key)
        return value

    def __setattr__(self, key: str, value: Any) -> None:
        if key == _RESERVED:
            raise AttributeError(f"Cannot set attribute {_RESERVED!r} on Local; choose another name")
        tracer = _telemetry.get_tracer()
        if tracer is not None:
            start_ns = time_ns()
        ident = _get_ident()
        lock, var = _default_state(self)
        lock.acquire()
        try:
            storage = var.get(None)
            if storage is None or storage[0] != ident:
                data = {key: value}  # foreign storage is invisible here, so start afresh
            else:
                data = storage[1].copy()
                data[key] = value
            var.set((ident, data))
        finally:
            lock.release()
        if tracer is not None:
            try:  # inlined on purpose: a call costs ~10% of the budget
                _telemetry.deferred.push(
                    (_build_local_access, tracer, _telemetry.current_parent(), start_ns, time_ns(),
                     id(self), key, _OP_SET, False, True, _thread_ref())
                )
            except Exception:
                _telemetry.tracing_failed(_WHERE)

    def __delattr__(self, key: str) -> None:
        tracer = _telemetry.get_tracer()
        if tracer is not None:
            start_ns = time_ns()
        ident = _get_ident()
        lock, var = _default_state(self)
        lock.acquire()
        try:
            storage = var.get(None)
            found = storage is not None and storage[0] == ident and key in storage[1]
            if found:
                data = storage[1].copy()  # type: ignore[index]
                del data[key]
                var.set((ident, data))
        finally:
            lock.release()
        if tracer is not None:
            try:  # inlined on purpose: a call costs ~10% of the budget
                _telemetry.deferred.push(
                    (_build_local_access, tracer, _telemetry.current_parent(), start_ns, time_ns(),
                     id(self), key, _OP_DELETE, False, found, _thread_ref())
                )
            except Exception:
                _telemetry.tracing_failed(_WHERE)
        if not found:
            raise _missing(self, key)


class _ThreadCriticalLocal(Local):  # type: ignore[misc]  # Local is @final for users only
    """``Local(thread_critical=True)``: values never leave the thread that set them."""

    # One slot holding two threading.locals.  The first one's per-thread
    # __dict__ *is* the values while no loop runs in the thread; the second
    # one's per-thread __dict__ holds that thread's ContextVar for use while a
    # loop runs.  Two namespaces, as in asgiref: what a thread sets outside its
    # loop is not what its tasks see.  No lock: only its own thread ever
    # reaches a per-thread dict.
    __slots__ = ("_tb_state", "__weakref__")

    _tb_state: tuple[threading.local, threading.local]

    def __init__(self, thread_critical: bool = False) -> None:
        _object_setattr(self, "_tb_state", (threading.local(), threading.local()))

    def __getattribute__(self, key: str) -> Any:
        if key in _THREAD_CRITICAL_CLASS_NAMES:
            return _object_getattribute(self, key)
        tracer = _telemetry.get_tracer()
        if tracer is not None:
            start_ns = time_ns()
        if _get_running_loop() is None:
            value = _thread_critical_state(self)[0].__dict__.get(key, _MISSING)
        else:
            data = _loop_thread_var(self).get(None)
            value = _MISSING if data is None else data.get(key, _MISSING)
        if tracer is not None:
            try:  # inlined on purpose: a call costs ~10% of the budget
                _telemetry.deferred.push(
                    (_build_local_access, tracer, _telemetry.current_parent(), start_ns, time_ns(),
                     id(self), key, _OP_GET, True, value is not _MISSING, _thread_ref())
                )
            except Exception:
                _telemetry.tracing_failed(_WHERE)
        if value is _MISSING:
            raise _missing(self, key)
        return value

    def __setattr__(self, key: str, value: Any) -> None:
        tracer = _telemetry.get_tracer()
        if tracer is not None:
            start_ns = time_ns()
        if _get_running_loop() is None:
            # Like asgiref, the sync namespace is a plain threading.local: no reserved name.
            _thread_critical_state(self)[0].__dict__[key] = value
        else:
            if key == _RESERVED:
                raise AttributeError(f"Cannot set attribute {_RESERVED!r} on Local; choose another name")
            var = _loop_thread_var(self)
            data = var.get(None)
            # Copy-on-write: tasks spawned earlier keep their snapshot.
            var.set({key: value} if data is None else {**data, key: value})
        if tracer is not None:
            try:  # inlined on purpose: a call costs ~10% of the budget
                _telemetry.deferred.push(
                    (_build_local_access, tracer, _telemetry.current_parent(), start_ns, time_ns(),
                     id(self), key, _OP_SET, True, True, _thread_ref())
                )
            except Exception:
                _telemetry.tracing_failed(_WHERE)

    def __delattr__(self, key: str) -> None:
        tracer = _telemetry.get_tracer()
        if tracer is not None:
            start_ns = time_ns()
        if _get_running_loop() is None:
            found = _thread_critical_state(self)[0].__dict__.pop(key, _MISSING) is not _MISSING
        else:
            var = _loop_thread_var(self)
            data = var.get(None)
            found = data is not None and key in data
            if found:
                data = data.copy()  # type: ignore[union-attr]
                del data[key]
                var.set(data)
        if tracer is not None:
            try:  # inlined on purpose: a call costs ~10% of the budget
                _telemetry.deferred.push(
                    (_build_local_access, tracer, _telemetry.current_parent(), start_ns, time_ns(),
                     id(self), key, _OP_DELETE, True, found, _thread_ref())
                )
            except Exception:
                _telemetry.tracing_failed(_WHERE)
        if not found:
            raise _missing(self, key)


_object_getattribute = object.__getattribute__
# The slot descriptors' getters: a C call, no trip through __getattribute__.
_default_state = _DefaultLocal.__dict__["_tb_state"].__get__
_thread_critical_state = _ThreadCriticalLocal.__dict__["_tb_state"].__get__
# Names normal attribute lookup finds on the class; they are never storage.
_DEFAULT_CLASS_NAMES = frozenset(dir(_DefaultLocal))
_THREAD_CRITICAL_CLASS_NAMES = frozenset(dir(_ThreadCriticalLocal))


def _loop_thread_var(local: _ThreadCriticalLocal) -> contextvars.ContextVar[dict[str, Any]]:
    """This loop thread's private ContextVar for a thread-critical Local."""
    per_thread = _thread_critical_state(local)[1].__dict__
    var: contextvars.ContextVar[dict[str, Any]] | None = per_thread.get("var")
    if var is None:
        var = per_thread["var"] = contextvars.ContextVar(_THREAD_VAR_NAME)
    return var


# ---------------------------------------------------------------------------
# Untraced access, for tracebridge's own bookkeeping Locals.


def _get_untraced(local: Local, key: str, default: Any = None) -> Any:
    """``getattr(local, key, default)`` for a default Local, recording no span.

    For bookkeeping that tracebridge itself keeps in a Local (the bridges'
    ``AsyncToSync.executors``): a span per hop for it would be noise in the
    trace and cost in the hop's budget.  User code has no reason to call this.
    """
    lock, var = _default_state(local)
    lock.acquire()
    try:
        storage = var.get(None)
    finally:
        lock.release()
    if storage is not None and storage[0] == _get_ident():
        return storage[1].get(key, default)
    return default


def _set_untraced(local: Local, key: str, value: Any) -> None:
    """``setattr(local, key, value)`` for a default Local, recording no span."""
    ident = _get_ident()
    lock, var = _default_state(local)
    lock.acquire()
    try:
        storage = var.get(None)
        if storage is None or storage[0] != ident:
            data = {key: value}
        else:
            data = storage[1].copy()
            data[key] = value
        var.set((ident, data))
    finally:
        lock.release()
