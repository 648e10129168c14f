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

import random as _random
import threading
from collections.abc import Callable
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan, Span, SpanContext, TraceFlags, Tracer

from . import _telemetry, semconv

try:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator as _RandomIdGenerator
except ImportError:  # pragma: no cover - the SDK is a dependency, but be safe
    _RandomIdGenerator = None  # type: ignore[assignment,misc]

__all__ = ["Hop", "attach_context", "context_with_span", "current_context", "detach_token", "plan_span"]

try:  # the key processors set while exporting, so exporting is not itself traced
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY
except ImportError:  # pragma: no cover - very old opentelemetry-api
    _SUPPRESS_KEY = None  # type: ignore[assignment]
from opentelemetry.trace.propagation import _SPAN_KEY

_current_thread = threading.current_thread
_Context = otel_context.Context
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_INVALID_TRACE_STATE = INVALID_SPAN_CONTEXT.trace_state


def _attach_api(context: otel_context.Context) -> object:
    return otel_context.attach(context)


def _detach_api(token: object) -> None:
    _telemetry.detach(token)


# attach/detach of the current OpenTelemetry context, the callee side of every
# hop and the WSGI span.  With the API's default runtime context (a ContextVar)
# they are that ContextVar's set/reset: the API's attach/detach add three
# Python calls around exactly that.  Any other runtime context goes through the API.
try:
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    _runtime = otel_context._RUNTIME_CONTEXT  # type: ignore[attr-defined]
    if type(_runtime) is not ContextVarsRuntimeContext:
        raise TypeError("not the default runtime context")
    _context_var = _runtime._current_context
    # get_current() is the ContextVar's get (its default is an empty Context).
    if not isinstance(_context_var.get(), otel_context.Context):
        raise TypeError("unexpected runtime context")
    current_context: Callable[[], otel_context.Context] = _context_var.get
    attach_context: Callable[[otel_context.Context], object] = _context_var.set
    _reset = _context_var.reset

    def detach_token(token: object) -> None:
        """Undo :func:`attach_context` (swallows and logs a failure, as the API does)."""
        try:
            _reset(token)  # type: ignore[arg-type]
        except Exception:
            _detach_api(token)  # the API logs why (wrong context, token used twice...)

except Exception:  # pragma: no cover - a custom OTEL_PYTHON_CONTEXT
    current_context = otel_context.get_current
    attach_context = _attach_api
    detach_token = _detach_api


def context_with_span(span: Span, context: otel_context.Context) -> otel_context.Context:
    """``set_span_in_context(span, context)``, in one dict copy."""
    return _Context({**context, _SPAN_KEY: span})


def plan_span(
    tracer: Tracer,
    name: str,
    context: otel_context.Context,
    ids: _telemetry.ReplayIdGenerator,
    attributes: dict[str, Any] | None = None,
) -> tuple[Span, SpanContext, int | None, bool]:
    """Pick the ids of a span the drain thread will build later: ``(span, parent, root_trace_id, sampled)``.

    ``span`` is a non-recording span with the planned ids, to make current
    while the work runs; ``parent`` is the span context current in ``context``
    (invalid for a root); ``root_trace_id`` is the new trace id of a root span,
    else None.  The sampling decision is the one the drain thread's
    ``start_span`` will reach: the parent's, or for a root the sampler's (for
    the SDK's samplers it depends only on the trace id, name and attributes).
    Shared by bridge hops and the WSGI span: on every traced hop, so written
    for speed (see the probes below for the shortcuts it takes).
    """
    parent_span: Any = context.get(_SPAN_KEY)
    parent = parent_span.get_span_context() if parent_span is not None else INVALID_SPAN_CONTEXT
    if _TUPLE_SPAN_CONTEXT:
        trace_id, _span_id, _remote, flags, trace_state, valid = parent
    else:  # pragma: no cover - a future API whose SpanContext is not the tuple it is today
        trace_id, flags, trace_state, valid = parent.trace_id, parent.trace_flags, parent.trace_state, parent.is_valid
    if valid:
        root_trace_id = None
    else:
        # As for span ids below: the SDK's default is getrandbits(128), retried on 0.
        root_trace_id = trace_id = (
            _random.getrandbits(128) if type(ids.inner) is _RandomIdGenerator else 0
        ) or ids.new_trace_id()
        random_ids = type(ids.inner) is _RandomIdGenerator or ids.is_trace_id_random()
        if _telemetry.samples_all_roots():
            # As the SDK's start_span does for a root (and the drain thread for
            # the root it builds): flag a random trace id, so children inherit the bit.
            flags = _SAMPLED_RANDOM if random_ids else _SAMPLED
            trace_state = _INVALID_TRACE_STATE
        else:
            decision = tracer.sampler.should_sample(  # type: ignore[attr-defined]
                None, trace_id, name, attributes=attributes
            )
            flags = _SAMPLED if decision.decision.is_sampled() else _NOT_SAMPLED
            trace_state = decision.trace_state
            if trace_state is None:
                trace_state = _INVALID_TRACE_STATE
            if random_ids:
                flags = TraceFlags(flags | _RANDOM_TRACE_ID_BIT)
    # The SDK's default generator is random.getrandbits(64), retried on 0:
    # called directly here, one Python frame instead of three.
    span_id = (_random.getrandbits(64) if type(ids.inner) is _RandomIdGenerator else 0) or ids.new_span_id()
    span_context = _make_span_context(trace_id, span_id, flags, trace_state)
    if _PLAIN_NON_RECORDING_SPAN:
        span = _object_new(NonRecordingSpan)
        span._context = span_context
    else:  # pragma: no cover - a future API with more to NonRecordingSpan.__init__
        span = NonRecordingSpan(span_context)
    return span, parent, root_trace_id, bool(flags & _SAMPLED_BIT)


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

