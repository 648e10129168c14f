"""An executor that runs submitted work on the thread that created it.

``async_to_sync`` makes one :class:`CurrentThreadExecutor` per sync frame: the
sync thread that called it blocks in :meth:`CurrentThreadExecutor.run_until_future`
while the coroutine runs on a loop thread, and any ``sync_to_async`` call made
by that coroutine is submitted back here, so thread-sensitive sync code keeps
running on the thread it came from.  Executors of nested sync frames are
chained through ``old_executor``: once a frame has finished, its executor is
*broken* and submissions fall through to the nearest enclosing one that is
still waiting.

Tracing: every work item that runs becomes one ``tracebridge.handoff`` span
(queued by the submitting loop thread, run by the owner thread, with queue-wait
and run times).  It is recorded with :func:`tracebridge._telemetry.record_handoff`
(a tuple appended to a buffer; the span is built later, off the owner thread).

The queue and the item being run can also be read live, without tracing, by the
flow model/TUI: see :meth:`CurrentThreadExecutor.pending`,
:attr:`CurrentThreadExecutor.running` and :attr:`CurrentThreadExecutor.broken`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from opentelemetry.trace import Tracer

from . import _telemetry, semconv

__all__ = ["CurrentThreadExecutor", "WorkItemInfo"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

# Wall-clock nanoseconds (the OpenTelemetry timestamp unit).  A module global
# so tests can inject a deterministic clock.
_clock = time.time_ns


@dataclass(frozen=True, slots=True)
class WorkItemInfo:
    """A read-only snapshot of one work item, for the flow model and the TUI.

    Built on demand by :meth:`CurrentThreadExecutor.pending` and
    :attr:`CurrentThreadExecutor.running`; the executor itself never makes one.
    """

    function: str
    """``module.QualName`` of the work (the bridge's name for it when tracing captured one)."""

    submitted_ns: int
    """``time.time_ns()`` when the item was submitted."""

    started_ns: int | None
    """``time.time_ns()`` when the owner thread started it; None while still queued."""

    queued_by_thread_id: int | None
    """``threading.get_ident()`` of the thread that submitted it (usually a loop thread)."""

    queued_by_thread_name: str
    """Name of the thread that submitted it."""


class _WorkItem:
    """One call waiting in (or taken from) a CurrentThreadExecutor's queue.

    Besides the call itself it keeps what tracing and the flow model need:
    plain attributes written by the submitting thread before the item is
    queued, and by the owner thread while it runs.
    """

    __slots__ = (
        "future",
        "fn",
        "args",
        "kwargs",
        "submitted_ns",
        "queued_by",
        "started_ns",
        "finished_ns",
        "tracer",
        "parent",
        "function",
    )

    def __init__(self, future: Future[_R], fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.submitted_ns = 0
        self.queued_by: threading.Thread | None = None
        self.started_ns: int | None = None
        self.finished_ns = 0
        # Set only when tracing was on at submit time (tracer is set last, so a
        # non-None tracer means parent and function are valid too).
        self.tracer: Tracer | None = None
        self.parent: _telemetry.ParentRef = None  # resolved when the span is built
        self.function: str | None = None

    def run(self) -> None:
        """Run the call on the current (owner) thread, storing its outcome in the future.

        Exceptions are stored, never raised here: the owner thread is busy
        waiting for its own result and must keep serving the queue.
        A cancelled future is skipped without calling anything.
        """
        __traceback_hide__ = True  # noqa: F841
        future = self.future
        if not future.set_running_or_notify_cancel():
            return
        self.started_ns = _clock()
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            self.finished_ns = _clock()
            future.set_exception(exc)
            # The traceback holds this frame, whose locals hold the future that
            # holds the exception: drop them so no reference cycle outlives us.
            del self, future
        else:
            self.finished_ns = _clock()
            future.set_result(result)

    def info(self) -> WorkItemInfo:
        """A snapshot for the flow model (computes the function name lazily)."""
        function = self.function
        if function is None:
            function = _telemetry.function_name(self.fn)
        queued_by = self.queued_by
        return WorkItemInfo(
            function=function,
            submitted_ns=self.submitted_ns,
            started_ns=self.started_ns,
            queued_by_thread_id=queued_by.ident if queued_by is not None else None,
            queued_by_thread_name=queued_by.name if queued_by is not None else "",
        )


class CurrentThreadExecutor(Executor):
    """An executor that runs work on the thread that created it.

    It is handed to other threads (event loops running ``async_to_sync``
    coroutines) so they can run sync code back in the thread they came from.
    That thread must call :meth:`run_until_future` to serve the queue.

    Args:
        old_executor: The executor of the enclosing sync frame (or None).
            Submissions made after this executor broke go to the nearest
            non-broken executor along this chain.

    Attributes:
        _thread: The :class:`threading.Thread` that created the executor: the
            only thread allowed to call :meth:`run_until_future`, the thread all
            queued work runs on, and the one thread not allowed to submit.
    """

    def __init__(self, old_executor: CurrentThreadExecutor | None) -> None:
        self._thread: threading.Thread = threading.current_thread()
        self._old_executor = old_executor
        # One lock guards the queue and the broken flag; the owner thread waits
        # on the condition, submitters (other threads) and the future's
        # done-callback notify it.
        self._work_ready = threading.Condition(threading.Lock())
        self._work_items: deque[_WorkItem] = deque()
        self._broken = False
        # Written only by the owner thread around each run; read by the flow model.
        self._running: _WorkItem | None = None

    def run_until_future(self, future: Future[Any]) -> None:
        """Run queued work on this thread until ``future`` is done and the queue is empty.

        Work runs in submission order.  When ``future`` completes the executor
        is marked broken: later submissions go to ``old_executor``'s chain, and
        whatever was already queued is still run before this returns.

        **Deadlock:** this blocks the owner thread.  If ``future`` can only
        complete after something this thread must do outside the queue, it
        never returns.

        Raises:
            RuntimeError: Called from a thread other than the one that created
                the executor.
        """
        __traceback_hide__ = True  # noqa: F841
        if threading.current_thread() is not self._thread:
            raise RuntimeError("You cannot run CurrentThreadExecutor from a different thread")

        work_ready = self._work_ready

        def mark_broken(_: Future[Any]) -> None:
            # Runs on whichever thread completes the future (usually a loop thread).
            with work_ready:
                self._broken = True
                work_ready.notify()

        future.add_done_callback(mark_broken)

        items = self._work_items
        while True:
            with work_ready:
                while not items and not self._broken:
                    work_ready.wait()
                if not items:
                    break  # broken and drained
                item = items.popleft()
            self._running = item
            item.run()
            self._running = None
            if item.tracer is not None and item.started_ns is not None:
                self._record_handoff(item)
            del item

    def _record_handoff(self, item: _WorkItem) -> None:
        # Owner thread, after the item ran: one tuple appended to the deferred
        # buffer; the span itself is built later on the drain thread.
        try:
            _telemetry.record_handoff(
                item.tracer,  # type: ignore[arg-type]  # checked by the caller
                item.parent,  # type: ignore[arg-type]  # set together with tracer
                item.function,  # type: ignore[arg-type]
                semconv.HANDOFF_EXECUTOR_CURRENT_THREAD,
                id(self),
                item.queued_by,  # type: ignore[arg-type]
                self._thread,
                item.submitted_ns,
                item.started_ns,  # type: ignore[arg-type]
                item.finished_ns,
            )
        except Exception:
            _telemetry.tracing_failed("current_thread_executor handoff")

    def submit(self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_R]:
        """Queue ``fn(*args, **kwargs)`` to run on the owner thread; return its future.

        Called from another thread (typically an event loop via
        ``loop.run_in_executor``).  The item goes to this executor, or, if it
        is broken, to the nearest non-broken executor along ``old_executor``.

        Raises:
            RuntimeError: Called from the owner thread itself (it would wait for
                itself), or every executor along the chain has already quit.
        """
        queued_by = threading.current_thread()
        if queued_by is self._thread:
            raise RuntimeError("You cannot submit onto CurrentThreadExecutor from its own thread")
        future: Future[_R] = Future()
        item = _WorkItem(future, fn, *args, **kwargs)
        item.submitted_ns = _clock()
        item.queued_by = queued_by
        tracer = _telemetry.get_tracer()
        if tracer is not None:
            self._capture_trace(item, tracer, fn)

        # Walk up the sync-frame stack to the closest executor still waiting.
        executor: CurrentThreadExecutor | None = self
        while executor is not None:
            with executor._work_ready:
                if not executor._broken:
                    executor._work_items.append(item)
                    executor._work_ready.notify()
                    return future
            executor = executor._old_executor
        raise RuntimeError("CurrentThreadExecutor already quit or is broken")

    @staticmethod
    def _capture_trace(item: _WorkItem, tracer: Tracer, fn: Callable[..., Any]) -> None:
        # Submitting thread.  The bridge sets `submitting` around run_in_executor
        # so the handoff hangs under its hop span and names the user's function
        # rather than the bridge's internal wrapper.
        try:
            submitting = _telemetry.submitting
            parent = submitting.parent
            if submitting.by_hop:
                # The hop records this handoff; keep the parent for the flow model.
                item.parent = parent
                return
            if parent is None:
                parent = _telemetry.current_parent()
            function = submitting.function
            if function is None:
                function = _telemetry.function_name(fn)
            item.parent = parent
            item.function = function
            item.tracer = tracer
        except Exception:
            _telemetry.tracing_failed("current_thread_executor submit")

    # ------------------------------------------------------------------
    # Read-only views for the flow model / TUI.  Cheap, never block for long.

    def pending(self) -> list[WorkItemInfo]:
        """Snapshot of the queued (not yet started) work items, oldest first.

        For the live flow model and the TUI; the queue length is ``len(pending())``.
        """
        with self._work_ready:
            items = list(self._work_items)
        return [item.info() for item in items]

    @property
    def running(self) -> WorkItemInfo | None:
        """The work item the owner thread is running right now, or None (flow model/TUI)."""
        item = self._running
        return item.info() if item is not None else None

    @property
    def broken(self) -> bool:
        """Whether the awaited future completed, so new work goes to ``old_executor`` (flow model/TUI)."""
        return self._broken

    @property
    def old_executor(self) -> CurrentThreadExecutor | None:
        """The enclosing sync frame's executor this one falls back to (flow model/TUI)."""
        return self._old_executor
