"""Tests for tracebridge.exporters.console: the trace tree and the buffering exporter."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Span, Status, StatusCode
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

import tracebridge
from tracebridge import _telemetry, semconv
from tracebridge.exporters.console import (
    ERROR_MARK,
    INCOMPLETE_MARK,
    REPORT_MARK,
    ConsoleTraceExporter,
    render_trace,
)
from tracebridge.exporters.specs import FlushingBatchSpanProcessor

T0 = 1_700_000_000_000_000_000  # ns: every test span starts at a fixed offset from here


def at(ms: float) -> int:
    """Nanosecond timestamp ``ms`` milliseconds after T0."""
    return T0 + int(ms * 1_000_000)


class CountingIds(IdGenerator):
    """Trace and span ids 1, 2, 3 ...: deterministic output to compare against."""

    def __init__(self) -> None:
        self.trace_ids = iter(range(1, 1 << 30))
        self.span_ids = iter(range(1, 1 << 30))

    def generate_trace_id(self) -> int:
        return next(self.trace_ids)

    def generate_span_id(self) -> int:
        return next(self.span_ids)


class Recorder:
    """A local provider with deterministic ids and an in-memory exporter."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(id_generator=CountingIds())
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def span(self, name: str, parent: Span | None, start: float, end: float | None, **attributes: object) -> Span:
        """A span from ``start`` to ``end`` ms (left open when ``end`` is None)."""
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = self.tracer.start_span(name, context=context, start_time=at(start), attributes=attributes)  # type: ignore[arg-type]
        if end is not None:
            span.end(end_time=at(end))
        return span

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.provider.shutdown()


def hop_attributes(
    function: str, caller: str, thread: str, kind: str, wait: float, run: float
) -> dict[str, object]:
    return {
        semconv.DIRECTION: semconv.DIRECTION_SYNC_TO_ASYNC,
        semconv.CODE_FUNCTION_NAME: function,
        semconv.CALLER_THREAD_ID: 1,
        semconv.CALLER_THREAD_NAME: caller,
        semconv.THREAD_SENSITIVE: kind != semconv.EXECUTOR_LOOP_DEFAULT,
        semconv.EXECUTOR_KIND: kind,
        semconv.EXECUTOR_ID: 10,
        semconv.LOOP_ID: 20,
        semconv.THREAD_ID: 2,
        semconv.THREAD_NAME: thread,
        semconv.QUEUE_WAIT_MS: wait,
        semconv.RUN_TIME_MS: run,
    }


def request_trace(rec: Recorder) -> list[ReadableSpan]:
    """One request: a hop with a handoff and a missing Local read, a failed hop, a timeout expiry."""
    root = rec.span("GET /users/7", None, 0, None)
    hop = rec.span(semconv.SYNC_TO_ASYNC, root, 1, None, **hop_attributes(
        "app.views.load_user", "MainThread", "request-thread", semconv.EXECUTOR_THREAD_SENSITIVE_CONTEXT, 0.25, 3.25))
    rec.span(semconv.HANDOFF, hop, 1, 4.5, **{
        semconv.CODE_FUNCTION_NAME: "app.views.load_user",
        semconv.EXECUTOR_KIND: semconv.HANDOFF_EXECUTOR_THREAD_POOL,
        semconv.EXECUTOR_ID: 10,
        semconv.QUEUED_THREAD_ID: 1,
        semconv.QUEUED_THREAD_NAME: "MainThread",
        semconv.THREAD_ID: 2,
        semconv.THREAD_NAME: "request-thread",
        semconv.QUEUE_WAIT_MS: 0.25,
        semconv.RUN_TIME_MS: 3.25,
    })
    rec.span(semconv.LOCAL_ACCESS, hop, 2, 2, **{
        semconv.LOCAL_ID: "0x7f00",
        semconv.LOCAL_ATTRIBUTE: "user",
        semconv.LOCAL_OPERATION: semconv.LOCAL_OP_GET,
        semconv.LOCAL_THREAD_CRITICAL: False,
        semconv.LOCAL_FOUND: False,
        semconv.THREAD_ID: 2,
        semconv.THREAD_NAME: "request-thread",
    })
    hop.end(end_time=at(4.5))
    failed = rec.span(semconv.SYNC_TO_ASYNC, root, 5, None, **hop_attributes(
        "app.payments.charge", "MainThread", "asyncio_0", semconv.EXECUTOR_LOOP_DEFAULT, 0.1, 1.0))
    failed.set_attribute(semconv.ERROR_TYPE, "app.payments.Declined")
    failed.set_status(Status(StatusCode.ERROR, "Declined: card declined"))
    failed.end(end_time=at(6.1))
    rec.span(semconv.TIMEOUT_EXPIRY, root, 7, 7, **{
        semconv.TIMEOUT_LIMIT_MS: 20.0,
        semconv.TIMEOUT_ELAPSED_MS: 20.3,
        semconv.TIMEOUT_CANCELLED_TASK: "Task-1 (handler)",
        semconv.THREAD_ID: 1,
        semconv.THREAD_NAME: "MainThread",
    })
    root.end(end_time=at(30))
    return rec.finished()


