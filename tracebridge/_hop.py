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
tracer gets a real span on the spot.  The hot path stores raw values only
(threads, timestamps, the function object); names, durations and the
attribute dict are computed on the drain thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan, Span, SpanContext, TraceFlags, Tracer

from . import _telemetry, semconv

__all__ = ["Hop"]

try:  # the key processors set while exporting, so exporting is not itself traced
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY
except ImportError:  # pragma: no cover - very old opentelemetry-api
    _SUPPRESS_KEY = None  # type: ignore[assignment]
from opentelemetry.trace.propagation import _SPAN_KEY

_current_thread = threading.current_thread
_get_current_context = otel_context.get_current
_attach = otel_context.attach
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)

# Set by tracebridge.instrumentation.census while a HopCensus counts hops for
# request root spans: called with each hop as it closes, on the caller's thread.
# None (the default) costs close() one global read.
on_close: Callable[[Hop], None] | None = None


def _span_context_slow(trace_id: int, span_id: int, flags: TraceFlags, state: Any) -> SpanContext:
    return SpanContext(trace_id, span_id, False, flags, state)


def _span_context_fast(trace_id: int, span_id: int, flags: TraceFlags, state: Any) -> SpanContext:
    # SpanContext is a tuple; its __new__ only re-checks id ranges, which the
    # id generator already guarantees.  Checked against the real constructor below.
    return tuple.__new__(SpanContext, (trace_id, span_id, False, flags, state, True))  # type: ignore[return-value]


try:
    _probe = _span_context_fast(1, 2, _SAMPLED, INVALID_SPAN_CONTEXT.trace_state)
    _make_span_context = (
        _span_context_fast
        if _probe == SpanContext(1, 2, False, _SAMPLED, INVALID_SPAN_CONTEXT.trace_state) and _probe.is_valid
        else _span_context_slow
    )
except Exception:  # pragma: no cover - a future API that is not a tuple
    _make_span_context = _span_context_slow


