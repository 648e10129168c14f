"""Span tests for the bridges: names, tree shape, whole attribute dicts, no leaks."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import StatusCode

import tracebridge
import tracebridge._hop
from tracebridge import _telemetry, semconv
from tracebridge.sync import ThreadSensitiveContext, async_to_sync, sync_to_async

from conftest import SpanRecorder

HOPS = (semconv.SYNC_TO_ASYNC, semconv.ASYNC_TO_SYNC)


def current_thread() -> threading.Thread:
    return threading.current_thread()


def hop_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if span.name in HOPS]


def parent_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    matches = [s for s in spans if s.context.span_id == span.parent.span_id]
    assert len(matches) == 1, f"parent of {span.name} not exported"
    return matches[0]


def timings(span: ReadableSpan) -> tuple[dict[str, Any], float, float]:
    """The span's attributes without the two durations, and the durations."""
    attributes = dict(span.attributes or {})
    queue_wait = attributes.pop(semconv.QUEUE_WAIT_MS)
    run_time = attributes.pop(semconv.RUN_TIME_MS)
    return attributes, queue_wait, run_time


def sample_function() -> threading.Thread:
    return threading.current_thread()


async def sample_coroutine() -> threading.Thread:
    return threading.current_thread()


async def test_sync_to_async_global_thread_span_has_whole_attribute_dict(spans: SpanRecorder) -> None:
    """Tests that a thread-sensitive sync_to_async hop is one span with exactly the documented attributes."""
    caller = current_thread()
    loop = asyncio.get_running_loop()
    worker = await sync_to_async(sample_function)()

    (hop,) = spans.named(semconv.SYNC_TO_ASYNC)
    attributes, queue_wait, run_time = timings(hop)
    assert attributes == {
        semconv.DIRECTION: semconv.DIRECTION_SYNC_TO_ASYNC,
        semconv.CODE_FUNCTION_NAME: f"{__name__}.sample_function",
        semconv.CALLER_THREAD_ID: caller.ident,
        semconv.CALLER_THREAD_NAME: caller.name,
        semconv.THREAD_ID: worker.ident,
        semconv.THREAD_NAME: worker.name,
        semconv.THREAD_SENSITIVE: True,
        semconv.EXECUTOR_KIND: semconv.EXECUTOR_GLOBAL_SYNC_THREAD,
        semconv.EXECUTOR_ID: id(tracebridge.sync.SyncToAsync.single_thread_executor),
        semconv.LOOP_ID: id(loop),
    }
    assert queue_wait >= 0 and run_time >= 0
    assert queue_wait + run_time <= (hop.end_time - hop.start_time) / 1e6 + 1e-3
    assert hop.status.status_code is StatusCode.UNSET
    assert worker is not caller


async def test_sync_to_async_handoff_span_is_child_of_hop(spans: SpanRecorder) -> None:
    """Tests that a work item on a single-thread pool gets a handoff span under its hop."""
    caller = current_thread()
    worker = await sync_to_async(sample_function)()

    finished = spans.finished()
    (hop,) = [s for s in finished if s.name == semconv.SYNC_TO_ASYNC]
    (handoff,) = [s for s in finished if s.name == semconv.HANDOFF]
    assert parent_of(handoff, finished) is hop
    attributes, queue_wait, run_time = timings(handoff)
    assert attributes == {
        semconv.CODE_FUNCTION_NAME: f"{__name__}.sample_function",
        semconv.EXECUTOR_KIND: semconv.HANDOFF_EXECUTOR_THREAD_POOL,
        semconv.EXECUTOR_ID: id(tracebridge.sync.SyncToAsync.single_thread_executor),
        semconv.QUEUED_THREAD_ID: caller.ident,
        semconv.QUEUED_THREAD_NAME: caller.name,
        semconv.THREAD_ID: worker.ident,
        semconv.THREAD_NAME: worker.name,
    }
    assert queue_wait >= 0 and run_time >= 0