REQUEST_TREE = """\
trace 00000000000000000000000000000001  6 spans  30.0ms  threads: MainThread, request-thread, asyncio_0
└── GET /users/7  30.0ms
    ├── sync_to_async  app.views.load_user  MainThread → request-thread  thread_sensitive_context  wait 0.250ms  run 3.25ms
    │   ├── handoff  MainThread → request-thread  thread_sensitive_thread  wait 0.250ms  run 3.25ms
    │   └── local get  user  missing  on request-thread
    ├── sync_to_async  app.payments.charge  MainThread → asyncio_0  loop_default  wait 0.100ms  run 1.00ms  ✗ app.payments.Declined: card declined
    └── timeout expired  on MainThread  limit 20.0ms  elapsed 20.3ms  cancelled Task-1 (handler)
"""


def plain_console(width: int = 200) -> tuple[Console, io.StringIO]:
    """A fixed-width, colourless console writing into a string."""
    out = io.StringIO()
    return Console(file=out, width=width, color_system=None, force_terminal=False, legacy_windows=False), out


def plain(renderable: object, width: int = 200) -> str:
    console, out = plain_console(width)
    console.print(renderable)
    return out.getvalue()


def labels(tree: Tree) -> Iterator[Text]:
    """Every label in ``tree``, depth first."""
    stack = [tree]
    while stack:
        node = stack.pop()
        assert isinstance(node.label, Text)
        yield node.label
        stack.extend(reversed(node.children))


# -- render_trace ------------------------------------------------------------


def test_render_trace_request_nests_spans_under_parents(recorder: Recorder) -> None:
    """Tests that a request renders as one tree with hops, handoff, Local read, error and expiry lines."""
    assert plain(render_trace(request_trace(recorder))) == REQUEST_TREE


def test_render_trace_spans_in_any_order_sorts_children_by_start(recorder: Recorder) -> None:
    """Tests that the tree does not depend on the order spans arrive in."""
    spans = request_trace(recorder)
    assert plain(render_trace(list(reversed(spans)))) == REQUEST_TREE
    assert plain(render_trace(spans[3:] + spans[:3])) == REQUEST_TREE


def test_render_trace_error_is_red_with_marker(recorder: Recorder) -> None:
    """Tests that a failed span's error text is styled red and starts with the error mark."""
    group = render_trace(request_trace(recorder))
    (tree,) = group.renderables
    console, _ = plain_console()
    [label] = [label for label in labels(tree) if ERROR_MARK in label.plain]
    assert label.plain.endswith(f"{ERROR_MARK} app.payments.Declined: card declined")
    style = label.get_style_at_offset(console, label.plain.index(ERROR_MARK))
    assert style.color is not None and style.color.name == "red"
    assert all(ERROR_MARK not in other.plain for other in labels(tree) if other is not label)


