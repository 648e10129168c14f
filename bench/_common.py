"""What the benchmark scripts share.  Imported as ``_common`` (the scripts run from bench/)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

__all__ = ["CountingExporter", "counting_provider", "pin_to_one_cpu"]


class CountingExporter(SpanExporter):
    """Discards spans, counting them by name (called from the BatchSpanProcessor's thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                self._counts[span.name] += 1
        return SpanExportResult.SUCCESS

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def pin_to_one_cpu(enabled: bool) -> str:
    """Pin this process (and every thread it starts) to one CPU; returns a line saying so.

    Why: on the 2-vCPU machines these benchmarks run on, a thread hop's
    wake-up is bimodal (a WSGI round trip takes ~190 us or ~600 us of CPU,
    for asgiref and tracebridge alike) depending on where the scheduler puts
    each library's worker thread, and that placement sticks for minutes, so a
    same-process comparison can measure placement instead of code.  On one
    CPU every hop is a plain context switch and runs are steady.  Tracing's
    background threads then share that CPU with the measured code, which
    makes the traced ratios conservative.
    """
    import os

    if not enabled or not hasattr(os, "sched_setaffinity"):
        return "not pinned: thread placement adds noise (see bench/README.md)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu} (--no-pin to disable): steady hops; tracing's background threads share it"


def counting_provider() -> tuple[TracerProvider, CountingExporter]:
    """An SDK provider whose batch processor never drops (queue 2**20) into a CountingExporter.

    Refuses to run with a global provider set: the tracing-off variants need none.
    """
    from opentelemetry import trace as otel_trace

    if otel_trace._TRACER_PROVIDER is not None:  # type: ignore[attr-defined]
        raise SystemExit("a global TracerProvider is set; the tracing-off variant needs none")
    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=2**20, max_export_batch_size=512))
    return provider, exporter