@pytest.mark.parametrize(
    ("thread_sensitive", "use_executor", "kind"),
    [
        (False, False, semconv.EXECUTOR_LOOP_DEFAULT),
        (False, True, semconv.EXECUTOR_GIVEN),
    ],
)
async def test_sync_to_async_not_thread_sensitive_records_executor_kind(
    spans: SpanRecorder, thread_sensitive: bool, use_executor: bool, kind: str
) -> None:
    """Tests that thread_sensitive=False hops say whether the loop's or the given executor ran them."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="given") as pool:
        executor = pool if use_executor else None
        worker = await sync_to_async(sample_function, thread_sensitive=thread_sensitive, executor=executor)()
    (hop,) = spans.named(semconv.SYNC_TO_ASYNC)
    assert hop.attributes[semconv.EXECUTOR_KIND] == kind
    assert hop.attributes[semconv.THREAD_SENSITIVE] is False
    assert hop.attributes[semconv.THREAD_ID] == worker.ident
    if use_executor:
        assert hop.attributes[semconv.EXECUTOR_ID] == id(pool)
        assert worker.name.startswith("given")
    assert spans.named(semconv.HANDOFF) == []


async def test_sync_to_async_in_thread_sensitive_context_records_context_executor(spans: SpanRecorder) -> None:
    """Tests that a hop inside ThreadSensitiveContext names that rule and its thread."""
    async with ThreadSensitiveContext():
        worker = await sync_to_async(sample_function)()
    (hop,) = spans.named(semconv.SYNC_TO_ASYNC)
    assert hop.attributes[semconv.EXECUTOR_KIND] == semconv.EXECUTOR_THREAD_SENSITIVE_CONTEXT
    assert hop.attributes[semconv.THREAD_NAME] == worker.name
    assert worker is not tracebridge.sync.SyncToAsync.single_thread_executor


def test_async_to_sync_new_loop_span_has_whole_attribute_dict(spans: SpanRecorder) -> None:
    """Tests that async_to_sync from a plain thread records a new loop on a new thread."""
    caller = current_thread()
    loop_thread = async_to_sync(sample_coroutine)()

    (hop,) = spans.named(semconv.ASYNC_TO_SYNC)
    attributes, queue_wait, run_time = timings(hop)
    loop_id = attributes.pop(semconv.LOOP_ID)
    executor_id = attributes.pop(semconv.EXECUTOR_ID)
    assert isinstance(loop_id, int) and isinstance(executor_id, int)
    assert attributes == {
        semconv.DIRECTION: semconv.DIRECTION_ASYNC_TO_SYNC,
        semconv.CODE_FUNCTION_NAME: f"{__name__}.sample_coroutine",
        semconv.CALLER_THREAD_ID: caller.ident,
        semconv.CALLER_THREAD_NAME: caller.name,
        semconv.THREAD_ID: loop_thread.ident,
        semconv.THREAD_NAME: loop_thread.name,
        semconv.LOOP_ROUTE: semconv.LOOP_ROUTE_NEW_LOOP,
        semconv.LOOP_NEW: True,
    }
    assert loop_thread is not caller
    assert queue_wait >= 0 and run_time >= 0


def test_nested_hops_read_as_one_tree(spans: SpanRecorder) -> None:
    """Tests that async → sync → async → sync hops, with a user span inside, form one correctly nested trace."""
    user_tracer = spans.provider.get_tracer("user")
    threads: dict[str, threading.Thread] = {}

    def innermost() -> None:
        threads["innermost"] = current_thread()
        with user_tracer.start_as_current_span("user.work"):
            pass

    async def inner_async() -> None:
        threads["inner_loop"] = current_thread()
        await sync_to_async(innermost)()

    def middle() -> None:
        threads["middle"] = current_thread()
        async_to_sync(inner_async)()

    async def outer() -> None:
        threads["outer_loop"] = current_thread()
        await sync_to_async(middle)()

    async_to_sync(outer)()

    finished = spans.finished()
    names = {s.name for s in finished}
    assert names == {semconv.ASYNC_TO_SYNC, semconv.SYNC_TO_ASYNC, semconv.HANDOFF, "user.work"}
    assert len({s.context.trace_id for s in finished}) == 1

    (user_span,) = [s for s in finished if s.name == "user.work"]
    chain = []
    node: ReadableSpan | None = user_span
    while node is not None:
        chain.append(node)
        node = parent_of(node, finished)
    assert [s.name for s in chain] == [
        "user.work",
        semconv.SYNC_TO_ASYNC,  # innermost(), back on the thread blocked in the outer async_to_sync
        semconv.ASYNC_TO_SYNC,  # inner_async() on the outer loop
        semconv.SYNC_TO_ASYNC,  # middle() on the main thread, serving the CurrentThreadExecutor
        semconv.ASYNC_TO_SYNC,  # outer() on a new loop
    ]
    inner_s2a, inner_a2s, outer_s2a, outer_a2s = chain[1:]
    assert outer_a2s.attributes[semconv.THREAD_ID] == threads["outer_loop"].ident
    assert outer_s2a.attributes[semconv.EXECUTOR_KIND] == semconv.EXECUTOR_OUTER_CURRENT_THREAD
    assert outer_s2a.attributes[semconv.THREAD_ID] == threads["middle"].ident == threading.main_thread().ident
    assert inner_a2s.attributes[semconv.LOOP_ROUTE] == semconv.LOOP_ROUTE_PARENT_LOOP
    assert inner_a2s.attributes[semconv.LOOP_NEW] is False
    assert inner_a2s.attributes[semconv.THREAD_ID] == threads["inner_loop"].ident == threads["outer_loop"].ident
    assert inner_s2a.attributes[semconv.EXECUTOR_KIND] == semconv.EXECUTOR_OUTER_CURRENT_THREAD
    assert inner_s2a.attributes[semconv.THREAD_ID] == threads["innermost"].ident == threads["middle"].ident

    # Both CurrentThreadExecutor handoffs hang under the hop they carried.
    handoffs = [s for s in finished if s.name == semconv.HANDOFF]
    assert sorted(parent_of(h, finished).context.span_id for h in handoffs) == sorted(
        [inner_s2a.context.span_id, outer_s2a.context.span_id]
    )
    for handoff in handoffs:
        assert handoff.attributes[semconv.EXECUTOR_KIND] == semconv.HANDOFF_EXECUTOR_CURRENT_THREAD
        assert handoff.attributes[semconv.THREAD_ID] == threading.main_thread().ident


async def test_hop_span_does_not_leak_into_caller_context(spans: SpanRecorder) -> None:
    """Tests that after a hop (whose contextvars flow back) the caller's current span is unchanged."""
    user_tracer = spans.provider.get_tracer("user")
    with user_tracer.start_as_current_span("request") as request:
        seen_inside: list[trace.Span] = []

        def inside() -> None:
            seen_inside.append(trace.get_current_span())

        await sync_to_async(inside)()
        assert trace.get_current_span() is request
        await sync_to_async(inside, thread_sensitive=False)()
        assert trace.get_current_span() is request
    (hop, _) = spans.named(semconv.SYNC_TO_ASYNC)
    assert seen_inside[0].get_span_context().span_id == hop.context.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_async_to_sync_span_does_not_leak_into_sync_caller(spans: SpanRecorder) -> None:
    """Tests that async_to_sync's copy-back leaves the sync caller's current span alone."""
    user_tracer = spans.provider.get_tracer("user")
    with user_tracer.start_as_current_span("job") as job:
        async_to_sync(sample_coroutine)()
        assert trace.get_current_span() is job
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_sync_to_async_exception_recorded_and_propagated(spans: SpanRecorder) -> None:
    """Tests that a failing sync function's exception propagates unchanged and marks the span ERROR."""
    boom = KeyError("missing")

    def fail() -> None:
        raise boom

    with pytest.raises(KeyError) as raised:
        await sync_to_async(fail)()
    assert raised.value is boom
    (hop,) = spans.named(semconv.SYNC_TO_ASYNC)
    assert hop.status.status_code is StatusCode.ERROR
    assert hop.attributes[semconv.ERROR_TYPE] == "KeyError"
    (event,) = hop.events
    assert event.name == semconv.EXCEPTION_EVENT
    assert event.attributes[semconv.EXCEPTION_TYPE] == "KeyError"
    assert "raise boom" in event.attributes[semconv.EXCEPTION_STACKTRACE]