def test_render_trace_real_exception_shows_error_type_and_message(recorder: Recorder) -> None:
    """Tests that a span ended by tracebridge's end_span with an exception shows type and message once."""
    span = recorder.span("work", None, 0, None)
    _telemetry.end_span(span, ValueError("bad input"))
    text = plain(render_trace(recorder.finished()))
    assert text.splitlines()[1].endswith(f"{ERROR_MARK} ValueError: bad input")


def test_render_trace_local_set_and_thread_critical_get_lines(recorder: Recorder) -> None:
    """Tests that Local lines show the attribute, found only for reads, and the thread_critical flag."""
    root = recorder.span("request", None, 0, None)
    for start, operation, critical in ((1, semconv.LOCAL_OP_SET, False), (2, semconv.LOCAL_OP_GET, True)):
        recorder.span(semconv.LOCAL_ACCESS, root, start, start, **{
            semconv.LOCAL_ID: "0x1",
            semconv.LOCAL_ATTRIBUTE: "conn",
            semconv.LOCAL_OPERATION: operation,
            semconv.LOCAL_THREAD_CRITICAL: critical,
            semconv.LOCAL_FOUND: True,
            semconv.THREAD_ID: 5,
            semconv.THREAD_NAME: "worker",
        })
    root.end(end_time=at(3))
    assert plain(render_trace(recorder.finished())).splitlines()[2:] == [
        "    ├── local set  conn  on worker",
        "    └── local get  conn  found  thread_critical  on worker",
    ]


def test_render_trace_async_to_sync_shows_route_and_new_loop(recorder: Recorder) -> None:
    """Tests that an async_to_sync line shows the caller → loop thread, the loop route and a new loop."""
    recorder.span(semconv.ASYNC_TO_SYNC, None, 0, 2, **{
        semconv.DIRECTION: semconv.DIRECTION_ASYNC_TO_SYNC,
        semconv.CODE_FUNCTION_NAME: "app.fetch",
        semconv.CALLER_THREAD_ID: 1,
        semconv.CALLER_THREAD_NAME: "MainThread",
        semconv.THREAD_ID: 3,
        semconv.THREAD_NAME: "loop-thread",
        semconv.LOOP_ID: 9,
        semconv.LOOP_ROUTE: semconv.LOOP_ROUTE_NEW_LOOP,
        semconv.LOOP_NEW: True,
        semconv.QUEUE_WAIT_MS: 0.5,
        semconv.RUN_TIME_MS: 1.5,
    })
    assert plain(render_trace(recorder.finished())).splitlines()[1] == (
        "└── async_to_sync  app.fetch  MainThread → loop-thread  new_loop  new loop  wait 0.500ms  run 1.50ms"
    )


def test_render_trace_missing_parent_is_shown_at_top_with_note(recorder: Recorder) -> None:
    """Tests that a span whose parent is not among the spans is kept, at the top, with a note."""
    root = recorder.span("request", None, 0, None)
    recorder.span("child", root, 1, 2)
    root.end(end_time=at(3))
    child = [span for span in recorder.finished() if span.name == "child"]
    assert plain(render_trace(child)).splitlines() == [
        "trace 00000000000000000000000000000001  1 span  1.00ms",
        "└── child  1.00ms  (parent 0000000000000001 not in this trace)",
    ]


def test_render_trace_two_traces_two_trees_in_start_order(recorder: Recorder) -> None:
    """Tests that spans of two traces render as two trees, earliest trace first."""
    recorder.span("first", None, 0, 1)
    recorder.span("second", None, 5, 6)
    spans = recorder.finished()
    text = plain(render_trace(list(reversed(spans))))
    assert [line for line in text.splitlines() if line.startswith("trace ")] == [
        "trace 00000000000000000000000000000001  1 span  1.00ms",
        "trace 00000000000000000000000000000002  1 span  1.00ms",
    ]


