"""The thin layer between tracebridge's bridging code and OpenTelemetry.

Three rules shape everything here:

* **Off costs nothing.**  :func:`get_tracer` is the only call the hot path makes
  when tracing is off: two attribute reads and a comparison, no span API at all.
  Tracing turns on by itself as soon as a real TracerProvider is installed
  globally (even after tracebridge was imported) or given to
  :func:`set_tracer_provider`.
* **Tracing never changes behaviour.**  Every helper that touches OpenTelemetry
  catches its own exceptions, counts them in :data:`stats` and carries on.
* **Cheap things are recorded cheaply.**  Spans nobody parents into (Local
  accesses, executor handoffs) are appended to :data:`deferred` as plain tuples
  on the hot path and turned into real spans, with their original timestamps and
  parents, by a background thread or by :func:`flush`.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import threading
import time
import traceback
from random import getrandbits as _getrandbits
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TracerProvider,
)
from opentelemetry.trace import INVALID_SPAN_CONTEXT
from opentelemetry.trace.propagation import _SPAN_KEY

from . import semconv
from ._span_delivery import deliver as deliver_spans
from .flow_snapshot import ThreadRef

__all__ = [
    "DeferredSpans",
    "TelemetryStats",
    "deferred",
    "describe_error",
    "replay_ids",
    "record_handoff",
    "submitting",
    "flush",
    "get_tracer",
    "get_tracer_provider",
    "record_partial",
    "set_tracer_provider",
    "stats",
]

logger = logging.getLogger("tracebridge")
_current_thread = threading.current_thread

AttributeValue = str | bool | int | float
Attributes = Mapping[str, AttributeValue]
# A deferred span's parent: a span context, a span (resolved on the drain
# thread, so a planned span draws its id only then), or None for a root.
ParentRef = SpanContext | Span | None


@dataclass
class TelemetryStats:
    """Counters of what tracing could not do.  Read them; never reset them by hand."""

    tracing_errors: int = 0
    """Exceptions raised inside tracing code and swallowed (user code never saw them)."""

    deferred_dropped: int = 0
    """Deferred spans (Local accesses, handoffs) dropped because the buffer was full."""

    deferred_exported: int = 0
    """Deferred spans turned into real spans and handed to the provider."""


stats = TelemetryStats()
_warned: set[str] = set()

# The live flow feed (tracebridge.flow): None, or the FlowRecorder that
# tracebridge.flow.enable() installed.  The bridges read it once per hop event
# and call it only when set, so with the flow model off a traced hop pays one
# module-attribute read per event and nothing else.  Its methods are O(1)
# dict/deque operations that never block and never raise.
flow: Any = None


def tracing_failed(where: str) -> None:
    """Count (and log once per place) an exception swallowed inside tracing code.

    Called from ``except Exception:`` blocks, so ``logger.exception`` has the traceback.
    """
    stats.tracing_errors += 1
    if where not in _warned:
        _warned.add(where)
        logger.exception("tracebridge: tracing failed in %s; the traced code is unaffected", where)


# ---------------------------------------------------------------------------
# Which tracer, if any.


class _TracerState:
    # Written by set_tracer_provider() (any thread), read on every hop and Local
    # access.  Plain attribute writes are atomic under the GIL; a reader that
    # sees a half-updated pair merely recomputes the tracer once more.
    explicit: TracerProvider | None = None
    source: object = None
    tracer: Tracer | None = None
    # Set when ``tracer`` is an SDK tracer whose span ids we can choose: then
    # hop spans are built off the hot path too (see ReplayIdGenerator).
    ids: ReplayIdGenerator | None = None
    # True when the tracer's sampler samples every root span (the SDK
    # default), so a hop opening a trace need not ask it on the hot path.
    samples_all_roots: bool = False
    # samples_all_roots, and the generator is the SDK's random one: a new
    # root's trace id is getrandbits(128) and its flags sampled + random-id.
    random_roots: bool = False


_ALWAYS_ON_DESCRIPTIONS = frozenset(
    {
        "AlwaysOnSampler",
        "ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,"
        "remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,"
        "localParentNotSampled:AlwaysOffSampler}",
    }
)


class ReplayIdGenerator:
    """An SDK id generator that can be told, per thread, which ids to hand out next.

    Why: a hop's span must have an id the moment the hop starts (user spans in
    the callee are its children), but building an SDK span costs about a third
    of a hop.  So the hop picks its ids itself (:meth:`new_span_id`, from the
    provider's own generator) and the drain thread later builds the real span,
    telling this generator to hand out exactly those ids.  Every other caller
    gets the provider's generator unchanged.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._next = threading.local()

    def replay(self, trace_id: int | None, span_id: int) -> None:
        """On this thread, make the next generate_* calls return these ids."""
        self._next.trace_id = trace_id
        self._next.span_id = span_id

    def generate_span_id(self) -> int:
        span_id = getattr(self._next, "span_id", None)
        if span_id is not None:
            self._next.span_id = None
            return int(span_id)
        return int(self.inner.generate_span_id())

    def generate_trace_id(self) -> int:
        trace_id = getattr(self._next, "trace_id", None)
        if trace_id is not None:
            self._next.trace_id = None
            return int(trace_id)
        return int(self.inner.generate_trace_id())

    def is_trace_id_random(self) -> bool:
        check = getattr(self.inner, "is_trace_id_random", None)
        return bool(check()) if check is not None else False

    def new_span_id(self) -> int:
        return int(self.inner.generate_span_id())

    def new_trace_id(self) -> int:
        return int(self.inner.generate_trace_id())


_state = _TracerState()


def set_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace tracebridge with ``provider`` instead of the global one (None: global again)."""
    _state.explicit = provider
    _state.source = None


def get_tracer_provider() -> TracerProvider | None:
    """The provider tracebridge records into now, or None when tracing is off."""
    provider = _state.explicit
    if provider is None:
        provider = otel_trace._TRACER_PROVIDER  # None until someone sets one
    if provider is None or isinstance(provider, (NoOpTracerProvider, ProxyTracerProvider)):
        return None
    return provider


def get_tracer() -> Tracer | None:
    """The tracer to record with, or None when tracing is off.  The hot-path check."""
    provider = _state.explicit
    if provider is None:
        # The API's own global: reading it avoids get_tracer_provider()'s
        # proxy/env-var machinery, and stays None until a provider is set.
        provider = otel_trace._TRACER_PROVIDER
        if provider is None:
            return None
    if provider is _state.source:
        return _state.tracer
    return _tracer_for(provider)


def _tracer_for(provider: object) -> Tracer | None:
    tracer: Tracer | None = None
    ids: ReplayIdGenerator | None = None
    if not isinstance(provider, (NoOpTracerProvider, ProxyTracerProvider)):
        try:
            from . import __version__

            tracer = provider.get_tracer(semconv.INSTRUMENTATION_NAME, __version__)  # type: ignore[attr-defined]
            # The SDK tracer keeps its generator in a public attribute; the
            # provider caches tracers per scope, so this one is ours alone.
            inner = getattr(tracer, "id_generator", None)
            if isinstance(inner, ReplayIdGenerator):
                ids = inner
            elif inner is not None and hasattr(tracer, "sampler"):
                ids = ReplayIdGenerator(inner)
                tracer.id_generator = ids  # type: ignore[union-attr]
            if ids is not None:
                describe = getattr(tracer.sampler, "get_description", None)  # type: ignore[union-attr]
                _state.samples_all_roots = describe is not None and describe() in _ALWAYS_ON_DESCRIPTIONS
                _state.random_roots = _state.samples_all_roots and type(ids.inner) is _RandomIdGenerator
        except Exception:
            tracing_failed("get_tracer")
            ids = None
    _state.tracer = tracer
    _state.ids = ids
    _state.source = provider
    return tracer


def replay_ids() -> ReplayIdGenerator | None:
    """The current tracer's replayable id generator (None: build spans on the spot)."""
    return _state.ids


def samples_all_roots() -> bool:
    """Whether the current tracer's sampler records every new trace."""
    return _state.samples_all_roots


# ---------------------------------------------------------------------------
# Small helpers the bridges share.


def function_name(func: object) -> str:
    """``module.QualName`` of a callable, seeing through partials, bound methods and ``functools.wraps``."""
    seen = 0
    while seen < 8:
        inner = getattr(func, "func", None)  # functools.partial and our own wrappers
        if inner is None or not callable(inner):
            # A functools.wraps wrapper: what it wraps says what runs.  Django
            # wraps each middleware instance in a closure whose qualname is
            # "convert_exception_to_response.<locals>.inner".
            inner = getattr(func, "__wrapped__", None)
            if inner is None or not callable(inner):
                break
        func = inner
        seen += 1
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if qualname is None:
        qualname = type(func).__qualname__
    module = getattr(func, "__module__", None)
    return f"{module}.{qualname}" if module else str(qualname)


def _attach_api(context: otel_context.Context) -> object:
    return otel_context.attach(context)


def _detach_api(token: object) -> None:
    detach(token)


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


class _ThreadRefs(threading.local):
    ref: ThreadRef | None = None


_thread_refs = _ThreadRefs()


def current_thread_ref() -> ThreadRef:
    """This thread as ``ThreadRef(ident, name)``, made on its first call and kept per thread.

    What a deferred span keeps instead of the Thread: a finished thread's
    Thread object (its locks, events and excepthook closure) must not outlive
    the thread just because a span waits for the drain thread.  One
    thread-local read, as cheap as ``threading.current_thread()``.  The name is
    the one the thread had at its first traced operation: rename a thread
    before it makes hops (as ``ThreadPoolExecutor`` does) to see the new name.
    """
    ref = _thread_refs.ref
    if ref is None:
        thread = _current_thread()
        ref = _thread_refs.ref = ThreadRef(thread.ident or 0, thread.name)
    return ref


def current_span_context() -> SpanContext:
    """The span context current in this thread's context (invalid when none)."""
    return otel_trace.get_current_span().get_span_context()


def current_parent() -> ParentRef:
    """The span current in this thread's context, as a deferred span's ``parent`` (None: none).

    Cheaper than :func:`current_span_context` on the hot path: a planned span
    (a hop in flight) need not draw its id yet; the drain thread resolves it
    with :func:`resolve_parent`.
    """
    return current_context().get(_SPAN_KEY)  # type: ignore[no-any-return]


def resolve_parent(parent: ParentRef) -> SpanContext:
    """The span context a deferred span's ``parent`` stands for (invalid for a root)."""
    if parent is None:
        return INVALID_SPAN_CONTEXT
    if type(parent) is SpanContext:
        return parent
    if isinstance(parent, SpanContext):  # pragma: no cover - a SpanContext subclass
        return parent
    return parent.get_span_context()  # type: ignore[union-attr]


def attach_span(span: Span) -> object:
    """Make ``span`` current in this context; hand the token to :func:`detach`."""
    return otel_context.attach(otel_trace.set_span_in_context(span))


def detach(token: object) -> None:
    """Undo :func:`attach_span`.  Must run before the bridge copies context back."""
    try:
        otel_context.detach(token)  # type: ignore[arg-type]
    except Exception:
        tracing_failed("detach")


def end_span(span: Span, exc: BaseException | None, attributes: Attributes | None = None) -> None:
    """Finish a span, recording ``exc`` as its error."""
    try:
        if attributes:
            span.set_attributes(attributes)
        if exc is not None:
            _apply_error(span, *describe_error(exc))
        span.end()
    except Exception:
        tracing_failed("end_span")


def describe_error(exc: BaseException) -> tuple[str, str, str]:
    """(error.type, message, formatted traceback) of ``exc``, for a span built later.

    Formatted now, so no frame or traceback is kept alive by the buffer.
    """
    return _error_type(exc), str(exc), "".join(traceback.format_exception(exc))


def _apply_error(span: Span, error_type: str, message: str, stacktrace: str) -> None:
    span.set_attribute(semconv.ERROR_TYPE, error_type)
    span.add_event(
        semconv.EXCEPTION_EVENT,
        {
            semconv.EXCEPTION_TYPE: error_type,
            semconv.EXCEPTION_MESSAGE: message,
            semconv.EXCEPTION_STACKTRACE: stacktrace,
        },
    )
    short = error_type.rsplit(".", 1)[-1]
    span.set_status(Status(StatusCode.ERROR, f"{short}: {message}" if message else short))


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def ms(start_ns: int, end_ns: int) -> float:
    """Nanosecond interval as float milliseconds (the unit of every ``*_ms`` key)."""
    return (end_ns - start_ns) / 1e6


# ---------------------------------------------------------------------------
# Deferred spans.

# A builder turns a record's payload tuple into (span name, attributes).
# Planned spans' builders (hops, WSGI calls) return a longer tuple: see DeferredSpans._build_spec.
SpanBuilder = Callable[[Any], tuple[Any, ...]]
_Record = tuple[SpanBuilder, Tracer, ParentRef, int, int, Any]


class DeferredItem(Protocol):
    """An object queued whole with :meth:`DeferredSpans.add`: it knows its own records."""

    def deferred_records(self) -> Sequence[_Record]:
        """Its ``(builder, tracer, parent, start_ns, end_ns, payload)`` records; called on the drain thread."""
        ...

_DEFAULT_CAPACITY = 1 << 18
_DRAIN_INTERVAL_S = 0.2
# The drain thread also wakes as soon as this many records wait.  Under load
# that keeps each burst handed to the span processors small (the SDK's batch
# processor queues at most 2048 spans by default and drops the rest), and a
# record's life short: records that survive a few garbage collections are
# promoted, and every full collection then traverses them (Django: each
# request allocates enough to trigger a gen-0 collection every few requests).
_WAKE_AT = 1024
# Spans built directly are handed to the processors in bulk, at the end of a
# pass and every this many (bounded memory and latency in a long pass).
_DELIVER_EVERY = 256


# TRACEBRIDGE_DIRECT_SPANS=0 makes every deferred span go through start_span/end.
_DIRECT_SPANS_OFF = os.environ.get("TRACEBRIDGE_DIRECT_SPANS", "1") == "0"
_UNSET_STATUS = Status(StatusCode.UNSET)


def _span_context_checked(
    trace_id: int, span_id: int, is_remote: bool, flags: TraceFlags, state: Any
) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote, flags, state)


