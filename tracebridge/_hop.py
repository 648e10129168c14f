"""The span of one bridge hop, seen from both of its threads.

A hop has two sides.  The *caller* (a task awaiting ``sync_to_async``, or a sync
thread blocked in ``async_to_sync``) opens the hop when it submits the work and
closes it when the result is back.  The *callee* (a worker thread, or a task on
a loop) marks when it really started and finished, and makes the hop's span
current while user code runs, so spans the user creates there are its children.

The callee detaches the span before the bridge copies the callee's context
back into the caller's: OpenTelemetry's current span is a contextvar, and a
forgotten attach would leak the hop span into the caller after the hop.

**Built off the hot path.**  With an SDK tracer (the usual case) the hop does
not create an SDK span at all while it runs: it picks the span's ids itself,
makes a lightweight non-recording span with those ids current in the callee,
and at close appends one record to the deferred buffer; the drain thread builds
the real span with the same ids, times, attributes and error.  Any other
tracer gets a real span on the spot.
"""

from __future__ import annotations

import threading
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags, Tracer

from . import _telemetry, semconv

__all__ = ["Hop"]

try:  # the key processors set while exporting, so exporting is not itself traced
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY
except ImportError:  # pragma: no cover - very old opentelemetry-api
    _SUPPRESS_KEY = None  # type: ignore[assignment]

_current_thread = threading.current_thread
_get_current_span = otel_trace.get_current_span
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class Hop:
    """One sync→async or async→sync call, while it is in flight."""

    __slots__ = (
        "span",
        "tracer",
        "name",
        "attributes",
        "function",
        "parent",
        "ids",
        "root_trace_id",
        "submit_ns",
        "start_ns",
        "end_ns",
        "thread",
        "handoff_kind",
        "executor_id",
        "caller",
    )

    def __init__(self) -> None:
        self.start_ns = 0
        self.end_ns = 0
        self.thread: threading.Thread | None = None
        # Set when the work goes through a single-thread pool that cannot
        # record its own handoffs (CurrentThreadExecutors record theirs).
        self.handoff_kind: str | None = None
        self.executor_id = 0

    @classmethod
    def open(
        cls,
        tracer: Tracer,
        name: str,
        direction: str,
        func: object,
        attributes: dict[str, Any],
    ) -> Hop | None:
        """Start the hop on the calling thread; None if tracing is suppressed or fails."""
        try:
            if _SUPPRESS_KEY is not None and otel_context.get_value(_SUPPRESS_KEY):
                return None
            hop = cls()
            caller = hop.caller = _current_thread()
            hop.tracer = tracer
            hop.name = name
            hop.function = function = _telemetry.function_name(func)
            attributes[semconv.DIRECTION] = direction
            attributes[semconv.CODE_FUNCTION_NAME] = function
            attributes[semconv.CALLER_THREAD_ID] = caller.ident
            attributes[semconv.CALLER_THREAD_NAME] = caller.name
            hop.attributes = attributes
            hop.submit_ns = time_ns()
            ids = hop.ids = _telemetry.replay_ids()
            if ids is None:
                hop.span = tracer.start_span(name, attributes=attributes, start_time=hop.submit_ns)
                return hop
            parent = hop.parent = _get_current_span().get_span_context()
            if parent.is_valid:
                hop.root_trace_id = None
                trace_id = parent.trace_id
                flags = parent.trace_flags
                trace_state = parent.trace_state
            else:
                hop.root_trace_id = trace_id = ids.new_trace_id()
                if _telemetry.samples_all_roots():
                    flags = _SAMPLED
                    trace_state = None
                else:
                    # The drain thread's start_span asks the sampler again; for
                    # the SDK's samplers the answer depends only on the trace id.
                    decision = tracer.sampler.should_sample(None, trace_id, name, attributes=attributes)  # type: ignore[attr-defined]
                    flags = _SAMPLED if decision.decision.is_sampled() else _NOT_SAMPLED
                    trace_state = decision.trace_state
            hop.span = NonRecordingSpan(SpanContext(trace_id, ids.new_span_id(), False, flags, trace_state))
            return hop
        except Exception:
            _telemetry.tracing_failed("opening a hop span")
            return None

    def note(self, attributes: dict[str, Any]) -> None:
        """Add attributes learnt while the hop runs (any thread)."""
        try:
            if self.ids is None:
                self.span.set_attributes(attributes)
            else:
                self.attributes.update(attributes)
        except Exception:
            _telemetry.tracing_failed("hop attributes")

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
        """Caller side, once the result (or exception) is back: the hop is over."""
        try:
            end_ns = time_ns()
            attributes = self.attributes if self.ids is not None else {}
            thread = self.thread
            if thread is not None:
                attributes[semconv.THREAD_ID] = thread.ident
                attributes[semconv.THREAD_NAME] = thread.name
                attributes[semconv.QUEUE_WAIT_MS] = (self.start_ns - self.submit_ns) / 1e6
                if self.end_ns:
                    attributes[semconv.RUN_TIME_MS] = (self.end_ns - self.start_ns) / 1e6
            if self.ids is None:
                _telemetry.end_span(self.span, exc, attributes)
                return
            if not self.span.get_span_context().trace_flags.sampled:
                return
            error = _telemetry.describe_error(exc) if exc is not None else None
            _telemetry.deferred.record(_build_hop, self.tracer, self.parent, self.submit_ns, end_ns, (self, error))
        except Exception:
            _telemetry.tracing_failed("closing a hop span")


def _build_hop(payload: tuple[Hop, Any]) -> tuple[Any, ...]:
    hop, error = payload
    return (hop.name, hop.attributes, hop.ids, hop.root_trace_id, hop.span.get_span_context().span_id, error)
