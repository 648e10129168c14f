"""What every tracebridge exporter shares: counters, one-time reports, batching.

* :class:`ExporterStats` counts what one exporter delivered and dropped; every
  exporter built in this process registers one, and
  :func:`tracebridge.exporters.stats` returns them.  A drop is reported once
  per outage (a warning when delivery starts failing, another when it works
  again), never once per span.
* :class:`CountingBatchSpanProcessor` is the batch processor all spec-built
  exporters sit behind: the traced application's threads only append to its
  queue; a full queue drops (counted), never blocks.
* :class:`ReliableExporter` wraps an exporter that talks to a remote collector
  (OTLP): it counts failed batches as drops and, after a failure, skips the
  collector for a short cool-down so that a dead or hanging collector costs one
  timeout, not one per queued batch, at flush and shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tracebridge._span_delivery import batch_append

from .specs import FlushingBatchSpanProcessor

__all__ = [
    "CountingBatchSpanProcessor",
    "DEFAULT_COOLDOWN_S",
    "ExporterStats",
    "ReliableExporter",
    "quiet_loggers",
    "register_stats",
    "stats",
]

logger = logging.getLogger("tracebridge.exporters")

DEFAULT_COOLDOWN_S = 5.0
"""After a failed export, how long :class:`ReliableExporter` drops batches without trying."""


@dataclass
class ExporterStats:
    """Counters of one exporter.  Read them; tracebridge updates them under a lock."""

    name: str
    """What and where: ``otlp grpc http://localhost:4317``, ``jsonl trace.jsonl``..."""

    exported: int = 0
    """Spans delivered (sent to the collector, written to the file)."""

    dropped: int = 0
    """Spans lost: a failed export, a full queue, or spans that arrived after shutdown."""

    failed_exports: int = 0
    """Export calls (batches) that failed."""

    last_error: str | None = None
    """Why the most recent failure happened (None when nothing has failed)."""

    failing: bool = False
    """Delivery is failing now (between a failure and the next success)."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _dropped_in_outage: int = field(default=0, repr=False, compare=False)

    def delivered(self, count: int) -> None:
        """``count`` spans made it.  Ends an outage, reporting what it cost."""
        with self._lock:
            self.exported += count
            recovered = self.failing
            lost = self._dropped_in_outage
            self.failing = False
            self._dropped_in_outage = 0
        if recovered:
            logger.warning(
                "tracebridge: %s: export works again; %s dropped while it failed", self.name, _spans(lost)
            )

    def lost(self, count: int, reason: str, *, failed_export: bool = True) -> None:
        """``count`` spans were dropped because of ``reason``.  Reports the first drop of an outage."""
        with self._lock:
            self.dropped += count
            self._dropped_in_outage += count
            if failed_export:
                self.failed_exports += 1
            self.last_error = reason
            first = not self.failing
            self.failing = True
        if first:
            logger.warning(
                "tracebridge: %s: dropping spans (%s); counting them in tracebridge.exporters.stats() "
                "and reporting again when export works",
                self.name,
                reason,
            )


def _spans(count: int) -> str:
    return f"{count} span{'' if count == 1 else 's'}"


_registry: list[ExporterStats] = []
_registry_lock = threading.Lock()


def register_stats(name: str) -> ExporterStats:
    """A new :class:`ExporterStats` for an exporter being built, listed by :func:`stats`."""
    counters = ExporterStats(name)
    with _registry_lock:
        _registry.append(counters)
    return counters


def stats() -> list[ExporterStats]:
    """The counters of every exporter built in this process, oldest first.

    Each entry stays readable after its exporter shut down, so a program can
    check at exit whether its trace arrived whole: ``sum(s.dropped for s in stats())``.
    """
    with _registry_lock:
        return list(_registry)


# ---------------------------------------------------------------------------
# Other libraries' log records, while we report for them.


class _Quiet(threading.local):
    active: int = 0
    last_message: str | None = None


_quiet = _Quiet()


class _QuietFilter(logging.Filter):
    """Drops records logged on a thread inside :func:`quiet_loggers`, keeping the last message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _quiet.active:
            return True
        if record.levelno >= logging.WARNING:
            try:
                _quiet.last_message = record.getMessage()
            except Exception:  # a malformed record: keep the template
                _quiet.last_message = str(record.msg)
        return False


_filter = _QuietFilter()
_filtered: set[str] = set()


@contextmanager
def quiet_loggers(names: Sequence[str]) -> Iterator[_Quiet]:
    """Silence ``names``' records on this thread only, for the duration.

    The OTLP exporters log every retry and every failed batch; tracebridge
    reports an outage once itself (with the last of those messages as the
    reason), so those records are dropped while *our* export runs on the batch
    thread.  Other threads, and other users of the same exporters, are untouched.
    """
    for name in names:
        if name not in _filtered:
            logging.getLogger(name).addFilter(_filter)
            _filtered.add(name)
    _quiet.active += 1
    _quiet.last_message = None
    try:
        yield _quiet
    finally:
        _quiet.active -= 1


