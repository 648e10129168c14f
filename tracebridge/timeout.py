"""``timeout``: the deprecated cancel-after-N-seconds context manager asgiref vendors.

Kept for drop-in compatibility with ``asgiref.timeout`` (a trimmed copy of
aio-libs' async-timeout); new code should use :func:`asyncio.timeout`.  Like
asgiref 3.13 it never calls ``Task.uncancel()`` after turning its own
cancellation into :class:`TimeoutError` (django/asgiref#504), so an enclosing
``asyncio.timeout``/``TaskGroup`` still sees the task as being cancelled.

Tracing: each expiry is one ``tracebridge.timeout.expiry`` span, parented to
the span that was current when the block was entered, running from entry to
the moment the timer cancelled the task.  It is *deferred* (a tuple appended
to :data:`tracebridge._telemetry.deferred`, built into a span later on the
drain thread) rather than a live span: the expiry fires in a loop callback,
and ending a real span there would run the span processors (a
``SimpleSpanProcessor`` exports synchronously) on the event loop thread.
Nothing parents into the expiry span, so deferring it loses nothing.  Blocks
that finish in time record nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from types import TracebackType
from typing import Any

from opentelemetry.trace import Tracer

from . import _telemetry, semconv

__all__ = ["timeout"]

# Wall-clock nanoseconds (the OpenTelemetry timestamp unit).  A module global
# so tests can inject a deterministic clock.
_clock = time.time_ns


def _build_expiry(payload: tuple[Any, ...]) -> tuple[str, _telemetry.Attributes]:
    limit_ms, elapsed_ms, task_desc, thread_id, thread_name = payload
    return semconv.TIMEOUT_EXPIRY, {
        semconv.TIMEOUT_LIMIT_MS: limit_ms,
        semconv.TIMEOUT_ELAPSED_MS: elapsed_ms,
        semconv.TIMEOUT_CANCELLED_TASK: task_desc,
        semconv.THREAD_ID: thread_id,
        semconv.THREAD_NAME: thread_name,
    }


def _describe_task(task: asyncio.Task[Any]) -> str:
    """``"<task name> (<coroutine qualname>)"``, e.g. ``"Task-3 (handler.<locals>.fetch)"``."""
    coro = task.get_coro()
    qualname = getattr(coro, "__qualname__", None) or type(coro).__qualname__
    return f"{task.get_name()} ({qualname})"


# Built once: it is formatted on every construction otherwise, in a hot loop.
_DEPRECATION_MESSAGE = f"{__name__}.timeout is deprecated. Use asyncio.timeout() instead."


class timeout:
    """Cancel the current task if the block takes longer than ``timeout`` seconds.

    Use as ``with timeout(1.5): ...`` or ``async with timeout(1.5): ...`` inside
    a task.  When the time runs out the task is cancelled; the resulting
    :class:`asyncio.CancelledError`, on leaving the block, becomes the builtin
    :class:`TimeoutError`.

    Args:
        timeout: Seconds allowed; ``None`` disables the limit; ``<= 0`` cancels
            on the next loop iteration.
        loop: Deprecated.  The loop to schedule on (default: the running loop).

    **Cancellation:** the timer cancels the task with ``Task.cancel()`` and never
    uncancels it (asgiref 3.13 behaviour, django/asgiref#504).  A cancellation
    not caused by this timer leaves the block unchanged.

    Deprecated: use :func:`asyncio.timeout` instead.
    """

    def __init__(self, timeout: float | None, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        warnings.warn(
            _DEPRECATION_MESSAGE,
            DeprecationWarning,
            stacklevel=2,
        )
        self._timeout = timeout
        if loop is None:
            loop = asyncio.get_running_loop()
        else:
            warnings.warn(
                "The loop argument to timeout() is deprecated; drop it (the running loop is used).",
                DeprecationWarning,
                stacklevel=2,
            )
        self._loop = loop
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False
        self._cancel_handler: asyncio.Handle | None = None
        self._cancel_at: float | None = None
        # (tracer, parent span, entry time_ns) when tracing was on at entry.
        self._trace: tuple[Tracer, _telemetry.ParentRef, int] | None = None

    def __enter__(self) -> timeout:
        __traceback_hide__ = True  # noqa: F841
        return self._do_enter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        __traceback_hide__ = True  # noqa: F841
        self._do_exit(exc_type)
        return None

    async def __aenter__(self) -> timeout:
        __traceback_hide__ = True  # noqa: F841
        return self._do_enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        __traceback_hide__ = True  # noqa: F841
        self._do_exit(exc_type)

    @property
    def expired(self) -> bool:
        """Whether the timer fired and cancelled the task."""
        return self._cancelled

    @property
    def remaining(self) -> float | None:
        """Seconds left before the timer fires (0.0 once due), or None when no timer is scheduled."""
        if self._cancel_at is None:
            return None
        return max(self._cancel_at - self._loop.time(), 0.0)

    def _do_enter(self) -> timeout:
        if self._timeout is None:
            return self
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("Timeout context manager should be used inside a task")
        self._task = task
        tracer = _telemetry.get_tracer()
        if tracer is not None:
            self._capture_trace(tracer)
        if self._timeout <= 0:
            self._loop.call_soon(self._cancel_task)
            return self
        self._cancel_at = self._loop.time() + self._timeout
        self._cancel_handler = self._loop.call_at(self._cancel_at, self._cancel_task)
        return self

    def _capture_trace(self, tracer: Tracer) -> None:
        # Loop thread, entering the block: remember the parent and the start.
        try:
            self._trace = (tracer, _telemetry.current_parent(), _clock())
        except Exception:
            _telemetry.tracing_failed("timeout enter")

    def _do_exit(self, exc_type: type[BaseException] | None) -> None:
        __traceback_hide__ = True  # noqa: F841
        if exc_type is asyncio.CancelledError and self._cancelled:
            # Our own cancellation: report it as a timeout.
            self._cancel_handler = None
            self._task = None
            raise TimeoutError
        if self._cancel_handler is not None:
            self._cancel_handler.cancel()
            self._cancel_handler = None
        self._task = None

    def _cancel_task(self) -> None:
        # Loop callback (loop thread) at the deadline.  A block that already
        # exited cleared _task, so a late call does nothing.
        task = self._task
        if task is None:
            return
        task.cancel()
        self._cancelled = True
        if self._trace is not None:
            self._record_expiry(task)

    def _record_expiry(self, task: asyncio.Task[Any]) -> None:
        tracer, parent, entered_ns = self._trace  # type: ignore[misc]
        assert self._timeout is not None  # a timer only exists for a real limit
        _record_expiry_span(tracer, parent, entered_ns, self._timeout, task)


def _record_expiry_span(tracer: Tracer, parent: _telemetry.ParentRef, entered_ns: int, limit_s: float, task: asyncio.Task[Any]) -> None:
    """Record one expiry span: a block entered at ``entered_ns`` under ``parent`` just cancelled ``task``.

    Called on the loop thread by the timer callback, right after the
    cancellation; shared with :mod:`tracebridge.instrumentation`, which records
    the real asgiref's expiries with it.  Never raises.
    """
    try:
        expired_ns = _clock()
        thread = threading.current_thread()
        payload = (
            float(limit_s) * 1000.0,
            _telemetry.ms(entered_ns, expired_ns),
            _describe_task(task),
            thread.ident,
            thread.name,
        )
        _telemetry.deferred.record(_build_expiry, tracer, parent, entered_ns, expired_ns, payload)
    except Exception:
        _telemetry.tracing_failed("timeout expiry")
