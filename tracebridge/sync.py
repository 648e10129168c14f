"""Bridges between sync and async code, asgiref-compatible, each hop traced.

``async_to_sync`` lets a sync thread call a coroutine function: the thread
blocks, serving queued sync work for the coroutine, until the coroutine is done
on an event loop.  ``sync_to_async`` lets a coroutine call a sync function: the
awaiting task suspends while a thread runs it.  Which thread, and why, is the
whole art; every rule below is recorded on the hop's span
(:data:`~tracebridge.semconv.EXECUTOR_KIND`, :data:`~tracebridge.semconv.LOOP_ROUTE`).

Drop-in for ``asgiref.sync`` 3.13: same names, signatures, errors and
semi-internal attributes (``AsyncToSync.executors``,
``SyncToAsync.single_thread_executor``, ``thread_handler``...).
"""

from __future__ import annotations

import asyncio
import asyncio.coroutines
import contextvars
import functools
import inspect
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from . import _telemetry, semconv
from ._hop import Hop
from .current_thread_executor import CurrentThreadExecutor
# The bridges' own bookkeeping Local is read and written untraced: those
# accesses are tracebridge's, not the user's, and would double every hop's spans.
from .local import Local, _get_untraced, _set_untraced, rehome

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "AsyncSingleThreadContext",
    "AsyncToSync",
    "SyncToAsync",
    "ThreadSensitiveContext",
    "async_to_sync",
    "iscoroutinefunction",
    "markcoroutinefunction",
    "sync_to_async",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_P = ParamSpec("_P")
_R = TypeVar("_R")

_get_tracer = _telemetry.get_tracer
_MISSING = object()


def _restore_context(context: contextvars.Context) -> None:
    """Copy into the current context every contextvar the callee changed.

    Runs on the caller's side of a hop, after the callee finished in its copy.
    Compared by identity, never ``==`` (a value's ``__eq__`` may be costly or
    raise).  Local storages that came back are then owned by this thread.
    """
    changed = False
    for var, value in context.items():
        if var.get(_MISSING) is not value:
            var.set(value)
            changed = True
    if changed:
        rehome()


# iscoroutinefunction / markcoroutinefunction: inspect's on 3.12+, where it
# understands markers; on 3.11 asyncio's, whose marker is ``_is_coroutine``.
if sys.version_info >= (3, 12):
    iscoroutinefunction = inspect.iscoroutinefunction
    markcoroutinefunction: Callable[[_F], _F] = inspect.markcoroutinefunction
else:
    iscoroutinefunction = asyncio.iscoroutinefunction

    def markcoroutinefunction(func: _F) -> _F:
        """Mark ``func`` so that ``iscoroutinefunction(func)`` is true."""
        func._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]
        return func


def _is_async_callable(obj: object) -> bool:
    return iscoroutinefunction(obj) or iscoroutinefunction(getattr(obj, "__call__", None))


