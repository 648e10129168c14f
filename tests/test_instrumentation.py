"""Tests for tracebridge.instrumentation: the real asgiref, instrumented, traces like tracebridge.

The core check runs one workload twice — on tracebridge's own modules and on the
instrumented asgiref — and compares the two traces reduced to a canonical tree:
span names, attribute key sets, the values that say *what happened* (direction,
function, executor kind, loop route, Local operation...), and thread / executor
/ loop / Local identities relabelled by order of appearance (so "the callee
ran on the caller's thread" or "both hops used one executor" must match, while
thread names and ids may differ).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import subprocess
import sys
import threading
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import asgiref
import asgiref.current_thread_executor
import asgiref.local
import asgiref.sync
import asgiref.timeout
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracebridge
import tracebridge.local
import tracebridge.sync
import tracebridge.timeout
from tracebridge import _hop, _telemetry, semconv
from tracebridge.instrumentation import AsgirefInstrumentor, HopCensus, _asgiref, _asgiref_local, _asgiref_s2a

from conftest import SpanRecorder

# ---------------------------------------------------------------------------
# Fixtures and helpers.


@dataclass
class Impl:
    """One implementation of the asgiref API: tracebridge's modules or the real asgiref's."""

    name: str
    sync: Any
    local: Any
    timeout: Any


TRACEBRIDGE = Impl("tracebridge", tracebridge.sync, tracebridge.local, tracebridge.timeout)
ASGIREF = Impl("asgiref", asgiref.sync, asgiref.local, asgiref.timeout)


def originals() -> dict[tuple[type, str], Any]:
    """Every patch point's current class attribute (the originals, when not instrumented)."""
    found = {}
    for point in _asgiref.patch_points():
        owner = getattr(sys.modules[point.module], point.owner)
        found[(owner, point.name)] = owner.__dict__[point.name]
    return found


PRISTINE = originals()