def test_async_to_sync_exception_recorded_and_propagated(spans: SpanRecorder) -> None:
    """Tests that a failing coroutine's exception reaches the sync caller and marks the span ERROR."""

    class Refused(Exception):
        pass

    async def fail() -> None:
        raise Refused("no")

    with pytest.raises(Refused):
        async_to_sync(fail)()
    (hop,) = spans.named(semconv.ASYNC_TO_SYNC)
    assert hop.status.status_code is StatusCode.ERROR
    assert hop.attributes[semconv.ERROR_TYPE] == f"{__name__}.test_async_to_sync_exception_recorded_and_propagated.<locals>.Refused"


async def test_tracing_off_records_nothing_and_calls_no_span_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that with no provider the bridges never reach the span API."""
    assert _telemetry.get_tracer() is None

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("span API called with tracing off")

    monkeypatch.setattr(tracebridge._hop.Hop, "open", forbidden)
    monkeypatch.setattr(_telemetry.deferred, "record", forbidden)
    monkeypatch.setattr(_telemetry.deferred, "push", forbidden)
    monkeypatch.setattr(_telemetry.deferred, "add", forbidden)
    await sync_to_async(sample_function)()
    await sync_to_async(sample_function, thread_sensitive=False)()
    assert len(_telemetry.deferred) == 0


def test_tracing_turns_on_when_global_provider_set_after_import() -> None:
    """Tests that a provider installed globally after tracebridge was imported switches tracing on."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    assert _telemetry.get_tracer() is None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER = provider  # what set_tracer_provider does, minus its set-once guard
    try:
        async_to_sync(sample_coroutine)()
        tracebridge.flush()
        assert [s.name for s in exporter.get_finished_spans()] == [semconv.ASYNC_TO_SYNC]
    finally:
        trace._TRACER_PROVIDER = saved
        provider.shutdown()
    assert _telemetry.get_tracer() is None


