"""Traces as trees on a terminal.

Two pieces, usable apart:

* :func:`render_trace` is pure: finished spans in, a rich renderable out, one
  tree per trace, each span under its parent, siblings in start order.  Each line
  says what the span did in tracebridge's terms: which function hopped from which
  thread to which, through which executor, how long it queued and ran, which
  ``Local`` attribute was read and whether it was there, which ``timeout`` fired,
  and what raised.  A span the watchdog exported while its work was still in
  flight (a hang's partial trace, marked ``tracebridge.incomplete``) says so in
  yellow, and a watchdog report written on a span shows as one red line under
  it: the report's first line, never its stacks.
* :class:`ConsoleTraceExporter` is a ``SpanExporter`` that collects spans per
  trace and prints a trace's tree once it is complete (see its docstring for
  what "complete" means when some spans are recorded after their parents end).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.text import Text
from rich.tree import Tree

from tracebridge import semconv

__all__ = ["ERROR_MARK", "INCOMPLETE_MARK", "REPORT_MARK", "ConsoleTraceExporter", "render_trace"]

logger = logging.getLogger(__name__)

_DEFAULT_GRACE_S = 1.0
_DEFAULT_MAX_PENDING_TRACES = 1000
# How many printed trace ids to remember, to label spans that arrive after
# their trace was printed as late rather than as a new trace.
_REMEMBERED_TRACES = 10_000
# Measuring width when printing into a file or pipe (no line is this long).
_UNBOUNDED_WIDTH = 100_000

ERROR_MARK = "✗"
"""Printed before the error of a failed span (which is also styled red)."""

INCOMPLETE_MARK = "⏳"
"""Printed before "still running" on a span exported unfinished (styled yellow)."""

REPORT_MARK = "⚠"
"""Printed before a watchdog report's first line under the span it names (styled red)."""

_PREFIX = semconv.INSTRUMENTATION_NAME + "."

# Span name -> (short label, style).  LOCAL_ACCESS is labelled with its operation.
_SHORT_NAMES: Mapping[str, tuple[str, str]] = {
    semconv.SYNC_TO_ASYNC: ("sync_to_async", "bold cyan"),
    semconv.ASYNC_TO_SYNC: ("async_to_sync", "bold magenta"),
    semconv.HANDOFF: ("handoff", "cyan"),
    semconv.TIMEOUT_EXPIRY: ("timeout expired", "bold yellow"),
}


# ---------------------------------------------------------------------------
# Rendering (pure).


def render_trace(spans: Iterable[ReadableSpan]) -> Group:
    """Render finished spans as one tree per trace.

    Spans nest under their parents; siblings are sorted by start time.  A span
    whose parent is not among ``spans`` (a remote parent, or one not recorded)
    is shown at the top of its trace with a note.  Traces are ordered by their
    first span's start.  Spans marked ``tracebridge.incomplete`` say they were
    still running when exported; ``tracebridge.watchdog.report`` events add one
    red line under their span (the report's first line).

    Args:
        spans: finished spans, in any order, of one or more traces.  Anything
            shaped like an SDK ``ReadableSpan`` works, so files read back can be
            rendered offline.

    Returns:
        A rich ``Group`` holding one ``Tree`` per trace (empty when ``spans`` is).
    """
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    ordered = sorted(by_trace.items(), key=lambda item: (_first_start(item[1]), item[0]))
    return Group(*(_trace_tree(trace_id, trace_spans) for trace_id, trace_spans in ordered))


def _first_start(spans: Iterable[ReadableSpan]) -> int:
    return min((_start(span) for span in spans), default=0)