# ---------------------------------------------------------------------------
# The processor.


class CountingBatchSpanProcessor(FlushingBatchSpanProcessor):
    """A flushing ``BatchSpanProcessor`` that counts the spans it has to drop.

    ``on_end`` runs on the traced application's thread (or tracebridge's
    deferred-span drain thread): it appends to the SDK's queue and never waits
    for the exporter, which runs on the processor's own worker thread.
    """

    def __init__(self, exporter: SpanExporter, counters: ExporterStats, **kwargs: float | int | None) -> None:
        super().__init__(exporter, **kwargs)  # type: ignore[arg-type]
        self.counters = counters
        # The SDK's engine drops silently when its queue is full (a warning per
        # drop, no counter): look at the same queue to count those drops.
        engine = getattr(self, "_batch_processor", None)
        self._queue = getattr(engine, "_queue", None)
        self._max_queue = getattr(engine, "_max_queue_size", None)
        self._closed = False

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        if self._closed:
            self.counters.lost(1, "span ended after the exporter shut down", failed_export=False)
            return
        queue = self._queue
        if queue is not None and self._max_queue is not None and len(queue) >= self._max_queue:
            # The SDK will drop the oldest queued span to make room.
            self.counters.lost(1, f"export queue full ({self._max_queue} spans)", failed_export=False)
            with quiet_loggers(("opentelemetry.sdk._shared_internal",)):
                super().on_end(span)
            return
        super().on_end(span)

    def on_end_many(self, spans: Sequence[ReadableSpan]) -> None:
        """``on_end`` for a batch of sampled spans (tracebridge's drain thread hands them over so).

        Straight into the SDK's queue while it has room; a shut-down processor
        or a full queue takes the ``on_end`` path, which counts the drops.
        """
        taken = 0 if self._closed else batch_append(self, spans)
        for span in spans[taken:] if taken else spans:
            self.on_end(span)

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        exporter = self.span_exporter
        if isinstance(exporter, ReliableExporter):
            exporter.allow_attempt()
        return super().force_flush(timeout_millis)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        exporter = self.span_exporter
        if isinstance(exporter, ReliableExporter):
            exporter.allow_attempt()
        super().shutdown()  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------------
# The remote-collector wrapper.


class ReliableExporter(SpanExporter):
    """Counts, reports and bounds the failures of an exporter to a remote collector.

    Runs on the batch processor's worker thread (or the thread calling
    ``tracebridge.flush()``): never on a traced application thread.

    Args:
        inner: the exporter doing the sending (OpenTelemetry's OTLP exporters).
        counters: where delivered and dropped spans are counted.
        cooldown_s: after a failed export, batches are dropped without trying
            for this long (then one batch probes the collector again).  A flush
            or shutdown always tries once more first.
        quiet: loggers whose records, during an export on this thread, are
            folded into tracebridge's own once-per-outage report.
    """

    def __init__(
        self,
        inner: SpanExporter,
        counters: ExporterStats,
        *,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        quiet: Sequence[str] = (),
    ) -> None:
        self.inner = inner
        self.counters = counters
        self.cooldown_s = cooldown_s
        self._quiet = tuple(quiet)
        self._retry_at = 0.0  # time.monotonic() before which batches are dropped untried
        self._shut_down = False

    def allow_attempt(self) -> None:
        """Let the next export try the collector even within the cool-down."""
        self._retry_at = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            self.counters.lost(len(spans), "exporter shut down")
            return SpanExportResult.FAILURE
        if time.monotonic() < self._retry_at:
            self.counters.lost(len(spans), self.counters.last_error or "collector unavailable")
            return SpanExportResult.FAILURE
        reason = "export failed"
        try:
            with quiet_loggers(self._quiet) as quiet:
                result = self.inner.export(spans)
                reason = quiet.last_message or reason
        except Exception as exc:  # an exporter must not raise; this one did
            result = SpanExportResult.FAILURE
            reason = f"{type(exc).__name__}: {exc}"
        if result is SpanExportResult.SUCCESS:
            self.counters.delivered(len(spans))
            return result
        self._retry_at = time.monotonic() + self.cooldown_s
        self.counters.lost(len(spans), reason)
        return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """False while delivery is failing: a flush that dropped spans did not succeed."""
        return self.inner.force_flush(timeout_millis) and not self.counters.failing

    def shutdown(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        try:
            with quiet_loggers(self._quiet):
                self.inner.shutdown()
        except Exception:
            logger.exception("tracebridge: %s: shutting the exporter down failed", self.counters.name)
        if self.counters.failing:
            logger.warning(
                "tracebridge: %s: shut down while export was failing; %s dropped in all",
                self.counters.name,
                _spans(self.counters.dropped),
            )
