"""The patches: the real asgiref's bridges, executor, Locals and timeout, traced like tracebridge's.

Each patch reuses tracebridge's own machinery, so the spans are the same ones
(names, attribute keys, values, parents) tracebridge's implementation makes:

* **sync_to_async** — ``SyncToAsync.__call__`` (on the loop, in the awaiting
  task) works out which executor asgiref is about to choose, with asgiref's
  own ladder read-only, and opens a :class:`~tracebridge._hop.Hop`; the hop
  travels to the worker thread in a private ContextVar, inside the context
  copy asgiref makes for the callee.  ``thread_handler`` (on the worker) wraps
  the ``func`` it is given so the hop starts *inside* that context, after
  asgiref restored it, and finishes before asgiref copies the context back:
  user spans are the hop's children and nothing leaks into the caller.
  That is the generic patch, for any asgiref 3.x; an asgiref whose source we
  have checked gets ``_asgiref_s2a``'s ``__call__`` instead, asgiref's steps
  with the hop written in, and keeps its own ``thread_handler``.
* **async_to_sync** — ``AsyncToSync.__call__`` (the sync caller) opens the hop
  and publishes it the same way; ``main_wrap`` (called synchronously by
  ``__call__``) wraps the coroutine so the hop starts on the loop thread after
  asgiref restored the caller's context, notes the loop route there, and
  finishes before asgiref snapshots the context for the way back.
* **CurrentThreadExecutor** — ``submit`` (the loop thread) wraps the work item
  to time its queue wait and run on the owner thread, then records a handoff
  with :func:`tracebridge._telemetry.record_handoff`; ``run_until_future``
  (the owner thread) tells the work item which executor served it and gives
  ``async_to_sync``'s hop its executor id.
* **Local** — ``__getattr__``/``__setattr__``/``__delattr__`` of asgiref's two
  Local implementations record every access (``_asgiref_local.py``, which also
  says when they are asgiref's rules written out rather than wrappers).
  ``AsyncToSync.executors`` (asgiref's own bookkeeping) is never recorded.
* **timeout** — ``_do_enter`` remembers the parent span and entry time;
  ``_cancel_task`` records the expiry with
  :func:`tracebridge.timeout._record_expiry_span`.

The methods on a request's path (the bridges' ``__call__``, ``thread_handler``,
``main_wrap``, the executor's ``submit``/``run_until_future`` and the Locals'
access methods) are replaced by plain functions that call asgiref's original
(kept in a closure) and check :func:`tracebridge._telemetry.get_tracer`
themselves: a ``wrapt.FunctionWrapper`` binds a new proxy on every call, ~0.5 µs
each (a plain function costs ~0.2 µs), and Django makes a dozen such calls
and ~20 Local accesses per request.  The timeout's two methods, off every
request's path, stay wrapt ``FunctionWrapper`` objects gated on ``get_tracer``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from time import time_ns
from types import ModuleType
from typing import Any

import wrapt
from opentelemetry.trace import SpanContext, Tracer

from .. import _telemetry, semconv
from .._hop import Hop
from ..timeout import _record_expiry_span
from . import _asgiref_local, _asgiref_s2a
from ._asgiref_source import is_asgiref_own

__all__ = ["Patch", "PatchPoint", "install", "patch_points", "uninstall"]

_get_tracer = _telemetry.get_tracer
_current_thread = threading.current_thread
_get_running_loop = asyncio._get_running_loop

_POOL_KINDS = frozenset({semconv.EXECUTOR_THREAD_SENSITIVE_CONTEXT, semconv.EXECUTOR_GLOBAL_SYNC_THREAD})


# ---------------------------------------------------------------------------
# What travels from the caller's side of a hop to the callee's: a ContextVar
# set in the caller's context just before asgiref copies that context for the
# callee (both directions), reset once the call is over.  The callee checks
# that the hop has not started yet: a stale outer hop (tracing switched on in
# the middle of a call) is never started twice.

_S2A_HOP: contextvars.ContextVar[Hop] = contextvars.ContextVar("tracebridge.instrumentation.s2a")


class _A2SCall:
    """An ``async_to_sync`` call in flight: its hop and what decides its loop route."""

    __slots__ = ("hop", "parent_loop", "single_thread_context", "claimed", "executor_noted")

    def __init__(self, hop: Hop, parent_loop: asyncio.AbstractEventLoop | None, single_thread_context: bool) -> None:
        self.hop = hop
        self.parent_loop = parent_loop
        self.single_thread_context = single_thread_context
        self.claimed = False  # main_wrap has wrapped the coroutine
        self.executor_noted = False  # run_until_future has noted the executor id


_A2S_CALL: contextvars.ContextVar[_A2SCall] = contextvars.ContextVar("tracebridge.instrumentation.a2s")


# Per owner thread (by ident): the CurrentThreadExecutors whose
# run_until_future is running, innermost last.  A dict, not a threading.local:
# Django runs each request's sync code on a new thread, and a threading.local
# costs ~1 us to set up on every thread that touches it.  An entry exists only
# while its stack is not empty (run_until_future pops it in a finally), so a
# finished thread's ident, reused by a new thread, never finds a stale stack.
_serving: dict[int, list[object]] = {}
_get_ident = threading.get_ident


def _reset(var: contextvars.ContextVar[Any], token: contextvars.Token[Any]) -> None:
    # Same task or thread, same context: cannot fail; if it ever did, user code must not see it.
    try:
        var.reset(token)
    except Exception:
        _telemetry.tracing_failed("resetting the published hop")


# ---------------------------------------------------------------------------
# sync_to_async


def _read_current_executor() -> Any:
    # AsyncToSync.executors.current, through the Local (the general way).
    cls = _patched_classes.get("AsyncToSync")
    return getattr(cls.executors, "current", None) if cls is not None else None


# How _choose_executor reads AsyncToSync.executors.current, on every traced
# sync_to_async call: set by install() (see _fast_local_reader).
_current_executor: Callable[[], Any] = _read_current_executor


def _fast_local_reader(local: Any, key: str, local_cls: Any) -> Callable[[], Any] | None:
    """A reader of ``local.<key>`` (None when unset) that skips the Local's lock and AttributeError.

    Why: on a loop thread ``AsyncToSync.executors.current`` is usually unset,
    and reading it through the Local costs a lock, a throw-away storage and a
    formatted AttributeError (~3 µs) on every sync_to_async call.  The
    storage of asgiref 3.13's default Local is an immutable per-thread
    snapshot in a ContextVar, so reading it without the lock is safe.  Any
    other layout returns None (the caller reads through the Local); the
    reader is checked against the Local on a probe ``local_cls()`` first.
    """
    try:
        get_ident = threading.get_ident

        def reader_for(instance: Any) -> Callable[[], Any]:
            var = object.__getattribute__(object.__getattribute__(instance, "_storage"), "_data")
            if type(var) is not contextvars.ContextVar:
                raise TypeError("not a ContextVar")

            def read() -> Any:
                stored = var.get(None)
                if stored is None or stored.thread_id != get_ident():
                    return None
                return stored.data.get(key)

            return read

        def probe_agrees() -> bool:
            probe = local_cls()  # a fresh default Local: ours to write
            if type(probe) is not type(local):
                return False
            read_probe = reader_for(probe)
            marker = object()
            if read_probe() is not None:
                return False
            setattr(probe, key, marker)
            if read_probe() is not marker or getattr(probe, key) is not marker:
                return False
            delattr(probe, key)
            return read_probe() is None

        # In a context of its own: the probe's storage must not stay in the
        # installing thread's context, where every hop's copy would carry it.
        return reader_for(local) if contextvars.Context().run(probe_agrees) else None
    except Exception:
        return None


def _choose_executor(
    s2a_cls: Any, a2s_cls: Any, instance: Any, loop: asyncio.AbstractEventLoop
) -> tuple[str, object] | None:
    """asgiref's executor ladder, read-only: (executor kind, executor or None), or None when it will raise.

    Runs in the awaiting task just before asgiref runs the same ladder, with
    no await in between, so both see the same state.  The executor of a
    ThreadSensitiveContext that has none yet is None here (asgiref creates it).
    """
    if getattr(instance, "_thread_sensitive", True):
        current = _current_executor()
        if current:
            return semconv.EXECUTOR_OUTER_CURRENT_THREAD, current
        context = instance.thread_sensitive_context.get(None)
        if context:
            if getattr(context, "_exited", False):
                return None  # asgiref raises "ThreadSensitiveContext has exited"
            return semconv.EXECUTOR_THREAD_SENSITIVE_CONTEXT, s2a_cls.context_to_thread_executor.get(context)
        if loop in a2s_cls.loop_thread_executors:
            return semconv.EXECUTOR_LOOP_THREAD, a2s_cls.loop_thread_executors[loop]
        if instance.deadlock_context.get(False):
            return None  # asgiref raises "Single thread executor already being used"
        return semconv.EXECUTOR_GLOBAL_SYNC_THREAD, s2a_cls.single_thread_executor
    executor = getattr(instance, "_executor", None)
    return (semconv.EXECUTOR_GIVEN, executor) if executor is not None else (semconv.EXECUTOR_LOOP_DEFAULT, None)


def _resolve_context_executor(hop: Hop) -> None:
    """Give a ThreadSensitiveContext hop the id of the executor asgiref made for it.

    Called where the context is current: on the worker inside the callee's
    copy, or in the caller when the callee never started.
    """
    try:
        s2a_cls = _patched_classes["SyncToAsync"]
        context = s2a_cls.thread_sensitive_context.get(None)
        executor = s2a_cls.context_to_thread_executor.get(context) if context is not None else None
        if executor is not None:
            hop.executor_id = id(executor)
    except Exception:
        _telemetry.tracing_failed("resolving a context executor")


def _sync_to_async_call(
    s2a_cls: Any, a2s_cls: Any, original: Callable[..., Coroutine[Any, Any, Any]]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def __call__(instance: Any, *args: Any, **kwargs: Any) -> Any:
        # The awaiting task, on the loop thread.
        __traceback_hide__ = True  # noqa: F841
        tracer = _get_tracer()
        hop = None if tracer is None else _open_sync_to_async(s2a_cls, a2s_cls, tracer, instance)
        if hop is None:
            return await original(instance, *args, **kwargs)
        token = _S2A_HOP.set(hop)
        given = _publish_in_given_context(instance, hop)
        error: BaseException | None = None
        try:
            return await original(instance, *args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _reset(_S2A_HOP, token)
            if given is not None:
                _unpublish_in_given_context(instance, given)
            if hop.handoff_kind is not None and not hop.executor_id:
                _resolve_context_executor(hop)
            hop.close(error)
            del error

    return __call__


def _open_sync_to_async(s2a_cls: Any, a2s_cls: Any, tracer: Tracer, instance: Any) -> Hop | None:
    try:
        loop = asyncio.get_running_loop()
        choice = _choose_executor(s2a_cls, a2s_cls, instance, loop)
        if choice is None:
            return None
        kind, executor = choice
        # executor: for the live flow model, whose queue the call waits in
        # (None: the loop's default, or a ThreadSensitiveContext's not made yet).
        hop = Hop.open(tracer, semconv.SYNC_TO_ASYNC, instance.func, executor=executor)
        if hop is None:
            return None
        hop.thread_sensitive = bool(getattr(instance, "_thread_sensitive", True))
        hop.executor_kind = kind
        hop.loop_id = id(loop)
        if executor is not None or kind == semconv.EXECUTOR_LOOP_DEFAULT:
            hop.executor_id = id(executor if executor is not None else loop)
        if kind in _POOL_KINDS:
            # The pool cannot record its own handoff; the hop does, as ours do.
            hop.handoff_kind = semconv.HANDOFF_EXECUTOR_THREAD_POOL
        return hop
    except Exception:
        _telemetry.tracing_failed("opening an asgiref sync_to_async hop")
        return None


def _publish_in_given_context(instance: Any, hop: Hop) -> contextvars.Token[Hop] | None:
    # sync_to_async(..., context=ctx) runs the callee in ctx, not in a copy of
    # ours: publish the hop there too (and take it back afterwards).
    given = getattr(instance, "context", None)
    if given is None:
        return None
    try:
        return given.run(_S2A_HOP.set, hop)  # type: ignore[no-any-return]
    except Exception:  # ctx is entered elsewhere right now: the hop stays caller-side only
        return None


def _unpublish_in_given_context(instance: Any, token: contextvars.Token[Hop]) -> None:
    try:
        instance.context.run(_S2A_HOP.reset, token)
    except Exception:
        _telemetry.tracing_failed("unpublishing a hop from a given context")


def _thread_handler(original: Callable[..., Any]) -> Callable[..., Any]:
    def thread_handler(instance: Any, *args: Any, **kwargs: Any) -> Any:
        # The worker thread (or the owner thread of a CurrentThreadExecutor),
        # outside the callee's context: asgiref's ``func(child)`` enters it.
        # ``child`` itself is passed on untouched (APM agents read child.keywords,
        # asgiref#571); only ``func`` (the fourth argument) is wrapped, to hand it our child.
        __traceback_hide__ = True  # noqa: F841
        if len(args) >= 4 and _get_tracer() is not None and callable(args[3]):
            args = (*args[:3], functools.partial(_enter_callee, args[3]), *args[4:])
        return original(instance, *args, **kwargs)

    return thread_handler


def _enter_callee(func: Callable[..., Any], child: Callable[[], Any], *rest: Any) -> Any:
    __traceback_hide__ = True  # noqa: F841
    return func(functools.partial(_run_child, child), *rest)


def _run_child(child: Callable[[], Any]) -> Any:
    # Inside the callee's context, after asgiref restored it: the user
    # function's frame parent, like tracebridge.sync._run_callee.
    __traceback_hide__ = True  # noqa: F841
    hop = _S2A_HOP.get(None)
    if hop is None or hop.start_ns:
        return child()
    if hop.handoff_kind is not None and not hop.executor_id and _telemetry.flow is not None:
        # Only the live flow model needs it this early; the caller resolves
        # it anyway when the hop closes (asgiref has made the executor by then).
        _resolve_context_executor(hop)
    token = hop.started()
    try:
        return child()
    finally:
        hop.finished(token)


# ---------------------------------------------------------------------------
# async_to_sync


def _async_to_sync_call(s2a_cls: Any, a2s_cls: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    def __call__(instance: Any, *args: Any, **kwargs: Any) -> Any:
        # The sync caller's thread (no running loop, or asgiref raises below).
        __traceback_hide__ = True  # noqa: F841
        tracer = _get_tracer()
        call = None if tracer is None else _open_async_to_sync(s2a_cls, a2s_cls, tracer, instance)
        if call is None:
            return original(instance, *args, **kwargs)
        token = _A2S_CALL.set(call)
        error: BaseException | None = None
        try:
            return original(instance, *args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _reset(_A2S_CALL, token)
            call.hop.close(error)
            del error

    return __call__


def _open_async_to_sync(s2a_cls: Any, a2s_cls: Any, tracer: Tracer, instance: Any) -> _A2SCall | None:
    try:
        if _get_running_loop() is not None:
            return None  # asgiref raises "You cannot use AsyncToSync in the same thread as an async event loop"
        hop = Hop.open(tracer, semconv.ASYNC_TO_SYNC, instance.awaitable)
        if hop is None:
            return None
        # asgiref's rule for the parent loop: the loop of the sync_to_async
        # call this thread is serving, unless forked since or force_new_loop.
        parent_loop = None
        if not getattr(instance, "force_new_loop", False):
            threadlocal = s2a_cls.threadlocal
            pid = getattr(threadlocal, "main_event_loop_pid", None)
            if pid and pid == os.getpid():
                parent_loop = getattr(threadlocal, "main_event_loop", None)
        single = getattr(a2s_cls, "async_single_thread_context", None)
        return _A2SCall(hop, parent_loop, single is not None and single.get(None) is not None)
    except Exception:
        _telemetry.tracing_failed("opening an asgiref async_to_sync hop")
        return None


def _main_wrap(original: Callable[..., Any]) -> Callable[..., Any]:
    def main_wrap(instance: Any, *args: Any, **kwargs: Any) -> Any:
        # Called synchronously by AsyncToSync.__call__ on the caller's thread, to
        # build the coroutine it schedules; wrap the user's awaitable inside it.
        __traceback_hide__ = True  # noqa: F841
        call = _A2S_CALL.get(None)  # set only while tracing
        if call is None or call.claimed:
            return original(instance, *args, **kwargs)
        if len(args) >= 5:
            call.claimed = True
            args = (*args[:4], _run_awaitable(call, args[4]), *args[5:])
        elif "awaitable" in kwargs:
            call.claimed = True
            kwargs = {**kwargs, "awaitable": _run_awaitable(call, kwargs["awaitable"])}
        return original(instance, *args, **kwargs)

    return main_wrap


async def _run_awaitable(call: _A2SCall, awaitable: Any) -> Any:
    # On the target loop's thread, inside main_wrap after asgiref restored the
    # caller's context; finishes before main_wrap snapshots it for the way back.
    __traceback_hide__ = True  # noqa: F841
    hop = call.hop
    loop = asyncio.get_running_loop()
    if loop is call.parent_loop:
        route = semconv.LOOP_ROUTE_PARENT_LOOP
    elif call.single_thread_context:
        route = semconv.LOOP_ROUTE_SINGLE_THREAD_CONTEXT
    else:
        route = semconv.LOOP_ROUTE_NEW_LOOP
    hop.loop_id = id(loop)
    hop.loop_route = route
    token = hop.started()
    try:
        return await awaitable
    finally:
        hop.finished(token)


# ---------------------------------------------------------------------------
# CurrentThreadExecutor


@dataclass(slots=True)
class _Handoff:
    """A work item's trace facts, taken by the submitting thread."""

    tracer: Tracer
    parent: _telemetry.ParentRef
    function: str
    queued_by: threading.Thread
    submitted_ns: int
    executor: object