def _trace_tree(trace_id: int, spans: Sequence[ReadableSpan], *, late: bool = False) -> Tree:
    by_id = {span.context.span_id: span for span in spans}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent
        key = parent.span_id if parent is not None and parent.span_id in by_id else None
        children.setdefault(key, []).append(span)
    for siblings in children.values():
        siblings.sort(key=lambda span: (_start(span), span.context.span_id))

    tree = Tree(_trace_label(trace_id, spans, late=late), guide_style="dim")
    # Iterative, so a deeply nested trace cannot hit the recursion limit.
    stack: list[tuple[Tree, ReadableSpan]] = [(tree, span) for span in reversed(children.get(None, []))]
    shown = 0
    while stack:
        node, span = stack.pop()
        shown += 1
        shown_parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        missing = span.parent is not None and shown_parent is None
        branch = node.add(_span_label(span, shown_parent, parent_missing=missing))
        stack.extend((branch, child) for child in reversed(children.get(span.context.span_id, [])))
    if shown < len(spans):
        # Only a malformed input (spans that are each other's ancestors, e.g.
        # from a hand-edited file) leaves spans unreached: show them anyway.
        for span in spans:
            if _in_cycle(span, by_id):
                tree.add(_span_label(span, None, parent_missing=False).append("  (parent cycle)", style="dim red"))
    return tree


def _in_cycle(span: ReadableSpan, by_id: Mapping[int, ReadableSpan]) -> bool:
    """Whether following ``span``'s parents never reaches a top-level span."""
    seen: set[int] = set()
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        if current.context.span_id in seen:
            return True
        seen.add(current.context.span_id)
        current = by_id.get(current.parent.span_id)
    return False


def _trace_label(trace_id: int, spans: Sequence[ReadableSpan], *, late: bool) -> Text:
    label = Text()
    if late:
        label.append("late spans of trace ", style="bold yellow")
        label.append(f"{trace_id:032x}", style="bold")
        label.append("  (arrived after the trace was printed)", style="dim")
    else:
        label.append(f"trace {trace_id:032x}", style="bold")
    label.append(f"  {len(spans)} span{'s' if len(spans) != 1 else ''}", style="dim")
    starts = [_start(span) for span in spans]
    ends = [span.end_time for span in spans if span.end_time is not None]
    if ends:
        label.append(f"  {_format_ms((max(ends) - min(starts)) / 1e6)}", style="dim")
    running = sum(1 for span in spans if _incomplete(span))
    if running:
        # A hang's partial trace: say so before the details, it changes how to read every duration.
        label.append(f"  {INCOMPLETE_MARK} partial trace: {running} still running", style="yellow")
    threads = _thread_names(sorted(spans, key=_start))
    if threads:
        label.append(f"  threads: {', '.join(threads)}", style="dim")
    return label


def _thread_names(spans: Iterable[ReadableSpan]) -> list[str]:
    names: dict[str, None] = {}  # insertion-ordered set
    for span in spans:
        attributes = span.attributes or {}
        for key in (semconv.CALLER_THREAD_NAME, semconv.QUEUED_THREAD_NAME, semconv.THREAD_NAME):
            name = attributes.get(key)
            if isinstance(name, str):
                names.setdefault(name, None)
    return list(names)


_Part = tuple[str, str]  # (text, rich style) of one field of a span's line


def _span_label(span: ReadableSpan, parent: ReadableSpan | None, *, parent_missing: bool) -> Text:
    """One span's line: its short name, then what, where, how long and how it ended."""
    attributes: Mapping[str, Any] = span.attributes or {}
    parent_attributes: Mapping[str, Any] = (parent.attributes or {}) if parent is not None else {}
    label = Text()
    label.append(*_short_name(span.name, attributes))
    parts = [
        *_subject(attributes, parent_attributes),
        *_placement(attributes),
        *_timing(span, attributes),
        *_outcome(span, attributes),
    ]
    if parent_missing and span.parent is not None:
        parts.append((f"(parent {span.parent.span_id:016x} not in this trace)", "dim"))
    for text, style in parts:
        label.append("  ")
        label.append(text, style=style)
    for line in _watchdog_lines(span):
        # Under the span, not after it: the report's title is a sentence of its own.
        label.append("\n")
        label.append(line, style="red")
    return label


