"""Tests for tracebridge.timeout (asgiref 3.13's deprecated timeout plus expiry spans)."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

import tracebridge
from tracebridge import _telemetry, semconv
from tracebridge import timeout as timeout_module

if TYPE_CHECKING:
    from conftest import SpanRecorder

DEPRECATED = r"tracebridge\.timeout\.timeout is deprecated\. Use asyncio\.timeout\(\) instead\."
LONG = 30.0  # a sleep the timeout must cut short (pytest-timeout fails the test long before)


def make_timeout(seconds: float | None) -> timeout_module.timeout:
    """Constructs a timeout, swallowing (only) its expected DeprecationWarning."""
    with pytest.warns(DeprecationWarning, match=DEPRECATED):
        return timeout_module.timeout(seconds)


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Replaces the span clock: entry reads 5 s, expiry reads 5.025 s (25 ms later)."""
    readings = iter([5_000_000_000, 5_025_000_000])
    monkeypatch.setattr(timeout_module, "_clock", lambda: next(readings))
    yield [5_000_000_000, 5_025_000_000]


# ---------------------------------------------------------------------------
# asgiref behaviour


async def test_timeout_construction_warns_deprecation() -> None:
    """Tests that constructing a timeout emits exactly one DeprecationWarning pointing at asyncio.timeout."""
    with pytest.warns(DeprecationWarning, match=DEPRECATED) as record:
        timeout_module.timeout(1)
    assert len(record) == 1
    assert record[0].filename == __file__  # stacklevel points at the caller


def test_timeout_with_loop_argument_warns_twice() -> None:
    """Tests that passing loop= adds a second DeprecationWarning about the loop argument."""
    loop = asyncio.new_event_loop()
    try:
        with pytest.warns(DeprecationWarning) as record:
            timeout_module.timeout(1, loop=loop)
        messages = [str(w.message) for w in record]
        assert len(messages) == 2
        assert "Use asyncio.timeout() instead." in messages[0]
        assert "loop argument" in messages[1]
    finally:
        loop.close()


def test_timeout_without_running_loop_raises() -> None:
    """Tests that constructing without loop= outside a running loop raises RuntimeError."""
    with pytest.warns(DeprecationWarning, match=DEPRECATED), pytest.raises(RuntimeError):
        timeout_module.timeout(1)


async def test_timeout_async_with_expiry_raises_timeout_error() -> None:
    """Tests that an expired async-with block raises the builtin TimeoutError and reports expired."""
    cm = make_timeout(0.01)
    with pytest.raises(TimeoutError) as info:
        async with cm:
            await asyncio.sleep(LONG)
    assert type(info.value) is TimeoutError
    assert isinstance(info.value.__context__, asyncio.CancelledError)
    assert cm.expired is True
    assert cm.remaining == 0.0


async def test_timeout_with_expiry_raises_timeout_error() -> None:
    """Tests that the plain with-statement form also turns its cancellation into TimeoutError."""
    cm = make_timeout(0.01)
    with pytest.raises(TimeoutError):
        with cm:
            await asyncio.sleep(LONG)
    assert cm.expired is True


async def test_timeout_zero_cancels_on_next_iteration() -> None:
    """Tests that a limit <= 0 cancels at the next loop iteration and has no remaining time."""
    for limit in (0, -1):
        cm = make_timeout(limit)
        with pytest.raises(TimeoutError):
            async with cm:
                assert cm.remaining is None
                await asyncio.sleep(LONG)
        assert cm.expired is True
        # 3.13 never uncancels (django/asgiref#504): clear it so the next round starts clean.
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()


async def test_timeout_fast_block_not_expired() -> None:
    """Tests that a block that finishes in time is untouched: not expired, remaining within the limit."""
    cm = make_timeout(LONG)
    async with cm:
        await asyncio.sleep(0)
        remaining = cm.remaining
    assert remaining is not None and 0.0 < remaining <= LONG
    assert cm.expired is False


async def test_timeout_fast_block_timer_cancelled_on_exit() -> None:
    """Tests that leaving the block in time cancels the timer, so the task is not cancelled later."""
    cm = make_timeout(0.01)
    async with cm:
        pass
    await asyncio.sleep(0.05)  # past the deadline: a leftover timer would cancel us here
    assert cm.expired is False
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_timeout_none_disables_limit() -> None:
    """Tests that None disables the timer: no remaining time, never expires."""
    cm = make_timeout(None)
    async with cm:
        await asyncio.sleep(0.01)
    assert cm.remaining is None
    assert cm.expired is False