def test_render_trace_no_spans_renders_nothing() -> None:
    """Tests that an empty span list renders as empty output."""
    assert plain(render_trace([])) == ""


# -- partial traces and watchdog reports ---------------------------------------

DEADLOCK_MESSAGE = (
    "DEADLOCK: thread `sync_0` and task `Task-2` (warm_cache) wait for each other in a cycle.\n"
    "  1. thread `sync_0` is blocked in async_to_sync(`app.wait`), waiting for its coroutine;\n"
    "  2. task `Task-2` (warm_cache) awaits sync_to_async(`app.load`) — back to step 1: thread `sync_0`.\n"
    "  Start the task from the sync code's async_to_sync."
)


def report_event(span: Span, role: str, report_id: int = 1, message: str = DEADLOCK_MESSAGE) -> None:
    """Write a watchdog report event on ``span`` the way the watchdog does."""
    span.add_event(semconv.WATCHDOG_REPORT, {
        semconv.WATCHDOG_KIND: semconv.WATCHDOG_KIND_DEADLOCK,
        semconv.WATCHDOG_MESSAGE: message,
        semconv.WATCHDOG_REPORT_ID: report_id,
        semconv.WATCHDOG_ROLE: role,
    }, timestamp=at(700))


def hung_trace(rec: Recorder) -> list[ReadableSpan]:
    """A deadlocked request as the watchdog exports it: every span open, ended at export time (750 ms)."""
    incomplete = {semconv.INCOMPLETE: True}
    root = rec.span("GET /dashboard", None, 0, None, **incomplete)
    running = hop_attributes("app.view", "MainThread", "sync_0", semconv.EXECUTOR_GLOBAL_SYNC_THREAD, 0.25, 0)
    del running[semconv.RUN_TIME_MS]  # still running: no run time yet
    view = rec.span(semconv.SYNC_TO_ASYNC, root, 1, None, **running, **incomplete)
    wait = rec.span(semconv.ASYNC_TO_SYNC, view, 2, None, **{
        semconv.CODE_FUNCTION_NAME: "app.wait",
        semconv.CALLER_THREAD_NAME: "sync_0",
        semconv.THREAD_NAME: "MainThread",
        semconv.LOOP_ROUTE: semconv.LOOP_ROUTE_PARENT_LOOP,
        semconv.QUEUE_WAIT_MS: 0.5,
        **incomplete,
    })
    report_event(wait, "async_to_sync(`app.wait`) runs as task `Task-3`")
    load = rec.span(semconv.SYNC_TO_ASYNC, root, 3, None, **{
        semconv.CODE_FUNCTION_NAME: "app.load",
        semconv.CALLER_THREAD_NAME: "MainThread",
        semconv.EXECUTOR_KIND: semconv.EXECUTOR_GLOBAL_SYNC_THREAD,
        **incomplete,
    })
    report_event(load, "sync_to_async(`app.load`) has been queued")
    report_event(load, "the same report again")  # one line per report, however often it is written
    for span in (load, wait, view, root):
        span.end(end_time=at(750))
    return rec.finished()


HUNG_TREE = f"""\
trace 00000000000000000000000000000001  4 spans  750.0ms  {INCOMPLETE_MARK} partial trace: 4 still running  threads: MainThread, sync_0
└── GET /dashboard  {INCOMPLETE_MARK} still running after 750.0ms (incomplete)
    ├── sync_to_async  app.view  MainThread → sync_0  global_sync_thread  wait 0.250ms  {INCOMPLETE_MARK} still running after 749.0ms (incomplete)
    │   └── async_to_sync  app.wait  sync_0 → MainThread  parent_loop  wait 0.500ms  {INCOMPLETE_MARK} still running after 748.0ms (incomplete)
    │       {REPORT_MARK} DEADLOCK: thread `sync_0` and task `Task-2` (warm_cache) wait for each other in a cycle.
    └── sync_to_async  app.load  from MainThread  global_sync_thread  {INCOMPLETE_MARK} still queued after 747.0ms (incomplete)
        {REPORT_MARK} DEADLOCK: thread `sync_0` and task `Task-2` (warm_cache) wait for each other in a cycle.
"""


