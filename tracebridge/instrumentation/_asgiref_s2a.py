"""``SyncToAsync.__call__`` for a checked asgiref, with the hop written in rather than wrapped around.

The generic patch (``_asgiref._sync_to_async_call`` with ``_thread_handler``)
works on any asgiref 3.x: a coroutine around asgiref's, which reruns asgiref's
executor ladder read-only to name the executor, publishes the hop in a
ContextVar for the worker, and wraps the ``func`` asgiref hands its
``thread_handler`` in two partials so the hop starts inside the callee's
context.  Under Django (four ``sync_to_async`` hops a request) that costs a
coroutine layer, the ladder twice, two partials and three frames on the
worker, and a ContextVar that asgiref's ``_restore_context`` then walks on
both sides of every hop.

For an asgiref whose ``sync_to_async`` source we have read and checked (by
sha256, as for the Locals: today 3.13.0), this module's ``__call__`` replaces
asgiref's outright and does what asgiref's does, in the same order, on
asgiref's own state:

1. choose the executor (the ladder: the enclosing ``async_to_sync``'s
   CurrentThreadExecutor, the ``ThreadSensitiveContext``'s executor, made on
   first use, the loop's ``async_to_sync`` thread, else the global single
   thread, guarded by ``deadlock_context``; or the given executor / the loop's
   default when not thread-sensitive) and open the hop with what it chose;
2. copy the context (or take the given one) and bind ``child``, a plain
   ``functools.partial`` (APM agents read ``child.keywords``, asgiref#571);
3. hand ``self.thread_handler`` (asgiref's, untouched: it sets the
   thread-local loop for ``async_to_sync`` and replays the caller's exception)
   a ``func`` that enters the context, re-homes its Local storage with
   asgiref's ``_restore_context``, then starts the hop, runs ``child`` and
   finishes the hop: the hop reaches the worker in that closure, not in a
   ContextVar;
4. await the shielded future, with asgiref's cancellation rules, then copy the
   context back (only when it was a copy), reset ``deadlock_context`` and
   close the hop.

Any other asgiref keeps the generic patch: a ladder we have not read is never
guessed at.  ``tests/test_instrumentation.py`` runs the same workloads on this
and on the generic patch.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import sys
import threading
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any

from .. import _telemetry, semconv
from .._hop import Hop
from ._asgiref_source import checked_version

__all__ = ["fused_layout", "fused_sync_to_async_call", "submitting"]

_get_tracer = _telemetry.get_tracer
_get_ident = threading.get_ident
_get_running_loop = asyncio.get_running_loop
_shield = asyncio.shield
_CancelledError = asyncio.CancelledError
_copy_context = contextvars.copy_context
_partial = functools.partial
_exc_info = sys.exc_info
_open_hop = Hop.open

_SYNC_TO_ASYNC = semconv.SYNC_TO_ASYNC
_OUTER = semconv.EXECUTOR_OUTER_CURRENT_THREAD
_CONTEXT = semconv.EXECUTOR_THREAD_SENSITIVE_CONTEXT
_LOOP_THREAD = semconv.EXECUTOR_LOOP_THREAD
_GLOBAL = semconv.EXECUTOR_GLOBAL_SYNC_THREAD
_GIVEN = semconv.EXECUTOR_GIVEN
_LOOP_DEFAULT = semconv.EXECUTOR_LOOP_DEFAULT
_POOL_HANDOFF = semconv.HANDOFF_EXECUTOR_THREAD_POOL

# sha256 of the source of asgiref.sync's SyncToAsync.__call__, its
# thread_handler, _restore_context and ThreadSensitiveContext (see
# fused_layout): the code this module's __call__ was written against.
_FUSED_SOURCES = {
    "96e29b6740b6ec5b7c561e700d935b1217f69cb3b30c5965237fed6bd67d07f7": "asgiref 3.13.0",
}

# Loop thread ident -> the sync_to_async hop submitting to a CurrentThreadExecutor
# right now.  Set around run_in_executor, which calls the executor's submit
# synchronously on this thread: the patched submit hangs its handoff under it.
submitting: dict[int, Hop] = {}


def fused_layout(module: ModuleType | None) -> str | None:
    """The checked asgiref whose ``sync_to_async`` ``module`` (asgiref.sync) has, else None."""
    if module is None:
        return None

    def sources() -> list[object]:
        s2a = module.SyncToAsync  # type: ignore[attr-defined]
        return [s2a.__call__, s2a.thread_handler, module._restore_context, module.ThreadSensitiveContext]  # type: ignore[attr-defined]

    return checked_version(sources, _FUSED_SOURCES)


def fused_sync_to_async_call(
    sync_module: ModuleType, read_current_executor: Callable[[], Any]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """The replacement ``SyncToAsync.__call__`` (see the module docstring); ``read_current_executor``
    returns ``AsyncToSync.executors.current`` (None when unset)."""
    a2s_cls = sync_module.AsyncToSync  # type: ignore[attr-defined]
    loop_thread_executors = a2s_cls.loop_thread_executors
    thread_pool = sync_module.ThreadPoolExecutor  # type: ignore[attr-defined]
    restore = sync_module._restore_context  # type: ignore[attr-defined]

    async def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        # The awaiting task, on the loop thread.
        __traceback_hide__ = True  # noqa: F841
        loop = _get_running_loop()

        if self._thread_sensitive:
            executor = read_current_executor()
            if executor:
                kind = _OUTER
            else:
                sensitive_context = self.thread_sensitive_context.get(None)
                if sensitive_context:
                    if sensitive_context._exited:
                        # The task outlived the context that made its executor:
                        # a new one would silently move the call to another thread.
                        raise RuntimeError(
                            "ThreadSensitiveContext has exited. Tasks created inside a context "
                            "with an executor must finish before it exits."
                        )
                    executors = self.context_to_thread_executor
                    if sensitive_context in executors:
                        executor = executors[sensitive_context]
                    else:
                        executor = executors[sensitive_context] = thread_pool(max_workers=1)
                    kind = _CONTEXT
                elif loop in loop_thread_executors:
                    executor = loop_thread_executors[loop]
                    kind = _LOOP_THREAD
                elif self.deadlock_context.get(False):
                    raise RuntimeError("Single thread executor already being used, would deadlock")
                else:
                    executor = self.single_thread_executor
                    kind = _GLOBAL
                    # Before the copy: a thread-sensitive call made from the
                    # sync code would wait on its own thread.
                    self.deadlock_context.set(True)
        else:
            executor = self._executor
            kind = _GIVEN if executor is not None else _LOOP_DEFAULT

        hop = None
        tracer = _get_tracer()
        if tracer is not None:
            hop = _open_hop(tracer, _SYNC_TO_ASYNC, self.func, executor)
            if hop is not None:
                hop.thread_sensitive = bool(self._thread_sensitive)
                hop.executor_kind = kind
                hop.executor_id = id(executor if executor is not None else loop)
                hop.loop_id = id(loop)
                if kind is _CONTEXT or kind is _GLOBAL:
                    # A thread pool cannot record its own handoff; the hop does.
                    hop.handoff_kind = _POOL_HANDOFF

        given = self.context
        context = _copy_context() if given is None else given
        child = _partial(self.func, *args, **kwargs)

        def func(child: Callable[[], Any]) -> Any:
            # The worker thread, inside asgiref's thread_handler.
            def run_child() -> Any:
                # Inside the callee's context: its Locals re-homed to this
                # thread first, as asgiref does; then the hop is current.
                restore(context)
                if hop is None:
                    return child()
                token = hop.started()
                try:
                    return child()
                finally:
                    hop.finished(token)

            return context.run(run_child)

        error: BaseException | None = None
        try:
            task_context: list[asyncio.Task[Any]] = []
            work = _partial(self.thread_handler, loop, _exc_info(), task_context, func, child)
            if hop is not None and (kind is _OUTER or kind is _LOOP_THREAD):
                ident = _get_ident()
                submitting[ident] = hop
                try:
                    exec_coro = loop.run_in_executor(executor, work)
                finally:
                    del submitting[ident]
            else:
                exec_coro = loop.run_in_executor(executor, work)
            result = None
            try:
                result = await _shield(exec_coro)
            except _CancelledError:
                # The awaiting task was cancelled.  If the sync code is inside
                # an async_to_sync back into a task, cancel that task; if it
                # absorbs the cancellation, so do we.
                cancel_parent = True
                try:
                    task = task_context[0]
                    task.cancel()
                    try:
                        await task
                        cancel_parent = False
                    except _CancelledError:
                        pass
                except IndexError:
                    pass
                if exec_coro.done():
                    raise
                if cancel_parent:
                    exec_coro.cancel()
                result = await exec_coro
            finally:
                if given is None:
                    restore(context)
                self.deadlock_context.set(False)
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            if hop is not None:
                hop.close(error)
            del error

    return __call__