def _span_context_unchecked(
    trace_id: int, span_id: int, is_remote: bool, flags: TraceFlags, state: Any
) -> SpanContext:
    # SpanContext is a tuple whose __new__ only re-checks the id ranges (ours
    # come from the id generator or a valid parent) and derives is_valid (True
    # for such ids): ~1 us a span on the drain thread.  Checked against the
    # real constructor below, falling back to it.
    return tuple.__new__(SpanContext, (trace_id, span_id, is_remote, flags, state, True))  # type: ignore[return-value]


try:
    _probe_flags = TraceFlags(TraceFlags.SAMPLED)
    _probe_state = otel_trace.INVALID_SPAN_CONTEXT.trace_state
    _new_span_context = (
        _span_context_unchecked
        if _span_context_unchecked(1, 2, False, _probe_flags, _probe_state)
        == SpanContext(1, 2, False, _probe_flags, _probe_state)
        and _span_context_unchecked(1, 2, False, _probe_flags, _probe_state).is_valid
        else _span_context_checked
    )
except Exception:  # pragma: no cover - a future API whose SpanContext is not this tuple
    _new_span_context = _span_context_checked


def _direct_plumbing(tracer: Tracer) -> Any:
    """(processor, inline, resource, scope, info, ids, root flags) of an SDK tracer whose ids we replay, else False.

    ``root flags``: the TraceFlags the SDK gives a new root span when its
    sampler samples every root (None otherwise: roots take ``start_span``).
    """
    try:
        global _ReadableSpan, _SdkEvent, _READABLE_SPAN_POSITIONAL
        from opentelemetry.sdk.trace import Event as _SdkEventClass
        from opentelemetry.sdk.trace import ReadableSpan as _ReadableSpanClass
        from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor
        from opentelemetry.sdk.trace import Tracer as _SdkTracer

        if _ReadableSpan is not _ReadableSpanClass:
            # Once per process (the drain asks again after every pass): positional
            # arguments save the keyword matching on every span, only when the
            # parameters are the ones (and in the order) written for.
            parameters = list(inspect.signature(_ReadableSpanClass.__init__).parameters)
            _READABLE_SPAN_POSITIONAL = parameters[:14] == _READABLE_SPAN_PARAMETERS
        _ReadableSpan, _SdkEvent = _ReadableSpanClass, _SdkEventClass

        ids = getattr(tracer, "id_generator", None)
        if type(tracer) is not _SdkTracer or not isinstance(ids, ReplayIdGenerator):
            return False
        scope = getattr(tracer, "_instrumentation_scope", None)
        if scope is None:
            return False
        root_flags = None
        describe = getattr(tracer.sampler, "get_description", None)
        if describe is not None and describe() in _ALWAYS_ON_DESCRIPTIONS:
            # What start_span computes for a root: sampled, plus the random-id bit.
            root_flags = TraceFlags(
                TraceFlags.SAMPLED | (TraceFlags.RANDOM_TRACE_ID if ids.is_trace_id_random() else 0)
            )
        processor = tracer.span_processor
        # The provider's usual processor: its on_end loop is inlined (below).
        inline = type(processor) is SynchronousMultiSpanProcessor and isinstance(
            getattr(processor, "_span_processors", None), tuple
        )
        return (processor, inline, tracer.resource, scope, tracer.instrumentation_info, ids, root_flags)
    except Exception:
        tracing_failed("direct span plumbing")
        return False