def _short_name(name: str, attributes: Mapping[str, Any]) -> _Part:
    if name == semconv.LOCAL_ACCESS:
        return f"local {attributes.get(semconv.LOCAL_OPERATION, '?')}", "bold blue"
    if name in _SHORT_NAMES:
        return _SHORT_NAMES[name]
    # A user's own span, or a tracebridge span this renderer has no short name for.
    return name.removeprefix(_PREFIX), "bold"


def _subject(attributes: Mapping[str, Any], parent_attributes: Mapping[str, Any]) -> Iterator[_Part]:
    """What the span is about: the function, application, request or Local attribute."""
    function = attributes.get(semconv.CODE_FUNCTION_NAME)
    # A handoff runs the function its parent hop names: say it once.
    if function and function != parent_attributes.get(semconv.CODE_FUNCTION_NAME):
        yield str(function), "green"
    application = attributes.get(semconv.WSGI_APPLICATION) or attributes.get(semconv.ASGI_APPLICATION)
    if application:
        yield str(application), "green"
    method, path = attributes.get(semconv.HTTP_REQUEST_METHOD), attributes.get(semconv.URL_PATH)
    if method or path:
        yield " ".join(str(part) for part in (method, path) if part), ""
    status_code = attributes.get(semconv.HTTP_RESPONSE_STATUS_CODE)
    if status_code is not None:
        yield str(status_code), ""
    scope_id = attributes.get(semconv.SERVER_SCOPE_ID)
    if scope_id is not None:
        yield f"scope {scope_id}", ""
    end_reason = attributes.get(semconv.SERVER_END_REASON)
    if end_reason:
        yield str(end_reason), "dim italic"
    local_attribute = attributes.get(semconv.LOCAL_ATTRIBUTE)
    if local_attribute is not None:
        yield str(local_attribute), "green"
        found = attributes.get(semconv.LOCAL_FOUND)
        if found is False:
            yield "missing", "yellow"
        elif found is True and attributes.get(semconv.LOCAL_OPERATION) != semconv.LOCAL_OP_SET:
            yield "found", "dim"
        if attributes.get(semconv.LOCAL_THREAD_CRITICAL):
            yield "thread_critical", "dim"


def _placement(attributes: Mapping[str, Any]) -> Iterator[_Part]:
    """Where it ran: threads, and the rule that chose the executor or loop."""
    threads = _threads(attributes)
    if threads:
        yield threads, ""
    for key in (semconv.EXECUTOR_KIND, semconv.LOOP_ROUTE):
        value = attributes.get(key)
        if value:
            yield str(value), "dim italic"
    if attributes.get(semconv.LOOP_NEW):
        yield "new loop", "dim italic"


def _timing(span: ReadableSpan, attributes: Mapping[str, Any]) -> Iterator[_Part]:
    """Queue wait and run time for hops, limit and elapsed for timeouts, else the duration."""
    wait = _number(attributes, semconv.QUEUE_WAIT_MS)
    run = _number(attributes, semconv.RUN_TIME_MS)
    if wait is not None:
        # A call that queued longer than it ran is what a saturated
        # thread-sensitive executor looks like (asgiref#218): make it stand out.
        slow = run is not None and wait > run and wait >= 1.0
        yield f"wait {_format_ms(wait)}", "bold yellow" if slow else ""
    if run is not None:
        yield f"run {_format_ms(run)}", ""
    limit = _number(attributes, semconv.TIMEOUT_LIMIT_MS)
    if limit is not None:
        yield f"limit {_format_ms(limit)}", ""
    elapsed = _number(attributes, semconv.TIMEOUT_ELAPSED_MS)
    if elapsed is not None:
        yield f"elapsed {_format_ms(elapsed)}", ""
    cancelled = attributes.get(semconv.TIMEOUT_CANCELLED_TASK)
    if cancelled:
        yield f"cancelled {cancelled}", "yellow"
    if _incomplete(span):
        # Its end time is only when the watchdog exported it: not a duration.
        # A hop that never got a queue wait never started running.
        queued = span.name in _HOPS and wait is None
        state = "still queued" if queued else "still running"
        since = f" after {_format_ms((span.end_time - _start(span)) / 1e6)}" if span.end_time is not None else ""
        yield f"{INCOMPLETE_MARK} {state}{since} (incomplete)", "yellow"
        return
    # Local accesses are instants: no duration worth showing.
    if wait is None and run is None and elapsed is None and span.name != semconv.LOCAL_ACCESS:
        if span.end_time is not None:
            yield _format_ms((span.end_time - _start(span)) / 1e6), ""


