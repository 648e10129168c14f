"""Tests for tracebridge.current_thread_executor (asgiref 3.13 behaviour plus handoff spans)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import pytest

import tracebridge
from tracebridge import _telemetry, semconv
from tracebridge import current_thread_executor as cte_module
from tracebridge.current_thread_executor import CurrentThreadExecutor, WorkItemInfo, _WorkItem

if TYPE_CHECKING:
    from conftest import SpanRecorder

WAIT = 5.0  # seconds any cross-thread wait may take before the test fails instead of hanging


def in_thread(target: Callable[[], Any], name: str = "submitter") -> Any:
    """Runs ``target`` in a new thread, joins it, and returns its result (or raises its error)."""
    outcome: Future[Any] = Future()

    def main() -> None:
        try:
            outcome.set_result(target())
        except BaseException as exc:  # handed back to the test thread
            outcome.set_exception(exc)

    thread = threading.Thread(target=main, name=name)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "helper thread hung"
    return outcome.result(0)


def serve_while(executor: CurrentThreadExecutor, target: Callable[[], Any], name: str = "submitter") -> Any:
    """Runs ``target`` in another thread while this thread serves ``executor`` until it finishes."""
    outcome: Future[Any] = Future()

    def main() -> None:
        try:
            outcome.set_result(target())
        except BaseException as exc:
            outcome.set_exception(exc)

    thread = threading.Thread(target=main, name=name)
    thread.start()
    # `target` always completes `outcome` (its own waits are bounded), so this returns.
    executor.run_until_future(outcome)
    thread.join(WAIT)
    assert not thread.is_alive(), "submitter thread hung"
    return outcome.result(0)


def add(a: int, b: int) -> int:
    return a + b


def current_thread() -> threading.Thread:
    return threading.current_thread()


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Makes the executor's clock tick 1 ms per reading, starting at 1 s."""
    ticks = itertools.count(1_000_000_000, 1_000_000)
    monkeypatch.setattr(cte_module, "_clock", lambda: next(ticks))
    yield


# ---------------------------------------------------------------------------
# asgiref behaviour


def test_submit_from_other_thread_runs_on_owner_thread() -> None:
    """Tests that work submitted from another thread runs on the thread that created the executor."""
    owner = threading.current_thread()
    executor = CurrentThreadExecutor(None)
    assert executor._thread is owner

    def submitter() -> tuple[threading.Thread, int]:
        ran_on = executor.submit(current_thread).result(WAIT)
        return ran_on, executor.submit(add, 2, b=3).result(WAIT)

    ran_on, total = serve_while(executor, submitter)
    assert ran_on is owner
    assert total == 5


def test_submit_returns_concurrent_future() -> None:
    """Tests that submit returns a concurrent.futures.Future that resolves once the owner serves it."""
    executor = CurrentThreadExecutor(None)
    future = in_thread(lambda: executor.submit(add, 1, 1))
    assert isinstance(future, Future)
    assert not future.done()
    done: Future[None] = Future()
    done.set_result(None)
    executor.run_until_future(done)
    assert future.result(0) == 2


def test_submit_from_owner_thread_raises() -> None:
    """Tests that submitting from the owner thread raises asgiref's RuntimeError."""
    executor = CurrentThreadExecutor(None)
    with pytest.raises(RuntimeError) as info:
        executor.submit(add, 1, 2)
    assert str(info.value) == "You cannot submit onto CurrentThreadExecutor from its own thread"
    assert executor.pending() == []


def test_run_until_future_from_other_thread_raises() -> None:
    """Tests that run_until_future from a thread other than the creator raises asgiref's RuntimeError."""
    executor = CurrentThreadExecutor(None)
    future: Future[None] = Future()
    future.set_result(None)
    with pytest.raises(RuntimeError) as info:
        in_thread(lambda: executor.run_until_future(future))
    assert str(info.value) == "You cannot run CurrentThreadExecutor from a different thread"


def test_run_until_future_queue_runs_fifo() -> None:
    """Tests that queued work items run in submission order."""
    executor = CurrentThreadExecutor(None)
    order: list[int] = []
    futures = in_thread(lambda: [executor.submit(order.append, n) for n in range(10)])
    done: Future[None] = Future()
    done.set_result(None)
    executor.run_until_future(done)
    assert order == list(range(10))
    assert all(f.done() for f in futures)


def test_run_until_future_done_future_still_drains_queue() -> None:
    """Tests that run_until_future runs everything queued before returning, even if the future is already done."""
    executor = CurrentThreadExecutor(None)
    futures = in_thread(lambda: [executor.submit(add, n, n) for n in range(3)])
    done: Future[None] = Future()
    done.set_result(None)
    executor.run_until_future(done)
    assert [f.result(0) for f in futures] == [0, 2, 4]
    assert executor.broken


