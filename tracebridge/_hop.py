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
not create an SDK span at all while it runs: the hop object *is* the
non-recording span made current in the callee (a :class:`PlannedSpan`), with
its parent's trace id and flags and a span id drawn only when somebody first
asks for it.  At close the hop queues itself for the drain thread, which
builds the real span (and the executor handoff's) with the same ids, times,
attributes and error.  Any other tracer gets a real span on the spot.  The hot
path stores raw values only (timestamps, cached thread refs, the executor
facts); names, durations and the attribute dict are computed on the drain
thread.
"""

from __future__ import annotations

import random as _random
import threading
from types import FunctionType as _FunctionType
from types import MethodType as _MethodType
from collections.abc import Callable, Mapping
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan, Span, SpanContext, TraceFlags, Tracer
from opentelemetry.trace.status import Status, StatusCode

from . import _telemetry, semconv
from .flow_snapshot import ThreadRef

# Shared with the drain: the SDK's id generator class, the sampled bit, the
# SpanContext-is-a-tuple probe and the SpanContext shortcut checked against it.
_RandomIdGenerator = _telemetry._RandomIdGenerator
_SAMPLED_BIT = _telemetry._SAMPLED_BIT
_TUPLE_SPAN_CONTEXT = _telemetry._TUPLE_SPAN_CONTEXT
_new_span_context = _telemetry._new_span_context

__all__ = [
    "Hop",
    "PlannedSpan",
    "attach_context",
    "context_with_span",
    "current_context",
    "detach_token",
    "plan_span",
]

try:  # the key processors set while exporting, so exporting is not itself traced
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY
except ImportError:  # pragma: no cover - very old opentelemetry-api
    _SUPPRESS_KEY = None  # type: ignore[assignment]
from opentelemetry.trace.propagation import _SPAN_KEY

_current_thread = threading.current_thread
_thread_ref = _telemetry.current_thread_ref
_thread_refs = _telemetry._thread_refs
_tracer_state = _telemetry._state  # one object for the process; its fields change, it does not
_Context = otel_context.Context
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_INVALID_TRACE_STATE = INVALID_SPAN_CONTEXT.trace_state


# attach/detach of the current OpenTelemetry context (the fast path lives in _telemetry).
current_context = _telemetry.current_context
attach_context = _telemetry.attach_context
detach_token = _telemetry.detach_token
_reset_context = getattr(_telemetry, "_reset", detach_token)  # the ContextVar's reset, when that is what detach is


def context_with_span(span: Span, context: otel_context.Context) -> otel_context.Context:
    """``set_span_in_context(span, context)``, in one dict copy."""
    return _Context({**context, _SPAN_KEY: span})


# PlannedSpan and its subclasses (filled in as they are defined).
_PLANNED_TYPES: set[type] = set()

# One lock for every PlannedSpan's first id draw: rare (once per span, and
# only for spans somebody looks inside), so no need for one lock per span.
_draw_lock = threading.Lock()


class PlannedSpan(NonRecordingSpan):
    """The current span of work whose real span the drain thread builds later.

    It stands in for the real span while the work runs, so spans made inside
    hang under it.  Its trace id, flags and trace state are known at once (the
    parent's; a root's are drawn when it is planned).  Its span id is drawn
    only when somebody first asks for its context (a child span, a log
    correlation, the drain thread building it): a hop nobody looks inside (a
    WSGI ``send``, most ORM calls) pays for neither an id nor a ``SpanContext``
    on the traced thread.

    Not created directly: :func:`plan_span` fills one in (a :class:`Hop` is
    one; so is a WSGI call's span).
    """

    __slots__ = ("_context", "trace_id", "trace_flags", "trace_state", "parent", "id_source")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _PLANNED_TYPES.add(cls)

    # Filled in by plan_span.
    _context: SpanContext | None
    trace_id: int
    trace_flags: TraceFlags
    trace_state: Any
    parent: PlannedSpan | SpanContext | None  # None: a root
    id_source: _telemetry.ReplayIdGenerator

    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            context = self._draw_span_id()
        return context

    def _draw_span_id(self) -> SpanContext:
        # Any thread: the callee's (a child span), the drain thread's, the
        # watchdog's.  Under a lock so that two first askers agree on one id.
        with _draw_lock:
            context = self._context
            if context is None:
                span_id = _telemetry.draw_span_id(self.id_source)
                context = self._context = _new_span_context(
                    self.trace_id, span_id, False, self.trace_flags, self.trace_state
                )
        return context

    def parent_context(self) -> SpanContext:
        """The parent's span context (invalid for a root); draws the parent's id if need be."""
        return _telemetry.resolve_parent(self.parent)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_span_context()!r})"


_PLANNED_TYPES.add(PlannedSpan)


def plan_span(
    span: PlannedSpan,
    tracer: Tracer,
    name: str,
    context: otel_context.Context,
    ids: _telemetry.ReplayIdGenerator,
    attributes: dict[str, Any] | None = None,
) -> bool:
    """Fill in ``span`` as the child of the span current in ``context``; returns whether it is sampled.

    The sampling decision is the one the drain thread's ``start_span`` will
    reach: the parent's, or for a root the sampler's (for the SDK's samplers it
    depends only on the trace id, name and ``attributes``).  Shared by bridge
    hops and the WSGI span, so on every traced hop: written for speed.
    """
    span._context = None
    span.id_source = ids
    parent: Any = context.get(_SPAN_KEY)
    if parent is None and _tracer_state.random_roots and ids is _tracer_state.ids:
        # A root under the SDK's defaults (the usual root): what start_span would do.
        span.parent = None
        span.trace_id = _random.getrandbits(128) or ids.new_trace_id()
        span.trace_flags = _SAMPLED_RANDOM
        span.trace_state = _INVALID_TRACE_STATE
        return True
    if type(parent) in _PLANNED_TYPES:  # not isinstance: Span is an ABC, and ABC checks are slow
        # Nested hops (and every hop under a WSGI span): copy three fields, draw nothing.
        span.parent = parent
        span.trace_id = parent.trace_id
        span.trace_state = parent.trace_state
        flags = span.trace_flags = parent.trace_flags
        return bool(flags & _SAMPLED_BIT)
    parent_context = parent.get_span_context() if parent is not None else INVALID_SPAN_CONTEXT
    if _TUPLE_SPAN_CONTEXT:
        trace_id, _span_id, _remote, flags, trace_state, valid = parent_context
    else:  # pragma: no cover - a future API whose SpanContext is not the tuple it is today
        trace_id, flags = parent_context.trace_id, parent_context.trace_flags
        trace_state, valid = parent_context.trace_state, parent_context.is_valid
    if valid:
        span.parent = parent_context
    else:
        span.parent = None
        # As for span ids: the SDK's default is getrandbits(128), retried on 0.
        trace_id = (_random.getrandbits(128) if type(ids.inner) is _RandomIdGenerator else 0) or ids.new_trace_id()
        random_ids = type(ids.inner) is _RandomIdGenerator or ids.is_trace_id_random()
        if _tracer_state.samples_all_roots:
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
    span.trace_id = trace_id
    span.trace_flags = flags
    span.trace_state = trace_state
    return bool(flags & _SAMPLED_BIT)


# Set by tracebridge.instrumentation.census while a HopCensus counts hops for
# request root spans: called with each hop as it closes, on the caller's thread.
# None (the default) costs close() one global read.
on_close: Callable[[Hop], None] | None = None


_object_new = object.__new__
_RANDOM_TRACE_ID_BIT = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))  # W3C level 2; older APIs: no bit
_SAMPLED_RANDOM = TraceFlags(_SAMPLED | _RANDOM_TRACE_ID_BIT)

_DIRECTIONS = {
    semconv.SYNC_TO_ASYNC: semconv.DIRECTION_SYNC_TO_ASYNC,
    semconv.ASYNC_TO_SYNC: semconv.DIRECTION_ASYNC_TO_SYNC,
}


class Hop(PlannedSpan):
    """One sync→async or async→sync call, while it is in flight.

    With an SDK tracer the hop is its own span (``hop.span is hop``): the
    :class:`PlannedSpan` made current in the callee.  With any other tracer
    ``span`` is a real span made on the spot.

    The call's facts are raw fields (``executor_kind``, ``loop_id``...), not an
    attribute dict: the dict is built on the drain thread
    (:meth:`span_attributes`).  ``attributes`` holds extra ones (:meth:`note`).
    """

    # Every fact a hop usually learns is a slot, given its "not yet" value in
    # open(): a write to anything else would give each hop a __dict__ of its
    # own (~300 bytes, one more object for the garbage collector per hop).
    __slots__ = (
        "_span",  # None: the hop is its own span (see the span property)
        "callee_context",
        "tracer",
        "name",
        "func",
        "sampled",
        "submit_ns",
        "caller",
        "_function",  # module.QualName of func, once computed
        "start_ns",
        "end_ns",
        "close_ns",
        "thread",  # the callee's thread (a ThreadRef), once it started
        # What the call chose; None when it does not apply.
        "thread_sensitive",
        "executor_kind",
        "executor_id",
        "loop_id",
        "loop_route",
        # Set when the work goes through a single-thread executor: the hop
        # records that executor's handoff itself (it holds every timestamp).
        "handoff_kind",
        "handoff_end_ns",
    )

    _span: Span | None
    _function: str | None
    start_ns: int
    end_ns: int
    close_ns: int
    thread: ThreadRef | None
    thread_sensitive: bool | None
    executor_kind: str | None
    executor_id: int | None
    loop_id: int | None
    loop_route: str | None
    handoff_kind: str | None
    handoff_end_ns: int

    # Rare facts stay class-level defaults (set only when they happen).
    attributes: dict[str, Any] | None = None  # extra attributes (note)
    # What code running inside the hop recorded on it (the Span API, below).
    user_attributes: BoundedAttributes | None = None
    status: Status | None = None
    error: tuple[str, str, str] | None = None
    # Span events learnt while the hop is in flight (the watchdog's reports).
    events: list[tuple[str, dict[str, Any], int]] | None = None

    @classmethod
    def open(
        cls,
        tracer: Tracer,
        name: str,
        func: object,
        executor: object = None,
    ) -> Hop | None:
        """Start the hop on the calling thread; None if tracing is suppressed or fails.

        The caller then fills in what it chose (``executor_kind``...).
        ``executor`` is only for the live flow model (:mod:`tracebridge.flow`):
        the executor a ``sync_to_async`` call was submitted to, or the
        CurrentThreadExecutor an ``async_to_sync`` caller serves.
        """
        try:
            ctx = current_context()
            if ctx.get(_SUPPRESS_KEY):  # an exporter or another instrumentation asked for silence
                return None
            hop = _object_new(cls)
            caller = _thread_refs.ref  # current_thread_ref(), inlined: every hop
            hop.caller = caller if caller is not None else _thread_ref()
            hop.tracer = tracer
            hop.name = name
            hop.func = func
            hop._function = hop.thread = hop.thread_sensitive = hop.executor_kind = None
            hop.executor_id = hop.loop_id = hop.loop_route = hop.handoff_kind = None
            hop.start_ns = hop.end_ns = hop.close_ns = hop.handoff_end_ns = 0
            hop.submit_ns = time_ns()
            ids = _tracer_state.ids  # replay_ids(), inlined: every hop
            if ids is None:
                # Not an SDK tracer: a real span now, its attributes set at close.
                span = hop._span = tracer.start_span(name, start_time=hop.submit_ns)
                hop._context = context = span.get_span_context()
                hop.trace_id, hop.trace_flags, hop.trace_state = context.trace_id, context.trace_flags, context.trace_state
                hop.parent = None
                hop.sampled = True
                hop.callee_context = None
            else:
                parent: Any = ctx.get(_SPAN_KEY)
                if type(parent) in _PLANNED_TYPES:
                    # A hop inside a hop (or a WSGI call): plan_span's first case, inlined.
                    hop._context = None
                    hop.id_source = ids
                    hop.parent = parent
                    hop.trace_id = parent.trace_id
                    hop.trace_state = parent.trace_state
                    flags = hop.trace_flags = parent.trace_flags
                    hop.sampled = flags & _SAMPLED_BIT != 0
                else:
                    hop.sampled = plan_span(hop, tracer, name, ctx, ids)
                hop._span = None  # itself, without a reference to itself (see the span property)
                # The callee runs in a copy of this very context, so the context
                # to make current there can be built now, once (context_with_span, inlined).
                hop.callee_context = _Context({**ctx, _SPAN_KEY: hop})
            flow = _telemetry.flow
            if flow is not None:  # the live flow model is on (rare): register the hop in flight
                flow.hop_opened(hop, executor)
            return hop
        except Exception:
            _telemetry.tracing_failed("opening a hop span")
            return None

    @property
    def span(self) -> Span:
        """The hop's span: the hop itself with an SDK tracer (built later), else the real span made at open.

        Not stored as ``self``: a hop referring to itself would be a reference
        cycle, freed only by the garbage collector, and every hop would
        survive to the next collection (and be traversed by it).
        """
        span = self._span
        return self if span is None else span

    @property
    def direction(self) -> str:
        """:data:`~semconv.DIRECTION_SYNC_TO_ASYNC` or :data:`~semconv.DIRECTION_ASYNC_TO_SYNC`."""
        return _DIRECTIONS.get(self.name, self.name)

    @property
    def function(self) -> str:
        """``module.QualName`` of the called function (computed once, when first asked)."""
        function = self._function
        if function is None:
            function = self._function = _telemetry.function_name(self.func)
        return function

    @property
    def route(self) -> str:
        """How the call chose its thread: the executor kind, else the loop route ('' before it is known)."""
        return str(self.executor_kind or self.loop_route or "")

    def note(self, attributes: dict[str, Any]) -> None:
        """Add attributes learnt while the hop runs (any thread)."""
        try:
            if self.attributes is None:
                self.attributes = dict(attributes)
            else:
                self.attributes.update(attributes)
        except Exception:
            _telemetry.tracing_failed("hop attributes")

    def started(self) -> object | None:
        """Callee side, inside the callee's context: the work begins now, here."""
        self.start_ns = time_ns()
        thread = _thread_refs.ref
        self.thread = thread if thread is not None else _thread_ref()
        flow = _telemetry.flow
        if flow is not None:  # flow model on: an async_to_sync callee names its task and loop
            flow.hop_started(self)
        try:
            context = self.callee_context
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
            try:
                _reset_context(token)  # detach_token(), inlined: every hop
            except Exception:
                detach_token(token)  # logs why (a token from elsewhere, used twice...)
        # Nothing refers to the callee's context any more: free it now rather
        # than when the span is built (one object less for the GC to track).
        self.callee_context = None
        if self.handoff_kind is not None:
            # The work item's whole stay: queued at submit, off the executor's
            # thread only now (after the bridge's own bookkeeping), so the
            # hop's run strictly nests inside it on a timeline.  Its span is
            # built with the hop's (see deferred_records).
            self.handoff_end_ns = time_ns()

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
            real_span = self._span
            if real_span is not None:
                _telemetry.end_span(real_span, exc, self.span_attributes())
                if self.handoff_end_ns:
                    _telemetry.deferred.record(
                        _build_handoff, self.tracer, real_span, self.submit_ns, self.handoff_end_ns, self
                    )
                return
            if self.sampled:
                if exc is not None:
                    self.error = _telemetry.describe_error(exc)
                self.close_ns = end_ns
                func = self.func
                if type(func) is not _FunctionType or func.__closure__ is not None:  # type: ignore[attr-defined]
                    self._release_callee(func)  # a module-level function needs no releasing
                # The hop itself is queued (no record tuple): it builds its
                # span, and its executor handoff's, on the drain thread.
                _telemetry.deferred.add(self, 2 if self.handoff_end_ns else 1)
        except Exception:
            _telemetry.tracing_failed("closing a hop span")

    def _release_callee(self, func: object) -> None:
        # Caller side, at close, for a callee that is not a plain module-level
        # function.  The hop waits for the drain thread; meanwhile its callee
        # must not keep a request's objects alive (a bound method's instance, a
        # closure's cells, a partial's arguments): they would outlive a few
        # garbage collections and be promoted, and every later full collection
        # would traverse them (Django: its response objects, its middleware
        # closures).  Keep what names it instead.
        if type(func) is _MethodType:
            self.func = func.__func__  # type: ignore[attr-defined]  # the same name, without the instance
            return
        if self._function is None:
            self._function = _telemetry.function_name(func)
        self.func = None

    def deferred_records(self) -> tuple[tuple[Any, ...], ...]:
        """On the drain thread: the hop's span record, after its handoff's if it had one."""
        hop_record = (_build_hop, self.tracer, self.parent, self.submit_ns, self.close_ns, self)
        if not self.handoff_end_ns:
            return (hop_record,)
        return ((_build_handoff, self.tracer, self, self.submit_ns, self.handoff_end_ns, self), hop_record)

    # ------------------------------------------------------------------
    # Attribute building: on the drain thread, or for a span made on the spot.

    def span_attributes(self) -> dict[str, Any]:
        """Every attribute of the hop's span, as far as the hop has got."""
        caller = self.caller
        attributes: dict[str, Any] = {
            semconv.DIRECTION: self.direction,
            semconv.CODE_FUNCTION_NAME: self.function,
            semconv.CALLER_THREAD_ID: caller.ident,
            semconv.CALLER_THREAD_NAME: caller.name,
        }
        if self.thread_sensitive is not None:
            attributes[semconv.THREAD_SENSITIVE] = self.thread_sensitive
        if self.executor_kind is not None:
            attributes[semconv.EXECUTOR_KIND] = self.executor_kind
        if self.executor_id is not None:
            attributes[semconv.EXECUTOR_ID] = self.executor_id
        if self.loop_id is not None:
            attributes[semconv.LOOP_ID] = self.loop_id
        route = self.loop_route
        if route is not None:
            attributes[semconv.LOOP_ROUTE] = route
            attributes[semconv.LOOP_NEW] = route != semconv.LOOP_ROUTE_PARENT_LOOP
        if self.attributes:
            attributes.update(self.attributes)
        if self.user_attributes:
            attributes.update(self.user_attributes)
        thread = self.thread
        if thread is not None:
            attributes[semconv.THREAD_ID] = thread.ident
            attributes[semconv.THREAD_NAME] = thread.name
            attributes[semconv.QUEUE_WAIT_MS] = (self.start_ns - self.submit_ns) / 1e6
            if self.end_ns:
                attributes[semconv.RUN_TIME_MS] = (self.end_ns - self.start_ns) / 1e6
        return attributes

    # ------------------------------------------------------------------
    # The Span API, for code running inside the hop: the hop is the current
    # span there (trace.get_current_span()), so what that code records on it
    # lands on the hop's span, as it would on a span made on the spot.  Until
    # the hop closes; afterwards, as on an ended SDK span, it is ignored.
    # The watchdog (its own thread) adds its reports through add_event too.

    def is_recording(self) -> bool:
        """Whether what is set on the hop now will be on its span: sampled, and not closed yet."""
        if self._span is not None:
            return self._span.is_recording()
        return self.sampled and not self.close_ns

    def set_attribute(self, key: str, value: Any) -> None:
        """Put an attribute on the hop's span (cleaned as the SDK cleans a span's attributes)."""
        self.set_attributes({key: value})

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Put attributes on the hop's span (cleaned as the SDK cleans a span's attributes)."""
        try:
            if self._span is not None:
                self._span.set_attributes(attributes)
                return
            if not self.is_recording():
                return
            recorded = self.user_attributes
            if recorded is None:
                recorded = self.user_attributes = BoundedAttributes(immutable=False)
            for key, value in attributes.items():
                recorded[key] = value  # BoundedAttributes drops and logs what a span may not hold
        except Exception:
            _telemetry.tracing_failed("hop attributes")

    def add_event(  # type: ignore[override]
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        """Put an event on the hop's span: at once on a span made on the spot, else when the span is built."""
        try:
            if self._span is not None:
                self._span.add_event(name, attributes, timestamp=timestamp)
                return
            if not self.is_recording():
                return
            cleaned = dict(BoundedAttributes(attributes=attributes, immutable=False)) if attributes else {}
            events = self.events
            if events is None:
                events = self.events = []
            events.append((name, cleaned, timestamp if timestamp is not None else time_ns()))
        except Exception:
            _telemetry.tracing_failed("hop event")

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An ``exception`` event on the hop's span, with the same keys as the hop's own errors."""
        try:
            if self._span is not None:
                self._span.record_exception(exception, attributes, timestamp, escaped)
                return
            if not self.is_recording():
                return  # no traceback formatted for a span nobody will see
            error_type, message, stacktrace = _telemetry.describe_error(exception)
            self.add_event(
                semconv.EXCEPTION_EVENT,
                {
                    semconv.EXCEPTION_TYPE: error_type,
                    semconv.EXCEPTION_MESSAGE: message,
                    semconv.EXCEPTION_STACKTRACE: stacktrace,
                    semconv.EXCEPTION_ESCAPED: str(escaped),
                    **(attributes or {}),
                },
                timestamp,
            )
        except Exception:  # str(exception) may raise: never into the code recording it
            _telemetry.tracing_failed("hop exception event")

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """The hop span's status, as the SDK sets one (an error the hop raises overrides it)."""
        try:
            if self._span is not None:
                self._span.set_status(status, description)
                return
            if not self.is_recording():
                return
            if isinstance(status, StatusCode):
                status = Status(status, description)
            if self.status is not None and self.status.status_code is StatusCode.OK:
                return  # OK is final, as on an SDK span
            if status.status_code is not StatusCode.UNSET:
                self.status = status
        except Exception:
            _telemetry.tracing_failed("hop status")

    def update_name(self, name: str) -> None:
        """Ignored: a hop's span name is its kind (``tracebridge.sync_to_async``...), which views rely on."""

    def export_partial(self, events: list[tuple[str, dict[str, Any], int]]) -> bool:
        """Export the hop's span now, unfinished, marked incomplete (a hung hop's partial trace).

        The hop goes on; if it ever closes its complete span is exported too,
        with the same ids.  Returns False when that is impossible (a span the
        tracer made on the spot, or an unsampled trace).
        """
        try:
            if self._span is not None or not self.sampled:
                return False
            return _telemetry.record_partial(
                self.tracer, self.name, self.parent_context(), self.trace_id,
                self.get_span_context().span_id, self.submit_ns, self.span_attributes(), events,
            )
        except Exception:
            _telemetry.tracing_failed("exporting a partial hop span")
            return False


def _build_hop(hop: Hop) -> tuple[Any, ...]:
    # On the drain thread: (name, attributes, ids, root trace id, span id, error, events, own context[, status]).
    context = hop.get_span_context()  # drawn already if a child asked: reused as the span's
    spec = (
        hop.name, hop.span_attributes(), hop.id_source, hop.trace_id if hop.parent is None else None,
        context.span_id, hop.error, hop.events, context,
    )
    return spec if hop.status is None else (*spec, hop.status)


def _build_handoff(hop: Hop) -> tuple[str, _telemetry.Attributes]:
    thread = hop.thread
    caller = hop.caller
    return semconv.HANDOFF, {
        semconv.CODE_FUNCTION_NAME: hop.function,
        semconv.EXECUTOR_KIND: hop.handoff_kind,  # type: ignore[dict-item]
        semconv.EXECUTOR_ID: hop.executor_id or 0,
        semconv.QUEUED_THREAD_ID: caller.ident,  # type: ignore[dict-item]
        semconv.QUEUED_THREAD_NAME: caller.name,
        semconv.THREAD_ID: thread.ident,  # type: ignore[union-attr]
        semconv.THREAD_NAME: thread.name,  # type: ignore[union-attr]
        semconv.QUEUE_WAIT_MS: (hop.start_ns - hop.submit_ns) / 1e6,
        semconv.RUN_TIME_MS: (hop.handoff_end_ns - hop.start_ns) / 1e6,
    }