def _outcome(span: ReadableSpan, attributes: Mapping[str, Any]) -> Iterator[_Part]:
    """The error the span ended with, red and marked, if any."""
    error = _error(span, attributes)
    if error:
        yield f"{ERROR_MARK} {error}", "bold red"


_HOPS = frozenset({semconv.SYNC_TO_ASYNC, semconv.ASYNC_TO_SYNC, semconv.HANDOFF})


def _incomplete(span: ReadableSpan) -> bool:
    """Whether the watchdog exported ``span`` while its work was still in flight."""
    return (span.attributes or {}).get(semconv.INCOMPLETE) is True


def _watchdog_lines(span: ReadableSpan) -> list[str]:
    """One line per watchdog report written on ``span``: the report's title, not its chain or stacks."""
    lines: list[str] = []
    seen: set[object] = set()
    for event in getattr(span, "events", None) or ():
        if event.name != semconv.WATCHDOG_REPORT:
            continue
        attributes = event.attributes or {}
        report_id = attributes.get(semconv.WATCHDOG_REPORT_ID)
        if report_id is not None:
            if report_id in seen:
                continue
            seen.add(report_id)
        message = str(attributes.get(semconv.WATCHDOG_MESSAGE) or "")
        title = message.strip().split("\n", 1)[0].strip()
        if not title:
            kind = attributes.get(semconv.WATCHDOG_KIND) or "problem"
            title = f"watchdog report: {kind}"
        lines.append(f"{REPORT_MARK} {title}")
    return lines


def _number(attributes: Mapping[str, Any], key: str) -> float | None:
    value = attributes.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _threads(attributes: Mapping[str, Any]) -> str:
    """``caller → runner`` for hops and handoffs, the one thread for anything else."""
    ran_on = attributes.get(semconv.THREAD_NAME)
    came_from = attributes.get(semconv.CALLER_THREAD_NAME) or attributes.get(semconv.QUEUED_THREAD_NAME)
    if came_from and ran_on:
        return f"{came_from} → {ran_on}"
    if ran_on:
        return f"on {ran_on}"
    if came_from:
        return f"from {came_from}"
    return ""


def _error(span: ReadableSpan, attributes: Mapping[str, Any]) -> str:
    """``error.type: message`` of a failed span, or "" when it did not fail."""
    error_type = attributes.get(semconv.ERROR_TYPE)
    status = span.status
    failed = status is not None and status.status_code is StatusCode.ERROR
    if not failed and not error_type:
        return ""
    description = (status.description or "") if status is not None else ""
    if not error_type:
        return description or "error"
    # end_span() writes the description as "ClassName: message": drop the
    # class name, error.type already says it (fully qualified).
    short_type = str(error_type).rpartition(".")[2]
    message = description.removeprefix(f"{short_type}: ")
    if message != description:
        return f"{error_type}: {message}"
    if description and description != short_type:
        return f"{error_type} ({description})"
    return str(error_type)


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


def _format_ms(value: float) -> str:
    # No space before the unit: a terminal-width wrap must not split "10.3ms".
    if value < 1:
        return f"{value:.3f}ms"
    if value < 10:
        return f"{value:.2f}ms"
    if value < 1000:
        return f"{value:.1f}ms"
    return f"{value / 1000:.2f}s"


