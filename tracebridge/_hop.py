"""The span of one bridge hop, seen from both of its threads.

A hop has two sides.  The *caller* (a task awaiting ``sync_to_async``, or a sync
thread blocked in ``async_to_sync``) opens the span when it submits the work and
closes it when the result is back.  The *callee* (a worker thread, or a task on
a loop) marks when it really started and finished, and makes the span current
while user code runs, so spans the user creates there are its children.

The callee detaches the span before the bridge copies the callee's context
back into the caller's: OpenTelemetry's current span is a contextvar, and a
forgotten attach would leak the hop span into the caller after the hop.
"""

from __future__ import annotations

import threading
from time import time_ns

from opentelemetry import context as otel_context
from opentelemetry.trace import Span, Tracer

from . import _telemetry, semconv

__all__ = ["Hop"]

try:  # the key processors set while exporting, so exporting is not itself traced
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY
except ImportError:  # pragma: no cover - very old opentelemetry-api
    _SUPPRESS_KEY = None  # type: ignore[assignment]

_current_thread = threading.current_thread


class Hop:
    """One sync→async or async→sync call, while it is in flight."""

    __slots__ = (
        "span",
        "tracer",
        "function",
        "submit_ns",
        "start_ns",
        "end_ns",
        "thread",
        "handoff_kind",
        "executor_id",
        "caller",
    )

    def __init__(self, span: Span, tracer: Tracer, function: str, submit_ns: int, caller: threading.Thread) -> None:
        self.span = span
        self.tracer = tracer
        self.function = function
        self.submit_ns = submit_ns
        self.start_ns = 0
        self.end_ns = 0
        self.thread: threading.Thread | None = None
        # Set when the work goes through a single-thread pool that cannot
        # record its own handoffs (CurrentThreadExecutors record theirs).
        self.handoff_kind: str | None = None
        self.executor_id = 0
        self.caller = caller

    @classmethod
    def open(
        cls,
        tracer: Tracer,
        name: str,
        direction: str,
        func: object,
        attributes: dict[str, _telemetry.AttributeValue],
    ) -> Hop | None:
        """Start the hop's span on the calling thread; None if tracing is suppressed or fails."""
        try:
            if _SUPPRESS_KEY is not None and otel_context.get_value(_SUPPRESS_KEY):
                return None
            caller = _current_thread()
            function = _telemetry.function_name(func)
            attributes[semconv.DIRECTION] = direction
            attributes[semconv.CODE_FUNCTION_NAME] = function
            attributes[semconv.CALLER_THREAD_ID] = caller.ident  # type: ignore[assignment]
            attributes[semconv.CALLER_THREAD_NAME] = caller.name
            submit_ns = time_ns()
            span = tracer.start_span(name, attributes=attributes, start_time=submit_ns)
            return cls(span, tracer, function, submit_ns, caller)
        except Exception:
            _telemetry.tracing_failed("opening a hop span")
            return None

    def started(self) -> object | None:
        """Callee side, inside the callee's context: the work begins now, here."""
        self.start_ns = time_ns()
        self.thread = _current_thread()
        try:
            return _telemetry.attach_span(self.span)
        except Exception:
            _telemetry.tracing_failed("attaching a hop span")
            return None

    def finished(self, token: object | None) -> None:
        """Callee side: the work is over; un-current the span before context flows back."""
        self.end_ns = time_ns()
        if token is not None:
            _telemetry.detach(token)
        if self.handoff_kind is not None and self.thread is not None:
            try:
                _telemetry.record_handoff(
                    self.tracer,
                    self.span.get_span_context(),
                    self.function,
                    self.handoff_kind,
                    self.executor_id,
                    self.caller,
                    self.thread,
                    self.submit_ns,
                    self.start_ns,
                    self.end_ns,
                )
            except Exception:
                _telemetry.tracing_failed("recording a handoff")

    def close(self, exc: BaseException | None) -> None:
        """Caller side, once the result (or exception) is back: end the span."""
        attributes: dict[str, _telemetry.AttributeValue] = {}
        thread = self.thread
        if thread is not None:
            attributes[semconv.THREAD_ID] = thread.ident  # type: ignore[assignment]
            attributes[semconv.THREAD_NAME] = thread.name
            attributes[semconv.QUEUE_WAIT_MS] = (self.start_ns - self.submit_ns) / 1e6
            if self.end_ns:
                attributes[semconv.RUN_TIME_MS] = (self.end_ns - self.start_ns) / 1e6
        _telemetry.end_span(self.span, exc, attributes)
