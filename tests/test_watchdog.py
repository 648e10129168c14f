"""Tests for the watchdog: reports from synthetic snapshots (exact words), and in-process hangs that end."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import SpanRecorder
from flow_samples import GLOBAL, LOOP, MAIN, SYNC, fields, global_sync_thread_deadlock, s2a
from opentelemetry import trace

from tracebridge import _telemetry, flow, semconv, watchdog
from tracebridge.flow import (
    KIND_SINGLE_THREAD,
    RUNNING_SYNC,
    ExecutorInfo,
    FlowModel,
    FlowSnapshot,
    Live,
    TaskInfo,
    ThreadInfo,
)
from tracebridge.sync import ThreadSensitiveContext, sync_to_async
from tracebridge.watchdog import Report, Watchdog

WAIT_S = 10.0
T0 = 2_000_000_000  # the synthetic hops were submitted at ~100 ns: "2.0 s" ago


class FakeRecorder:
    loops: dict[int, Any] = {}
    open_spans: dict[int, Any] = {}


class FakeModel:
    """Hands the watchdog whatever snapshot the test sets."""

    def __init__(self, snapshot: FlowSnapshot) -> None:
        self.snapshot = snapshot
        self.recorder = FakeRecorder()
        self.loop_health: dict[int, tuple[float, bool]] = {}
        self.reports: dict[int, Any] = {}

    def capture(self, **_: Any) -> tuple[FlowSnapshot, Live]:
        return self.snapshot, Live()


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def head_of_line() -> FlowSnapshot:
    running = s2a(30, "app.hold", task=3000, executor=GLOBAL, start=150, thread=SYNC)
    first = s2a(31, "app.release", task=3001, executor=GLOBAL)
    second = s2a(32, "app.audit", task=3002, executor=GLOBAL)
    return FlowSnapshot(
        taken_ns=T0,
        pid=1,
        threads=(ThreadInfo(2, "tracebridge-sync_0", True, RUNNING_SYNC, "running sync_to_async(`app.hold`) for 2.0 s", (30,)),),
        executors=(ExecutorInfo(GLOBAL, KIND_SINGLE_THREAD, "the global sync thread executor", (SYNC,), 1),),
        hops=(running, first, second),
        tasks=(
            TaskInfo(3000, "Task-1", "main", LOOP, False),
            TaskInfo(3001, "Task-2", "trigger", LOOP, False),
            TaskInfo(3002, "Task-3", "audit", LOOP, False),
        ),
    )


def test_watchdog_deadlock_reported_once_after_confirmation_in_plain_words() -> None:
    """Tests that a cycle is reported on the scan after `confirm`, once, with every participant in words."""
    clock = Clock(T0)
    got: list[Report] = []
    dog = Watchdog(FakeModel(global_sync_thread_deadlock()), confirm=0.5, on_report=got.append, log=False, clock=clock)  # type: ignore[arg-type]
    assert dog.scan() == []  # seen once: not yet confirmed
    clock.now += 600_000_000
    (report,) = dog.scan()
    clock.now += 600_000_000
    assert dog.scan() == []  # already reported
    assert got == [report]
    assert report.kind == semconv.WATCHDOG_KIND_DEADLOCK
    assert report.title == (
        "DEADLOCK: thread `tracebridge-sync_0`, task `Task-3` (wait_for_prefetch via async_to_sync) and "
        "task `Task-2` (warm_cache) wait for each other in a cycle; none of them can ever move again."
    )
    assert report.lines == [
        "1. thread `tracebridge-sync_0` is blocked in async_to_sync(`app.wait_for_prefetch`) (for 2.6 s), "
        "waiting for its coroutine;",
        "2. async_to_sync(`app.wait_for_prefetch`) runs as task `Task-3` (wait_for_prefetch via async_to_sync) "
        "on the event loop of thread `MainThread`;",
        "3. task `Task-3` (wait_for_prefetch via async_to_sync) awaits task `Task-2` (warm_cache);",
        "4. task `Task-2` (warm_cache) awaits sync_to_async(`app.load_settings`);",
        "5. sync_to_async(`app.load_settings`) has been queued for 2.6 s on the global sync thread executor, "
        "whose only thread, `tracebridge-sync_0`, is busy — back to step 1: thread `tracebridge-sync_0`.",
    ]
    assert report.cycle == [
        "thread `tracebridge-sync_0`",
        "async_to_sync(`app.wait_for_prefetch`)",
        "task `Task-3` (wait_for_prefetch via async_to_sync)",
        "task `Task-2` (warm_cache)",
        "sync_to_async(`app.load_settings`)",
    ]
    assert (report.threads, report.tasks, report.functions) == (
        ["tracebridge-sync_0", "MainThread"], ["Task-3", "Task-2"], ["app.wait_for_prefetch", "app.load_settings"],
    )
    assert report.sites == ["sync_to_async(`app.load_settings`): made by task `Task-2` (warm_cache), queued 2.6 s ago"]
    assert report.text.startswith("tracebridge watchdog: DEADLOCK: ")
    assert report.formed_ns == 211  # the newest wait in the cycle (the async_to_sync call)


def test_watchdog_deadlock_cleared_then_back_is_reported_again() -> None:
    """Tests that a problem that clears is marked resolved, and reported anew if it comes back."""
    clock = Clock(T0)
    deadlocked = global_sync_thread_deadlock()
    model = FakeModel(deadlocked)
    dog = Watchdog(model, confirm=0.0, log=False, clock=clock)  # type: ignore[arg-type]
    (first,) = dog.scan()
    model.snapshot = FlowSnapshot(**{**fields(deadlocked), "hops": ()})
    clock.now += 1
    assert dog.scan() == []
    assert model.reports[first.id].resolved_ns == clock.now
    model.snapshot = deadlocked
    (second,) = dog.scan()
    assert (first.id, second.id) == (1, 2)
    assert model.reports[second.id].resolved_ns == 0


def test_watchdog_head_of_line_stall_groups_queued_calls_behind_one_thread() -> None:
    """Tests that two calls queued past the threshold behind one busy thread make one stall report."""
    dog = Watchdog(FakeModel(head_of_line()), stall_threshold=1.0, log=False, clock=Clock(T0))  # type: ignore[arg-type]
    (report,) = dog.scan()
    assert dog.scan() == []
    assert report.kind == semconv.WATCHDOG_KIND_STALL
    assert report.title == (
        "STALL: sync_to_async(`app.release`) and sync_to_async(`app.audit`) have waited 2.0 s to start on the "
        "global sync thread executor (stall threshold 1 s)."
    )
    assert report.lines == [
        "1. task `Task-2` (trigger) awaits sync_to_async(`app.release`);",
        "2. task `Task-3` (audit) awaits sync_to_async(`app.audit`);",
        "3. sync_to_async(`app.release`) has been queued for 2.0 s on the global sync thread executor, whose only "
        "thread, `tracebridge-sync_0`, is busy;",
        "4. thread `tracebridge-sync_0` is running sync_to_async(`app.hold`) for 2.0 s.",
    ]
    assert report.functions == ["app.release", "app.audit", "app.hold"]
    assert report.hint.startswith("Head-of-line blocking")


def test_watchdog_young_queue_is_no_stall() -> None:
    """Tests that calls queued for less than the threshold are not reported."""
    dog = Watchdog(FakeModel(head_of_line()), stall_threshold=5.0, log=False, clock=Clock(T0))  # type: ignore[arg-type]
    assert dog.scan() == []


def test_watchdog_callback_error_is_logged_and_delivery_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """Tests that a raising on_report callback is logged, later callbacks still run, and the report is logged."""
    got: list[Report] = []

    def broken(report: Report) -> None:
        raise ValueError("callback bug")

    dog = Watchdog(FakeModel(head_of_line()), stall_threshold=1.0, on_report=[broken, got.append], clock=Clock(T0))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="tracebridge.watchdog"):
        (report,) = dog.scan()
    assert got == [report] and dog.delivered == 1
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == report.text
    assert messages[1].startswith("tracebridge watchdog: the on_report callback")
    assert caplog.records[1].exc_info is not None


# ---------------------------------------------------------------------------
# In-process hangs that end (every wait has a timeout).


@pytest.fixture
def model(spans: SpanRecorder) -> Iterator[FlowModel]:
    flow.disable()
    model = flow.enable()
    try:
        yield model
    finally:
        flow.disable()


def wait_for_stock(ready: threading.Event) -> None:
    ready.wait(WAIT_S)


def restock(ready: threading.Event) -> None:
    ready.set()


async def test_watchdog_stall_writes_report_on_spans_and_exports_partial_trace(
    spans: SpanRecorder, model: FlowModel
) -> None:
    """Tests that a stall puts a report event on the involved hops' spans and exports the open spans, incomplete."""
    reported = threading.Event()
    reports: list[Report] = []

    def on_report(report: Report) -> None:
        reports.append(report)
        reported.set()

    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orders-db")
    ready = threading.Event()
    dog = Watchdog(model, interval=0.05, stall_threshold=0.3, on_report=on_report, log=False).start()
    tracer = trace.get_tracer("test", tracer_provider=spans.provider)
    try:
        with tracer.start_as_current_span("POST /orders") as request:
            async with ThreadSensitiveContext(executor=pool):
                consumer = asyncio.create_task(sync_to_async(wait_for_stock)(ready))
                await asyncio.sleep(0.02)
                producer = asyncio.create_task(sync_to_async(restock)(ready))
                assert await loop.run_in_executor(None, reported.wait, WAIT_S)
                assert await loop.run_in_executor(None, dog.wait_delivered, 1, WAIT_S)
                ready.set()
                await asyncio.gather(consumer, producer)
    finally:
        ready.set()
        dog.stop()
        pool.shutdown()
    (report,) = reports
    assert report.kind == semconv.WATCHDOG_KIND_STALL

    finished = spans.finished()
    partial = [span for span in finished if span.attributes.get(semconv.INCOMPLETE)]
    assert sorted(span.name for span in partial) == ["POST /orders", semconv.SYNC_TO_ASYNC, semconv.SYNC_TO_ASYNC]
    request_id = request.get_span_context().span_id
    assert {span.context.trace_id for span in partial} == {request.get_span_context().trace_id}
    assert [span for span in partial if span.name == "POST /orders"][0].context.span_id == request_id

    def events_of(function: str, complete: bool) -> list[dict[str, Any]]:
        (span,) = [
            s for s in finished
            if s.name == semconv.SYNC_TO_ASYNC
            and s.attributes[semconv.CODE_FUNCTION_NAME] == _telemetry.function_name(globals()[function])
            and bool(s.attributes.get(semconv.INCOMPLETE)) is not complete
        ]
        return [dict(event.attributes or {}) for event in span.events if event.name == semconv.WATCHDOG_REPORT]

    queued_role = report.lines[1][3:].rstrip(";")  # "sync_to_async(`...restock`) has been queued for ..."
    expected = {
        semconv.WATCHDOG_KIND: semconv.WATCHDOG_KIND_STALL,
        semconv.WATCHDOG_MESSAGE: report.message,
        semconv.WATCHDOG_REPORT_ID: 1,
        semconv.WATCHDOG_ROLE: queued_role,
    }
    assert events_of("restock", complete=False) == [expected]  # on the partial span
    assert events_of("restock", complete=True) == [expected]  # and on the real one, when it ended
    (running_event,) = events_of("wait_for_stock", complete=True)
    assert running_event[semconv.WATCHDOG_ROLE].startswith("thread `orders-db_0` is running sync_to_async(")
    # The partial copy of the queued hop never started: no thread, no run time.
    (queued_partial,) = [s for s in partial if s.attributes.get(semconv.CODE_FUNCTION_NAME, "").endswith("restock")]
    assert semconv.THREAD_NAME not in queued_partial.attributes