def test_run_until_future_waits_for_future_not_just_queue() -> None:
    """Tests that run_until_future keeps serving an empty queue until the future completes."""
    executor = CurrentThreadExecutor(None)
    first_ran = threading.Event()

    def submitter() -> int:
        executor.submit(first_ran.set).result(WAIT)
        # The queue is empty now but the owner must still be serving it.
        return executor.submit(add, 20, 22).result(WAIT)

    assert serve_while(executor, submitter) == 42
    assert first_ran.is_set()


def test_work_item_exception_stored_not_raised() -> None:
    """Tests that an exception from a work item lands in its future and the owner keeps serving."""
    executor = CurrentThreadExecutor(None)
    error = ValueError("boom")

    def fail() -> None:
        raise error

    def submitter() -> tuple[BaseException | None, int]:
        failed = executor.submit(fail)
        after = executor.submit(add, 1, 2)
        return failed.exception(WAIT), after.result(WAIT)

    exc, after = serve_while(executor, submitter)
    assert exc is error
    assert after == 3


def test_work_item_cancelled_before_run_skipped() -> None:
    """Tests that a work item whose future was cancelled while queued is never called."""
    executor = CurrentThreadExecutor(None)
    calls: list[str] = []
    first, second, third = in_thread(
        lambda: [executor.submit(calls.append, name) for name in ("first", "second", "third")]
    )
    assert second.cancel()
    done: Future[None] = Future()
    done.set_result(None)
    executor.run_until_future(done)
    assert calls == ["first", "third"]
    assert second.cancelled()
    assert first.done() and third.done()


def test_submit_after_broken_goes_to_old_executor() -> None:
    """Tests that submissions to a broken executor fall through to the nearest live old_executor."""
    owner = threading.current_thread()
    outer = CurrentThreadExecutor(None)
    inner = CurrentThreadExecutor(outer)
    assert inner.old_executor is outer
    finished: Future[None] = Future()
    finished.set_result(None)
    inner.run_until_future(finished)  # inner's sync frame is over: it is broken
    assert inner.broken and not outer.broken

    def submitter() -> threading.Thread:
        return inner.submit(current_thread).result(WAIT)

    assert serve_while(outer, submitter) is owner


def test_submit_skips_several_broken_executors() -> None:
    """Tests that the walk goes up more than one level to the first non-broken executor."""
    outer = CurrentThreadExecutor(None)
    middle = CurrentThreadExecutor(outer)
    inner = CurrentThreadExecutor(middle)
    finished: Future[None] = Future()
    finished.set_result(None)
    inner.run_until_future(finished)
    middle.run_until_future(finished)
    queued = in_thread(lambda: inner.submit(add, 4, 5))
    assert inner.pending() == [] and middle.pending() == []
    assert len(outer.pending()) == 1
    outer.run_until_future(finished)
    assert queued.result(0) == 9


def test_submit_all_broken_raises() -> None:
    """Tests that submitting when every executor on the chain has quit raises asgiref's RuntimeError."""
    outer = CurrentThreadExecutor(None)
    inner = CurrentThreadExecutor(outer)
    finished: Future[None] = Future()
    finished.set_result(None)
    inner.run_until_future(finished)
    outer.run_until_future(finished)
    with pytest.raises(RuntimeError) as info:
        in_thread(lambda: inner.submit(add, 1, 2))
    assert str(info.value) == "CurrentThreadExecutor already quit or is broken"


def test_run_in_executor_from_loop_thread_runs_on_owner_thread() -> None:
    """Tests the bridge's use: a loop in another thread awaits loop.run_in_executor(executor, fn, *args)."""
    owner = threading.current_thread()
    executor = CurrentThreadExecutor(None)

    async def main() -> tuple[threading.Thread, int]:
        loop = asyncio.get_running_loop()
        ran_on = await asyncio.wait_for(loop.run_in_executor(executor, current_thread), WAIT)
        total = await asyncio.wait_for(loop.run_in_executor(executor, add, 6, 7), WAIT)
        return ran_on, total

    ran_on, total = serve_while(executor, lambda: asyncio.run(main()), name="loop-thread")
    assert ran_on is owner
    assert total == 13


def test_work_item_run_outside_executor_stores_result() -> None:
    """Tests that _WorkItem keeps asgiref's (future, fn, *args, **kwargs) shape and stores the result."""
    future: Future[int] = Future()
    item = _WorkItem(future, add, 1, b=2)
    item.run()
    assert future.result(0) == 3