_ReadableSpan: Any = None
_SdkEvent: Any = None
_READABLE_SPAN_POSITIONAL = False
_READABLE_SPAN_PARAMETERS = [
    "self", "name", "context", "parent", "resource", "attributes", "events", "links", "kind",
    "instrumentation_info", "status", "start_time", "end_time", "instrumentation_scope",
]
_INTERNAL = SpanKind.INTERNAL
_SAMPLED_BIT = int(TraceFlags.SAMPLED)
try:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator as _RandomIdGenerator
except ImportError:  # pragma: no cover - the SDK is a dependency
    _RandomIdGenerator = None  # type: ignore[assignment,misc]
# SpanContext is a tuple (trace_id, span_id, is_remote, trace_flags, trace_state,
# is_valid): the hot spots unpack it once instead of calling five properties.
# Checked here, on a valid context and on the invalid one; shared with _hop.
try:
    _probe_context = SpanContext(1, 2, False, TraceFlags(TraceFlags.SAMPLED), INVALID_SPAN_CONTEXT.trace_state)
    _TUPLE_SPAN_CONTEXT = isinstance(_probe_context, tuple) and tuple(_probe_context) == (
        _probe_context.trace_id, _probe_context.span_id, _probe_context.is_remote,
        _probe_context.trace_flags, _probe_context.trace_state, _probe_context.is_valid,
    ) and tuple(INVALID_SPAN_CONTEXT)[5] is INVALID_SPAN_CONTEXT.is_valid
