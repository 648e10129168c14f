"""Perfetto / chrome://tracing timeline: one track per thread, arrows between them.

The Chrome trace-event JSON format (``{"traceEvents": [...]}``) that
https://ui.perfetto.dev and ``chrome://tracing`` open.  What it shows:

* **One track per thread**, named after the thread (``thread_name`` metadata),
  in one process per ``service.name``.
* **Hops** (``sync_to_async``/``async_to_sync``) as two complete (``X``) slices:
  on the *caller's* track, the whole call from submission to return (with a
  nested ``queued`` slice for the time before the callee started: a long queue
  wait is a long bar, red-tinted when it exceeds the run time), and on the
  track of the thread that *ran* it, the run itself.
* **Flow arrows** (``s``/``f`` events bound to the enclosing slices) from the
  submission on the caller's track to the start of the run, and from the end of
  the run back to the caller.
* **Handoffs** through a thread-sensitive executor as a slice on the running
  thread (with arrows of their own when no hop span covers them), and every
  other span (``Local`` accesses, timeout expiries, your own spans) as a slice
  on the thread it ran on: its ``thread.id`` attribute, else its parent's
  thread, else its children's.

Coroutines interleave on an event loop's thread, so slices there need not
nest; Chrome's format requires that they do.  Slices that would overlap
without nesting go to an extra track next to the thread's, named
``<thread> (overlapping N)``.

:class:`PerfettoExporter` keeps every span it is given and rewrites the file,
atomically, at each flush and at shutdown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from tracebridge import semconv

from ._files import WholeDocumentExporter, json_bytes
from .otlp_json import hex_span_id, hex_trace_id

__all__ = ["FORMAT_NAME", "PerfettoExporter", "encode", "is_perfetto_json"]

FORMAT_NAME = "Perfetto (Chrome trace-event JSON)"

_PREFIX = semconv.INSTRUMENTATION_NAME + "."
_UNKNOWN_THREAD = "(thread not recorded)"
_SERVICE_NAME = "service.name"
_CATEGORY = semconv.INSTRUMENTATION_NAME
_FLOW_CATEGORY = semconv.INSTRUMENTATION_NAME + ".flow"
# Slices from different clocks (the hop's and the executor's) that should nest
# may overshoot each other by a few microseconds: clamp instead of splitting
# them onto an extra track.
_NEST_TOLERANCE_NS = 100_000
# A flow event must fall strictly inside the slice it binds to.
_INSIDE_NS = 1

_ThreadKey = tuple[int, int | None, str]  # (pid, thread id, thread name)


@dataclass
class _Slice:
    """One complete event before lane assignment (times in ns since the epoch)."""

    thread: _ThreadKey
    name: str
    start: int
    end: int
    category: str
    args: dict[str, Any]
    color: str | None = None
    lineage: frozenset[int] = frozenset()
    """Span ids of the span this slice draws and of its ancestors."""
    lane: int = 0

    def related(self, other: _Slice) -> bool:
        """Whether the two slices draw the same span, or one draws an ancestor of the other's."""
        return bool(self.lineage & other.lineage) and (
            self.lineage <= other.lineage or other.lineage <= self.lineage
        )


@dataclass
class _Flow:
    """An arrow from a point in one slice to a point in another."""

    name: str
    source: _Slice
    source_ns: int
    target: _Slice
    target_ns: int


def _thread_of(attributes: Mapping[str, Any], id_key: str, name_key: str) -> tuple[int | None, str] | None:
    name = attributes.get(name_key)
    ident = attributes.get(id_key)
    if name is None and ident is None:
        return None
    return (int(ident) if isinstance(ident, int) else None, str(name) if name is not None else f"thread {ident}")


def _came_from(attributes: Mapping[str, Any]) -> tuple[int | None, str] | None:
    return _thread_of(attributes, semconv.CALLER_THREAD_ID, semconv.CALLER_THREAD_NAME) or _thread_of(
        attributes, semconv.QUEUED_THREAD_ID, semconv.QUEUED_THREAD_NAME
    )


def _ran_on(attributes: Mapping[str, Any]) -> tuple[int | None, str] | None:
    return _thread_of(attributes, semconv.THREAD_ID, semconv.THREAD_NAME)