# ---------------------------------------------------------------------------
# Flow-model views


def test_pending_snapshot_lists_queued_items_in_order(fake_clock: None) -> None:
    """Tests that pending() describes each queued item (function, submit time, submitter) oldest first."""
    executor = CurrentThreadExecutor(None)
    submitter_ids: list[int] = []

    def submitter() -> None:
        submitter_ids.append(threading.get_ident())
        executor.submit(add, 1, 2)
        executor.submit(current_thread)

    in_thread(submitter, name="queue-filler")
    assert executor.pending() == [
        WorkItemInfo(
            function=f"{add.__module__}.{add.__qualname__}",
            submitted_ns=1_000_000_000,
            started_ns=None,
            queued_by_thread_id=submitter_ids[0],
            queued_by_thread_name="queue-filler",
        ),
        WorkItemInfo(
            function=f"{current_thread.__module__}.{current_thread.__qualname__}",
            submitted_ns=1_001_000_000,
            started_ns=None,
            queued_by_thread_id=submitter_ids[0],
            queued_by_thread_name="queue-filler",
        ),
    ]
    assert executor.running is None
    done: Future[None] = Future()
    done.set_result(None)
    executor.run_until_future(done)
    assert executor.pending() == []


def test_running_property_shows_item_while_it_runs(fake_clock: None) -> None:
    """Tests that running describes the item the owner thread is executing, and is None afterwards."""
    executor = CurrentThreadExecutor(None)
    seen: list[WorkItemInfo | None] = []

    def look() -> None:
        seen.append(executor.running)

    in_thread(lambda: executor.submit(look))
    done: Future[None] = Future()
    done.set_result(None)
    executor.run_until_future(done)
    assert len(seen) == 1 and seen[0] is not None
    assert seen[0].function == f"{look.__module__}.{look.__qualname__}"
    assert seen[0].submitted_ns == 1_000_000_000
    assert seen[0].started_ns == 1_001_000_000
    assert executor.running is None


# ---------------------------------------------------------------------------
# Handoff spans


def handoff_attributes(
    function: str, executor: CurrentThreadExecutor, queued_by: int, queued_name: str
) -> dict[str, Any]:
    """The full attribute dict of a handoff under ``fake_clock`` (submit, start, end 1 ms apart)."""
    return {
        semconv.CODE_FUNCTION_NAME: function,
        semconv.EXECUTOR_KIND: semconv.HANDOFF_EXECUTOR_CURRENT_THREAD,
        semconv.EXECUTOR_ID: id(executor),
        semconv.QUEUED_THREAD_ID: queued_by,
        semconv.QUEUED_THREAD_NAME: queued_name,
        semconv.THREAD_ID: threading.get_ident(),
        semconv.THREAD_NAME: threading.current_thread().name,
        semconv.QUEUE_WAIT_MS: 1.0,
        semconv.RUN_TIME_MS: 1.0,
    }


def test_handoff_span_uses_submitting_parent_and_function(spans: SpanRecorder, fake_clock: None) -> None:
    """Tests that a handoff span takes parent and function name from _telemetry.submitting."""
    executor = CurrentThreadExecutor(None)
    tracer = spans.provider.get_tracer("test")
    hop = tracer.start_span("hop")
    submitter_ids: list[int] = []

    def submitter() -> None:
        submitter_ids.append(threading.get_ident())
        _telemetry.submitting.parent = hop.get_span_context()
        _telemetry.submitting.function = "app.views.index"
        try:
            executor.submit(add, 1, 2)
        finally:
            _telemetry.submitting.parent = None
            _telemetry.submitting.function = None

    in_thread(submitter, name="loop-thread")
    done: Future[None] = Future()
    done.set_result(None)
    executor.run_until_future(done)
    hop.end()

    (handoff,) = spans.named(semconv.HANDOFF)
    assert handoff.parent is not None
    assert handoff.parent.span_id == hop.get_span_context().span_id
    assert handoff.context.trace_id == hop.get_span_context().trace_id
    assert dict(handoff.attributes or {}) == handoff_attributes(
        "app.views.index", executor, submitter_ids[0], "loop-thread"
    )
    assert (handoff.start_time, handoff.end_time) == (1_000_000_000, 1_002_000_000)