def test_render_trace_hung_request_marks_incomplete_spans_and_report_titles(recorder: Recorder) -> None:
    """Tests that a partial trace marks each open span running or queued and shows only each report's title."""
    assert plain(render_trace(hung_trace(recorder))) == HUNG_TREE


def test_render_trace_incomplete_and_report_are_yellow_and_red(recorder: Recorder) -> None:
    """Tests that the still-running mark is styled yellow and the report line red."""
    (tree,) = render_trace(hung_trace(recorder)).renderables
    console, _ = plain_console()
    [label] = [label for label in labels(tree) if "app.load" in label.plain]
    mark = label.get_style_at_offset(console, label.plain.index(INCOMPLETE_MARK))
    report = label.get_style_at_offset(console, label.plain.index(REPORT_MARK))
    assert mark.color is not None and mark.color.name == "yellow"
    assert report.color is not None and report.color.name == "red"


def test_render_trace_stall_and_blocked_loop_reports_one_line_each(recorder: Recorder) -> None:
    """Tests that two reports on one finished span show as two title lines, and the span keeps its duration."""
    span = recorder.span("work", None, 0, None)
    report_event(span, "", report_id=1, message="STALL: sync_to_async(`app.load`) has waited 5.1 s.\n  1. queued;")
    report_event(span, "", report_id=2, message="BLOCKED LOOP: event loop 0x1 has not run a callback for 1.2 s.")
    span.add_event("user event", {"note": "not a report"})
    span.end(end_time=at(2))
    assert plain(render_trace(recorder.finished())).splitlines()[1:] == [
        "└── work  2.00ms",
        f"    {REPORT_MARK} STALL: sync_to_async(`app.load`) has waited 5.1 s.",
        f"    {REPORT_MARK} BLOCKED LOOP: event loop 0x1 has not run a callback for 1.2 s.",
    ]


def test_render_trace_report_without_message_names_its_kind(recorder: Recorder) -> None:
    """Tests that a report event missing its message (e.g. a trimmed file) still shows a line with its kind."""
    span = recorder.span("work", None, 0, None)
    span.add_event(semconv.WATCHDOG_REPORT, {semconv.WATCHDOG_KIND: semconv.WATCHDOG_KIND_STALL})
    span.end(end_time=at(1))
    assert plain(render_trace(recorder.finished())).splitlines()[2] == f"    {REPORT_MARK} watchdog report: stall"


def test_render_trace_finished_spans_have_no_incomplete_mark(recorder: Recorder) -> None:
    """Tests that spans not marked incomplete (or marked False) render without the still-running mark."""
    recorder.span("done", None, 0, 1, **{semconv.INCOMPLETE: False})
    text = plain(render_trace(recorder.finished()))
    assert INCOMPLETE_MARK not in text
    assert text.splitlines()[1] == "└── done  1.00ms"


# -- ConsoleTraceExporter ------------------------------------------------------


class SignallingStream(io.StringIO):
    """A StringIO that sets an Event on every write, so a test can wait for output."""

    def __init__(self) -> None:
        super().__init__()
        self.written = threading.Event()

    def write(self, text: str) -> int:
        count = super().write(text)
        self.written.set()
        return count


def exporter_for(grace: float | None, **kwargs: object) -> tuple[ConsoleTraceExporter, io.StringIO]:
    console, out = plain_console()
    return ConsoleTraceExporter(console, grace=grace, **kwargs), out  # type: ignore[arg-type]


