"""What the benchmark scripts share.  Imported as ``_common`` (the scripts run from bench/)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["CountingExporter"]


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
