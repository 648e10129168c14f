"""File handling shared by the file exporters and readers.

Whole-document formats (Jaeger JSON, Perfetto) are written with
:func:`atomic_write`: a crash leaves either the old file or the new one, never
half of one.  Before an exporter claims a path it checks with
:func:`claim_path` that whatever is there is a trace file of its own format
(or nothing), so a typo in ``--export jaeger-json=settings.json`` cannot
destroy a user's file.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._delivery import ExporterStats, register_stats
from .otlp_json import TraceFormatError

__all__ = [
    "DEFAULT_MAX_SPANS",
    "TraceFileError",
    "TraceFileWarning",
    "WholeDocumentExporter",
    "atomic_write",
    "claim_path",
    "json_bytes",
    "read_bytes",
    "read_document",
]

DEFAULT_MAX_SPANS = 500_000
"""Spans a whole-document exporter keeps before it drops (and counts) the rest."""

# A whole-document trace bigger than this is not parsed just to check that it
# may be overwritten; its first bytes must look right instead.
_CHECK_WHOLE_LIMIT = 64 * 1024 * 1024
_SNIFF_BYTES = 4096


class TraceFileError(TraceFormatError):
    """A trace file is missing, empty, truncated or not in the expected format."""


class TraceFileWarning(UserWarning):
    """Part of a trace file was skipped (e.g. a last line cut short by a crash)."""


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, or a :class:`TraceFileError` saying it is missing, unreadable or empty."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TraceFileError(f"{os.fspath(path)}: no such file") from None
    except IsADirectoryError:
        raise TraceFileError(f"{os.fspath(path)}: is a directory, not a trace file") from None
    except OSError as exc:
        raise TraceFileError(f"{os.fspath(path)}: cannot read it ({exc.strerror or exc})") from None
    if not data.strip():
        raise TraceFileError(f"{os.fspath(path)}: the file is empty")
    return data


def read_document(path: str | os.PathLike[str], data: bytes, format_name: str) -> Any:
    """``data`` parsed as one JSON document, or an error that says truncated or foreign."""
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise TraceFileError(f"{os.fspath(path)}: not a {format_name} file (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        if _unclosed(data):
            raise TraceFileError(
                f"{os.fspath(path)}: truncated {format_name} file (the JSON ends before it is complete; "
                f"was the writer killed?)"
            ) from None
        raise TraceFileError(
            f"{os.fspath(path)}: not a {format_name} file (invalid JSON at line {exc.lineno} column {exc.colno})"
        ) from None


def _unclosed(data: bytes) -> bool:
    """Whether ``data`` is JSON cut short: a bracket or string still open at the end."""
    text = data.strip()
    if text[:1] not in (b"{", b"["):
        return False
    depth = 0
    in_string = escaped = False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
        elif byte in (0x7D, 0x5D):  # } ]
            depth -= 1
    return in_string or depth > 0


def claim_path(
    path: str | os.PathLike[str],
    format_name: str,
    is_ours: Callable[[bytes, bool], bool],
) -> Path:
    """Check that an exporter may write ``path``; returns it resolved.

    Args:
        path: where the exporter will write.
        format_name: for the message (``Jaeger JSON``).
        is_ours: given the file's bytes (all of them, or the first few KiB of a
            huge file) and whether that is the whole file, says whether it is a
            trace file of this format that may be replaced or appended to.

    Raises:
        ValueError: the path is a directory, its folder does not exist, or the
            file holds something else.  The message says what to do.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"{target}: is a directory; give a file path for the {format_name} trace")
    if not target.parent.is_dir():
        raise ValueError(f"{target}: folder {target.parent} does not exist; create it first")
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        return target
    if size == 0:
        return target
    whole = size <= _CHECK_WHOLE_LIMIT
    with open(target, "rb") as handle:
        head = handle.read() if whole else handle.read(_SNIFF_BYTES)
    if not head.strip() or is_ours(head, whole):
        return target
    raise ValueError(
        f"refusing to overwrite {target}: it is not a {format_name} trace file; "
        f"choose another path, or delete the file if you meant to replace it"
    )


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once (temporary file, fsync, rename)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; not possible everywhere
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)


def json_bytes(document: Any) -> bytes:
    """Compact, ASCII-only JSON (safe for any thread or function name)."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("ascii")


class WholeDocumentExporter(SpanExporter):
    """Collects spans and rewrites one whole document (atomically) at each flush and at shutdown.

    Subclasses say what the document is: :attr:`format_name`, :attr:`spec_name`,
    :meth:`is_ours` (may an existing file be replaced) and :meth:`encode_document`.
    ``export`` runs on the batch processor's thread and only appends to a list;
    the encoding and writing happen in ``force_flush``/``shutdown``.

    Args:
        path: the file.  A file of the same format already there is replaced
            at the first write; anything else is refused.
        max_spans: spans kept at most; later ones are dropped and counted.

    Raises:
        ValueError: ``path`` holds another kind of file, is a directory, or
            its folder does not exist.
    """

    format_name: ClassVar[str]
    spec_name: ClassVar[str]

    def __init__(self, path: str | os.PathLike[str], *, max_spans: int = DEFAULT_MAX_SPANS) -> None:
        self.path: Path = claim_path(path, self.format_name, self.is_ours)
        self.max_spans = max_spans
        self.counters: ExporterStats = register_stats(f"{self.spec_name} {self.path}")
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer at a time; export() never waits for it
        self._spans: list[ReadableSpan] = []
        self._written = 0  # how many of self._spans the file on disk holds
        self._shut_down = False

    @staticmethod
    def is_ours(data: bytes, whole: bool) -> bool:
        """Whether ``data`` (a whole file, or the start of a huge one) may be replaced."""
        raise NotImplementedError

    @staticmethod
    def encode_document(spans: Sequence[ReadableSpan]) -> bytes:
        """The whole file for ``spans``."""
        raise NotImplementedError

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Keep ``spans`` for the next write.  Never raises."""
        with self._lock:
            if self._shut_down:
                self.counters.lost(len(spans), "exporter shut down")
                return SpanExportResult.FAILURE
            room = max(0, self.max_spans - len(self._spans))
            self._spans.extend(spans[:room])
        if room < len(spans):
            self.counters.lost(len(spans) - room, f"more than max_spans={self.max_spans} spans", failed_export=False)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Write the file now if spans arrived since the last write."""
        return self._write()

    def shutdown(self) -> None:
        """Write the file one last time.  Idempotent."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        if not self._write():
            self.counters.lost(len(self._spans) - self._written, "the last write failed", failed_export=False)

    def _write(self) -> bool:
        with self._write_lock:
            with self._lock:
                spans = list(self._spans)
            if len(spans) == self._written:
                return True
            try:
                atomic_write(self.path, self.encode_document(spans))
            except Exception as exc:
                # Nothing is lost yet: the spans stay for the next attempt.
                self.counters.lost(0, f"writing {self.path} failed: {type(exc).__name__}: {exc}")
                return False
            self.counters.delivered(len(spans) - self._written)
            self._written = len(spans)
            return True