def small_trace(rec: Recorder, start: float = 0) -> tuple[ReadableSpan, ReadableSpan, ReadableSpan]:
    """(root, child, deferred-style leaf) of one trace, all finished."""
    root = rec.span("request", None, start, None)
    child = rec.span("child", root, start + 1, start + 2)
    rec.span(semconv.LOCAL_ACCESS, child, start + 1.5, start + 1.5, **{
        semconv.LOCAL_ATTRIBUTE: "user",
        semconv.LOCAL_OPERATION: semconv.LOCAL_OP_GET,
        semconv.LOCAL_FOUND: True,
        semconv.THREAD_NAME: "worker",
    })
    root.end(end_time=at(start + 3))
    by_name = {span.name: span for span in rec.finished()[-3:]}
    return by_name["request"], by_name["child"], by_name[semconv.LOCAL_ACCESS]


SMALL_TREE = [
    "trace 00000000000000000000000000000001  3 spans  3.00ms  threads: worker",
    "└── request  3.00ms",
    "    └── child  1.00ms",
    "        └── local get  user  found  on worker",
]


def test_exporter_flush_prints_trace_once_with_late_leaf(recorder: Recorder) -> None:
    """Tests that a leaf arriving after its root, before the flush, is printed inside the one tree."""
    root, child, leaf = small_trace(recorder)
    exporter, out = exporter_for(grace=None)
    assert exporter.export([child]) is SpanExportResult.SUCCESS
    assert exporter.export([root]) is SpanExportResult.SUCCESS
    assert exporter.export([leaf]) is SpanExportResult.SUCCESS
    assert out.getvalue() == ""
    assert exporter.force_flush() is True
    assert out.getvalue().splitlines() == SMALL_TREE
    exporter.force_flush()
    assert out.getvalue().splitlines() == SMALL_TREE  # printed once
    exporter.shutdown()


def test_exporter_leaf_after_print_is_printed_as_late_spans(recorder: Recorder) -> None:
    """Tests that a leaf arriving after its trace was printed gets a 'late spans' tree, not a new trace."""
    root, child, leaf = small_trace(recorder)
    exporter, out = exporter_for(grace=0)
    exporter.export([child, root])
    assert out.getvalue().splitlines() == [
        "trace 00000000000000000000000000000001  2 spans  3.00ms",
        "└── request  3.00ms",
        "    └── child  1.00ms",
    ]
    out.truncate(0)
    out.seek(0)
    exporter.export([leaf])
    exporter.force_flush()
    assert out.getvalue().splitlines() == [
        "late spans of trace 00000000000000000000000000000001  (arrived after the trace was printed)"
        "  1 span  0.000ms  threads: worker",
        "└── local get  user  found  on worker  (parent 0000000000000002 not in this trace)",
    ]
    exporter.shutdown()


def test_exporter_grace_prints_without_flush(recorder: Recorder) -> None:
    """Tests that the timer thread prints a trace once the grace after its root has passed."""
    root, child, leaf = small_trace(recorder)
    stream = SignallingStream()
    exporter = ConsoleTraceExporter(stream=stream, grace=0.05)
    exporter.export([child, root])
    exporter.export([leaf])
    assert stream.written.wait(timeout=10)
    exporter.shutdown()
    assert [line.rstrip() for line in stream.getvalue().splitlines()] == SMALL_TREE


def test_exporter_rootless_trace_waits_for_shutdown(recorder: Recorder) -> None:
    """Tests that a trace whose root never arrives is not printed on flush, but is on shutdown."""
    _, child, leaf = small_trace(recorder)
    exporter, out = exporter_for(grace=0)
    exporter.export([child, leaf])
    exporter.force_flush()
    assert out.getvalue() == ""
    exporter.shutdown()
    assert out.getvalue().splitlines() == [
        "trace 00000000000000000000000000000001  2 spans  1.00ms  threads: worker",
        "└── child  1.00ms  (parent 0000000000000001 not in this trace)",
        "    └── local get  user  found  on worker",
    ]
    assert exporter.export([child]) is SpanExportResult.FAILURE
    exporter.shutdown()  # idempotent