class AsyncSingleThreadContext:
    """Run every new event loop that ``async_to_sync`` makes inside it on ONE thread.

    Usage::

        with AsyncSingleThreadContext():
            async_to_sync(first)()   # a new loop, on the context's worker thread
            async_to_sync(second)()  # another new loop, on that same thread

    Only the outermost context counts.  Calls that find a parent loop (inside
    ``sync_to_async``) still go to that loop.  Exiting joins the worker thread
    (it is sync code, so blocking is fine).
    """

    def __init__(self) -> None:
        self.token: contextvars.Token[AsyncSingleThreadContext] | None = None

    def __enter__(self) -> AsyncSingleThreadContext:
        if AsyncToSync.async_single_thread_context.get(None) is None:
            self.token = AsyncToSync.async_single_thread_context.set(self)
        return self

    def __exit__(self, exc: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self.token is None:
            return
        executor = AsyncToSync.context_to_thread_executor.pop(self, None)
        if executor is not None:
            executor.shutdown()
        AsyncToSync.async_single_thread_context.reset(self.token)
        self.token = None


class ThreadSensitiveContext:
    """Give thread-sensitive sync work inside it a thread of its own.

    Usage::

        async with ThreadSensitiveContext():
            await sync_to_async(orm_call)()   # on this context's thread

    Without a context, thread-sensitive work of a whole async process shares
    one global thread.  Each context (say, one per request) gets its own, shared
    by every task that inherits the context.  Nested plain contexts are no-ops.

    With ``executor=`` (which must be single-threaded and stays the caller's:
    it is not shut down here) the context always opens anew, even when nested,
    and hides an enclosing ``async_to_sync`` thread so calls inside it use the
    executor.

    **Exit never blocks the event loop.**  The context's own thread is joined
    from a dedicated helper thread while the loop keeps running (asgiref#535:
    joining on the loop froze servers while the worker waited for the loop).
    """

    def __init__(self, *, executor: Executor | None = None) -> None:
        self.token: contextvars.Token[ThreadSensitiveContext] | None = None
        self.executor = executor
        self._entered = False
        self._exited = False
        self._hidden_executor: CurrentThreadExecutor | None = None

    async def __aenter__(self) -> ThreadSensitiveContext:
        if self.executor is None:
            if SyncToAsync.thread_sensitive_context.get(None) is None:
                self.token = SyncToAsync.thread_sensitive_context.set(self)
            return self
        if self._exited:
            raise RuntimeError("ThreadSensitiveContext with an executor cannot be entered again")
        if self._entered:
            raise RuntimeError("ThreadSensitiveContext is already entered")
        self._entered = True
        self.token = SyncToAsync.thread_sensitive_context.set(self)
        SyncToAsync.context_to_thread_executor[self] = self.executor
        # Hide the enclosing sync frame's thread for the block: work inside
        # goes to our executor.  A nested async_to_sync installs its own again.
        self._hidden_executor = _get_untraced(AsyncToSync.executors, "current")
        _set_untraced(AsyncToSync.executors, "current", None)
        return self

    async def __aexit__(
        self, exc: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.token is None:
            return
        SyncToAsync.thread_sensitive_context.reset(self.token)
        self.token = None
        executor = SyncToAsync.context_to_thread_executor.pop(self, None)
        if self.executor is not None:
            # The executor belongs to the caller: leave it running, and do not
            # wait for a busy worker.
            self._exited = True
            _set_untraced(AsyncToSync.executors, "current", self._hidden_executor)
            self._hidden_executor = None
            return
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        joined: asyncio.Future[None] = loop.create_future()

        def join() -> None:
            # Runs on a throwaway daemon thread, never the loop's and never the
            # default executor (which the joined worker might itself be waiting on).
            try:
                executor.shutdown(wait=True)
            finally:
                try:
                    loop.call_soon_threadsafe(_set_result_if_pending, joined)
                except RuntimeError:  # loop closed meanwhile: nobody waits any more
                    pass

        threading.Thread(target=join, name="tracebridge-context-exit", daemon=True).start()
        await joined


def _set_result_if_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AsyncToSync(Generic[_P, _R]):
    """Call a coroutine function from sync code, blocking until it is done.

    **Where the coroutine runs.**  Called from inside a ``sync_to_async``
    worker, on that call's loop (the outer loop thread).  Otherwise on a new
    event loop in a new thread (or the ``AsyncSingleThreadContext`` thread),
    made for this call and closed after it.

    **What the calling thread does meanwhile.**  It is not idle: it serves its
    own :class:`CurrentThreadExecutor`, so thread-sensitive ``sync_to_async``
    calls made by the coroutine run right here, on the calling thread.

    Raises:
        RuntimeError: when called from a thread running an event loop (it would
            block that loop forever); await the coroutine directly instead.
    """

    # The CurrentThreadExecutor of the innermost sync frame, per context (not
    # per thread): sibling tasks do not see each other's, children inherit it.
    executors: Local = Local()

    # Loop made by a new-loop call -> the caller's executor, for tasks on that
    # loop that lost the context which would have told them.
    loop_thread_executors: dict[asyncio.AbstractEventLoop, CurrentThreadExecutor] = {}

    # The active AsyncSingleThreadContext, if any.
    async_single_thread_context: contextvars.ContextVar[AsyncSingleThreadContext] = contextvars.ContextVar(
        "async_single_thread_context"
    )

    # AsyncSingleThreadContext -> its one worker; weak so a dropped context frees it.
    context_to_thread_executor: weakref.WeakKeyDictionary[AsyncSingleThreadContext, ThreadPoolExecutor] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(
        self,
        awaitable: Callable[_P, Coroutine[Any, Any, _R]] | Callable[_P, Awaitable[_R]],
        force_new_loop: bool = False,
    ) -> None:
        if not callable(awaitable) or not _is_async_callable(awaitable):
            # Not an error: a plain function returning an awaitable works too.
            warnings.warn("async_to_sync was passed a non-async-marked callable", stacklevel=2)
        self.awaitable = awaitable
        try:
            self.__self__ = awaitable.__self__  # type: ignore[union-attr]
        except AttributeError:
            pass
        self.force_new_loop = force_new_loop

    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        __traceback_hide__ = True  # noqa: F841

        main_event_loop: asyncio.AbstractEventLoop | None = None
        if not self.force_new_loop:
            # Set by the sync_to_async worker this thread is serving, if any.
            # A loop remembered from before a fork belongs to the parent (asgiref#194).
            threadlocal = SyncToAsync.threadlocal
            if getattr(threadlocal, "main_event_loop_pid", None) == os.getpid():
                main_event_loop = getattr(threadlocal, "main_event_loop", None)

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "You cannot use AsyncToSync in the same thread as an async event loop - "
                "just await the async function directly."
            )

        call_result: Future[_R] = Future()
        old_executor = _get_untraced(self.executors, "current")
        current_executor = CurrentThreadExecutor(old_executor)
        _set_untraced(self.executors, "current", current_executor)
        # One-element list: main_wrap replaces it with the coroutine's final context.
        context = [contextvars.copy_context()]
        task_context = getattr(SyncToAsync.threadlocal, "task_context", None)

        hop: Hop | None = None
        tracer = _get_tracer()
        if tracer is not None:
            hop = Hop.open(
                tracer, semconv.ASYNC_TO_SYNC, self.awaitable,
                current_executor,  # for the flow model: this thread serves it while it waits
            )
            if hop is not None:
                hop.executor_id = id(current_executor)
        error: BaseException | None = None
        try:
            awaitable = self.main_wrap(
                call_result, sys.exc_info(), task_context, context, self.awaitable(*args, **kwargs), hop=hop
            )
            if main_event_loop is not None:
                try:
                    main_event_loop.call_soon_threadsafe(main_event_loop.create_task, awaitable)
                except RuntimeError:  # that loop is closed: fall back to a loop of our own
                    main_event_loop = None
            if main_event_loop is not None:
                if hop is not None:  # read when the span is built
                    hop.loop_id = id(main_event_loop)
                    hop.loop_route = semconv.LOOP_ROUTE_PARENT_LOOP
                # Serve thread-sensitive work for the coroutine until it is done.
                current_executor.run_until_future(call_result)
            else:
                self._run_in_new_loop(awaitable, current_executor, hop)
            return call_result.result()
        except BaseException as exc:
            error = exc
            raise
        finally:
            _restore_context(context[0])
            _set_untraced(self.executors, "current", old_executor)
            if hop is not None:
                hop.close(error)
            del error

    def _run_in_new_loop(
        self,
        awaitable: Coroutine[Any, Any, None],
        current_executor: CurrentThreadExecutor,
        hop: Hop | None,
    ) -> None:
        async def new_loop_wrap() -> None:
            # On the new loop's thread.  Registered so that tasks on this loop
            # that lost their context still find the calling thread.
            loop = asyncio.get_running_loop()
            if hop is not None:  # read when the span is built
                hop.loop_id = id(loop)
                hop.loop_route = route
            self.loop_thread_executors[loop] = current_executor
            try:
                await awaitable
            finally:
                del self.loop_thread_executors[loop]

        single_thread_context = self.async_single_thread_context.get(None)
        owned_executor = single_thread_context is None
        if single_thread_context is None:
            route = semconv.LOOP_ROUTE_NEW_LOOP
            loop_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracebridge-loop")
        else:
            route = semconv.LOOP_ROUTE_SINGLE_THREAD_CONTEXT
            loop_executor = self.context_to_thread_executor.get(single_thread_context)  # type: ignore[assignment]
            if loop_executor is None:
                loop_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracebridge-single-loop")
                self.context_to_thread_executor[single_thread_context] = loop_executor
        loop_future = loop_executor.submit(asyncio.run, new_loop_wrap())
        # Serve thread-sensitive work for the coroutine until its loop is done.
        current_executor.run_until_future(loop_future)
        if owned_executor:
            loop_executor.shutdown(wait=False)
        loop_future.result()  # a loop-level failure, if any

    def __get__(self, parent: Any, objtype: Any) -> Callable[_P, _R]:
        # Decorated methods: bind like a function would, and look like one.
        func = functools.partial(self.__call__, parent)
        return functools.update_wrapper(func, self.awaitable)  # type: ignore[arg-type]

    async def main_wrap(
        self,
        call_result: Future[_R],
        exc_info: Any,
        task_context: list[asyncio.Task[Any]] | None,
        context: list[contextvars.Context],
        awaitable: Coroutine[Any, Any, _R] | Awaitable[_R],
        *,
        hop: Hop | None = None,
    ) -> None:
        """Run the coroutine as a task on the target loop and report to the sync caller.

        Runs on the loop's thread.  Its context starts as the caller's snapshot
        and is snapshotted again at the end for the way back — after the hop
        span is detached and *before* the caller is released.
        """
        __traceback_hide__ = True  # noqa: F841
        if context is not None:
            _restore_context(context[0])
        # This loop thread now owns the caller's Local values (the callee side
        # of the hop), even when no contextvar differed.
        rehome()
        current_task = asyncio.current_task()
        if current_task is not None and task_context is not None:
            # So a cancelled sync_to_async call can forward the cancellation here.
            task_context.append(current_task)
        token = hop.started() if hop is not None else None
        result: Any = None
        failure: BaseException | None = None
        try:
            if exc_info[1]:
                # Re-raise the caller's in-flight exception around the await so
                # sys.exc_info() inside matches the sync caller's.
                try:
                    raise exc_info[1]
                except BaseException:
                    result = await awaitable
            else:
                result = await awaitable
        except BaseException as exc:
            failure = exc
        finally:
            if hop is not None:
                hop.finished(token)
            if current_task is not None and task_context is not None:
                task_context.remove(current_task)
            context[0] = contextvars.copy_context()
            # Only now release the caller, who reads context[0].
            if failure is not None:
                call_result.set_exception(failure)
                del failure
            else:
                call_result.set_result(result)


class SyncToAsync(Generic[_P, _R]):
    """Call a sync function from async code, on a thread, without blocking the loop.

    **Which thread** (``thread_sensitive=True``, the default), first match wins:

    1. the sync thread of the nearest enclosing ``async_to_sync`` (via its
       CurrentThreadExecutor) — Django's request thread, typically;
    2. the thread of the active :class:`ThreadSensitiveContext`;
    3. the calling thread of the ``async_to_sync`` that created this loop;
    4. the one process-wide sync thread.

    With ``thread_sensitive=False``: ``executor`` if given, else the loop's
    default executor.

    **Context.**  The function runs in a copy of the caller's context (or in
    ``context`` if given); contextvars it changes are copied back afterwards.

    **Cancellation.**  Cancelling the awaiting task does not stop the thread.
    If the sync code is inside an ``async_to_sync`` back into this loop, the
    cancellation is forwarded to that task; if it absorbs it, the call
    completes normally.  Otherwise ``CancelledError`` propagates at once while
    the sync function runs on, orphaned.
    """

    # Per worker thread: the loop, pid and task list of the call it is serving
    # (read by async_to_sync called from that thread).
    threadlocal = threading.local()

    # Thread-sensitive work of an async process with no context, serialised.
    single_thread_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracebridge-sync")

    # The active ThreadSensitiveContext, if any.
    thread_sensitive_context: contextvars.ContextVar[ThreadSensitiveContext] = contextvars.ContextVar(
        "thread_sensitive_context"
    )

    # True while this context waits on single_thread_executor: a second
    # thread-sensitive call from the same context would queue behind itself.
    deadlock_context: contextvars.ContextVar[bool] = contextvars.ContextVar("deadlock_context")

    # ThreadSensitiveContext -> its single-thread executor; weak so an
    # abandoned context frees its thread.
    context_to_thread_executor: weakref.WeakKeyDictionary[ThreadSensitiveContext, Executor] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(
        self,
        func: Callable[_P, _R],
        thread_sensitive: bool = True,
        executor: Executor | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        if not callable(func) or _is_async_callable(func):
            raise TypeError("sync_to_async can only be applied to sync functions.")
        functools.update_wrapper(self, func)
        self.func = func
        self.context = context
        self._thread_sensitive = thread_sensitive
        markcoroutinefunction(self)
        if thread_sensitive and executor is not None:
            raise TypeError("executor must not be set when thread_sensitive is True")
        self._executor = executor
        try:
            self.__self__ = func.__self__  # type: ignore[attr-defined]
        except AttributeError:
            pass

    async def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        __traceback_hide__ = True  # noqa: F841
        loop = asyncio.get_running_loop()
        uses_single_thread = False

        if self._thread_sensitive:
            current_thread_executor = _get_untraced(AsyncToSync.executors, "current")
            thread_sensitive_context = self.thread_sensitive_context.get(None)
            if current_thread_executor:
                executor: Executor | None = current_thread_executor
                executor_kind = semconv.EXECUTOR_OUTER_CURRENT_THREAD
            elif thread_sensitive_context is not None:
                if thread_sensitive_context._exited:
                    raise RuntimeError(
                        "ThreadSensitiveContext has exited. Tasks created inside a context "
                        "with an executor must finish before it exits."
                    )
                executor = self.context_to_thread_executor.get(thread_sensitive_context)
                if executor is None:
                    # First call in this context (or a task that outlived it).
                    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracebridge-context")
                    self.context_to_thread_executor[thread_sensitive_context] = executor
                executor_kind = semconv.EXECUTOR_THREAD_SENSITIVE_CONTEXT
            elif loop in AsyncToSync.loop_thread_executors:
                executor = AsyncToSync.loop_thread_executors[loop]
                executor_kind = semconv.EXECUTOR_LOOP_THREAD
            elif self.deadlock_context.get(False):
                raise RuntimeError("Single thread executor already being used, would deadlock")
            else:
                executor = self.single_thread_executor
                executor_kind = semconv.EXECUTOR_GLOBAL_SYNC_THREAD
                uses_single_thread = True
                # Before the context copy, so the sync code sees it too: a
                # thread-sensitive call from there would wait on its own thread.
                self.deadlock_context.set(True)
        else:
            executor = self._executor
            executor_kind = semconv.EXECUTOR_GIVEN if executor is not None else semconv.EXECUTOR_LOOP_DEFAULT

        context = contextvars.copy_context() if self.context is None else self.context
        # Must stay a functools.partial: APM agents pop kwargs they injected
        # from child.keywords (asgiref#571).
        child = functools.partial(self.func, *args, **kwargs)
        task_context: list[asyncio.Task[Any]] = []

        hop: Hop | None = None
        tracer = _get_tracer()
        if tracer is not None:
            hop = Hop.open(
                tracer, semconv.SYNC_TO_ASYNC, self.func,
                executor,  # for the flow model: whose queue the call waits in (None: the loop's default)
            )
            if hop is not None:
                hop.thread_sensitive = self._thread_sensitive
                hop.executor_kind = executor_kind
                hop.executor_id = id(executor if executor is not None else loop)
                hop.loop_id = id(loop)
                # Single-thread executors' handoffs are recorded by the hop itself:
                # it already holds every timestamp of the work item's trip.
                hop.handoff_kind = _HANDOFF_KINDS.get(executor_kind)
        runner = functools.partial(context.run, _run_callee, hop)

        error: BaseException | None = None
        try:
            work = functools.partial(self.thread_handler, loop, sys.exc_info(), task_context, runner, child)
            notes_parent = hop is not None and hop.handoff_kind == semconv.HANDOFF_EXECUTOR_CURRENT_THREAD
            if notes_parent:
                # A CurrentThreadExecutor's submit() runs synchronously inside
                # run_in_executor, on this thread, and reads `submitting` to note
                # the parent (the flow model matches queued items to hops by it).
                submitting = _telemetry.submitting
                submitting.parent = hop.span  # type: ignore[union-attr]
                submitting.by_hop = True
            try:
                exec_future = loop.run_in_executor(executor, work)
            finally:
                if notes_parent:
                    submitting.parent = None
                    submitting.by_hop = False
            try:
                return await asyncio.shield(exec_future)
            except asyncio.CancelledError:
                forward = True
                if task_context:
                    # The sync code is inside async_to_sync back into a task:
                    # cancel that task; if it absorbs the cancellation, so do we.
                    inner = task_context[0]
                    inner.cancel()
                    try:
                        await inner
                        forward = False
                    except asyncio.CancelledError:
                        pass
                if exec_future.done():
                    raise
                if forward:
                    # Release the awaiting task now; the thread runs on, orphaned.
                    exec_future.cancel()
                return await exec_future
        except BaseException as exc:
            error = exc
            raise
        finally:
            if self.context is None:
                _restore_context(context)
            if uses_single_thread:
                self.deadlock_context.set(False)
            if hop is not None:
                hop.close(error)
            del error

    def __get__(self, parent: Any, objtype: Any) -> Callable[_P, Coroutine[Any, Any, _R]]:
        # Decorated methods: bind like a function would, and stay awaitable.
        func = functools.partial(self.__call__, parent)
        return functools.update_wrapper(func, self.func)  # type: ignore[arg-type]

    def thread_handler(
        self,
        loop: asyncio.AbstractEventLoop,
        exc_info: Any,
        task_context: list[asyncio.Task[Any]],
        func: Callable[..., _R],
        *args: Any,
        **kwargs: Any,
    ) -> _R:
        """Run ``func`` on this worker thread for an awaiting task on ``loop``.

        The call shape ``(loop, exc_info, task_context, runner, child)`` is kept
        as asgiref's: APM agents patch this method (asgiref#571).
        """
        __traceback_hide__ = True  # noqa: F841
        threadlocal = self.threadlocal
        saved = (
            getattr(threadlocal, "main_event_loop", None),
            getattr(threadlocal, "main_event_loop_pid", None),
            getattr(threadlocal, "task_context", None),
        )
        # An async_to_sync made by this code goes back to the awaiting loop.
        threadlocal.main_event_loop = loop
        threadlocal.main_event_loop_pid = os.getpid()
        threadlocal.task_context = task_context
        try:
            if exc_info[1]:
                # Keep sys.exc_info() as the awaiting task had it.
                try:
                    raise exc_info[1]
                except BaseException:
                    return func(*args, **kwargs)
            return func(*args, **kwargs)
        finally:
            # This thread may be a long-lived one (the request thread serving a
            # CurrentThreadExecutor): do not leave it pointing at this loop.
            threadlocal.main_event_loop, threadlocal.main_event_loop_pid, threadlocal.task_context = saved


# Executor rule -> the handoff span its single-thread executor gets (none for
# thread_sensitive=False: a multi-thread pool's queue is not ours to trace).
_HANDOFF_KINDS = {
    semconv.EXECUTOR_THREAD_SENSITIVE_CONTEXT: semconv.HANDOFF_EXECUTOR_THREAD_POOL,
    semconv.EXECUTOR_GLOBAL_SYNC_THREAD: semconv.HANDOFF_EXECUTOR_THREAD_POOL,
    semconv.EXECUTOR_OUTER_CURRENT_THREAD: semconv.HANDOFF_EXECUTOR_CURRENT_THREAD,
    semconv.EXECUTOR_LOOP_THREAD: semconv.HANDOFF_EXECUTOR_CURRENT_THREAD,
}


def _run_callee(hop: Hop | None, child: Callable[[], _R]) -> _R:
    """Inside the callee's context, on the worker thread: the user function's frame parent."""
    __traceback_hide__ = True  # noqa: F841
    rehome()
    if hop is None:
        return child()
    token = hop.started()
    try:
        return child()
    finally:
        hop.finished(token)


@overload
def async_to_sync(
    *, force_new_loop: bool = False
) -> Callable[[Callable[_P, Coroutine[Any, Any, _R]] | Callable[_P, Awaitable[_R]]], Callable[_P, _R]]: ...


@overload
def async_to_sync(
    awaitable: Callable[_P, Coroutine[Any, Any, _R]] | Callable[_P, Awaitable[_R]],
    *,
    force_new_loop: bool = False,
) -> Callable[_P, _R]: ...


def async_to_sync(
    awaitable: Callable[_P, Coroutine[Any, Any, _R]] | Callable[_P, Awaitable[_R]] | None = None,
    *,
    force_new_loop: bool = False,
) -> Any:
    """Wrap a coroutine function so sync code can call it (see :class:`AsyncToSync`).

    Usable as ``async_to_sync(f)``, ``@async_to_sync`` and ``@async_to_sync(force_new_loop=True)``.
    """
    if awaitable is None:
        return lambda f: AsyncToSync(f, force_new_loop=force_new_loop)
    return AsyncToSync(awaitable, force_new_loop=force_new_loop)


@overload
def sync_to_async(
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
    context: contextvars.Context | None = None,
) -> Callable[[Callable[_P, _R]], Callable[_P, Coroutine[Any, Any, _R]]]: ...


@overload
def sync_to_async(
    func: Callable[_P, _R],
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
    context: contextvars.Context | None = None,
) -> Callable[_P, Coroutine[Any, Any, _R]]: ...


def sync_to_async(
    func: Callable[_P, _R] | None = None,
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
    context: contextvars.Context | None = None,
) -> Any:
    """Wrap a sync function so async code can await it (see :class:`SyncToAsync`).

    Usable as ``sync_to_async(f)``, ``@sync_to_async`` and ``@sync_to_async(thread_sensitive=False)``.
    """
    if func is None:
        return lambda f: SyncToAsync(f, thread_sensitive=thread_sensitive, executor=executor, context=context)
    return SyncToAsync(func, thread_sensitive=thread_sensitive, executor=executor, context=context)
