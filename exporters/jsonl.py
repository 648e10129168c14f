"""OTLP JSON lines: one ``ExportTraceServiceRequest`` per line, appended as spans arrive.

The file is append-only: each batch the processor hands over becomes one line,
written with a single ``write`` on a descriptor opened with ``O_APPEND``, so
several processes (a program and the children ``tracebridge run`` traces) can
share one file.  A crash mid-write can leave only the last line incomplete;
:func:`read_spans` skips it with a warning, and the next writer starts on a new
line so the records after it stay readable.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._delivery import ExporterStats, register_stats
from ._files import TraceFileError, TraceFileWarning, claim_path, json_bytes, read_bytes
from .otlp_json import TraceFormatError, decode_request, encode_spans

__all__ = ["FORMAT_NAME", "JsonLinesExporter", "is_jsonl", "read_spans"]

FORMAT_NAME = "OTLP JSON lines"


def is_jsonl(data: bytes, whole: bool = True) -> bool:
    """Whether ``data`` (a file's start) begins with an OTLP/JSON trace request line."""
    first = data.lstrip().split(b"\n", 1)[0]
    try:
        document = json.loads(first)
    except ValueError:
        return False
    return isinstance(document, dict) and isinstance(document.get("resourceSpans"), list)


class JsonLinesExporter(SpanExporter):
    """Appends each batch of spans to a file (or stream) as one OTLP/JSON line.

    Args:
        path: the file; created if missing, appended to if it already holds
            OTLP JSON lines.  Anything else there is refused.
        stream: a text stream to write to instead (not closed at shutdown).

    Raises:
        ValueError: both or neither of ``path`` and ``stream``; or ``path`` is
            not a file this exporter may append to (see :func:`~._files.claim_path`).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, stream: TextIO | None = None) -> None:
        if (path is None) == (stream is None):
            raise ValueError("JsonLinesExporter takes path= or stream=, exactly one")
        self._lock = threading.Lock()
        self._stream = stream
        self._fd: int | None = None
        self._shut_down = False
        self.path: Path | None = None
        if path is not None:
            self.path = claim_path(path, FORMAT_NAME, is_jsonl)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self.counters: ExporterStats = register_stats(f"jsonl {self.path if self.path else '<stream>'}")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append ``spans`` as one line.  Never raises: a failure is counted and returns FAILURE."""
        if self._shut_down:
            self.counters.lost(len(spans), "exporter shut down")
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            # Encoded outside the lock: another batch may be written meanwhile.
            line = json_bytes(encode_spans(spans)) + b"\n"
            with self._lock:
                self._write(line)
        except Exception as exc:
            self.counters.lost(len(spans), f"{type(exc).__name__}: {exc}")
            return SpanExportResult.FAILURE
        self.counters.delivered(len(spans))
        return SpanExportResult.SUCCESS

    def _write(self, line: bytes) -> None:
        if self._stream is not None:
            self._stream.write(line.decode("ascii"))
            return
        fd = self._fd
        if fd is None:
            raise OSError("file closed")
        # A line torn by a crash of an earlier writer (this process or another
        # sharing the file) must not swallow ours: start on a fresh line.
        size = os.fstat(fd).st_size
        if size and hasattr(os, "pread") and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Make what was written durable (fsync)."""
        with self._lock:
            try:
                if self._fd is not None:
                    os.fsync(self._fd)
                elif self._stream is not None:
                    self._stream.flush()
            except (OSError, ValueError):
                return False
        return True

    def shutdown(self) -> None:
        """Flush and close the file.  Idempotent."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
            fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.fsync(fd)
            except OSError:
                pass
            os.close(fd)
        elif self._stream is not None:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                pass


def read_spans(path: str | os.PathLike[str]) -> list[ReadableSpan]:
    """Load the spans of an OTLP JSON lines file, in file order.

    A last line cut short (the writer was killed mid-write) is skipped with a
    :class:`~._files.TraceFileWarning`; so is any other unreadable line after
    the first.  The spans are SDK ``ReadableSpan`` objects: render them with
    :func:`~.console.render_trace` or hand them to any exporter.

    Raises:
        TraceFileError: the file is missing, empty, holds no complete line, or
            is not OTLP JSON lines (its first line is not a trace request).
    """
    data = read_bytes(path)
    name = os.fspath(path)
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    spans: list[ReadableSpan] = []
    read_any = False
    skipped: list[str] = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
            batch = decode_request(document, f"{name} line {number}")
        except (ValueError, TraceFormatError) as exc:
            torn = number - 1 == last and not complete
            if not read_any and not torn:
                raise TraceFileError(
                    f"{name}: not an {FORMAT_NAME} file (line {number} is not an OTLP/JSON trace request)"
                ) from None
            if torn:
                skipped.append(f"skipped a truncated last line ({len(line)} bytes; was the writer killed?)")
            else:
                reason = str(exc) if isinstance(exc, TraceFormatError) else "not JSON"
                skipped.append(f"skipped line {number}: {reason}")
            continue
        read_any = True
        spans.extend(batch)
    if not read_any:
        raise TraceFileError(f"{name}: truncated {FORMAT_NAME} file: it holds no complete line")
    for message in skipped:
        warnings.warn(f"{name}: {message}", TraceFileWarning, stacklevel=2)
    return spans
