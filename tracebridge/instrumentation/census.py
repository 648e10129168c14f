"""Per-request hop census: how many thread hops a request caused, and where.

:class:`HopCensus` is an OpenTelemetry ``SpanProcessor``.  Add it to your SDK
``TracerProvider`` (``AsgirefInstrumentor().instrument()`` does so for the
provider tracebridge records into) and every *local root span* — a span with
no parent in this process, such as the server span OpenTelemetry's ASGI
middleware opens per request — gets, just before it ends, the ``CENSUS_*``
attributes of :mod:`tracebridge.semconv`: total hops, per direction, per called
function (``"sync_to_async mysite.middleware.SyncOnlyMiddleware: 2"``), per
executor rule, the threads they ran on and the time they spent queued.  So
"this request did 5 hops, 2 caused by sync-only middleware X" reads off the
request span in Jaeger, without expanding the tree.

How: ``on_start`` registers a tally for each root span's trace id; every hop
(tracebridge's own bridges and the instrumented asgiref's alike) appends one
tuple to its trace's tally when it closes, on the caller's thread (a list
append: atomic, no lock); the root span's ``end`` is wrapped so the tally is
summarised onto it *before* it ends (the SDK makes ended spans read-only, and
its ``_on_ending`` hook runs too late to add attributes).  Hops that close
after their root span ended (orphaned work, or Django closing the response
after OpenTelemetry's ASGI middleware ended the request span) are not counted.
Root spans tracebridge makes itself (a hop or WSGI call with no request span
around it) get no census: they are built after the fact, off the hot path.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .. import _hop, _telemetry, semconv

__all__ = ["HopCensus"]

# trace id -> (root span id, tally).  A tally is the list of the trace's
# closed hops: raw objects, summarised only when the root ends.
_roots: dict[int, tuple[int, list[_hop.Hop]]] = {}

# Roots open at once beyond which new ones are not counted (a root span that
# is never ended must not grow this forever).
_MAX_OPEN_ROOTS = 100_000


_active: set[HopCensus] = set()
_active_lock = threading.Lock()


def _count_hop(hop: _hop.Hop) -> None:
    # _hop.on_close: the caller's thread, as the hop closes.  One dict lookup
    # and, for a counted trace, one list append (atomic: no lock).
    if not _roots:
        return  # no request span open (e.g. no ASGI middleware): nothing to count into
    try:
        entry = _roots.get(hop.trace_id)
        if entry is not None:
            entry[1].append(hop)
    except Exception:
        _telemetry.tracing_failed("hop census")


def _summary(tally: list[_hop.Hop]) -> dict[str, Any]:
    # Whichever thread ends the root span, once per request.
    s2a = sum(1 for hop in tally if hop.direction == semconv.DIRECTION_SYNC_TO_ASYNC)
    started = [hop for hop in tally if hop.thread is not None]
    attributes: dict[str, Any] = {
        semconv.CENSUS_HOPS: len(tally),
        semconv.CENSUS_SYNC_TO_ASYNC: s2a,
        semconv.CENSUS_ASYNC_TO_SYNC: len(tally) - s2a,
        semconv.CENSUS_QUEUE_WAIT_MS: sum(hop.start_ns - hop.submit_ns for hop in started) / 1e6,
    }
    if tally:
        attributes[semconv.CENSUS_BY_FUNCTION] = _most_first(Counter(f"{hop.direction} {hop.function}" for hop in tally))
        attributes[semconv.CENSUS_BY_EXECUTOR] = _most_first(Counter(_route(hop) for hop in tally))
        if started:
            attributes[semconv.CENSUS_THREADS] = sorted({hop.thread.name for hop in started})  # type: ignore[union-attr]
    return attributes


def _route(hop: _hop.Hop) -> str:
    return hop.route or "unknown"


def _most_first(counts: Counter[str]) -> list[str]:
    return [f"{key}: {count}" for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def _end_root(span: Span, trace_id: int, span_id: int, end_time: int | None = None) -> None:
    # Replaces span.end on a root span: whichever thread ends the request span.
    __traceback_hide__ = True  # noqa: F841
    try:
        span.__dict__.pop("end", None)  # back to the class's end; no span -> partial -> span cycle
        entry = _roots.get(trace_id)
        if entry is not None and entry[0] == span_id:
            del _roots[trace_id]
            span.set_attributes(_summary(entry[1]))
    except Exception:
        _telemetry.tracing_failed("hop census summary")
    span.end(end_time)


class HopCensus(SpanProcessor):
    """Counts each request's thread hops onto its root span (see the module docstring).

    Add it to an SDK ``TracerProvider`` with ``provider.add_span_processor(HopCensus())``;
    ``AsgirefInstrumentor().instrument()`` adds one for you.  Costs nothing per
    span except for root spans, and one dict lookup per hop.
    """

    def __init__(self) -> None:
        self._enabled = False
        self.enable()

    def enable(self) -> None:
        """Start counting (a new census counts at once)."""
        with _active_lock:
            self._enabled = True
            _active.add(self)
            _hop.on_close = _count_hop

    def disable(self) -> None:
        """Stop counting; roots already open still get their (partial) census when they end."""
        with _active_lock:
            self._enabled = False
            _active.discard(self)
            if not _active:
                _hop.on_close = None

    @property
    def enabled(self) -> bool:
        """Whether this census registers new root spans."""
        return self._enabled

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Register a root span (no local parent) so its trace's hops are counted."""
        if not self._enabled:
            return
        try:
            parent = span.parent
            if parent is not None and not parent.is_remote:
                return
            # tracebridge's own root spans (a hop or WSGI call with no request
            # around it) are built after the fact, when the hops are long counted.
            scope = span.instrumentation_scope
            if (scope is not None and scope.name == semconv.INSTRUMENTATION_NAME) or len(_roots) >= _MAX_OPEN_ROOTS:
                return
            context = span.get_span_context()
            trace_id = context.trace_id
            if trace_id in _roots:
                return  # a second root in one trace (same remote parent): the first one counts
            _roots[trace_id] = (context.span_id, [])
            span.end = functools.partial(_end_root, span, trace_id, context.span_id)  # type: ignore[method-assign]
        except Exception:
            _telemetry.tracing_failed("hop census root")

    def on_end(self, span: ReadableSpan) -> None:
        """Nothing to do: the census was set on the root before it ended."""

    def on_end_many(self, spans: Sequence[ReadableSpan]) -> None:
        """Nothing to do either; tracebridge's drain thread calls this once per batch instead of on_end per span."""

    def shutdown(self) -> None:
        """Stop counting (the provider is shutting down)."""
        self.disable()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return True