def _number(attributes: Mapping[str, Any], key: str) -> float | None:
    value = attributes.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _is_crossing(span: ReadableSpan) -> bool:
    """A span that went from one thread to another: a hop or a handoff with both threads and timings."""
    attributes = span.attributes or {}
    return (
        _came_from(attributes) is not None
        and _ran_on(attributes) is not None
        and _number(attributes, semconv.QUEUE_WAIT_MS) is not None
        and _number(attributes, semconv.RUN_TIME_MS) is not None
    )


def _short_function(attributes: Mapping[str, Any]) -> str:
    function = attributes.get(semconv.CODE_FUNCTION_NAME)
    return str(function).rsplit(".", 1)[-1] if function else ""


def _args(span: ReadableSpan) -> dict[str, Any]:
    args: dict[str, Any] = {
        "trace_id": hex_trace_id(span.context.trace_id),
        "span_id": hex_span_id(span.context.span_id),
    }
    if span.parent is not None:
        args["parent_span_id"] = hex_span_id(span.parent.span_id)
    args["span"] = span.name
    for key, value in (span.attributes or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            value = repr(value)
        elif isinstance(value, bytes):
            value = value.hex()
        elif isinstance(value, tuple):
            value = list(value)
        args[key] = value
    if span.status.status_code is StatusCode.ERROR:
        args["status"] = span.status.description or "error"
    return args


class _Layout:
    """Turns spans into slices and flows, deciding which thread each belongs to."""

    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self.spans = spans
        self.by_id = {(span.context.trace_id, span.context.span_id): span for span in spans}
        self.children: dict[tuple[int, int], list[ReadableSpan]] = {}
        for span in spans:
            if span.parent is not None:
                self.children.setdefault((span.context.trace_id, span.parent.span_id), []).append(span)
        self.pids: dict[str, int] = {}
        self._own: dict[int, tuple[int | None, str] | None] = {}
        self.slices: list[_Slice] = []
        self.flows: list[_Flow] = []

    def pid(self, span: ReadableSpan) -> int:
        service = str(span.resource.attributes.get(_SERVICE_NAME, "") or "unknown_service")
        return self.pids.setdefault(service, len(self.pids) + 1)

    def _parent(self, span: ReadableSpan) -> ReadableSpan | None:
        if span.parent is None:
            return None
        return self.by_id.get((span.context.trace_id, span.parent.span_id))

    def inner_thread(self, span: ReadableSpan) -> tuple[int | None, str] | None:
        """The thread the span's children run on: a hop's callee thread, else the span's own."""
        if _is_crossing(span):
            return _ran_on(span.attributes or {})
        return self.own_thread(span)

    def own_thread(self, span: ReadableSpan) -> tuple[int | None, str] | None:
        """Where a non-crossing span goes: its thread attribute, its parent's inner thread, or its children's."""
        key = id(span)
        if key in self._own:
            return self._own[key]
        self._own[key] = None  # a parent cycle in a malformed file ends here
        found = _ran_on(span.attributes or {})
        # Up the ancestors (a hop's children ran on its callee's thread), without
        # recursion: a deep trace must not hit the recursion limit.
        top: ReadableSpan = span
        ancestor = self._parent(span)
        steps = 0
        while found is None and ancestor is not None and steps < len(self.spans):
            found = _ran_on(ancestor.attributes or {})
            top = ancestor
            ancestor = self._parent(ancestor)
            steps += 1
        if found is None:
            # A span with no thread anywhere above (a request's root span):
            # where its children came from.
            children = self.children.get((span.context.trace_id, span.context.span_id), [])
            for child in sorted(children, key=lambda child: child.start_time or 0):
                child_attributes = child.attributes or {}
                found = _came_from(child_attributes) if _is_crossing(child) else _ran_on(child_attributes)
                if found is not None:
                    break
        if found is None and top is not span:
            found = self.own_thread(top)
        self._own[key] = found
        return found

    def key(self, span: ReadableSpan, thread: tuple[int | None, str] | None) -> _ThreadKey:
        if thread is None:
            return (self.pid(span), None, _UNKNOWN_THREAD)
        return (self.pid(span), thread[0], thread[1])

    def lineage(self, span: ReadableSpan) -> frozenset[int]:
        ids = {span.context.span_id}
        ancestor = self._parent(span)
        while ancestor is not None and ancestor.context.span_id not in ids:
            ids.add(ancestor.context.span_id)
            ancestor = self._parent(ancestor)
        return frozenset(ids)

    def add(self, span: ReadableSpan, thread: _ThreadKey, name: str, start: int, end: int,
            args: dict[str, Any], color: str | None = None) -> _Slice:
        piece = _Slice(thread, name, start, max(start, end), _CATEGORY, args, color, self.lineage(span))
        self.slices.append(piece)
        return piece

    def build(self) -> None:
        for span in self.spans:
            if span.start_time is None or span.end_time is None:
                continue
            if _is_crossing(span):
                self._crossing(span)
            else:
                self._plain(span)

    def _label(self, span: ReadableSpan) -> str:
        attributes = span.attributes or {}
        if span.name == semconv.LOCAL_ACCESS:
            operation = attributes.get(semconv.LOCAL_OPERATION, "?")
            return f"local {operation} {attributes.get(semconv.LOCAL_ATTRIBUTE, '')}".rstrip()
        name = span.name.removeprefix(_PREFIX)
        function = _short_function(attributes)
        return f"{name} {function}" if function else name

    def _plain(self, span: ReadableSpan) -> None:
        assert span.start_time is not None and span.end_time is not None
        color = "terrible" if span.status.status_code is StatusCode.ERROR else None
        self.add(span, self.key(span, self.own_thread(span)), self._label(span), span.start_time, span.end_time,
                 _args(span), color)

    def _crossing(self, span: ReadableSpan) -> None:
        assert span.start_time is not None and span.end_time is not None
        attributes = span.attributes or {}
        caller = self.key(span, _came_from(attributes))
        runner = self.key(span, _ran_on(attributes))
        wait_ms = _number(attributes, semconv.QUEUE_WAIT_MS) or 0.0
        run_ms = _number(attributes, semconv.RUN_TIME_MS) or 0.0
        submit, end = span.start_time, span.end_time
        run_start = min(end, submit + round(wait_ms * 1e6))
        run_end = min(end, run_start + round(run_ms * 1e6))
        failed = span.status.status_code is StatusCode.ERROR
        args = _args(span)
        function = _short_function(attributes) or self._label(span)
        kind = span.name.removeprefix(_PREFIX)
        run_slice = self.add(span, runner, function, run_start, run_end,
                             {"ran": f"{kind} from {caller[2]}", **args}, "terrible" if failed else None)
        parent = self._parent(span)
        if span.name == semconv.HANDOFF and parent is not None and _is_crossing(parent):
            # The hop above already draws the caller's side and the arrows;
            # this slice shows the executor's own view of the work item.
            run_slice.name = f"handoff {function}"
            return
        call_slice = self.add(span, caller, self._label(span), submit, end, args, "terrible" if failed else None)
        target = run_slice
        if wait_ms > 0:
            slow = wait_ms > run_ms and wait_ms >= 1.0
            self.add(span, caller, "queued", submit, run_start,
                     {"queue_wait_ms": wait_ms, "waiting_for": runner[2], "span_id": args["span_id"]},
                     "bad" if slow else None)
        self.flows.append(_Flow("submit", call_slice, submit, target, run_start))
        self.flows.append(_Flow("return", target, run_end, call_slice, end))


def _assign_lanes(slices: list[_Slice]) -> dict[_ThreadKey, int]:
    """Put each slice on a lane of its thread where it nests; returns lanes per thread."""
    by_thread: dict[_ThreadKey, list[_Slice]] = {}
    for piece in slices:
        by_thread.setdefault(piece.thread, []).append(piece)
    lanes_per_thread: dict[_ThreadKey, int] = {}
    for thread, pieces in by_thread.items():
        pieces.sort(key=lambda piece: (piece.start, -piece.end))
        lanes: list[list[_Slice]] = []  # per lane, the stack of open slices
        for piece in pieces:
            for number, stack in enumerate(lanes):
                while stack and stack[-1].end <= piece.start:
                    stack.pop()
                if stack and piece.end > stack[-1].end:
                    top = stack[-1]
                    if piece.end - top.end > _NEST_TOLERANCE_NS or not piece.related(top):
                        continue  # overlaps without nesting: try the next lane
                    piece.end = top.end  # one piece of work timed by two clocks: nest it
                piece.lane = number
                stack.append(piece)
                break
            else:
                piece.lane = len(lanes)
                lanes.append([piece])
        lanes_per_thread[thread] = max(1, len(lanes))
    return lanes_per_thread


def encode(spans: Iterable[ReadableSpan]) -> dict[str, Any]:
    """Spans as one Chrome trace-event JSON document (timestamps relative to the first span)."""
    ordered = sorted(spans, key=lambda span: (span.start_time or 0, span.context.span_id))
    layout = _Layout(ordered)
    layout.build()
    lanes = _assign_lanes(layout.slices)
    origin = min((piece.start for piece in layout.slices), default=0)

    def micros(nanos: int) -> float:
        return round((nanos - origin) / 1000, 3)

    # Threads in order of first appearance; each lane is a track (a "tid").
    tids: dict[tuple[_ThreadKey, int], int] = {}
    for piece in sorted(layout.slices, key=lambda piece: piece.start):
        for lane in range(lanes[piece.thread]):
            tids.setdefault((piece.thread, lane), len(tids) + 1)
    events: list[dict[str, Any]] = []
    for service, pid in layout.pids.items():
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": service}})
    for ((pid, ident, name), lane), tid in tids.items():
        label = name if lane == 0 else f"{name} (overlapping {lane})"
        thread_args: dict[str, Any] = {"name": label}
        events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": thread_args})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
    for piece in sorted(layout.slices, key=lambda piece: (piece.start, -piece.end)):
        event: dict[str, Any] = {
            "ph": "X",
            "name": piece.name,
            "cat": piece.category,
            "pid": piece.thread[0],
            "tid": tids[(piece.thread, piece.lane)],
            "ts": micros(piece.start),
            "dur": round((piece.end - piece.start) / 1000, 3),
            "args": piece.args,
        }
        if piece.color:
            event["cname"] = piece.color
        events.append(event)
    for number, flow in enumerate(layout.flows, start=1):
        for phase, piece, at in (("s", flow.source, flow.source_ns), ("f", flow.target, flow.target_ns)):
            # Strictly inside the slice, so the arrow binds to it and not to a neighbour.
            inside = min(max(at, piece.start + _INSIDE_NS), piece.end - _INSIDE_NS)
            if piece.end - piece.start < 2 * _INSIDE_NS:
                inside = piece.start
            event = {
                "ph": phase,
                "name": flow.name,
                "cat": _FLOW_CATEGORY,
                "id": number,
                "pid": piece.thread[0],
                "tid": tids[(piece.thread, piece.lane)],
                "ts": micros(inside),
            }
            if phase == "f":
                event["bp"] = "e"  # bind to the enclosing slice, not the next one
            events.append(event)
    from tracebridge import __version__

    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"generator": f"tracebridge {__version__}", "time_origin_unix_ns": origin},
    }


