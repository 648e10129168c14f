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