async def test_timeout_outside_task_raises() -> None:
    """Tests that entering the block in a loop callback (no current task) raises asgiref's RuntimeError."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[BaseException | None] = loop.create_future()

    def callback() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                cm = timeout_module.timeout(1)
            with cm:
                pass
        except RuntimeError as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    loop.call_soon(callback)
    error = await asyncio.wait_for(outcome, 5)
    assert isinstance(error, RuntimeError)
    assert str(error) == "Timeout context manager should be used inside a task"


async def test_timeout_foreign_cancellation_propagates() -> None:
    """Tests that a CancelledError not caused by the timer passes through unchanged."""
    cm = make_timeout(LONG)
    with pytest.raises(asyncio.CancelledError):
        async with cm:
            raise asyncio.CancelledError
    assert cm.expired is False


async def test_timeout_expiry_leaves_task_cancelling() -> None:
    """Tests asgiref 3.13's known gap: after an expiry the task's cancelling() count stays raised (#504)."""
    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(TimeoutError):
        async with make_timeout(0.01):
            await asyncio.sleep(LONG)
    assert task.cancelling() == 1
    task.uncancel()


# ---------------------------------------------------------------------------
# Expiry spans


async def test_timeout_expiry_span_attributes_and_parent(spans: SpanRecorder, fake_clock: list[int]) -> None:
    """Tests that an expiry records one span under the entry-time span, from entry to expiry."""
    tracer = spans.provider.get_tracer("test")
    task = asyncio.current_task()
    assert task is not None
    with tracer.start_as_current_span("request") as request:
        with pytest.raises(TimeoutError):
            async with make_timeout(0.01):
                await asyncio.sleep(LONG)
    task.uncancel()

    (expiry,) = spans.named(semconv.TIMEOUT_EXPIRY)
    assert expiry.parent is not None
    assert expiry.parent.span_id == request.get_span_context().span_id
    assert expiry.context.trace_id == request.get_span_context().trace_id
    assert dict(expiry.attributes or {}) == {
        semconv.TIMEOUT_LIMIT_MS: 10.0,
        semconv.TIMEOUT_ELAPSED_MS: 25.0,
        semconv.TIMEOUT_CANCELLED_TASK: (
            f"{task.get_name()} (test_timeout_expiry_span_attributes_and_parent)"
        ),
        semconv.THREAD_ID: threading.get_ident(),
        semconv.THREAD_NAME: threading.current_thread().name,
    }
    assert (expiry.start_time, expiry.end_time) == tuple(fake_clock)


async def test_timeout_expiry_span_names_cancelled_child_task(spans: SpanRecorder) -> None:
    """Tests that the span names the task the timer cancelled (a child task, by name and coroutine)."""

    async def slow_child() -> None:
        async with make_timeout(0.01):
            await asyncio.sleep(LONG)

    child = asyncio.create_task(slow_child(), name="child-7")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(child, 5)
    (expiry,) = spans.named(semconv.TIMEOUT_EXPIRY)
    assert (expiry.attributes or {})[semconv.TIMEOUT_CANCELLED_TASK] == (
        "child-7 (test_timeout_expiry_span_names_cancelled_child_task.<locals>.slow_child)"
    )
    assert expiry.parent is None  # no span was current when the block was entered


async def test_timeout_no_expiry_records_nothing(spans: SpanRecorder) -> None:
    """Tests that blocks that finish in time (or have no limit) record no span."""
    async with make_timeout(LONG):
        await asyncio.sleep(0)
    async with make_timeout(None):
        await asyncio.sleep(0)
    assert spans.named(semconv.TIMEOUT_EXPIRY) == []


async def test_timeout_tracing_off_records_nothing(spans: SpanRecorder) -> None:
    """Tests that with tracing off an expiry records nothing and captures nothing at entry."""
    tracebridge.set_tracer_provider(None)
    assert _telemetry.get_tracer() is None
    cm = make_timeout(0.01)
    try:
        with pytest.raises(TimeoutError):
            async with cm:
                assert cm._trace is None
                await asyncio.sleep(LONG)
    finally:
        tracebridge.set_tracer_provider(spans.provider)
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()
    assert spans.named(semconv.TIMEOUT_EXPIRY) == []


async def test_timeout_failing_tracing_still_times_out(
    spans: SpanRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests that an exception inside expiry tracing is swallowed and counted; the timeout still works."""

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tracing bug")

    monkeypatch.setattr(_telemetry.deferred, "record", explode)
    monkeypatch.setattr(_telemetry.logger, "disabled", True)  # keep the one-time traceback log quiet
    before = tracebridge.stats().tracing_errors
    cm = make_timeout(0.01)
    with pytest.raises(TimeoutError):
        async with cm:
            await asyncio.sleep(LONG)
    task = asyncio.current_task()
    assert task is not None
    task.uncancel()
    assert cm.expired is True
    assert tracebridge.stats().tracing_errors == before + 1