# Probes for plan_span's shortcuts, each checked against the API's own behaviour.
# SpanContext is a tuple (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid):
# one unpacking instead of four property calls.
try:
    _probe_context = SpanContext(1, 2, False, _SAMPLED, _INVALID_TRACE_STATE)
    _TUPLE_SPAN_CONTEXT = isinstance(_probe_context, tuple) and tuple(_probe_context) == (
        _probe_context.trace_id, _probe_context.span_id, _probe_context.is_remote,
        _probe_context.trace_flags, _probe_context.trace_state, _probe_context.is_valid,
    ) and tuple(INVALID_SPAN_CONTEXT)[5] is INVALID_SPAN_CONTEXT.is_valid
except Exception:  # pragma: no cover
    _TUPLE_SPAN_CONTEXT = False
# NonRecordingSpan.__init__ only stores the context in ``_context``.
_object_new = object.__new__
try:
    _probe_span = _object_new(NonRecordingSpan)
    _probe_span._context = _probe_context
    _PLAIN_NON_RECORDING_SPAN = (
        _probe_span.get_span_context() is _probe_context
        and vars(NonRecordingSpan(_probe_context)) == vars(_probe_span)
    )
except Exception:  # pragma: no cover
    _PLAIN_NON_RECORDING_SPAN = False
_SAMPLED_BIT = int(TraceFlags.SAMPLED)
_RANDOM_TRACE_ID_BIT = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))  # W3C level 2; older APIs: no bit
_SAMPLED_RANDOM = TraceFlags(_SAMPLED | _RANDOM_TRACE_ID_BIT)


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
        "handoff_end_ns",
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
            ctx = current_context()
            if _SUPPRESS_KEY is not None and ctx.get(_SUPPRESS_KEY):
                return None
            hop = _object_new(cls)
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
                span, hop.parent, hop.root_trace_id, hop.sampled = plan_span(tracer, name, ctx, ids)
                hop.span = span
                # The callee runs in a copy of this very context, so the context
                # to make current there can be built now, once (context_with_span, inlined).
                hop.context = _Context({**ctx, _SPAN_KEY: span})
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
            return attach_context(context)
        except Exception:
            _telemetry.tracing_failed("attaching a hop span")
            return None

    def finished(self, token: object | None) -> None:
        """Callee side: the work is over; un-current the span before context flows back."""
        self.end_ns = time_ns()
        if token is not None:
            detach_token(token)
        if self.handoff_kind is not None and self.sampled:
            # The work item's whole stay: queued at submit, off the executor's
            # thread only now (after the bridge's own bookkeeping), so the
            # hop's run strictly nests inside it on a timeline.
            self.handoff_end_ns = handoff_end_ns = time_ns()
            _telemetry.deferred.record(
                _build_handoff, self.tracer, self.span.get_span_context(), self.submit_ns, handoff_end_ns, self
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
        semconv.RUN_TIME_MS: (hop.handoff_end_ns - hop.start_ns) / 1e6,
    }