def test_watchdog_blocked_loop_names_loop_thread_and_call(model: FlowModel) -> None:
    """Tests that a loop stuck in time.sleep is reported with its thread and the blocking line."""
    reports: list[Report] = []
    reported = threading.Event()

    def on_report(report: Report) -> None:
        reports.append(report)
        reported.set()

    def noop() -> None:
        pass

    async def slow_view() -> None:
        await sync_to_async(noop)()  # the loop is now known to the model
        reported.wait(WAIT_S)  # a blocking call on the loop, until the watchdog says so

    dog = Watchdog(model, interval=0.05, loop_threshold=0.2, on_report=on_report, log=False).start()
    runner = threading.Thread(target=asyncio.run, args=(slow_view(),), name="loop-thread")
    try:
        runner.start()
        assert reported.wait(WAIT_S)
    finally:
        reported.set()
        runner.join(WAIT_S)
        dog.stop()
    (report,) = reports
    assert report.kind == semconv.WATCHDOG_KIND_BLOCKED_LOOP
    assert " on thread `loop-thread` has not run a callback for " in report.title
    assert report.title.endswith("in slow_view: `reported.wait(WAIT_S)`.")
    assert report.threads == ["loop-thread"]


def test_watchdog_healthy_bridges_make_no_report(model: FlowModel) -> None:
    """Tests that busy but healthy bridge traffic makes no report (no false positives)."""
    dog = Watchdog(model, interval=0.02, stall_threshold=0.5, loop_threshold=0.5, confirm=0.05, log=False).start()

    def work() -> int:
        return threading.get_ident()

    async def burst() -> None:
        for _ in range(200):
            await asyncio.gather(*(sync_to_async(work)() for _ in range(5)))

    try:
        start = time.monotonic()
        asyncio.run(burst())
        assert dog.scans > 0 or time.monotonic() - start < 0.05
    finally:
        dog.stop()
    assert list(dog.reports) == []


def test_watch_replaces_previous_watchdog(model: FlowModel) -> None:
    """Tests that watch() starts one watchdog and a second call replaces (stops) the first."""
    first = watchdog.watch(log=False)
    second = watchdog.watch(log=False)
    try:
        assert watchdog.current() is second and first is not second
        assert first._thread is None
    finally:
        second.stop()