except Exception:  # pragma: no cover - a future API whose SpanContext is not this tuple
    _TUPLE_SPAN_CONTEXT = False


_tuple_new = tuple.__new__


def draw_span_id(ids: ReplayIdGenerator) -> int:
    """A new span id from ``ids``: the SDK's default generator is getrandbits(64), retried on 0,
    called directly (one frame instead of three)."""
    return (_getrandbits(64) if type(ids.inner) is _RandomIdGenerator else 0) or ids.new_span_id()


class DeferredSpans:
    """A bounded buffer of would-be spans and the thread that makes them real.

    :meth:`record` runs on the traced code's hot path: one ``len`` and one
    ``deque.append`` (both atomic under the GIL, so no lock).  The drain thread,
    started lazily on the first record, pops records and builds real spans with
    the recorded start/end times and parent, so the result is indistinguishable
    from a span made on the spot.  A full buffer drops and counts.
    """

    def __init__(self, capacity: int = _DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._records: deque[_Record | DeferredItem] = deque()
        self._drain_lock = threading.Lock()  # one drainer at a time: keeps span order
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        # (trace_id, span_id) -> a context holding that parent.  Not keyed by
        # SpanContext itself: its TraceState is unhashable.
        self._parents: dict[tuple[int, int], otel_context.Context] = {}
        # id(tracer) -> what _emit_directly needs from it, or False (cannot).
        self._plumbing: dict[int, Any] = {}
        # id(processor) -> (processor, inline, spans built for it, not yet delivered).
        self._ready: dict[int, tuple[Any, bool, list[Any]]] = {}
        self._ready_count = 0
        self._deliveries = 0  # passes of _deliver: the drain loop's cached ready list is stale once it moves

    def __len__(self) -> int:
        return len(self._records)

    def record(
        self,
        builder: SpanBuilder,
        tracer: Tracer,
        parent: ParentRef,
        start_ns: int,
        end_ns: int,
        payload: Any,
    ) -> None:
        """Remember one span to build later.  Never blocks, never raises."""
        self.add((builder, tracer, parent, start_ns, end_ns, payload))

    def add(self, item: DeferredItem | tuple[Any, ...], spans: int = 1) -> None:
        """Remember an object that describes its own span(s) when drained (see :class:`DeferredItem`).

        Cheaper than :meth:`record` for an object that lives until then anyway
        (a hop): no tuple is built on the hot path, so nothing more for the
        garbage collector to track.  ``spans`` is how many it will make (for
        the drop count).  Never blocks, never raises.
        """
        # The traced thread: one len and one append (atomic under the GIL, no lock).
        records = self._records
        waiting = len(records)
        if waiting >= self.capacity:
            self._dropped(spans)
            return
        records.append(item)
        if waiting == _WAKE_AT:
            self._wake.set()  # a burst: drain now rather than at the next tick
        if self._thread is None:  # first record, or first since a fork (see _after_fork_in_child)
            self._start_thread()

    # push(record): one span given as a flat record ``(builder, tracer, parent,
    # start_ns, end_ns, field, ...)``.  For the hottest callers (Local
    # accesses): the payload fields sit in the record itself, so the hot path
    # builds one tuple instead of two (one object less for the garbage
    # collector); the builder receives the whole record and reads its fields
    # from index 5.  The same append as add: one call on the hot path, not two.
    push = add

    def _dropped(self, spans: int) -> None:
        stats.deferred_dropped += spans
        if "deferred-full" not in _warned:
            _warned.add("deferred-full")
            logger.warning(
                "tracebridge: deferred span buffer full (%d); dropping and counting "
                "(see tracebridge.stats().deferred_dropped)",
                self.capacity,
            )

    def _start_thread(self) -> None:
        with self._drain_lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            thread = threading.Thread(target=self._run, name="tracebridge-deferred-spans", daemon=True)
            self._thread = thread
            thread.start()
        # Registered after the first provider exists, so it runs *before* the
        # SDK's own atexit shutdown (atexit is last-in, first-out).
        atexit.register(self.drain)

    def _run(self) -> None:
        while True:
            self._wake.wait(_DRAIN_INTERVAL_S)
            self._wake.clear()
            self.drain()

    def drain(self) -> int:
        """Turn every buffered record into a real span now; returns how many.

        The drain thread's loop (or a flush's).  The common span -- a child of
        a sampled parent, no error, no events, under an SDK tracer -- is built
        right here, without a call per step: under load this loop is the
        largest share of tracing's CPU after the traced code itself.  Every
        other span (roots, errors, events, other tracers, unsampled parents)
        goes through :meth:`_build`.
        """
        made = 0
        records = self._records
        build = self._build
        plumbing_of = self._plumbing
        # What the inline path needs from the record's tracer: looked up again
        # when the tracer changes, and its ready list again whenever the ready
        # lists were handed over (a span must never land in a delivered list).
        last_tracer: Any = None
        plumbing: Any = False
        fast = False
        processors = resource = scope = info = ids = root_flags = ready = None
        inline = random_ids = False
        deliveries = -1
        unchecked = _new_span_context is _span_context_unchecked
        with self._drain_lock:
            while True:
                try:
                    item = records.popleft()
                except IndexError:
                    break
                if type(item) is tuple:
                    batch: Sequence[_Record] = (item,)
                else:
                    try:
                        batch = item.deferred_records()  # type: ignore[attr-defined]
                    except Exception:
                        tracing_failed("deferred span")
                        continue
                for record in batch:
                    try:
                        tracer = record[1]
                        if tracer is not last_tracer:
                            last_tracer = tracer
                            plumbing = plumbing_of.get(id(tracer))
                            if plumbing is None:
                                plumbing = plumbing_of[id(tracer)] = (
                                    False if _DIRECT_SPANS_OFF else _direct_plumbing(tracer)
                                )
                            fast = plumbing is not False and _TUPLE_SPAN_CONTEXT and _READABLE_SPAN_POSITIONAL
                            if fast:
                                processors, inline, resource, scope, info, ids, root_flags = plumbing
                                random_ids = type(ids.inner) is _RandomIdGenerator  # type: ignore[union-attr]
                            deliveries = -1
                        if not fast:
                            made += build(record)
                            continue
                        parent = record[2]
                        if type(parent) is not SpanContext:
                            # resolve_parent, inlined: mostly a hop, whose id is drawn now if need be.
                            if parent is None:
                                parent = INVALID_SPAN_CONTEXT
                            elif not isinstance(parent, SpanContext):
                                parent = parent.get_span_context()
                        trace_id, _span_id, _remote, flags, trace_state, valid = parent
                        if valid:
                            if not flags & _SAMPLED_BIT:
                                made += build(record)  # an unsampled trace: the general path decides
                                continue
                            span_parent: SpanContext | None = parent
                        elif root_flags is not None:
                            # A root, under a sampler that samples every root: the
                            # flags start_span would give it (see _emit_directly).
                            flags = root_flags
                            trace_id = None
                            span_parent = None
                        else:
                            made += build(record)  # a root the sampler must decide on
                            continue
                        spec = record[0](record[5] if len(record) == 6 else record)
                        if len(spec) == 2:
                            # A new span: its ids are drawn now (the SDK's default
                            # generator called directly, as draw_span_id does).
                            name, attributes = spec
                            if trace_id is None:
                                trace_id = (_getrandbits(128) if random_ids else 0) or ids.new_trace_id()  # type: ignore[union-attr]
                            span_id = (_getrandbits(64) if random_ids else 0) or ids.new_span_id()  # type: ignore[union-attr]
                            if unchecked:  # _span_context_unchecked, inlined
                                context = _tuple_new(SpanContext, (trace_id, span_id, False, flags, trace_state, True))
                            else:  # pragma: no cover - an API whose SpanContext is not the tuple it is today
                                context = _new_span_context(trace_id, span_id, False, flags, trace_state)
                        elif spec[5] is None and not (len(spec) > 6 and spec[6]) and len(spec) < 9:
                            # A planned span (a hop, a WSGI call): its ids were handed
                            # out already, and its own SpanContext is reused when it has one.
                            name, attributes = spec[0], spec[1]
                            context = spec[7] if len(spec) > 7 else None
                            if context is None:
                                if trace_id is None:
                                    trace_id = spec[3] or ids.new_trace_id()  # type: ignore[union-attr]
                                context = _new_span_context(trace_id, spec[4], False, flags, trace_state)
                        else:
                            made += self._build_spec(record, parent, spec)  # an error or events
                            continue
                        if deliveries != self._deliveries:
                            deliveries = self._deliveries
                            ready = self._ready.get(id(processors))
                            if ready is None:
                                ready = self._ready[id(processors)] = (processors, inline, [])
                        ready[2].append(  # type: ignore[index]
                            _ReadableSpan(
                                name, context, span_parent, resource, attributes, (), (), _INTERNAL,
                                info, _UNSET_STATUS, record[3], record[4], scope,
                            )
                        )
                        made += 1
                        self._ready_count += 1
                        if self._ready_count >= _DELIVER_EVERY:
                            self._deliver()
                    except Exception:
                        tracing_failed("deferred span")
            self._deliver()
            self._parents.clear()
            self._plumbing.clear()
        stats.deferred_exported += made
        return made

    def _build(self, record: _Record) -> int:
        # The drain thread: one record -> one span handed to the processors (1), or nothing (0).
        try:
            parent = record[2]
            if type(parent) is not SpanContext:
                parent = resolve_parent(parent)
            # A flat record (push): the builder reads its fields itself.
            return self._build_spec(record, parent, record[0](record[5] if len(record) == 6 else record))
        except Exception:
            tracing_failed("deferred span")
            return 0

    def _build_spec(self, record: _Record, parent: SpanContext, spec: tuple[Any, ...]) -> int:
        # The general case of drain's loop, once the builder has run.
        tracer, start_ns, end_ns = record[1], record[3], record[4]
        try:
            error = None
            events = None
            status = None
            if len(spec) > 2:
                # A span whose ids were handed out already (a hop): (name, attributes,
                # ids, trace_id or None, span_id, error[, events[, its own SpanContext[, status]]]).
                name, attributes, ids, trace_id, span_id, error = spec[:6]
                if len(spec) > 6:
                    events = spec[6]  # (name, attributes, time_ns) each, e.g. watchdog reports
                if len(spec) > 8:
                    status = spec[8]  # set by code inside the hop (Hop.set_status)
            else:
                name, attributes = spec
                span_id = trace_id = None
            if self._emit_directly(
                tracer, parent, start_ns, end_ns, name, attributes, span_id, error, events, trace_id, status
            ):
                return 1
            if span_id is not None:
                ids.replay(trace_id, span_id)
            span = tracer.start_span(
                name,
                context=self._parent_context(parent),
                attributes=attributes,
                start_time=start_ns,
            )
            if status is not None:
                span.set_status(status)
            if error is not None:
                _apply_error(span, *error)
            if events:
                for event_name, event_attributes, event_ns in events:
                    span.add_event(event_name, event_attributes, timestamp=event_ns)
            span.end(end_time=end_ns)
            return 1
        except Exception:
            tracing_failed("deferred span")
            return 0

    def _emit_directly(
        self,
        tracer: Tracer,
        parent: SpanContext,
        start_ns: int,
        end_ns: int,
        name: str,
        attributes: Attributes,
        span_id: int | None,
        error: tuple[str, str, str] | None,
        events: Sequence[tuple[str, Mapping[str, Any], int]] | None,
        trace_id: int | None = None,
        status: Status | None = None,
    ) -> bool:
        """Hand a finished span straight to the tracer's processors, skipping the SDK's span object.

        Why: ``start_span`` + ``end`` costs ~17 us a span (sampler, limits,
        locks, a mutable span then its frozen copy); under load that CPU is
        taken from the traced application.  A span under a valid parent needs
        none of it: its trace id and sampling decision are the parent's, its
        id is ours to pick.  Processors see it exactly as they see an ended
        span (``on_end`` with a ReadableSpan); only ``on_start`` is skipped,
        which the SDK's processors do not use.  A root span (invalid
        ``parent``; ``trace_id`` is its planned trace id, or None for a new
        one) goes this way too when the tracer's sampler samples every root:
        its flags are then the ones ``start_span`` would give it.  Other roots,
        non-SDK tracers and unsampled parents take the ordinary path (returns False).
        """
        if _DIRECT_SPANS_OFF:
            return False
        plumbing = self._plumbing.get(id(tracer))
        if plumbing is None:
            plumbing = self._plumbing[id(tracer)] = _direct_plumbing(tracer)
        if plumbing is False:
            return False
        processors, inline, resource, scope, info, ids, root_flags = plumbing
        if _TUPLE_SPAN_CONTEXT:  # one unpacking, not five property calls
            parent_trace_id, _parent_span_id, _remote, flags, trace_state, valid = parent
        else:  # pragma: no cover - a future API whose SpanContext is not a tuple
            parent_trace_id, flags, trace_state, valid = (
                parent.trace_id, parent.trace_flags, parent.trace_state, parent.is_valid
            )
        if valid:
            if not flags & _SAMPLED_BIT:
                return True  # not recorded, exactly as the sampler would decide under this parent
            trace_id = parent_trace_id
            parent_context: SpanContext | None = parent
        else:
            if root_flags is None:
                return False  # the sampler must decide: start_span asks it
            if trace_id is None:
                trace_id = ids.new_trace_id()
            flags = root_flags  # trace_state stays the invalid parent's empty one, as for a sampled root
            parent_context = None
        if span_id is None:
            span_id = draw_span_id(ids)
        context = _new_span_context(trace_id, span_id, False, flags, trace_state)
        if status is None:
            status = _UNSET_STATUS
        span_events: tuple[Any, ...] = ()
        if error is not None:
            error_type, message, stacktrace = error
            attributes = dict(attributes)
            attributes[semconv.ERROR_TYPE] = error_type
            short = error_type.rsplit(".", 1)[-1]
            status = Status(StatusCode.ERROR, f"{short}: {message}" if message else short)
            span_events = (
                _SdkEvent(
                    semconv.EXCEPTION_EVENT,
                    {
                        semconv.EXCEPTION_TYPE: error_type,
                        semconv.EXCEPTION_MESSAGE: message,
                        semconv.EXCEPTION_STACKTRACE: stacktrace,
                    },
                    end_ns,
                ),
            )
        if events:
            span_events += tuple(_SdkEvent(n, dict(a), t) for n, a, t in events)
        if _READABLE_SPAN_POSITIONAL:
            span = _ReadableSpan(
                name, context, parent_context, resource, attributes, span_events, (), _INTERNAL,
                info, status, start_ns, end_ns, scope,
            )
        else:  # pragma: no cover - an SDK whose ReadableSpan takes other parameters
            span = _ReadableSpan(
                name=name, context=context, parent=parent_context, resource=resource, attributes=attributes,
                events=span_events, status=status, start_time=start_ns, end_time=end_ns,
                instrumentation_info=info, instrumentation_scope=scope,
            )
        # Delivered in bulk (see _deliver): a pass's spans reach the processors together.
        ready = self._ready.get(id(processors))
        if ready is None:
            ready = self._ready[id(processors)] = (processors, inline, [])
        ready[2].append(span)
        self._ready_count += 1
        if self._ready_count >= _DELIVER_EVERY:
            self._deliver()
        return True

    def _deliver(self) -> None:
        # The drain thread, under the drain lock: hand the built spans over.
        ready, self._ready = self._ready, {}
        self._ready_count = 0
        self._deliveries += 1
        for processors, inline, spans in ready.values():
            if inline:
                # SynchronousMultiSpanProcessor.on_end's loop, a batch at a
                # time.  Read now, so a processor added meanwhile gets them too.
                for processor in processors._span_processors:
                    deliver_spans(processor, spans, tracing_failed)
            else:
                deliver_spans(processors, spans, tracing_failed)

    def _parent_context(self, parent: SpanContext) -> otel_context.Context | None:
        if not parent.is_valid:
            return otel_context.Context()  # a root span, not whatever the drain thread has current
        key = (parent.trace_id, parent.span_id)
        ctx = self._parents.get(key)
        if ctx is None:
            ctx = otel_trace.set_span_in_context(NonRecordingSpan(parent), otel_context.Context())
            self._parents[key] = ctx
        return ctx

    def _after_fork_in_child(self) -> None:
        # The drain thread did not survive the fork; its lock may be held by it.
        self._records = deque()
        self._drain_lock = threading.Lock()
        self._thread = None
        self._pid = os.getpid()
        self._ready = {}  # the parent's spans: its own drain delivers them
        self._ready_count = 0


deferred = DeferredSpans()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=deferred._after_fork_in_child)