class Hop:
    """One sync→async or async→sync call, while it is in flight."""

    __slots__ = (
        "span",
        "context",
        "tracer",
        "name",
        "direction",
        "func",
        "_function",
        "attributes",
        "parent",
        "ids",
        "root_trace_id",
        "sampled",
        "submit_ns",
        "start_ns",
        "end_ns",
        "thread",
        "handoff_kind",
        "executor_id",
        "caller",
        # Span events learnt while the hop is in flight (the watchdog's
        # reports); unset until the first one, so the hot path never writes it.
        "events",
    )

    @classmethod
    def open(
        cls,
        tracer: Tracer,
        name: str,
        direction: str,
        func: object,
        attributes: dict[str, Any],
        executor: object = None,
    ) -> Hop | None:
        """Start the hop on the calling thread; None if tracing is suppressed or fails.

        ``attributes`` are the call-specific ones (executor kind...); the hop
        adds the common ones when the span is built.  ``executor`` is only for
        the live flow model (:mod:`tracebridge.flow`): the executor a
        ``sync_to_async`` call was submitted to, or the CurrentThreadExecutor an
        ``async_to_sync`` caller serves.
        """
        try:
            ctx = _get_current_context()
            if _SUPPRESS_KEY is not None and ctx.get(_SUPPRESS_KEY):
                return None
            hop = cls.__new__(cls)
            hop.caller = _current_thread()
            hop.tracer = tracer
            hop.name = name
            hop.direction = direction
            hop.func = func
            hop._function = None
            hop.attributes = attributes
            hop.start_ns = hop.end_ns = 0
            hop.thread = None
            # Set when the work goes through a single-thread pool that cannot
            # record its own handoffs (CurrentThreadExecutors record theirs).
            hop.handoff_kind = None
            hop.submit_ns = time_ns()
            ids = hop.ids = _telemetry.replay_ids()
            if ids is None:
                hop.sampled = True
                hop.context = None
                hop.span = tracer.start_span(name, attributes=hop.span_attributes(), start_time=hop.submit_ns)
            else:
                parent_span = ctx.get(_SPAN_KEY)
                parent = hop.parent = (
                    parent_span.get_span_context() if parent_span is not None else INVALID_SPAN_CONTEXT
                )
                if parent.is_valid:
                    hop.root_trace_id = None
                    trace_id = parent.trace_id
                    flags = parent.trace_flags
                    trace_state = parent.trace_state
                else:
                    hop.root_trace_id = trace_id = ids.new_trace_id()
                    if _telemetry.samples_all_roots():
                        flags = _SAMPLED
                        trace_state = parent.trace_state
                    else:
                        # The drain thread's start_span asks the sampler again; for
                        # the SDK's samplers the answer depends only on the trace id.
                        decision = tracer.sampler.should_sample(None, trace_id, name)  # type: ignore[attr-defined]
                        flags = _SAMPLED if decision.decision.is_sampled() else _NOT_SAMPLED
                        trace_state = decision.trace_state
                hop.sampled = flags.sampled
                span = hop.span = NonRecordingSpan(_make_span_context(trace_id, ids.new_span_id(), flags, trace_state))
                # The callee runs in a copy of this very context, so the context
                # to make current there can be built now, once.
                hop.context = otel_trace.set_span_in_context(span, ctx)
            flow = _telemetry.flow
            if flow is not None:  # the live flow model is on (rare): register the hop in flight
                flow.hop_opened(hop, executor)
            return hop
        except Exception:
            _telemetry.tracing_failed("opening a hop span")
            return None

    @property
    def function(self) -> str:
        """``module.QualName`` of the called function (computed once, when first asked)."""
        function = self._function
        if function is None:
            function = self._function = _telemetry.function_name(self.func)
        return function

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
        flow = _telemetry.flow
        if flow is not None:  # flow model on: an async_to_sync callee names its task and loop
            flow.hop_started(self)
        try:
            context = self.context
            if context is None:
                context = otel_trace.set_span_in_context(self.span)
            return _attach(context)
        except Exception:
            _telemetry.tracing_failed("attaching a hop span")
            return None

    def finished(self, token: object | None) -> None:
        """Callee side: the work is over; un-current the span before context flows back."""
        self.end_ns = time_ns()
        if token is not None:
            _telemetry.detach(token)
        if self.handoff_kind is not None and self.sampled:
            _telemetry.deferred.record(
                _build_handoff, self.tracer, self.span.get_span_context(), self.submit_ns, self.end_ns, self
            )

    def close(self, exc: BaseException | None) -> None:
        """Caller side, once the result (or exception) is back: the hop is over."""
        try:
            end_ns = time_ns()
            flow = _telemetry.flow
            if flow is not None:  # flow model on: the hop leaves the in-flight table
                flow.hop_closed(self, exc, end_ns)
            observer = on_close
            if observer is not None:
                observer(self)
            if self.ids is None:
                _telemetry.end_span(self.span, exc, self.timing_attributes())
                return
            if self.sampled:
                error = _telemetry.describe_error(exc) if exc is not None else None
                _telemetry.deferred.record(_build_hop, self.tracer, self.parent, self.submit_ns, end_ns, (self, error))
        except Exception:
            _telemetry.tracing_failed("closing a hop span")

    # ------------------------------------------------------------------
    # Attribute building: on the drain thread, or for a span made on the spot.

    def span_attributes(self) -> dict[str, Any]:
        """Every attribute of the hop's span, as far as the hop has got."""
        caller = self.caller
        attributes = {
            semconv.DIRECTION: self.direction,
            semconv.CODE_FUNCTION_NAME: self.function,
            semconv.CALLER_THREAD_ID: caller.ident,
            semconv.CALLER_THREAD_NAME: caller.name,
        }
        attributes.update(self.attributes)
        attributes.update(self.timing_attributes())
        return attributes

    def timing_attributes(self) -> dict[str, Any]:
        """The executing thread, queue wait and run time (empty before the callee started)."""
        thread = self.thread
        if thread is None:
            return {}
        timing: dict[str, Any] = {
            semconv.THREAD_ID: thread.ident,
            semconv.THREAD_NAME: thread.name,
            semconv.QUEUE_WAIT_MS: (self.start_ns - self.submit_ns) / 1e6,
        }
        if self.end_ns:
            timing[semconv.RUN_TIME_MS] = (self.end_ns - self.start_ns) / 1e6
        return timing

    # ------------------------------------------------------------------
    # For the watchdog (its own thread, while the hop may still be in flight).

    def add_event(self, name: str, attributes: dict[str, Any], time_ns_: int) -> None:
        """Put an event on the hop's span: at once on a live span, else when the span is built."""
        try:
            if self.ids is None:
                self.span.add_event(name, attributes, timestamp=time_ns_)
                return
            try:
                events = self.events
            except AttributeError:
                events = self.events = []
            events.append((name, attributes, time_ns_))
        except Exception:
            _telemetry.tracing_failed("hop event")

    def export_partial(self, events: list[tuple[str, dict[str, Any], int]]) -> bool:
        """Export the hop's span now, unfinished, marked incomplete (a hung hop's partial trace).

        The hop goes on; if it ever closes its complete span is exported too,
        with the same ids.  Returns False when that is impossible (a span the
        tracer made on the spot, or an unsampled trace).
        """
        try:
            if self.ids is None or not self.sampled:
                return False
            return _telemetry.record_partial(
                self.tracer, self.name, self.parent, self.root_trace_id,
                self.span.get_span_context().span_id, self.submit_ns, self.span_attributes(), events,
            )
        except Exception:
            _telemetry.tracing_failed("exporting a partial hop span")
            return False


def _build_hop(payload: tuple[Hop, Any]) -> tuple[Any, ...]:
    hop, error = payload
    events = getattr(hop, "events", None)  # watchdog reports, if any
    return (
        hop.name, hop.span_attributes(), hop.ids, hop.root_trace_id,
        hop.span.get_span_context().span_id, error, events,
    )


def _build_handoff(hop: Hop) -> tuple[str, _telemetry.Attributes]:
    thread = hop.thread
    caller = hop.caller
    return semconv.HANDOFF, {
        semconv.CODE_FUNCTION_NAME: hop.function,
        semconv.EXECUTOR_KIND: hop.handoff_kind,  # type: ignore[dict-item]
        semconv.EXECUTOR_ID: hop.executor_id,
        semconv.QUEUED_THREAD_ID: caller.ident,  # type: ignore[dict-item]
        semconv.QUEUED_THREAD_NAME: caller.name,
        semconv.THREAD_ID: thread.ident,  # type: ignore[union-attr]
        semconv.THREAD_NAME: thread.name,  # type: ignore[union-attr]
        semconv.QUEUE_WAIT_MS: (hop.start_ns - hop.submit_ns) / 1e6,
        semconv.RUN_TIME_MS: (hop.end_ns - hop.start_ns) / 1e6,
    }