class _Unwrapped:
    """A renderable drawn as wide as its longest line, even past the console's width."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        natural = Measurement.get(console, options.update_width(_UNBOUNDED_WIDTH), self.renderable).maximum
        yield from console.render(self.renderable, options.update_width(max(natural, options.max_width)))


# ---------------------------------------------------------------------------
# The exporter.


@dataclass
class _PendingTrace:
    """Spans of one trace that have arrived but not been printed yet."""

    first_at: float
    """``time.monotonic()`` when its first span arrived."""

    late: bool
    """The trace was printed before: these spans arrived after it."""

    spans: list[ReadableSpan] = field(default_factory=list)

    root_at: float | None = None
    """When its root span (no parent, or a remote one) arrived; None until then."""

    def ready_since(self) -> float | None:
        """When the trace became printable (its root ended, or it is a late batch)."""
        if self.root_at is not None:
            return self.root_at
        return self.first_at if self.late else None


class ConsoleTraceExporter(SpanExporter):
    """Prints each trace as a tree (see :func:`render_trace`) once it is complete.

    **When a trace is printed.**  A trace's root span ends last among the spans
    made on the spot, but tracebridge records Local accesses and executor
    handoffs cheaply and builds their spans later (``tracebridge.flush()`` or a
    background drain every 0.2 s), so they can arrive *after* the root.  So a
    trace is printed ``grace`` seconds after its root span arrives, which catches
    those late leaves in the normal case, or at once on :meth:`force_flush` (which
    ``tracebridge.flush()`` reaches after draining the deferred spans, so a flush
    prints complete trees) or :meth:`shutdown`.  Spans that still arrive after
    their trace was printed are printed as a small "late spans" tree of their
    own rather than dropped.  Traces whose root never arrives are printed on
    ``shutdown``, or when more than ``max_pending_traces`` are waiting (oldest
    first).

    ``export`` is called by the span processor's worker thread; a timer thread
    (started on first need, daemon) prints traces whose grace ran out while no
    new spans arrive.  Nothing here raises into the caller: failures are logged
    and ``export`` returns FAILURE.

    Args:
        console: where to print.  Defaults to a rich ``Console`` on stdout.
        stream: a text stream to print to instead (not both).
        grace: seconds to wait after a root span for late leaves; 0 prints as
            soon as the root arrives; None prints only on ``force_flush`` /
            ``shutdown``.
        max_pending_traces: bound on traces kept waiting for their root.
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        stream: TextIO | None = None,
        grace: float | None = _DEFAULT_GRACE_S,
        max_pending_traces: int = _DEFAULT_MAX_PENDING_TRACES,
    ) -> None:
        if console is not None and stream is not None:
            raise ValueError("ConsoleTraceExporter takes console= or stream=, not both")
        if grace is not None and grace < 0:
            raise ValueError(f"grace must be >= 0 seconds or None, not {grace!r}")
        if max_pending_traces < 1:
            raise ValueError(f"max_pending_traces must be at least 1, not {max_pending_traces!r}")
        self.console = console if console is not None else Console(file=stream)
        self._grace = grace
        self._max_pending = max_pending_traces
        # One condition guards all state below; the timer thread waits on it.
        self._cond = threading.Condition()
        self._pending: OrderedDict[int, _PendingTrace] = OrderedDict()
        self._printed: OrderedDict[int, None] = OrderedDict()
        self._timer: threading.Thread | None = None
        self._shut_down = False
        # Held while printing, so two trees never interleave.
        self._print_lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Buffer ``spans`` and print any trace that became due."""
        if self._shut_down:
            return SpanExportResult.FAILURE
        try:
            with self._cond:
                now = time.monotonic()
                for span in spans:
                    self._add(span, now)
                due = self._take(now)
                if self._grace and self._pending:
                    self._ensure_timer()
                    self._cond.notify()
            self._print(due)
        except Exception:
            logger.exception("tracebridge: console exporter failed; spans were not printed")
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Print every trace whose root has arrived, without waiting for its grace."""
        try:
            with self._cond:
                due = self._take(time.monotonic(), flush=True)
            self._print(due)
        except Exception:
            logger.exception("tracebridge: console exporter failed to flush")
            return False
        return True

    def shutdown(self) -> None:
        """Print everything still buffered, complete or not, and stop.  Idempotent."""
        with self._cond:
            if self._shut_down:
                return
            self._shut_down = True
            due = self._take(time.monotonic(), everything=True)
            self._cond.notify_all()
        timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join(timeout=1.0)
        try:
            self._print(due)
        except Exception:
            logger.exception("tracebridge: console exporter failed at shutdown")

    # -- internals (call with self._cond held unless noted) -------------------

    def _add(self, span: ReadableSpan, now: float) -> None:
        trace_id = span.context.trace_id
        pending = self._pending.get(trace_id)
        if pending is None:
            pending = _PendingTrace(first_at=now, late=trace_id in self._printed)
            self._pending[trace_id] = pending
        pending.spans.append(span)
        parent = span.parent
        if (parent is None or parent.is_remote) and pending.root_at is None:
            pending.root_at = now

    def _take(
        self, now: float, *, flush: bool = False, everything: bool = False
    ) -> list[tuple[int, _PendingTrace]]:
        """Remove and return the traces to print now, oldest first."""
        due: list[tuple[int, _PendingTrace]] = []
        for trace_id, pending in list(self._pending.items()):
            ready = pending.ready_since()
            if everything or (ready is not None and (
                flush or (self._grace is not None and ready + self._grace <= now)
            )):
                due.append((trace_id, pending))
                del self._pending[trace_id]
        # Too many traces waiting for roots that may never come: print the oldest.
        while len(self._pending) > self._max_pending:
            due.append(self._pending.popitem(last=False))
        for trace_id, _ in due:
            self._printed[trace_id] = None
            self._printed.move_to_end(trace_id)
        while len(self._printed) > _REMEMBERED_TRACES:
            self._printed.popitem(last=False)
        return due

    def _seconds_to_next_due(self, now: float) -> float | None:
        assert self._grace is not None
        readies = [ready for pending in self._pending.values() if (ready := pending.ready_since()) is not None]
        if not readies:
            return None
        return max(0.0, min(readies) + self._grace - now)

    def _ensure_timer(self) -> None:
        if self._timer is None:
            self._timer = threading.Thread(target=self._run_timer, name="tracebridge-console", daemon=True)
            self._timer.start()

    def _run_timer(self) -> None:
        # Runs on the "tracebridge-console" thread: sleeps until the earliest
        # grace runs out (or new spans arrive), prints what is due, repeats.
        while True:
            with self._cond:
                while True:
                    if self._shut_down:
                        return
                    now = time.monotonic()
                    delay = self._seconds_to_next_due(now)
                    if delay == 0.0:
                        break
                    self._cond.wait(delay)
                due = self._take(now)
            try:
                self._print(due)
            except Exception:
                logger.exception("tracebridge: console exporter failed to print a trace")

    def _print(self, due: list[tuple[int, _PendingTrace]]) -> None:
        # Called without self._cond held: rendering and writing to a terminal
        # can be slow, and other threads' export()/force_flush() need the state.
        if not due:
            return
        console = self.console
        # Traces flushed together (e.g. concurrent requests) print in the order
        # they started, not the order their spans happened to arrive in.
        due = sorted(due, key=lambda item: (_first_start(item[1].spans), item[0]))
        with self._print_lock:
            for trace_id, pending in due:
                tree = _trace_tree(trace_id, pending.spans, late=pending.late)
                if console.is_terminal:
                    console.print(tree)  # long lines wrap under the tree's guides
                else:
                    # Into a file or pipe each span stays on one line, so the
                    # output can be grepped.
                    console.print(_Unwrapped(tree), crop=False)