def flush(timeout_millis: int = 30_000) -> bool:
    """Deliver everything buffered to the provider's processors, then flush them.

    Returns the provider's ``force_flush`` verdict (True when nothing timed out).
    """
    deferred.drain()
    provider = get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is None:
        return True
    try:
        return bool(force_flush(timeout_millis))
    except Exception:
        tracing_failed("force_flush")
        return False


def record_partial(
    tracer: Tracer,
    name: str,
    parent: SpanContext,
    trace_id: int | None,
    span_id: int,
    start_ns: int,
    attributes: Mapping[str, Any],
    events: Sequence[tuple[str, Mapping[str, Any], int]] = (),
) -> bool:
    """Export a span whose work is still in flight, now, marked :data:`~semconv.INCOMPLETE`.

    For the watchdog: a hung request's spans never end, so OpenTelemetry would
    never export them.  This builds a copy with the span's own ids (so children
    already exported hang under it), ending now.  ``trace_id`` is needed only
    for a root span (``parent`` invalid).  Goes through the deferred buffer;
    call :func:`flush` to deliver at once.  Returns False (and records nothing)
    when the current tracer cannot replay ids (not an SDK tracer).
    """
    try:
        ids = _state.ids
        if ids is None:
            return False
        partial = dict(attributes)
        partial[semconv.INCOMPLETE] = True
        deferred.record(
            _build_partial, tracer, parent, start_ns, time.time_ns(),
            (name, partial, ids, trace_id if not parent.is_valid else None, span_id, tuple(events)),
        )
        return True
    except Exception:
        tracing_failed("exporting a partial span")
        return False