def test_exporter_too_many_rootless_traces_prints_oldest(recorder: Recorder) -> None:
    """Tests that past max_pending_traces the oldest waiting trace is printed as it is."""
    _, first_child, _ = small_trace(recorder, start=0)
    _, second_child, _ = small_trace(recorder, start=10)
    exporter, out = exporter_for(grace=None, max_pending_traces=1)
    exporter.export([first_child])
    assert out.getvalue() == ""
    exporter.export([second_child])
    assert out.getvalue().splitlines()[0].startswith("trace 00000000000000000000000000000001  1 span")
    exporter.shutdown()


def test_exporter_traces_flushed_together_print_in_start_order(recorder: Recorder) -> None:
    """Tests that traces flushed at once print earliest start first, whatever order their spans arrived in."""
    first = small_trace(recorder, start=0)
    second = small_trace(recorder, start=10)
    third = small_trace(recorder, start=20)
    exporter, out = exporter_for(grace=None)
    for spans in (third, first, second):  # e.g. concurrent requests ending in another order
        exporter.export(list(spans))
    exporter.force_flush()
    assert [line.split("  ")[0] for line in out.getvalue().splitlines() if line.startswith("trace ")] == [
        "trace 00000000000000000000000000000001",
        "trace 00000000000000000000000000000002",
        "trace 00000000000000000000000000000003",
    ]
    exporter.shutdown()


def test_exporter_console_and_stream_together_raises() -> None:
    """Tests that giving both a console and a stream is refused with a clear message."""
    console, _ = plain_console()
    with pytest.raises(ValueError, match="console= or stream=, not both"):
        ConsoleTraceExporter(console, stream=io.StringIO())


def test_exporter_stream_output_keeps_each_span_on_one_line(recorder: Recorder) -> None:
    """Tests that into a non-terminal stream long lines are not wrapped at the console width."""
    root = recorder.span("x" * 150, None, 0, 1)
    del root
    out = io.StringIO()
    exporter = ConsoleTraceExporter(stream=out, grace=0)
    exporter.export(recorder.finished())
    exporter.shutdown()
    assert out.getvalue().splitlines()[1] == "└── " + "x" * 150 + "  1.00ms"


def test_exporter_with_tracebridge_flush_includes_deferred_local_spans() -> None:
    """Tests that tracebridge.flush() prints a complete tree, deferred Local spans included."""
    local_module = pytest.importorskip("tracebridge.local")
    state = local_module.Local()
    out = io.StringIO()
    exporter = ConsoleTraceExporter(stream=out, grace=None)
    provider = TracerProvider()
    provider.add_span_processor(FlushingBatchSpanProcessor(exporter))
    tracebridge.set_tracer_provider(provider)
    try:
        with provider.get_tracer("test").start_as_current_span("request"):
            state.user = "ada"
            assert state.user == "ada"
        tracebridge.flush()
        lines = out.getvalue().splitlines()
    finally:
        tracebridge.set_tracer_provider(None)
        provider.shutdown()
    thread = threading.current_thread().name
    assert lines[1:] == [
        lines[1],
        f"    ├── local set  user  on {thread}",
        f"    └── local get  user  found  on {thread}",
    ]
    assert lines[1].startswith("└── request  ")


def test_render_trace_parent_cycle_still_shows_every_span() -> None:
    """Tests that spans that are each other's parents (a malformed file) are shown, not lost."""
    from opentelemetry.trace import SpanContext, TraceFlags

    def context(span_id: int) -> SpanContext:
        return SpanContext(trace_id=1, span_id=span_id, is_remote=False, trace_flags=TraceFlags(1))

    spans = [
        ReadableSpan("a", context=context(1), parent=context(2), start_time=at(0), end_time=at(1)),
        ReadableSpan("b", context=context(2), parent=context(1), start_time=at(0), end_time=at(2)),
    ]
    assert plain(render_trace(spans)).splitlines()[1:] == [
        "├── a  1.00ms  (parent cycle)",
        "└── b  2.00ms  (parent cycle)",
    ]
