"""The live feed of the flow model: what the bridges tell it, as it happens.

:class:`FlowRecorder` is installed as ``tracebridge._telemetry.flow`` by
:func:`tracebridge.flow.enable`.  The bridges call it on their own threads, on
the hot path, so every method is a handful of O(1) dict/deque operations (atomic
under the GIL: no lock), never blocks and never raises:

* :meth:`~FlowRecorder.hop_opened` puts the hop in the in-flight table with the
  executor it was submitted to and the task (and loop) that waits on it;
* :meth:`~FlowRecorder.hop_started` adds, for an ``async_to_sync`` hop, the task
  its coroutine runs as (``sync_to_async`` hops need nothing: the hop itself
  records the thread it started on);
* :meth:`~FlowRecorder.hop_closed` moves the hop out of the table into a bounded
  ring of finished hops, numbered so readers can tell how many they missed.

The in-flight table is a registry, not an event log: a reader that falls
behind can never see a hop stuck "in flight" because an event was dropped.

:class:`FlowSpanProcessor` feeds the rest from real spans (an SDK
``SpanProcessor``; its hooks only append): Local accesses and timeout expiries
for the live panels, and every real span still open (WSGI calls, server
instances, user spans), so a hang's partial trace can include them.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from asyncio import current_task as _current_task
from asyncio.events import _get_running_loop
from collections import deque
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from . import _telemetry, semconv

if TYPE_CHECKING:
    import asyncio

    from opentelemetry.context import Context

    from ._hop import Hop

__all__ = ["FlowRecorder", "FlowSpanProcessor"]

_A2S = semconv.ASYNC_TO_SYNC
_get_ident = threading.get_ident

# Spans the drain thread builds complete (nothing is in flight about them), or
# the watchdog's own partial copies: never registered as open real spans.
_BUILT_COMPLETE = frozenset(
    {semconv.SYNC_TO_ASYNC, semconv.ASYNC_TO_SYNC, semconv.HANDOFF, semconv.LOCAL_ACCESS, semconv.TIMEOUT_EXPIRY}
)

_MAX_OPEN_SPANS = 10_000

# Entry of the in-flight table: a list so hop_started can fill in the callee.
EXECUTOR, CALLER_LOOP, CALLER_TASK, CALLEE_LOOP, CALLEE_TASK = range(5)


class FlowRecorder:
    """The in-flight table, the finished-hop ring and the Local/timeout rings.

    Args:
        feed_capacity: finished hops kept (the oldest are overwritten).
        side_capacity: Local accesses and timeout expiries kept, each.
    """

    def __init__(self, feed_capacity: int = 4096, side_capacity: int = 1024) -> None:
        # Hop -> [executor, caller loop, caller task, callee loop, callee task].
        # Hops hash by identity; written by the bridges' threads, copied whole
        # (dict.copy is atomic under the GIL) by readers.
        self.inflight: dict[Hop, list[Any]] = {}
        # (seq, hop, close_ns, exception class or None, executor or None) per closed hop.
        self.finished: deque[tuple[Any, ...]] = deque(maxlen=feed_capacity)
        # (seq, operation, attribute, found, thread_critical, thread name, time_ns)
        self.locals: deque[tuple[Any, ...]] = deque(maxlen=side_capacity)
        # (seq, limit_ms, elapsed_ms, task, thread name, time_ns)
        self.timeouts: deque[tuple[Any, ...]] = deque(maxlen=side_capacity)
        # id(loop) -> (weak reference, thread ident, thread name).
        self.loops: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], int, str]] = {}
        # span_id -> open real SDK span (for partial traces).
        self.open_spans: dict[int, Span] = {}
        # next() on an itertools.count is atomic under the GIL: no lost numbers.
        self._hop_seq = itertools.count(1)
        self._side_seq = itertools.count(1)
        self.active = True

    # ------------------------------------------------------------------
    # Called by the bridges (tracebridge._hop.Hop), on their own threads.

    def hop_opened(self, hop: Hop, executor: object) -> None:
        """Caller side: the hop was submitted; ``executor`` is where it will queue (or the caller's CTE)."""
        try:
            loop = _get_running_loop()
            if loop is None:  # a sync thread calling async_to_sync
                self.inflight[hop] = [executor, None, None, None, None]
                return
            self.inflight[hop] = [executor, loop, _current_task(loop), None, None]
            self._see_loop(loop)
        except Exception:
            _telemetry.tracing_failed("flow model: hop opened")

    def hop_started(self, hop: Hop) -> None:
        """Callee side: an async_to_sync coroutine now runs as the current task of this loop."""
        if hop.name is not _A2S:  # type: ignore[attr-defined]  # set in Hop.open
            return  # a sync_to_async callee: the hop already knows its thread
        try:
            loop = _get_running_loop()
            entry = self.inflight.get(hop)
            if entry is not None and loop is not None:
                entry[CALLEE_LOOP] = loop
                entry[CALLEE_TASK] = _current_task(loop)
                self._see_loop(loop)
        except Exception:
            _telemetry.tracing_failed("flow model: hop started")

    def hop_closed(self, hop: Hop, exc: BaseException | None, close_ns: int) -> None:
        """Caller side: the result is back; the hop leaves the table for the finished ring."""
        try:
            entry = self.inflight.pop(hop, None)
            # Raw values only (the hop itself, the exception's class, the executor):
            # names and durations are computed by whoever reads the ring, off this thread.
            self.finished.append(
                (
                    next(self._hop_seq), hop, close_ns, type(exc) if exc is not None else None,
                    entry[EXECUTOR] if entry is not None else None,
                )
            )
        except Exception:
            _telemetry.tracing_failed("flow model: hop closed")

    def _see_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        # On the loop's own thread.  Ids of closed loops get reused: re-check identity.
        known = self.loops.get(id(loop))
        if known is None or known[0]() is not loop:
            thread = threading.current_thread()
            self.loops[id(loop)] = (weakref.ref(loop), thread.ident or 0, thread.name)

    def register_loop(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        """Watch ``loop`` (run by ``thread``) even before any hop touched it."""
        self.loops[id(loop)] = (weakref.ref(loop), thread.ident or 0, thread.name)

    # ------------------------------------------------------------------
    # Called by FlowSpanProcessor (span start: any thread; span end: the drain thread or the ender).

    def span_started(self, span: Span) -> None:
        if span.name in _BUILT_COMPLETE or not span.is_recording():
            return
        attributes = span.attributes or {}
        if attributes.get(semconv.INCOMPLETE):
            return
        loop = _get_running_loop()
        if loop is not None:
            self._see_loop(loop)
        if len(self.open_spans) < _MAX_OPEN_SPANS:  # spans never ended must not grow it forever
            self.open_spans[span.get_span_context().span_id] = span

    def span_ended(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        if context is not None:
            self.open_spans.pop(context.span_id, None)
        name = span.name
        if name == semconv.LOCAL_ACCESS:
            attributes = span.attributes or {}
            self.locals.append(
                (
                    next(self._side_seq),
                    attributes.get(semconv.LOCAL_OPERATION, ""),
                    attributes.get(semconv.LOCAL_ATTRIBUTE, ""),
                    bool(attributes.get(semconv.LOCAL_FOUND, True)),
                    bool(attributes.get(semconv.LOCAL_THREAD_CRITICAL, False)),
                    attributes.get(semconv.THREAD_NAME, ""),
                    span.start_time or 0,
                )
            )
        elif name == semconv.TIMEOUT_EXPIRY:
            attributes = span.attributes or {}
            self.timeouts.append(
                (
                    next(self._side_seq),
                    float(attributes.get(semconv.TIMEOUT_LIMIT_MS, 0.0)),  # type: ignore[arg-type]
                    float(attributes.get(semconv.TIMEOUT_ELAPSED_MS, 0.0)),  # type: ignore[arg-type]
                    str(attributes.get(semconv.TIMEOUT_CANCELLED_TASK, "")),
                    attributes.get(semconv.THREAD_NAME, ""),
                    span.end_time or 0,
                )
            )


class FlowSpanProcessor(SpanProcessor):
    """Feeds real spans to a :class:`FlowRecorder`.  Its hooks only append; they never block or raise."""

    def __init__(self, recorder: FlowRecorder) -> None:
        self.recorder = recorder

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        recorder = self.recorder
        if recorder.active:
            try:
                recorder.span_started(span)
            except Exception:
                _telemetry.tracing_failed("flow model: span start")

    def on_end(self, span: ReadableSpan) -> None:
        recorder = self.recorder
        if recorder.active:
            try:
                recorder.span_ended(span)
            except Exception:
                _telemetry.tracing_failed("flow model: span end")

    def shutdown(self) -> None:
        self.recorder.active = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