@pytest.fixture(params=["fused", "generic"])
def instrumented(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[AsgirefInstrumentor]:
    """The real asgiref instrumented for the test (no census), pristine again afterwards.

    Twice: with the replacements written for this asgiref's checked source
    (``fused``), and with the generic patches any other asgiref 3.x gets.
    """
    if request.param == "generic":
        monkeypatch.setattr(_asgiref_s2a, "_FUSED_SOURCES", {})
        monkeypatch.setattr(_asgiref_local, "_FUSED_SOURCES", {})
    instrumentor = AsgirefInstrumentor()
    instrumentor.instrument(census=False)
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()
    assert originals() == PRISTINE


IDENTITY_KEYS = (
    semconv.THREAD_ID,
    semconv.CALLER_THREAD_ID,
    semconv.QUEUED_THREAD_ID,
    semconv.EXECUTOR_ID,
    semconv.LOOP_ID,
    semconv.LOCAL_ID,
)
FACT_KEYS = (
    semconv.DIRECTION,
    semconv.CODE_FUNCTION_NAME,
    semconv.EXECUTOR_KIND,
    semconv.THREAD_SENSITIVE,
    semconv.LOOP_ROUTE,
    semconv.LOOP_NEW,
    semconv.LOCAL_ATTRIBUTE,
    semconv.LOCAL_OPERATION,
    semconv.LOCAL_FOUND,
    semconv.LOCAL_THREAD_CRITICAL,
    semconv.ERROR_TYPE,
    semconv.TIMEOUT_LIMIT_MS,
)


def canonical(spans: Sequence[ReadableSpan]) -> list[Any]:
    """The trace forest as nested tuples, identities relabelled by first appearance in each tree."""
    by_id = {span.context.span_id: span for span in spans}
    children: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in by_id else None
        children[parent].append(span)
    labels: dict[tuple[str, Any], str] = {}

    def label(kind: str, value: Any) -> str:
        return labels.setdefault((kind, value), f"{kind}{sum(1 for k, _ in labels if k == kind)}")

    def node(span: ReadableSpan) -> tuple[Any, ...]:
        attributes = dict(span.attributes or {})
        facts = {key: attributes[key] for key in FACT_KEYS if key in attributes}
        for key in IDENTITY_KEYS:
            if key in attributes:
                kind = "thread" if key.endswith("thread.id") else "object"
                facts[key] = label(kind, attributes[key])
        if semconv.TIMEOUT_CANCELLED_TASK in attributes:  # "Task-7 (qualname)": task numbers differ
            facts[semconv.TIMEOUT_CANCELLED_TASK] = str(attributes[semconv.TIMEOUT_CANCELLED_TASK]).split(" ", 1)[1]
        events = tuple(event.name for event in span.events)
        kids = sorted(children[span.context.span_id], key=lambda s: (s.start_time, s.name))
        return (span.name, tuple(sorted(attributes)), facts, span.status.status_code.name, events,
                [node(kid) for kid in kids])

    roots = sorted(children[None], key=lambda s: (s.start_time, s.name))
    forest = []
    for root in roots:
        # Per tree: ids of freed objects (loops, threads of finished pools) are reused.
        labels.clear()
        forest.append(node(root))
    return forest


def run_both(spans: SpanRecorder, workload: Callable[[Impl], Any]) -> tuple[list[Any], list[Any]]:
    """Canonical traces of ``workload`` on tracebridge and on the instrumented asgiref."""
    traces = []
    for impl in (TRACEBRIDGE, ASGIREF):
        spans.clear()
        workload(impl)
        traces.append(canonical(spans.finished()))
    return traces[0], traces[1]


tracer = trace.get_tracer("tests.instrumentation")


def user_span(name: str) -> None:
    """A span the user makes inside a hop: it must be the hop's child."""
    with tracer.start_as_current_span(name):
        pass


@pytest.fixture
def user_spans(spans: SpanRecorder, monkeypatch: pytest.MonkeyPatch) -> SpanRecorder:
    """User spans (this module's tracer) recorded into the test provider too."""
    monkeypatch.setattr(sys.modules[__name__], "tracer", spans.provider.get_tracer("tests.instrumentation"))
    return spans


class Boom(Exception):
    """The error the failing workload raises."""


# ---------------------------------------------------------------------------
# Workloads: the same code, on either implementation.


def sync_leaf(impl_local: Any) -> str:
    user_span("leaf")
    impl_local.value = 1
    _ = impl_local.value
    getattr(impl_local, "missing", None)
    return threading.current_thread().name


def workload_global_thread(impl: Impl) -> None:
    local = impl.local.Local()

    async def main() -> None:
        await impl.sync.sync_to_async(sync_leaf)(local)
        await impl.sync.sync_to_async(sync_leaf, thread_sensitive=False)(local)
        with ThreadPoolExecutor(max_workers=1) as executor:
            await impl.sync.sync_to_async(sync_leaf, thread_sensitive=False, executor=executor)(local)

    asyncio.run(main())


def workload_request_like(impl: Impl) -> None:
    """Django's shape: a ThreadSensitiveContext, sync code calling async code calling sync code."""
    local = impl.local.Local()
    critical = impl.local.Local(thread_critical=True)

    async def inner() -> str:
        critical.db = "connection"
        return await impl.sync.sync_to_async(sync_leaf)(local)

    def middleware() -> str:
        _ = getattr(critical, "db", None)
        return impl.sync.async_to_sync(inner)()

    async def main() -> None:
        async with impl.sync.ThreadSensitiveContext():
            await impl.sync.sync_to_async(middleware)()
            await impl.sync.sync_to_async(middleware)()

    asyncio.run(main())


def workload_new_loops(impl: Impl) -> None:
    """async_to_sync from a plain thread (a new loop), a context-less task, a single-thread context."""
    local = impl.local.Local()

    async def lost_context() -> str:
        # A task with an empty context cannot see the sync frame: the loop registry finds it.
        task = asyncio.get_running_loop().create_task(
            impl.sync.sync_to_async(sync_leaf)(local), context=contextvars.Context()
        )
        return await task

    async def plain() -> str:
        return await impl.sync.sync_to_async(sync_leaf)(local)

    def run() -> None:
        impl.sync.async_to_sync(plain)()
        impl.sync.async_to_sync(lost_context)()
        with impl.sync.AsyncSingleThreadContext():
            impl.sync.async_to_sync(plain)()
            impl.sync.async_to_sync(plain, force_new_loop=True)()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()


def workload_errors(impl: Impl) -> None:
    def fail() -> None:
        raise Boom("sync side failed")

    async def afail() -> None:
        raise Boom("async side failed")

    def call_afail() -> None:
        impl.sync.async_to_sync(afail)()

    async def main() -> None:
        with pytest.raises(Boom):
            await impl.sync.sync_to_async(fail)()
        with pytest.raises(Boom):
            await impl.sync.sync_to_async(call_afail)()

    asyncio.run(main())


def workload_timeout(impl: Impl) -> None:
    async def sleeper() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with pytest.raises(TimeoutError):
                async with impl.timeout.timeout(0.01):
                    await asyncio.sleep(10)
            async with impl.timeout.timeout(5):  # in time: no span
                await asyncio.sleep(0)

    asyncio.run(sleeper())


WORKLOADS = {
    "global_thread_and_loop_default": workload_global_thread,
    "request_like": workload_request_like,
    "new_loops": workload_new_loops,
    "errors": workload_errors,
    "timeout": workload_timeout,
}


# ---------------------------------------------------------------------------
# Same spans as tracebridge's own implementation.


@pytest.mark.parametrize("workload", WORKLOADS.values(), ids=WORKLOADS.keys())
def test_asgiref_instrumented_same_trace_as_tracebridge(
    workload: Callable[[Impl], Any], user_spans: SpanRecorder, instrumented: AsgirefInstrumentor
) -> None:
    """Tests that the instrumented asgiref traces a workload exactly as tracebridge's own modules do."""
    ours, theirs = run_both(user_spans, workload)
    assert ours, "the workload made no spans"
    assert theirs == ours


def test_asgiref_request_like_trace_has_expected_shape(
    user_spans: SpanRecorder, instrumented: AsgirefInstrumentor
) -> None:
    """Tests that the instrumented asgiref's Django-like trace has the hops, executors and nesting expected."""
    workload_request_like(ASGIREF)
    (first, second) = canonical(user_spans.finished())
    assert first == second[:5] + first[5:]  # two requests' middleware calls, same shape
    name, keys, facts, status, events, children = first
    assert name == semconv.SYNC_TO_ASYNC
    assert facts[semconv.EXECUTOR_KIND] == semconv.EXECUTOR_THREAD_SENSITIVE_CONTEXT
    assert facts[semconv.CODE_FUNCTION_NAME].endswith("workload_request_like.<locals>.middleware")
    kinds = [child[0] for child in children]
    assert kinds == [semconv.HANDOFF, semconv.LOCAL_ACCESS, semconv.ASYNC_TO_SYNC]
    handoff, local_get, a2s = children
    assert handoff[2][semconv.EXECUTOR_KIND] == semconv.HANDOFF_EXECUTOR_THREAD_POOL
    assert handoff[2][semconv.EXECUTOR_ID] == facts[semconv.EXECUTOR_ID]
    assert local_get[2][semconv.LOCAL_THREAD_CRITICAL] is True
    assert a2s[2][semconv.LOOP_ROUTE] == semconv.LOOP_ROUTE_PARENT_LOOP
    # The coroutine ran on the loop (the caller of the first hop); the inner hop
    # went back to the middleware's thread through its CurrentThreadExecutor.
    assert a2s[2][semconv.THREAD_ID] == facts[semconv.CALLER_THREAD_ID]
    inner = a2s[5][-1]
    assert inner[0] == semconv.SYNC_TO_ASYNC
    assert inner[2][semconv.EXECUTOR_KIND] == semconv.EXECUTOR_OUTER_CURRENT_THREAD
    assert inner[2][semconv.THREAD_ID] == facts[semconv.THREAD_ID]
    assert [child[0] for child in inner[5]] == [
        semconv.HANDOFF, "leaf", semconv.LOCAL_ACCESS, semconv.LOCAL_ACCESS, semconv.LOCAL_ACCESS,
    ]


async def test_asgiref_sync_to_async_span_has_whole_attribute_dict(
    spans: SpanRecorder, instrumented: AsgirefInstrumentor
) -> None:
    """Tests that an instrumented thread-sensitive sync_to_async is one span with exactly tracebridge's attributes."""
    caller = threading.current_thread()
    loop = asyncio.get_running_loop()
    worker = await asgiref.sync.sync_to_async(threading.current_thread)()
    hops = spans.named(semconv.SYNC_TO_ASYNC)
    assert len(hops) == 1
    attributes = dict(hops[0].attributes or {})
    queue_wait = attributes.pop(semconv.QUEUE_WAIT_MS)
    run_time = attributes.pop(semconv.RUN_TIME_MS)
    assert attributes == {
        semconv.DIRECTION: semconv.DIRECTION_SYNC_TO_ASYNC,
        semconv.CODE_FUNCTION_NAME: "threading.current_thread",
        semconv.CALLER_THREAD_ID: caller.ident,
        semconv.CALLER_THREAD_NAME: caller.name,
        semconv.THREAD_ID: worker.ident,
        semconv.THREAD_NAME: worker.name,
        semconv.THREAD_SENSITIVE: True,
        semconv.EXECUTOR_KIND: semconv.EXECUTOR_GLOBAL_SYNC_THREAD,
        semconv.EXECUTOR_ID: id(asgiref.sync.SyncToAsync.single_thread_executor),
        semconv.LOOP_ID: id(loop),
    }
    assert queue_wait >= 0 and run_time >= 0
    assert worker is not caller


async def test_asgiref_hop_span_does_not_leak_into_caller(
    spans: SpanRecorder, instrumented: AsgirefInstrumentor
) -> None:
    """Tests that after an instrumented hop the caller's current span is what it was before."""
    before = trace.get_current_span()
    inside = await asgiref.sync.sync_to_async(trace.get_current_span)()
    assert trace.get_current_span() is before
    assert inside.get_span_context().is_valid

    def sync_caller() -> tuple[Any, Any]:
        async def current() -> Any:
            return trace.get_current_span()

        outer = trace.get_current_span()
        return outer, asgiref.sync.async_to_sync(current)()

    outer, inner = await asgiref.sync.sync_to_async(sync_caller)()
    assert trace.get_current_span() is before
    assert inner.get_span_context().span_id != outer.get_span_context().span_id


def test_asgiref_internal_executors_local_records_no_span(
    spans: SpanRecorder, instrumented: AsgirefInstrumentor
) -> None:
    """Tests that asgiref's own bookkeeping Local (AsyncToSync.executors) never becomes a Local span."""

    async def noop() -> None:
        await asgiref.sync.sync_to_async(lambda: None)()

    asgiref.sync.async_to_sync(noop)()
    assert spans.named(semconv.LOCAL_ACCESS) == []
    assert len(spans.named(semconv.ASYNC_TO_SYNC)) == 1


def test_asgiref_tracing_off_records_nothing(instrumented: AsgirefInstrumentor, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that with no tracer provider the instrumented asgiref records nothing and still works."""
    tracebridge.set_tracer_provider(None)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    assert _telemetry.get_tracer() is None
    errors = tracebridge.stats().tracing_errors
    tracebridge.flush()
    for workload in WORKLOADS.values():
        workload(ASGIREF)
    assert len(_telemetry.deferred) == 0
    assert tracebridge.stats().tracing_errors == errors


def _root_workload() -> None:
    # Roots only: a Local access and a sync_to_async hop with no span around them.
    local = asgiref.local.Local()
    local.value = 1

    async def main() -> None:
        await asgiref.sync.sync_to_async(lambda: local.value)()

    asyncio.run(main())
    with pytest.raises(AttributeError):
        local.missing  # noqa: B018


def _span_facts(span: ReadableSpan) -> tuple[Any, ...]:
    volatile = set(IDENTITY_KEYS) | {semconv.THREAD_NAME, semconv.CALLER_THREAD_NAME}
    attributes = {key: value for key, value in (span.attributes or {}).items() if key not in volatile}
    attributes = {key: value for key, value in attributes.items() if not key.endswith("_ms")}
    context = span.get_span_context()
    assert context is not None
    return (
        span.name, span.parent is None, int(context.trace_flags), context.trace_state, context.is_remote,
        attributes, span.kind, span.status.status_code, tuple(span.events), tuple(span.links),
        span.resource, span.instrumentation_scope,
    )


def test_asgiref_root_spans_direct_same_as_through_start_span(
    spans: SpanRecorder, instrumented: AsgirefInstrumentor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests that root hop and Local spans handed straight to the processors equal the ones start_span builds."""
    _root_workload()
    direct = spans.finished()
    spans.clear()
    monkeypatch.setattr(_telemetry, "_DIRECT_SPANS_OFF", True)
    _root_workload()
    through_sdk = spans.finished()
    assert [_span_facts(span) for span in direct] == [_span_facts(span) for span in through_sdk]
    roots = [span for span in direct if span.parent is None]
    assert sorted(span.name for span in roots) == [semconv.LOCAL_ACCESS, semconv.LOCAL_ACCESS, semconv.SYNC_TO_ASYNC]
    (hop,) = [span for span in direct if span.name == semconv.SYNC_TO_ASYNC]
    children = [span for span in direct if span.parent is not None]
    assert children and all(
        span.parent.span_id == hop.context.span_id and span.context.trace_id == hop.context.trace_id  # type: ignore[union-attr]
        for span in children
    )


def test_fast_executors_reader_agrees_with_the_local(instrumented: AsgirefInstrumentor) -> None:
    """Tests that the lock-free read of AsyncToSync.executors.current sees what the Local itself returns."""
    read = _asgiref._current_executor
    assert read is not _asgiref._read_current_executor  # asgiref 3.13's layout: the fast reader is in use
    seen: list[tuple[object, object]] = []

    def both() -> None:
        seen.append((read(), getattr(asgiref.sync.AsyncToSync.executors, "current", None)))

    async def on_loop() -> None:
        both()
        await asgiref.sync.sync_to_async(both)()

    both()  # nothing set in this thread
    asgiref.sync.async_to_sync(on_loop)()  # the loop thread, then back through the CurrentThreadExecutor
    assert [fast for fast, _ in seen] == [local for _, local in seen]
    assert seen[0][1] is None and seen[2][1] is not None


def test_fast_local_reader_other_layout_declines() -> None:
    """Tests that the lock-free Local reader refuses a Local whose storage it does not recognise."""
    assert _asgiref._fast_local_reader(tracebridge.local.Local(), "current", tracebridge.local.Local) is None
    local = asgiref.local.Local(thread_critical=True)
    assert _asgiref._fast_local_reader(local, "current", asgiref.local.Local) is None


# ---------------------------------------------------------------------------
# asgiref behaves exactly as without instrumentation.


async def test_asgiref_instrumented_threads_unchanged(spans: SpanRecorder, instrumented: AsgirefInstrumentor) -> None:
    """Tests that instrumented thread-sensitive calls still run on the outer sync thread, and others off it."""
    loop_thread = threading.current_thread()

    def outer() -> tuple[threading.Thread, threading.Thread]:
        async def middle() -> threading.Thread:
            return await asgiref.sync.sync_to_async(threading.current_thread)()

        return threading.current_thread(), asgiref.sync.async_to_sync(middle)()

    outer_thread, inner_thread = await asgiref.sync.sync_to_async(outer)()
    assert inner_thread is outer_thread
    assert outer_thread is not loop_thread
    other = await asgiref.sync.sync_to_async(threading.current_thread, thread_sensitive=False)()
    assert other is not loop_thread


async def test_asgiref_instrumented_contextvars_flow_both_ways(
    spans: SpanRecorder, instrumented: AsgirefInstrumentor
) -> None:
    """Tests that contextvars set on either side of instrumented hops flow as asgiref defines."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("caller")
    local = asgiref.local.Local()
    local.request_id = 7

    def sync_side() -> tuple[str, int]:
        seen = var.get(), local.request_id

        async def async_side() -> None:
            var.set("set-in-async")

        asgiref.sync.async_to_sync(async_side)()
        return seen

    assert await asgiref.sync.sync_to_async(sync_side)() == ("caller", 7)
    assert var.get() == "set-in-async"


async def test_asgiref_instrumented_exceptions_unchanged(spans: SpanRecorder, instrumented: AsgirefInstrumentor) -> None:
    """Tests that exceptions cross instrumented hops with their type, message and identity."""
    raised = Boom("original")

    def fail() -> None:
        raise raised

    with pytest.raises(Boom) as info:
        await asgiref.sync.sync_to_async(fail)()
    assert info.value is raised
    with pytest.raises(RuntimeError, match="You cannot use AsyncToSync in the same thread as an async event loop"):
        asgiref.sync.async_to_sync(asyncio.sleep)(0)
    with pytest.raises(AttributeError, match="'missing'"):
        _ = asgiref.local.Local().missing
    with pytest.raises(AttributeError, match="'missing'"):
        del asgiref.local.Local(thread_critical=True).missing
    error, = spans.named(semconv.SYNC_TO_ASYNC)
    assert error.attributes[semconv.ERROR_TYPE] == f"{__name__}.Boom"


def test_asgiref_instrumented_cancellation_unchanged(spans: SpanRecorder, instrumented: AsgirefInstrumentor) -> None:
    """Tests that cancelling an awaiting task still releases it while the instrumented sync call runs on."""
    started, release = threading.Event(), threading.Event()

    def blocking() -> str:
        started.set()
        release.wait(5)
        return "done"

    async def main() -> None:
        task = asyncio.ensure_future(asgiref.sync.sync_to_async(blocking, thread_sensitive=False)())
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()

    asyncio.run(main())
    hop, = spans.named(semconv.SYNC_TO_ASYNC)
    assert hop.attributes[semconv.ERROR_TYPE] == "asyncio.exceptions.CancelledError"


# ---------------------------------------------------------------------------
# instrument() / uninstrument().


def test_instrument_twice_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Tests that a second instrument() logs a warning and leaves the first patches in place."""
    instrumentor = AsgirefInstrumentor()
    instrumentor.instrument(census=False)
    try:
        patched = originals()
        # With sync_to_async written in for this asgiref, its thread_handler stays asgiref's.
        left = {(asgiref.sync.SyncToAsync, "thread_handler")} if _asgiref_s2a.fused_layout(asgiref.sync) else set()
        assert {key for key in PRISTINE if patched[key] is PRISTINE[key]} == left
        with caplog.at_level(logging.WARNING):
            AsgirefInstrumentor().instrument(census=False)
        assert "already instrumented" in caplog.text
        assert originals() == patched
    finally:
        instrumentor.uninstrument()
    assert all(originals()[key] is PRISTINE[key] for key in PRISTINE)


def test_uninstrument_restores_original_functions_exactly() -> None:
    """Tests that uninstrument() puts back the very function objects asgiref had."""
    instrumentor = AsgirefInstrumentor()
    instrumentor.instrument(census=False)
    instrumentor.uninstrument()
    restored = originals()
    for key, original in PRISTINE.items():
        assert restored[key] is original, key
    assert asgiref.sync.SyncToAsync.__call__ is PRISTINE[(asgiref.sync.SyncToAsync, "__call__")]


def test_uninstrument_without_instrument_warns(caplog: pytest.LogCaptureFixture) -> None:
    """Tests that uninstrument() when not instrumented logs a warning and changes nothing."""
    with caplog.at_level(logging.WARNING):
        AsgirefInstrumentor().uninstrument()
    assert "already uninstrumented" in caplog.text
    assert originals() == PRISTINE


def test_instrument_after_objects_exist_still_traces(spans: SpanRecorder) -> None:
    """Tests that functions decorated and Locals made before instrument() are traced afterwards."""

    @asgiref.sync.sync_to_async
    def decorated() -> int:
        return 1

    local = asgiref.local.Local()
    instrumentor = AsgirefInstrumentor()
    instrumentor.instrument(census=False)
    try:

        async def main() -> None:
            await decorated()
            local.value = 1

        asyncio.run(main())
    finally:
        instrumentor.uninstrument()
    assert [span.attributes[semconv.CODE_FUNCTION_NAME] for span in spans.named(semconv.SYNC_TO_ASYNC)] == [
        f"{__name__}.test_instrument_after_objects_exist_still_traces.<locals>.decorated"
    ]
    assert [span.attributes[semconv.LOCAL_ATTRIBUTE] for span in spans.named(semconv.LOCAL_ACCESS)] == ["value"]


def test_instrument_unsupported_asgiref_version_patches_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Tests that an asgiref that is not 3.x is left alone, with a warning naming the supported versions."""
    monkeypatch.setattr(asgiref, "__version__", "4.0.0")
    instrumentor = AsgirefInstrumentor()
    with caplog.at_level(logging.WARNING):
        instrumentor.instrument(census=False, skip_dep_check=True)
    try:
        assert "asgiref 4.0.0 is not supported (tracebridge supports asgiref >= 3.0, < 4)" in caplog.text
        assert originals() == PRISTINE
    finally:
        instrumentor.uninstrument()


def test_instrument_missing_patch_point_patches_the_rest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, spans: SpanRecorder
) -> None:
    """Tests that a patch point this asgiref lacks is named in a warning and the others still trace."""
    monkeypatch.delattr(asgiref.timeout.timeout, "_cancel_task")
    instrumentor = AsgirefInstrumentor()
    with caplog.at_level(logging.WARNING):
        instrumentor.instrument(census=False)
    try:
        assert "lacks timeout._cancel_task; these are not traced" in caplog.text
        asyncio.run(asgiref.sync.sync_to_async(int)())
        assert len(spans.named(semconv.SYNC_TO_ASYNC)) == 1
    finally:
        instrumentor.uninstrument()


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_instrument_without_asgiref_warns_and_patches_nothing() -> None:
    """Tests that instrumenting with asgiref not importable logs what to do and does not crash."""
    result = run_python(
        "import sys; sys.modules['asgiref.sync'] = None\n"
        "from tracebridge.instrumentation import AsgirefInstrumentor\n"
        "AsgirefInstrumentor().instrument()\n"
        "AsgirefInstrumentor().uninstrument()\n"
        "print('ok')\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert "cannot instrument asgiref" in result.stderr
    assert "Install asgiref 3.x" in result.stderr


def test_instrument_without_opentelemetry_instrumentation_uses_stand_in() -> None:
    """Tests that without opentelemetry-instrumentation the instrumentor keeps BaseInstrumentor's contract."""
    result = run_python(
        "import sys, asyncio; sys.modules['opentelemetry.instrumentation.instrumentor'] = None\n"
        "import asgiref.sync\n"
        "from tracebridge.instrumentation import AsgirefInstrumentor\n"
        "original = asgiref.sync.SyncToAsync.__dict__['__call__']\n"
        "a = AsgirefInstrumentor(); a.instrument(); a.instrument()\n"
        "assert AsgirefInstrumentor() is a and a.is_instrumented_by_opentelemetry\n"
        "assert asgiref.sync.SyncToAsync.__dict__['__call__'] is not original\n"
        "assert asyncio.run(asgiref.sync.sync_to_async(int)('3')) == 3\n"
        "a.uninstrument(); a.uninstrument()\n"
        "assert asgiref.sync.SyncToAsync.__dict__['__call__'] is original\n"
        "print('ok')\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert result.stderr.count("Attempting to instrument while already instrumented") == 1
    assert result.stderr.count("Attempting to uninstrument while already uninstrumented") == 1


def test_opentelemetry_instrumentor_entry_point_is_registered() -> None:
    """Tests that opentelemetry-instrument finds the instrumentor through its entry point group."""
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "asgiref"]
    assert entry.load() is AsgirefInstrumentor


# ---------------------------------------------------------------------------
# The hop census.


def test_census_counts_hops_on_request_root_span(instrumented: AsgirefInstrumentor) -> None:
    """Tests that a HopCensus sets the request root span's hop counts, per function, executor and thread."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    census = HopCensus()
    provider.add_span_processor(census)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracebridge.set_tracer_provider(provider)
    request_tracer = provider.get_tracer("tests.census")
    threads: list[str] = []

    def view() -> None:
        threads.append(threading.current_thread().name)

        async def fetch() -> None:
            await asgiref.sync.sync_to_async(view_helper)()

        asgiref.sync.async_to_sync(fetch)()

    def view_helper() -> None:
        pass

    async def request() -> None:
        with request_tracer.start_as_current_span("GET /"):
            async with asgiref.sync.ThreadSensitiveContext():
                await asgiref.sync.sync_to_async(view)()
                await asgiref.sync.sync_to_async(view)()

    try:
        asyncio.run(request())
        tracebridge.flush()
        (root,) = [span for span in exporter.get_finished_spans() if span.name == "GET /"]
        attributes = dict(root.attributes or {})
        wait = attributes.pop(semconv.CENSUS_QUEUE_WAIT_MS)
        prefix = f"{__name__}.test_census_counts_hops_on_request_root_span.<locals>"
        assert attributes == {
            semconv.CENSUS_HOPS: 6,
            semconv.CENSUS_SYNC_TO_ASYNC: 4,
            semconv.CENSUS_ASYNC_TO_SYNC: 2,
            semconv.CENSUS_BY_FUNCTION: (
                f"async_to_sync {prefix}.view.<locals>.fetch: 2",
                f"sync_to_async {prefix}.view: 2",
                f"sync_to_async {prefix}.view_helper: 2",
            ),
            semconv.CENSUS_BY_EXECUTOR: (
                "outer_current_thread_executor: 2",
                "parent_loop: 2",
                "thread_sensitive_context: 2",
            ),
            semconv.CENSUS_THREADS: tuple(sorted({threads[0], threading.current_thread().name})),
        }
        assert wait > 0
        # Spans that are not roots get nothing.
        hop = next(span for span in exporter.get_finished_spans() if span.name == semconv.SYNC_TO_ASYNC)
        assert not any(key.startswith("tracebridge.census.") for key in (hop.attributes or {}))
    finally:
        census.disable()
        tracebridge.set_tracer_provider(None)
        provider.shutdown()
    assert _hop.on_close is None


def test_census_counts_tracebridge_own_hops_too() -> None:
    """Tests that the census counts hops of tracebridge's own bridges, not only the instrumented asgiref's."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    census = HopCensus()
    provider.add_span_processor(census)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracebridge.set_tracer_provider(provider)

    async def request() -> None:
        with provider.get_tracer("tests.census").start_as_current_span("GET /"):
            await tracebridge.sync.sync_to_async(int, thread_sensitive=False)("1")

    try:
        asyncio.run(request())
        (root,) = [span for span in exporter.get_finished_spans() if span.name == "GET /"]
        assert root.attributes[semconv.CENSUS_BY_FUNCTION] == ("sync_to_async builtins.int: 1",)
        assert root.attributes[semconv.CENSUS_BY_EXECUTOR] == ("loop_default: 1",)
    finally:
        census.disable()
        tracebridge.set_tracer_provider(None)
        provider.shutdown()


def test_census_ignores_tracebridge_root_spans(instrumented: AsgirefInstrumentor) -> None:
    """Tests that a hop with no request span around it (a root built after the fact) carries no census."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    census = HopCensus()
    provider.add_span_processor(census)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracebridge.set_tracer_provider(provider)
    try:
        asyncio.run(asgiref.sync.sync_to_async(int)("1"))
        tracebridge.flush()
        (hop,) = [span for span in exporter.get_finished_spans() if span.name == semconv.SYNC_TO_ASYNC]
        assert hop.parent is None
        assert not any(key.startswith("tracebridge.census.") for key in (hop.attributes or {}))
        assert "end" not in hop.__dict__
    finally:
        census.disable()
        tracebridge.set_tracer_provider(None)
        provider.shutdown()


def test_census_root_without_hops_says_zero() -> None:
    """Tests that a root span whose request made no hop carries a census of zero."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    census = HopCensus()
    provider.add_span_processor(census)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with provider.get_tracer("tests.census").start_as_current_span("GET /static"):
            pass
        (root,) = exporter.get_finished_spans()
        assert dict(root.attributes or {}) == {
            semconv.CENSUS_HOPS: 0,
            semconv.CENSUS_SYNC_TO_ASYNC: 0,
            semconv.CENSUS_ASYNC_TO_SYNC: 0,
            semconv.CENSUS_QUEUE_WAIT_MS: 0.0,
        }
        assert "end" not in root.__dict__  # the wrapper is gone once the span ended
    finally:
        census.disable()
        provider.shutdown()


def test_instrument_adds_one_census_to_the_provider(spans: SpanRecorder) -> None:
    """Tests that instrument() adds a HopCensus to tracebridge's provider once, and uninstrument() disables it."""
    instrumentor = AsgirefInstrumentor()
    instrumentor.instrument()
    instrumentor.uninstrument()
    instrumentor.instrument()
    try:
        processors = spans.provider._active_span_processor._span_processors
        censuses = [p for p in processors if isinstance(p, HopCensus)]
        assert len(censuses) == 1 and censuses[0].enabled
    finally:
        instrumentor.uninstrument()
    assert not censuses[0].enabled
    assert _hop.on_close is None




def test_asgiref_instrumented_hops_leave_no_reference_cycles(
    spans: SpanRecorder, instrumented: AsgirefInstrumentor
) -> None:
    """Tests that the instrumented asgiref's hops are freed by reference counting once their spans are built."""
    from test_sync_spans import planned_spans_in_cycles

    async def caller() -> None:
        await asgiref.sync.sync_to_async(asgiref.sync.async_to_sync(asyncio.sleep))(0)

    assert planned_spans_in_cycles(lambda: asyncio.run(caller())) == []
    assert len(spans.named(semconv.SYNC_TO_ASYNC)) == len(spans.named(semconv.ASYNC_TO_SYNC)) == 1


def test_asgiref_instrumented_code_inside_a_hop_records_on_the_hop_span(
    spans: SpanRecorder, instrumented: AsgirefInstrumentor
) -> None:
    """Tests that code run by the instrumented asgiref's sync_to_async records on the hop's span, as with ours."""
    from test_sync_spans import assert_recorded_on_hop, record_on_current_span

    asyncio.run(asgiref.sync.sync_to_async(record_on_current_span)([]))
    (hop,) = spans.named(semconv.SYNC_TO_ASYNC)
    assert_recorded_on_hop(hop)


def test_instrument_over_another_tools_wrappers_keeps_them_running(
    monkeypatch: pytest.MonkeyPatch, spans: SpanRecorder
) -> None:
    """Tests that asgiref methods an APM agent wrapped first still run their wrapper once instrumented.

    The replacements written for asgiref 3.13 do not call the original, so they
    are only for asgiref's own functions: a wrapped ``__call__`` (functools.wraps)
    or Local method (wrapt) gets the generic patches, which call it.
    """
    import functools

    import wrapt

    calls: list[str] = []
    original_call = asgiref.sync.SyncToAsync.__dict__["__call__"]

    @functools.wraps(original_call)
    async def agent_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append("__call__")
        return await original_call(self, *args, **kwargs)

    def agent_getattr(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        calls.append("__getattr__")
        return wrapped(*args, **kwargs)

    monkeypatch.setattr(asgiref.sync.SyncToAsync, "__call__", agent_call)
    monkeypatch.setattr(
        asgiref.local._DefaultLocal,
        "__getattr__",
        wrapt.FunctionWrapper(asgiref.local._DefaultLocal.__dict__["__getattr__"], agent_getattr),
    )
    instrumentor = AsgirefInstrumentor()
    instrumentor.instrument(census=False)
    calls.clear()  # instrument() itself reads a probe Local
    try:
        local = asgiref.local.Local()
        local.value = 1

        def read() -> int:
            return local.value  # type: ignore[no-any-return]

        assert asyncio.run(asgiref.sync.sync_to_async(read)()) == 1
        # (asgiref reads its own executors Local too: more __getattr__ calls than ours.)
        assert calls.count("__call__") == 1 and "__getattr__" in calls
        assert len(spans.named(semconv.SYNC_TO_ASYNC)) == 1
        assert [span.attributes[semconv.LOCAL_OPERATION] for span in spans.named(semconv.LOCAL_ACCESS)] == [
            semconv.LOCAL_OP_SET,
            semconv.LOCAL_OP_GET,
        ]
    finally:
        instrumentor.uninstrument()
    assert asgiref.sync.SyncToAsync.__dict__["__call__"] is agent_call
