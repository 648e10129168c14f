"""tracebridge._telemetry.DeferredSpans: the buffer between the traced code and the drain thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import tracebridge
from tracebridge import _telemetry


class _Item:
    """A queued object that describes its own records, as a closed hop does."""

    def __init__(self, records: list[tuple[Any, ...]]) -> None:
        self.records = records

    def deferred_records(self) -> list[tuple[Any, ...]]:
        return self.records


def _buffer(capacity: int) -> _telemetry.DeferredSpans:
    buffer = _telemetry.DeferredSpans(capacity=capacity)
    # No drain thread: the test decides when records are drained.
    buffer._thread = threading.current_thread()
    return buffer


def _builder(payload: Any) -> tuple[str, dict[str, Any]]:
    return "x", {}


def test_full_buffer_drops_and_counts_every_span_of_every_entry_kind(caplog: pytest.LogCaptureFixture) -> None:
    """Tests that record, push and add on a full buffer count each span they drop, and warn once."""
    buffer = _buffer(capacity=2)
    tracer = object()
    buffer.record(_builder, tracer, None, 1, 2, None)  # type: ignore[arg-type]
    buffer.push((_builder, tracer, None, 1, 2, "flat", "fields"))
    assert len(buffer) == 2
    before = tracebridge.stats().deferred_dropped
    _telemetry._warned.discard("deferred-full")
    with caplog.at_level("WARNING", logger="tracebridge"):
        buffer.record(_builder, tracer, None, 1, 2, None)  # type: ignore[arg-type]
        buffer.push((_builder, tracer, None, 1, 2, "flat", "fields"))
        buffer.add(_Item([]), spans=2)  # a hop with its handoff: two spans lost
    assert len(buffer) == 2
    assert tracebridge.stats().deferred_dropped == before + 4
    assert [record.getMessage() for record in caplog.records].count(
        "tracebridge: deferred span buffer full (2); dropping and counting "
        "(see tracebridge.stats().deferred_dropped)"
    ) == 1


def test_buffer_wakes_the_drain_thread_when_a_burst_reaches_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that the drain thread is woken by the record that crosses _WAKE_AT, not before."""
    monkeypatch.setattr(_telemetry, "_WAKE_AT", 3)
    buffer = _buffer(capacity=100)
    tracer = object()
    for _ in range(3):
        buffer.record(_builder, tracer, None, 1, 2, None)  # type: ignore[arg-type]
    assert not buffer._wake.is_set()
    buffer.push((_builder, tracer, None, 1, 2, "flat"))  # the fourth: three were waiting
    assert buffer._wake.is_set()


def test_add_item_records_are_built_in_order_and_a_failing_item_is_counted() -> None:
    """Tests that an added item's records become spans in its order, and a broken item costs only itself."""
    built: list[Any] = []

    def builder(payload: Any) -> tuple[str, dict[str, Any]]:
        built.append(payload)
        return "x", {}

    class Broken:
        def deferred_records(self) -> list[Any]:
            raise RuntimeError("broken item")

    buffer = _buffer(capacity=10)
    tracer = TracerProvider().get_tracer("deferred-test")
    buffer.add(_Item([(builder, tracer, None, 1, 2, "first"), (builder, tracer, None, 1, 2, "second")]), spans=2)
    buffer.add(Broken())  # type: ignore[arg-type]
    buffer.record(builder, tracer, None, 1, 2, "third")
    errors = tracebridge.stats().tracing_errors
    assert buffer.drain() == 3
    assert built == ["first", "second", "third"]
    assert tracebridge.stats().tracing_errors == errors + 1


def test_a_pass_mixing_inline_and_general_spans_delivers_each_once_in_order(
    spans: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests that the drain's inline path and its general path (errors, roots) share the ready lists safely.

    Small delivery batches make the general path hand the lists over in the
    middle of the pass: an inline span cached against a delivered list would be lost.
    """
    from opentelemetry.trace import SpanContext, TraceFlags

    monkeypatch.setattr(_telemetry, "_DELIVER_EVERY", 3)
    tracer = _telemetry.get_tracer()
    assert tracer is not None
    ids = tracer.id_generator  # type: ignore[attr-defined]
    parent = SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.SAMPLED))
    buffer = _buffer(capacity=100)

    def plain(name: str) -> tuple[str, dict[str, Any]]:
        return name, {"kind": "plain"}

    def failed(name: str) -> tuple[Any, ...]:
        return name, {"kind": "failed"}, ids, None, 0x1234 + len(name), ("ValueError", "bad", "trace"), None

    expected = []
    for n in range(10):
        buffer.record(plain, tracer, parent, n, n + 1, f"plain-{n}")
        expected.append(f"plain-{n}")
        if n % 3 == 0:
            buffer.record(failed, tracer, parent, n, n + 1, f"failed-{n}")
            expected.append(f"failed-{n}")
        if n % 4 == 0:
            buffer.record(plain, tracer, None, n, n + 1, f"root-{n}")
            expected.append(f"root-{n}")
    assert buffer.drain() == len(expected)
    finished = spans.finished()
    assert sorted(span.name for span in finished) == sorted(expected)
    by_name = {span.name: span for span in finished}
    for name, span in by_name.items():
        if name.startswith("root-"):
            assert span.parent is None and span.context.trace_id not in (0, 0xABC)
        else:
            assert span.parent == parent and span.context.trace_id == 0xABC
        assert span.context.trace_flags.sampled
    assert by_name["failed-3"].status.status_code.name == "ERROR"
    assert by_name["failed-3"].context.span_id == 0x1234 + len("failed-3")
    assert by_name["plain-3"].attributes["kind"] == "plain"


def test_a_planned_span_is_exported_with_its_own_span_context(spans: Any) -> None:
    """Tests that a hop whose id a child already asked for is built with that very SpanContext (no copy)."""
    from tracebridge.sync import sync_to_async

    seen: list[Any] = []

    def callee() -> None:
        from opentelemetry import trace

        seen.append(trace.get_current_span().get_span_context())  # draws the hop's id now

    import asyncio

    asyncio.run(sync_to_async(callee)())
    (hop,) = spans.named("tracebridge.sync_to_async")
    assert hop.context is seen[0]