def is_perfetto_json(data: bytes, whole: bool = True) -> bool:
    """Whether ``data`` (a whole file, or the start of a huge one) is a Chrome trace-event document."""
    if not whole:
        head = data.lstrip()
        return head.startswith(b"{") and b'"traceEvents"' in head[:64]
    try:
        document = json.loads(data)
    except ValueError:
        return False
    if isinstance(document, dict):
        return isinstance(document.get("traceEvents"), list)
    return isinstance(document, list) and all(isinstance(event, dict) and "ph" in event for event in document)


class PerfettoExporter(WholeDocumentExporter):
    """Collects spans and writes them as one Perfetto / chrome://tracing file at each flush and at shutdown.

    Args:
        path: the file.  A trace-event JSON file already there is replaced (at
            the first flush); anything else is refused.
        max_spans: spans kept at most; later ones are dropped and counted.

    Raises:
        ValueError: ``path`` holds something other than a trace-event JSON
            file, or its folder does not exist.
    """

    format_name = FORMAT_NAME
    spec_name = "perfetto"

    @staticmethod
    def is_ours(data: bytes, whole: bool) -> bool:
        return is_perfetto_json(data, whole)

    @staticmethod
    def encode_document(spans: Sequence[ReadableSpan]) -> bytes:
        return json_bytes(encode(spans))