def _submit(original: Callable[..., Any]) -> Callable[..., Any]:
    def submit(instance: Any, *args: Any, **kwargs: Any) -> Any:
        # The submitting thread (a loop thread, inside loop.run_in_executor, in
        # the awaiting task's context).  Queued work is wrapped to time itself.
        __traceback_hide__ = True  # noqa: F841
        tracer = _get_tracer()
        if tracer is not None and args:
            args = _timed_work(tracer, instance, args)
        return original(instance, *args, **kwargs)

    return submit


def _timed_work(tracer: Tracer, instance: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    # submit's arguments with the work item wrapped in _run_handoff.
    try:
        fn = args[0]
        hop = _asgiref_s2a.submitting.get(_get_ident()) or _S2A_HOP.get(None)
        parent: _telemetry.ParentRef
        if hop is not None and not hop.start_ns:
            # The sync_to_async hop submitting right now: hang the handoff
            # under it and name the user's function, not asgiref's wrapper.
            parent = hop.span
            function = hop.function
        else:
            parent = _telemetry.current_parent()
            function = _telemetry.function_name(fn)
        handoff = _Handoff(tracer, parent, function, _current_thread(), time_ns(), instance)
        return (functools.partial(_run_handoff, handoff, fn), *args[1:])
    except Exception:
        _telemetry.tracing_failed("asgiref CurrentThreadExecutor submit")
        return args


def _run_handoff(handoff: _Handoff, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    # The executor's owner thread, inside run_until_future (skipped entirely
    # when the future was cancelled before it started, as ours are).
    __traceback_hide__ = True  # noqa: F841
    started_ns = time_ns()
    try:
        return fn(*args, **kwargs)
    finally:
        finished_ns = time_ns()
        stack = _serving.get(_get_ident())
        executor = stack[-1] if stack else handoff.executor
        _telemetry.record_handoff(
            handoff.tracer,
            handoff.parent,
            handoff.function,
            semconv.HANDOFF_EXECUTOR_CURRENT_THREAD,
            id(executor),
            handoff.queued_by,
            _current_thread(),
            handoff.submitted_ns,
            started_ns,
            finished_ns,
        )


def _run_until_future(original: Callable[..., Any]) -> Callable[..., Any]:
    def run_until_future(instance: Any, *args: Any, **kwargs: Any) -> Any:
        # The owner thread, about to block serving its queue.  Not gated on the
        # tracer: the serving stack must stay balanced if tracing flips meanwhile.
        __traceback_hide__ = True  # noqa: F841
        call = _A2S_CALL.get(None)
        if call is not None and not call.executor_noted:
            call.executor_noted = True
            call.hop.executor_id = id(instance)
        ident = _get_ident()
        stack = _serving.get(ident)
        if stack is None:
            stack = _serving[ident] = []
        stack.append(instance)
        try:
            return original(instance, *args, **kwargs)
        finally:
            stack.pop()
            if not stack:
                del _serving[ident]

    return run_until_future


# ---------------------------------------------------------------------------
# timeout

# asgiref timeout -> (tracer, parent span context, entry time) while the block runs.
_timeouts: weakref.WeakKeyDictionary[object, tuple[Tracer, SpanContext, int]] = weakref.WeakKeyDictionary()


def _timeout_enter(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # The loop thread, entering the block (tracing on: wrapt skips us otherwise).
    __traceback_hide__ = True  # noqa: F841
    tracer = _get_tracer()
    entered_ns = time_ns()
    result = wrapped(*args, **kwargs)  # raises outside a task, before any timer exists
    if tracer is not None and getattr(instance, "_timeout", None) is not None:
        try:
            _timeouts[instance] = (tracer, _telemetry.current_parent(), entered_ns)
        except Exception:
            _telemetry.tracing_failed("asgiref timeout enter")
    return result


def _timeout_cancel(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # Loop callback at the deadline; records only when the entry was traced.
    __traceback_hide__ = True  # noqa: F841
    task = getattr(instance, "_task", None)
    result = wrapped(*args, **kwargs)
    if task is not None and getattr(instance, "_cancelled", False):
        trace = _timeouts.pop(instance, None)
        if trace is not None:
            tracer, parent, entered_ns = trace
            _record_expiry_span(tracer, parent, entered_ns, instance._timeout, task)
    return result


# ---------------------------------------------------------------------------
# The patch table.


@dataclass(frozen=True, slots=True)
class PatchPoint:
    """One attribute of an asgiref class that the instrumentation replaces."""

    module: str
    """The asgiref module, e.g. ``asgiref.sync``."""

    owner: str
    """The class in it, e.g. ``SyncToAsync``."""

    name: str
    """The attribute, e.g. ``__call__``."""


@dataclass(frozen=True, slots=True)
class Patch:
    """A replacement in place: what was there before and what is there now."""

    owner: type
    name: str
    original: Any
    replacement: Any


_patched_classes: dict[str, Any] = {}


def patch_points() -> list[PatchPoint]:
    """Every attribute :func:`install` replaces, for messages and tests."""
    return [
        PatchPoint("asgiref.sync", "SyncToAsync", "__call__"),
        PatchPoint("asgiref.sync", "SyncToAsync", "thread_handler"),
        PatchPoint("asgiref.sync", "AsyncToSync", "__call__"),
        PatchPoint("asgiref.sync", "AsyncToSync", "main_wrap"),
        PatchPoint("asgiref.current_thread_executor", "CurrentThreadExecutor", "submit"),
        PatchPoint("asgiref.current_thread_executor", "CurrentThreadExecutor", "run_until_future"),
        *(
            PatchPoint("asgiref.local", owner, name)
            for owner in ("_DefaultLocal", "_ThreadCriticalLocal")
            for name in ("__getattr__", "__setattr__", "__delattr__")
        ),
        PatchPoint("asgiref.timeout", "timeout", "_do_enter"),
        PatchPoint("asgiref.timeout", "timeout", "_cancel_task"),
    ]


def _own(owner: type, name: str) -> Any:
    # The attribute as stored on the class itself (not inherited), or None.
    return owner.__dict__.get(name)


def install(modules: dict[str, ModuleType]) -> tuple[list[Patch], list[PatchPoint]]:
    """Replace every patch point found in ``modules``; returns (patches made, points missing).

    A point is missing when its class or attribute does not exist in this
    asgiref version; the others are patched anyway (each works on its own).
    """
    global _current_executor
    patches: list[Patch] = []
    missing: list[PatchPoint] = []
    classes: dict[str, Any] = {}
    for point in patch_points():
        owner = getattr(modules.get(point.module), point.owner, None)
        if not isinstance(owner, type) or _own(owner, point.name) is None:
            missing.append(point)
            continue
        classes[point.owner] = owner
    s2a = classes.get("SyncToAsync")
    a2s = classes.get("AsyncToSync")
    bridges_ok = s2a is not None and a2s is not None and all(
        hasattr(s2a, attribute)
        for attribute in ("thread_sensitive_context", "deadlock_context", "single_thread_executor", "threadlocal")
    ) and hasattr(a2s, "executors") and hasattr(a2s, "loop_thread_executors")
    _patched_classes.clear()
    _patched_classes.update(classes)

    def put(owner: type, name: str, original: Any, replacement: Any) -> None:
        setattr(owner, name, replacement)
        patches.append(Patch(owner, name, original, replacement))

    def wrap(owner: type, name: str, wrapper: Callable[..., Any], *, gated: bool = True) -> None:
        # Off the request path: wrapt, skipped entirely with tracing off.
        original = _own(owner, name)
        enabled: Any = _get_tracer if gated else None  # truthy: a Tracer; falsy: None (tracing off)
        put(owner, name, original, wrapt.FunctionWrapper(original, wrapper, enabled=enabled))

    def direct(owner: type, name: str, make: Callable[[Any], Callable[..., Any]]) -> None:
        # On every request's path: a plain function calling the original itself (see the module docstring).
        original = _own(owner, name)
        put(owner, name, original, functools.update_wrapper(make(original), original))

    # Before anything is patched: the reader's probe Local must not be traced.
    executors = getattr(a2s, "executors", None)
    local_cls = getattr(modules.get("asgiref.local"), "Local", None)
    _current_executor = (
        _fast_local_reader(executors, "current", local_cls) if executors is not None and local_cls else None
    ) or _read_current_executor
    # A checked asgiref gets sync_to_async with the hop written in (_asgiref_s2a);
    # its thread_handler then stays asgiref's: the hop starts in the callee's closure.
    sync_module = modules.get("asgiref.sync")
    fused_s2a = (
        bridges_ok
        and _asgiref_s2a.fused_layout(sync_module) is not None
        and s2a is not None
        and is_asgiref_own(_own(s2a, "__call__"), sync_module)  # not an APM agent's wrapper
    )

    for point in patch_points():
        owner = classes.get(point.owner)
        if owner is None or point in missing:
            continue
        if point.owner in ("SyncToAsync", "AsyncToSync") and not bridges_ok:
            missing.append(point)
            continue
        key = (point.owner, point.name)
        if key == ("SyncToAsync", "__call__"):
            if fused_s2a:
                reader = _current_executor
                direct(owner, point.name, lambda original: _asgiref_s2a.fused_sync_to_async_call(sync_module, reader))  # type: ignore[arg-type]
            else:
                direct(owner, point.name, functools.partial(_sync_to_async_call, s2a, a2s))
        elif key == ("SyncToAsync", "thread_handler"):
            if not fused_s2a:
                direct(owner, point.name, _thread_handler)
        elif key == ("AsyncToSync", "__call__"):
            direct(owner, point.name, functools.partial(_async_to_sync_call, s2a, a2s))
        elif key == ("AsyncToSync", "main_wrap"):
            direct(owner, point.name, _main_wrap)
        elif key == ("CurrentThreadExecutor", "submit"):
            direct(owner, point.name, _submit)
        elif key == ("CurrentThreadExecutor", "run_until_future"):
            direct(owner, point.name, _run_until_future)
        elif key == ("timeout", "_do_enter"):
            wrap(owner, point.name, _timeout_enter)
        elif key == ("timeout", "_cancel_task"):
            wrap(owner, point.name, _timeout_cancel, gated=False)
    # The Local methods, three per class, all or nothing per class.
    local_module = modules.get("asgiref.local")
    for owner_name, thread_critical in (("_DefaultLocal", False), ("_ThreadCriticalLocal", True)):
        owner = classes.get(owner_name)
        if owner is None or any(p.owner == owner_name for p in missing):
            continue
        for name, replacement in _asgiref_local.local_methods(owner, thread_critical, local_module).items():
            patches.append(Patch(owner, name, _own(owner, name), replacement))
            setattr(owner, name, replacement)
    _asgiref_local.set_internal_local(getattr(a2s, "executors", None))
    return patches, missing


def uninstall(patches: list[Patch]) -> list[Patch]:
    """Put every original back; returns the patches someone else had replaced meanwhile (left alone)."""
    global _current_executor
    foreign = []
    for patch in reversed(patches):
        if _own(patch.owner, patch.name) is patch.replacement:
            setattr(patch.owner, patch.name, patch.original)
        else:
            foreign.append(patch)
    _asgiref_local.set_internal_local(None)
    _current_executor = _read_current_executor
    _patched_classes.clear()
    return foreign