def _build_partial(payload: tuple[Any, ...]) -> tuple[Any, ...]:
    name, attributes, ids, trace_id, span_id, events = payload
    return (name, attributes, ids, trace_id, span_id, None, events)


def now_ns() -> int:
    """Wall-clock nanoseconds, the timestamp unit of OpenTelemetry spans."""
    return time.time_ns()


# ---------------------------------------------------------------------------
# Executor handoffs (deferred: nothing parents into a handoff span).


class _Submitting(threading.local):
    """What the bridge is submitting right now, for the executor's ``submit`` to read.

    ``SyncToAsync`` sets these on the loop thread just around
    ``loop.run_in_executor`` (which calls ``submit`` synchronously on that same
    thread), so a CurrentThreadExecutor can parent its handoff span to the hop
    span and name the function rather than the bridge's internal wrapper.
    """

    parent: ParentRef = None
    function: str | None = None
    # True when the bridge's hop records the handoff span itself (it knows
    # every timestamp already): the executor then only keeps ``parent``, which
    # the flow model uses to match a queued item to its hop.
    by_hop: bool = False


submitting = _Submitting()


def _build_handoff(payload: tuple[Any, ...]) -> tuple[str, Attributes]:
    (function, executor_kind, executor_id, queued_tid, queued_tname, run_tid, run_tname,
     submit_ns, start_ns, end_ns) = payload
    return semconv.HANDOFF, {
        semconv.CODE_FUNCTION_NAME: function,
        semconv.EXECUTOR_KIND: executor_kind,
        semconv.EXECUTOR_ID: executor_id,
        semconv.QUEUED_THREAD_ID: queued_tid,
        semconv.QUEUED_THREAD_NAME: queued_tname,
        semconv.THREAD_ID: run_tid,
        semconv.THREAD_NAME: run_tname,
        semconv.QUEUE_WAIT_MS: ms(submit_ns, start_ns),
        semconv.RUN_TIME_MS: ms(start_ns, end_ns),
    }


def record_handoff(
    tracer: Tracer,
    parent: ParentRef,
    function: str,
    executor_kind: str,
    executor_id: int,
    queued_by: threading.Thread,
    ran_on: threading.Thread,
    submit_ns: int,
    start_ns: int,
    end_ns: int,
) -> None:
    """Record one work item's trip through an executor (queued → started → done)."""
    deferred.record(
        _build_handoff,
        tracer,
        parent,
        submit_ns,
        end_ns,
        (function, executor_kind, executor_id, queued_by.ident, queued_by.name,
         ran_on.ident, ran_on.name, submit_ns, start_ns, end_ns),
    )
