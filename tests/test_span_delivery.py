"""tracebridge._span_delivery: the drain thread's bulk hand-over to span processors."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags

from tracebridge import _span_delivery


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _spans(count: int) -> list[ReadableSpan]:
    return [
        ReadableSpan(name=f"s{n}", context=SpanContext(1, n + 1, False, TraceFlags(TraceFlags.SAMPLED)))
        for n in range(count)
    ]


@pytest.fixture(autouse=True)
def _not_stuck(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test that leaves an exporter stuck must not switch the next test's waiting off.
    monkeypatch.setattr(_span_delivery, "_stuck_until", 0.0)


@pytest.fixture
def processor() -> Iterator[BatchSpanProcessor]:
    # A long schedule delay and a big batch: the spans stay queued for the test to look at.
    bsp = BatchSpanProcessor(_Keep(), max_queue_size=8, schedule_delay_millis=60_000, max_export_batch_size=8)
    yield bsp
    bsp.shutdown()


def _queued(processor: BatchSpanProcessor) -> list[str]:
    return [span.name for span in reversed(processor._batch_processor._queue)]  # oldest first


def test_batch_append_queues_like_on_end(processor: BatchSpanProcessor) -> None:
    """Tests that a bulk hand-over leaves the SDK's queue exactly as one on_end per span would."""
    spans = _spans(5)
    assert _span_delivery.batch_append(processor, spans[:3]) == 3
    for span in spans[3:]:
        processor.on_end(span)
    assert _queued(processor) == ["s0", "s1", "s2", "s3", "s4"]


def test_deliver_full_queue_falls_back_to_on_end_which_drops_and_warns(
    processor: BatchSpanProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    """Tests that spans past the queue's capacity go through the SDK's own on_end (its warning, its drop)."""
    engine = processor._batch_processor
    worker_wake = engine._worker_awaken

    class Asleep(threading.Event):
        def set(self) -> None:  # the exporter thread must not empty the queue under the test
            pass

    engine._worker_awaken = Asleep()
    try:
        with caplog.at_level("WARNING"):
            _span_delivery.deliver(processor, _spans(10), lambda where: None)
    finally:
        engine._worker_awaken = worker_wake
    assert len(processor._batch_processor._queue) == 8
    assert _queued(processor) == [f"s{n}" for n in range(2, 10)]  # the SDK drops the oldest to make room
    assert any("Queue full" in record.getMessage() for record in caplog.records)


def test_unknown_sdk_source_means_plain_on_end(
    processor: BatchSpanProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests that an SDK whose emit is not the fingerprinted one is never fed directly."""
    monkeypatch.setattr(_span_delivery, "_KNOWN_SDK_SOURCES", frozenset())
    monkeypatch.setattr(_span_delivery, "_SDK_MATCHES", None)
    monkeypatch.setattr(_span_delivery, "_appendable", {})
    assert _span_delivery.batch_append(processor, _spans(2)) == 0
    _span_delivery.deliver(processor, _spans(2), lambda where: None)
    assert _queued(processor) == ["s0", "s1"]


def test_deliver_a_failing_processor_loses_only_the_span_it_failed_on() -> None:
    """Tests that one on_end raising is reported and the other spans still arrive."""
    seen: list[str] = []
    failures: list[str] = []

    class Picky(SpanProcessor):
        def on_end(self, span: Any) -> None:
            if span.name == "s1":
                raise RuntimeError("picky")
            seen.append(span.name)

    _span_delivery.deliver(Picky(), _spans(3), failures.append)
    assert seen == ["s0", "s2"]
    assert failures == ["span processor on_end"]


def test_deliver_prefers_a_processors_own_on_end_many() -> None:
    """Tests that a processor offering on_end_many gets the batch in one call."""
    batches: list[list[str]] = []

    class Bulk(SpanProcessor):
        def on_end(self, span: Any) -> None:
            raise AssertionError("on_end must not be used")

        def on_end_many(self, spans: Sequence[Any]) -> None:
            batches.append([span.name for span in spans])

    _span_delivery.deliver(Bulk(), _spans(3), lambda where: None)
    assert batches == [["s0", "s1", "s2"]]


def test_deliver_waits_for_the_exporter_thread_instead_of_dropping(caplog: pytest.LogCaptureFixture) -> None:
    """Tests that a burst larger than the queue is handed over whole: the drain waits for room, nothing drops."""
    exporter = _Keep()
    bsp = BatchSpanProcessor(exporter, max_queue_size=8, schedule_delay_millis=60_000, max_export_batch_size=4)
    try:
        with caplog.at_level("WARNING"):
            _span_delivery.deliver(bsp, _spans(200), lambda where: pytest.fail(where))
        assert bsp.force_flush(5_000)
    finally:
        bsp.shutdown()
    assert [span.name for span in exporter.spans] == [f"s{n}" for n in range(200)]
    assert not [record for record in caplog.records if "Queue full" in record.getMessage()]


def test_after_a_wait_runs_out_full_queues_are_not_waited_for_a_while(
    processor: BatchSpanProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests that a stuck exporter costs one bounded wait, then hand-overs drop at once for the cooldown."""
    engine = processor._batch_processor

    class Asleep(threading.Event):
        def set(self) -> None:  # the exporter thread never makes room
            pass

    monkeypatch.setattr(_span_delivery, "ROOM_WAIT_S", 0.01)
    naps: list[float] = []
    real_sleep = _span_delivery._sleep

    def counting_sleep(seconds: float) -> None:
        naps.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(_span_delivery, "_sleep", counting_sleep)
    worker_wake = engine._worker_awaken
    engine._worker_awaken = Asleep()
    try:
        assert _span_delivery.batch_append(processor, _spans(9)) == 8  # the ninth waited, then gave up
        assert naps
        naps.clear()
        assert _span_delivery.batch_append(processor, _spans(3)) == 0  # still full: no wait this time
        assert naps == []
    finally:
        engine._worker_awaken = worker_wake  # so the processor's shutdown can wake its thread