def test_handoff_span_falls_back_to_current_span(spans: SpanRecorder, fake_clock: None) -> None:
    """Tests that without _telemetry.submitting the handoff parents to the submitter's current span."""
    executor = CurrentThreadExecutor(None)
    tracer = spans.provider.get_tracer("test")
    parents: list[Any] = []
    submitter_ids: list[int] = []

    def submitter() -> None:
        submitter_ids.append(threading.get_ident())
        with tracer.start_as_current_span("request") as request:
            parents.append(request.get_span_context())
            executor.submit(add, 1, 2)

    in_thread(submitter, name="loop-thread")
    done: Future[None] = Future()
    done.set_result(None)
    executor.run_until_future(done)

    (handoff,) = spans.named(semconv.HANDOFF)
    assert handoff.parent is not None and handoff.parent.span_id == parents[0].span_id
    assert dict(handoff.attributes or {}) == handoff_attributes(
        f"{add.__module__}.{add.__qualname__}", executor, submitter_ids[0], "loop-thread"
    )


def test_handoff_span_without_parent_is_root(spans: SpanRecorder) -> None:
    """Tests that a handoff submitted with no current span becomes a root span."""
    executor = CurrentThreadExecutor(None)
    in_thread(lambda: executor.submit(add, 1, 2))
    done: Future[None] = Future()
    done.set_result(None)
    executor.run_until_future(done)
    (handoff,) = spans.named(semconv.HANDOFF)
    assert handoff.parent is None


def test_handoff_span_executor_id_is_executor_that_queued(spans: SpanRecorder) -> None:
    """Tests that a handoff through a broken executor names the old executor that actually ran it."""
    outer = CurrentThreadExecutor(None)
    inner = CurrentThreadExecutor(outer)
    finished: Future[None] = Future()
    finished.set_result(None)
    inner.run_until_future(finished)
    in_thread(lambda: inner.submit(add, 1, 2))
    outer.run_until_future(finished)
    (handoff,) = spans.named(semconv.HANDOFF)
    assert (handoff.attributes or {})[semconv.EXECUTOR_ID] == id(outer)


def test_handoff_span_one_per_item_failures_included(spans: SpanRecorder) -> None:
    """Tests that every item that ran gets one handoff span (failed ones too), cancelled ones none."""
    executor = CurrentThreadExecutor(None)

    def fail() -> None:
        raise KeyError("x")

    futures = in_thread(lambda: [executor.submit(add, 1, 2), executor.submit(fail), executor.submit(add, 3, 4)])
    assert futures[2].cancel()
    done: Future[None] = Future()
    done.set_result(None)
    executor.run_until_future(done)
    names = [(s.attributes or {})[semconv.CODE_FUNCTION_NAME] for s in spans.named(semconv.HANDOFF)]
    assert names == [f"{add.__module__}.{add.__qualname__}", f"{fail.__module__}.{fail.__qualname__}"]


def test_handoff_tracing_off_records_nothing(spans: SpanRecorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that with tracing off no handoff is recorded and nothing on the work item is traced."""
    recorded: list[Any] = []
    monkeypatch.setattr(_telemetry, "record_handoff", lambda *a, **k: recorded.append(a))
    tracebridge.set_tracer_provider(None)
    assert _telemetry.get_tracer() is None  # no OpenTelemetry global provider in the tests either
    executor = CurrentThreadExecutor(None)
    futures = in_thread(lambda: [executor.submit(add, 1, 2)])
    item = executor._work_items[0]
    assert (item.tracer, item.parent, item.function) == (None, None, None)
    done: Future[None] = Future()
    done.set_result(None)
    executor.run_until_future(done)
    assert futures[0].result(0) == 3
    tracebridge.set_tracer_provider(spans.provider)
    assert recorded == []
    assert spans.named(semconv.HANDOFF) == []


def test_handoff_failing_tracing_does_not_break_executor(
    spans: SpanRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests that exceptions inside tracing are counted and swallowed while the work still runs."""

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tracing bug")

    monkeypatch.setattr(_telemetry, "record_handoff", explode)
    monkeypatch.setattr(_telemetry, "function_name", explode)
    before = tracebridge.stats().tracing_errors
    executor = CurrentThreadExecutor(None)
    monkeypatch.setattr(_telemetry.logger, "disabled", True)  # keep the one-time traceback log quiet

    def submitter() -> int:
        return executor.submit(add, 1, 2).result(WAIT)

    assert serve_while(executor, submitter) == 3
    assert tracebridge.stats().tracing_errors == before + 1  # capture failed, so nothing to record

    monkeypatch.setattr(_telemetry, "function_name", lambda fn: "named")
    executor2 = CurrentThreadExecutor(None)
    assert serve_while(executor2, lambda: executor2.submit(add, 2, 2).result(WAIT)) == 4
    assert tracebridge.stats().tracing_errors == before + 2  # record_handoff failed