async def test_tracing_failure_is_swallowed_and_counted(spans: SpanRecorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that an exception inside tracing code never reaches user code, and is counted."""
    before = tracebridge.stats().tracing_errors

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tracing bug")

    # Building the callee's context is the last step of opening a hop.
    monkeypatch.setattr(tracebridge._hop, "_Context", broken)
    worker = await sync_to_async(sample_function)()
    assert isinstance(worker, threading.Thread)
    assert tracebridge.stats().tracing_errors > before


def test_hop_with_non_sdk_tracer_records_a_live_span() -> None:
    """Tests the on-the-spot path used when the tracer's ids cannot be chosen (a non-SDK provider)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(exporter))

    class Wrapped(trace.TracerProvider):
        """A third-party provider: hands out the SDK's tracers behind a proxy object."""

        def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
            inner = sdk.get_tracer(*args, **kwargs)

            class Proxy(trace.Tracer):
                def start_span(self, *a: Any, **k: Any) -> trace.Span:
                    return inner.start_span(*a, **k)

                def start_as_current_span(self, *a: Any, **k: Any) -> Any:
                    return inner.start_as_current_span(*a, **k)

            return Proxy()

    async def thread_sensitive_hop() -> None:
        await sync_to_async(sample_function)()  # the global sync thread: a hop and its handoff

    tracebridge.set_tracer_provider(Wrapped())
    try:
        async_to_sync(sample_coroutine)()
        asyncio.run(thread_sensitive_hop())
        tracebridge.flush()
    finally:
        tracebridge.set_tracer_provider(None)
    a2s, handoff, s2a = sorted(exporter.get_finished_spans(), key=lambda span: span.name)
    assert a2s.name == semconv.ASYNC_TO_SYNC
    assert a2s.attributes[semconv.LOOP_ROUTE] == semconv.LOOP_ROUTE_NEW_LOOP
    assert semconv.RUN_TIME_MS in a2s.attributes
    assert s2a.name == semconv.SYNC_TO_ASYNC
    assert s2a.attributes[semconv.EXECUTOR_KIND] == semconv.EXECUTOR_GLOBAL_SYNC_THREAD
    assert handoff.name == semconv.HANDOFF
    assert handoff.parent is not None and handoff.parent.span_id == s2a.context.span_id
    assert handoff.attributes[semconv.EXECUTOR_KIND] == semconv.HANDOFF_EXECUTOR_THREAD_POOL


def _shape(spans: SpanRecorder) -> list[tuple[str, str | None, frozenset[str], StatusCode, tuple[str, ...]]]:
    finished = spans.finished()
    by_id = {s.context.span_id: s for s in finished}
    rows = []
    for span in finished:
        parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        rows.append(
            (
                span.name,
                parent.name if parent is not None else None,
                frozenset(span.attributes or {}),
                span.status.status_code,
                tuple(event.name for event in span.events),
            )
        )
    return sorted(rows, key=repr)


def test_deferred_spans_same_whether_emitted_directly_or_through_start_span(
    spans: SpanRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests that building deferred spans as ReadableSpans gives the same trace as start_span/end."""
    user_tracer = spans.provider.get_tracer("user")

    def fail() -> None:
        raise ValueError("nope")

    async def body() -> None:
        await sync_to_async(sample_function)()
        with pytest.raises(ValueError):
            await sync_to_async(fail)()

    shapes = []
    for direct_off in (False, True):
        monkeypatch.setattr(_telemetry, "_DIRECT_SPANS_OFF", direct_off)
        spans.clear()
        with user_tracer.start_as_current_span("request"):
            async_to_sync(body)()
        shapes.append(_shape(spans))
    direct, through_sdk = shapes
    assert direct == through_sdk
    names = [row[0] for row in direct]
    assert names.count(semconv.SYNC_TO_ASYNC) == 2 and names.count(semconv.HANDOFF) == 2
    (failed,) = [row for row in direct if row[3] is StatusCode.ERROR]
    assert failed[0] == semconv.SYNC_TO_ASYNC and failed[4] == (semconv.EXCEPTION_EVENT,)
    assert semconv.ERROR_TYPE in failed[2]


async def test_closed_hop_keeps_its_callees_name_not_its_bound_instance_or_closure_cells(
    spans: SpanRecorder,
) -> None:
    """Tests that a hop waiting for the drain thread no longer keeps the callee's instance or captured objects alive."""

    class Response:
        def close(self) -> None:
            pass

    class Payload:
        pass

    def make_closure(captured: Payload) -> Any:
        def closure() -> None:
            assert captured is not None

        return closure

    response, payload = Response(), Payload()
    closure = make_closure(payload)
    expected = [_telemetry.function_name(response.close), _telemetry.function_name(closure)]
    response_alive, payload_alive = weakref.ref(response), weakref.ref(payload)
    await sync_to_async(sample_function)()  # the drain thread is started (that takes the lock held below)
    spans.clear()
    with _telemetry.deferred._drain_lock:  # the drain thread must not build the spans meanwhile
        await sync_to_async(response.close)()
        await sync_to_async(closure)()
        del response, payload, closure
        gc.collect()
        assert response_alive() is None and payload_alive() is None
        assert len(_telemetry.deferred) >= 2  # both hops still wait for the drain thread
    names = [span.attributes[semconv.CODE_FUNCTION_NAME] for span in spans.named(semconv.SYNC_TO_ASYNC)]
    assert names == expected


def planned_spans_in_cycles(run: Any) -> list[str]:
    """Types of the planned spans (hops, WSGI calls) that ``run()`` left for the garbage collector.

    With the collector off, an object in a reference cycle outlives its last
    use until a collection; DEBUG_SAVEALL keeps what that collection found.
    """
    gc.disable()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run()
        tracebridge.flush()  # the drain builds the spans and lets go of the hops
        gc.collect()
        return sorted(type(o).__name__ for o in gc.garbage if isinstance(o, tracebridge._hop.PlannedSpan))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("thread_sensitive", [True, False])
def test_traced_hops_leave_no_reference_cycles(spans: SpanRecorder, thread_sensitive: bool) -> None:
    """Tests that a traced hop is freed by reference counting once built, not kept for the collector.

    A hop is its own current span; a hop that stored itself as its span was a
    cycle: every hop survived to the next collection and was traversed by it.
    """

    async def caller() -> None:
        await sync_to_async(async_to_sync(asyncio.sleep), thread_sensitive=thread_sensitive)(0)

    assert planned_spans_in_cycles(lambda: asyncio.run(caller())) == []
    assert len(hop_spans(spans.finished())) == 2


# ---------------------------------------------------------------------------
# Code inside a hop recording on the current span (the hop).


def record_on_current_span(kept: list[Any]) -> None:
    """What application code does inside a hop: record on trace.get_current_span()."""
    span = trace.get_current_span()
    kept.append(span)
    assert span.is_recording()
    span.set_attribute("app.user_id", 7)
    span.set_attributes({"app.tags": ["a", "b"], "app.cached": False})
    span.add_event("cache miss")  # name only, as the Span API allows
    span.add_event("query", {"db.rows": 3}, timestamp=123)
    span.record_exception(ValueError("handled here"))
    span.set_status(StatusCode.ERROR, "backend said no")
    span.update_name("ignored")


def assert_recorded_on_hop(hop: ReadableSpan) -> None:
    attributes = dict(hop.attributes or {})
    assert attributes["app.user_id"] == 7
    assert attributes["app.tags"] == ("a", "b")
    assert attributes["app.cached"] is False
    assert attributes[semconv.CODE_FUNCTION_NAME].endswith("record_on_current_span")  # still the hop's own facts
    assert hop.name == semconv.SYNC_TO_ASYNC
    names = [event.name for event in hop.events]
    assert names == ["cache miss", "query", semconv.EXCEPTION_EVENT]
    assert hop.events[1].timestamp == 123 and dict(hop.events[1].attributes or {}) == {"db.rows": 3}
    exception = dict(hop.events[2].attributes or {})
    assert exception[semconv.EXCEPTION_TYPE] == "ValueError"
    assert exception[semconv.EXCEPTION_MESSAGE] == "handled here"
    assert exception[semconv.EXCEPTION_ESCAPED] == "False"
    assert hop.status.status_code is StatusCode.ERROR
    assert hop.status.description == "backend said no"


def test_code_inside_a_hop_records_on_the_hop_span(spans: SpanRecorder) -> None:
    """Tests that attributes, events, exceptions and status set on the current span inside a hop reach its span."""
    kept: list[Any] = []
    asyncio.run(sync_to_async(record_on_current_span)(kept))
    (hop,) = spans.named(semconv.SYNC_TO_ASYNC)
    assert_recorded_on_hop(hop)
    # Once the hop is closed, as on an ended span: nothing more is recorded.
    (span,) = kept
    assert not span.is_recording()
    span.set_attribute("app.late", 1)
    span.add_event("late")
    spans.clear()
    asyncio.run(sync_to_async(sample_function)())
    assert "app.late" not in (hop.attributes or {})
    assert [s for s in spans.finished() if "app.late" in (s.attributes or {})] == []


def test_hop_error_overrides_status_set_inside(spans: SpanRecorder) -> None:
    """Tests that a hop that raises ends as an error, whatever status the code set before raising."""

    def fails() -> None:
        trace.get_current_span().set_status(StatusCode.OK)
        raise KeyError("gone")

    with pytest.raises(KeyError):
        asyncio.run(sync_to_async(fails)())
    (hop,) = spans.named(semconv.SYNC_TO_ASYNC)
    assert hop.status.status_code is StatusCode.ERROR
    assert (hop.attributes or {})[semconv.ERROR_TYPE] == "KeyError"


def test_unsampled_hop_records_nothing_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that inside a hop of an unsampled trace the span is not recording and recording on it is harmless."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    recorder = SpanRecorder()
    recorder.provider = TracerProvider(sampler=ALWAYS_OFF)
    tracebridge.set_tracer_provider(recorder.provider)
    try:
        seen: list[bool] = []

        def inside() -> None:
            span = trace.get_current_span()
            seen.append(span.is_recording())
            span.set_attribute("app.x", 1)
            span.add_event("x")

        asyncio.run(sync_to_async(inside)())
        assert seen == [False]
    finally:
        tracebridge.set_tracer_provider(None)
