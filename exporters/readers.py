"""Saved traces in, spans out (and back to a file): what ``tracebridge show`` and ``convert`` use.

:func:`read_trace_file` recognises the formats tracebridge writes that keep
whole spans (OTLP JSON lines, a single OTLP/JSON request, Jaeger JSON) from
their content, not their name.  A Perfetto file is a drawing of the spans
(it keeps no parent links), so it is recognised and refused with a hint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from opentelemetry.sdk.trace import ReadableSpan

from . import jaeger_json, jsonl, otlp_json, perfetto
from ._files import TraceFileError, atomic_write, claim_path, json_bytes, read_bytes, read_document

__all__ = ["FORMATS", "OutputFormat", "encode_trace", "read_trace_file", "write_trace_file"]

OutputFormat = Literal["perfetto", "jaeger", "otlp-json"]

FORMATS: dict[str, str] = {
    "perfetto": ".perfetto.json",
    "jaeger": ".jaeger.json",
    "otlp-json": ".jsonl",
}
"""``convert --to`` choices and the file suffix each one gets by default."""

_READABLE = f"{jsonl.FORMAT_NAME} or {jaeger_json.FORMAT_NAME}"


def read_trace_file(path: str | os.PathLike[str]) -> list[ReadableSpan]:
    """The spans saved in ``path`` (OTLP JSON lines, OTLP/JSON or Jaeger JSON).

    Raises:
        TraceFileError: the file is missing, empty, truncated, a Perfetto
            timeline, or not a trace format tracebridge reads.  The message
            starts with the path and says which.
    """
    data = read_bytes(path)
    name = os.fspath(path)
    head = data.lstrip()[:1]
    if head != b"{":
        if head == b"[" and perfetto.is_perfetto_json(data):
            raise _perfetto_refusal(name)
        raise TraceFileError(f"{name}: not a trace file tracebridge can read (expected {_READABLE})")
    # One JSON document (Jaeger, Perfetto, a pretty-printed OTLP request), or
    # JSON lines: try the first line on its own first, it is cheap.
    first_line = data.lstrip().split(b"\n", 1)[0]
    try:
        first = json.loads(first_line)
    except ValueError:
        first = None
    if isinstance(first, dict) and "resourceSpans" in first:
        return jsonl.read_spans(path)
    document = read_document(name, data, _READABLE)
    if isinstance(document, dict) and "resourceSpans" in document:
        return otlp_json.decode_request(document, name)
    if isinstance(document, dict) and "traceEvents" in document:
        raise _perfetto_refusal(name)
    if isinstance(document, dict) and "data" in document:
        return jaeger_json.decode(document, name)
    raise TraceFileError(f"{name}: not a trace file tracebridge can read (expected {_READABLE})")


def _perfetto_refusal(name: str) -> TraceFileError:
    return TraceFileError(
        f"{name}: a Perfetto timeline cannot be read back (it keeps no span tree); "
        f"use the OTLP JSON lines or Jaeger JSON file it was made from"
    )


def encode_trace(spans: Sequence[ReadableSpan], to: OutputFormat) -> bytes:
    """``spans`` as the bytes of a ``to`` file."""
    if to == "perfetto":
        return json_bytes(perfetto.encode(spans))
    if to == "jaeger":
        return json_bytes(jaeger_json.encode(spans))
    if to == "otlp-json":
        return json_bytes(otlp_json.encode_spans(spans)) + b"\n"
    raise ValueError(f"unknown output format {to!r}; choose one of {', '.join(FORMATS)}")


_CHECKS = {
    "perfetto": (perfetto.FORMAT_NAME, perfetto.is_perfetto_json),
    "jaeger": (jaeger_json.FORMAT_NAME, jaeger_json.is_jaeger_json),
    "otlp-json": (jsonl.FORMAT_NAME, jsonl.is_jsonl),
}


def write_trace_file(spans: Sequence[ReadableSpan], to: OutputFormat, path: str | os.PathLike[str]) -> Path:
    """Write ``spans`` to ``path`` as ``to``, atomically; returns the path written.

    Raises:
        ValueError: ``to`` is unknown, or ``path`` holds a file of another kind
            (it is never overwritten).
    """
    if to not in _CHECKS:
        raise ValueError(f"unknown output format {to!r}; choose one of {', '.join(FORMATS)}")
    format_name, is_ours = _CHECKS[to]
    target = claim_path(path, format_name, is_ours)
    data = encode_trace(spans, to)
    atomic_write(target, data)
    return target
