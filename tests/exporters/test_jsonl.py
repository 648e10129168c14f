"""Tests for the OTLP JSON lines exporter, its reader and the OTLP/JSON encoding."""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode
from sample_traces import hop_trace

import tracebridge
from tracebridge import semconv
from tracebridge.exporters import JsonLinesExporter, TraceFileError, TraceFileWarning, read_spans, specs
from tracebridge.exporters.otlp_json import decode_value, encode_spans, encode_value

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def sample(spans: object) -> list[ReadableSpan]:
    recorder = spans
    return hop_trace(recorder.provider, recorder.finished)  # type: ignore[attr-defined]


def assert_same_span(read: ReadableSpan, original: ReadableSpan) -> None:
    """Every field a trace viewer uses survived the round trip."""
    assert read.name == original.name
    assert read.context.trace_id == original.context.trace_id
    assert read.context.span_id == original.context.span_id
    assert (read.parent.span_id if read.parent else None) == (original.parent.span_id if original.parent else None)
    assert (read.start_time, read.end_time) == (original.start_time, original.end_time)
    assert dict(read.attributes or {}) == dict(original.attributes or {})
    assert read.kind is original.kind
    assert read.status.status_code is original.status.status_code
    assert read.status.description == original.status.description
    assert [(event.name, dict(event.attributes or {}), event.timestamp) for event in read.events] == [
        (event.name, dict(event.attributes or {}), event.timestamp) for event in original.events
    ]
    assert dict(read.resource.attributes) == dict(original.resource.attributes)
    assert read.instrumentation_scope is not None and original.instrumentation_scope is not None
    assert (read.instrumentation_scope.name, read.instrumentation_scope.version) == (
        original.instrumentation_scope.name,
        original.instrumentation_scope.version,
    )


def assert_lines_hold(read: Sequence[ReadableSpan], batches: Sequence[Sequence[ReadableSpan]]) -> list[tuple[Any, Any]]:
    """Assert that ``read`` holds each exported batch, batch after batch; returns (read, original) pairs.

    Each batch is one line, and lines come back in file order.  Inside a line
    OTLP groups spans by instrumentation scope, so a batch where the user's
    spans and tracebridge's interleave (the drain thread's timing decides)
    comes back regrouped: within a batch only the set of spans is compared.
    """
    assert len(read) == sum(len(batch) for batch in batches)
    pairs = []
    offset = 0
    for batch in batches:
        got = {span.context.span_id: span for span in read[offset : offset + len(batch)]}
        assert sorted(got) == sorted(span.context.span_id for span in batch)
        pairs.extend((got[original.context.span_id], original) for original in batch)
        offset += len(batch)
    return pairs


def test_jsonl_export_then_read_spans_round_trips_every_field(spans: object, tmp_path: Path) -> None:
    """Tests that spans written by the exporter read back equal, field by field, batch by batch."""
    originals = sample(spans)
    path = tmp_path / "trace.jsonl"
    exporter = JsonLinesExporter(path)
    batches = (originals[:3], originals[3:])
    for batch in batches:
        assert exporter.export(batch) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert len(path.read_text().splitlines()) == 2  # one line per batch
    read = read_spans(path)
    assert len(read) == len(originals) == 7
    for got, original in assert_lines_hold(read, batches):
        assert_same_span(got, original)
    assert exporter.counters.exported == 7
    assert exporter.counters.dropped == 0


def test_jsonl_line_is_otlp_json_with_hex_ids(spans: object, tmp_path: Path) -> None:
    """Tests that each line is an ExportTraceServiceRequest with hex ids, integer enums and string int64s."""
    originals = sample(spans)
    exporter = JsonLinesExporter(tmp_path / "trace.jsonl")
    exporter.export(originals)
    exporter.shutdown()
    document = json.loads((tmp_path / "trace.jsonl").read_text())
    (resource_spans,) = document["resourceSpans"]
    service = spans.provider.resource.attributes["service.name"]  # type: ignore[attr-defined]
    assert {"key": "service.name", "value": {"stringValue": service}} in resource_spans["resource"]["attributes"]
    written = [span for scope in resource_spans["scopeSpans"] for span in scope["spans"]]
    assert len(written) == len(originals)
    for span in written:
        assert HEX32.match(span["traceId"]) and HEX16.match(span["spanId"])
        assert "parentSpanId" not in span or HEX16.match(span["parentSpanId"])
        assert span["kind"] == 1
        assert span["startTimeUnixNano"].isdigit() and span["endTimeUnixNano"].isdigit()
    hop = next(span for span in written if span["name"] == semconv.SYNC_TO_ASYNC and span["status"])
    assert hop["status"] == {"code": 2, "message": "PaymentDeclined: card declined"}
    wait = next(item for item in hop["attributes"] if item["key"] == semconv.QUEUE_WAIT_MS)
    assert isinstance(wait["value"]["doubleValue"], float)
    caller = next(item for item in hop["attributes"] if item["key"] == semconv.CALLER_THREAD_ID)
    assert re.match(r"^\d+$", caller["value"]["intValue"])


def test_jsonl_line_equals_official_otlp_protobuf_encoding(spans: object) -> None:
    """Tests that a line parses, ids aside, into the very protobuf the SDK's OTLP encoder sends."""
    common = pytest.importorskip("opentelemetry.exporter.otlp.proto.common.trace_encoder")
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    originals = sample(spans)
    document = copy.deepcopy(encode_spans(originals))
    # Protobuf's own JSON mapping wants base64 bytes where OTLP/JSON writes hex.
    for block in document["resourceSpans"]:
        for scope in block["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
                span["flags"] &= ~0xFF  # the SDK encoder leaves the W3C flags byte out
    parsed = json_format.Parse(json.dumps(document), ExportTraceServiceRequest())
    assert parsed == common.encode_spans(originals)


@pytest.mark.parametrize(
    "value",
    ["text", True, 7, -(2**63), 2.5, b"\x00\xff", ("a", "b"), (1, 2), (True,), {"nested": 1}],
)
def test_encode_value_then_decode_value_round_trips(value: object) -> None:
    """Tests that every attribute value type survives OTLP/JSON encoding."""
    encoded = json.loads(json.dumps(encode_value(value)))
    assert decode_value(encoded) == value


def test_encode_value_non_finite_float_uses_otlp_strings() -> None:
    """Tests that NaN and infinities are written as OTLP/JSON's strings, and read back."""
    assert encode_value(math.inf) == {"doubleValue": "Infinity"}
    assert encode_value(-math.inf) == {"doubleValue": "-Infinity"}
    assert math.isnan(decode_value(encode_value(math.nan)))


def test_jsonl_appends_to_existing_trace_file(spans: object, tmp_path: Path) -> None:
    """Tests that a second exporter on the same path appends rather than replaces."""
    originals = sample(spans)
    path = tmp_path / "trace.jsonl"
    batches = (originals[:2], originals[2:])
    for batch in batches:
        exporter = JsonLinesExporter(path)
        exporter.export(batch)
        exporter.shutdown()
    assert_lines_hold(read_spans(path), batches)


def test_jsonl_crash_mid_write_leaves_earlier_lines_readable(
    spans: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests that a write cut off halfway loses only its own line: the reader skips it with a warning."""
    originals = sample(spans)
    path = tmp_path / "trace.jsonl"
    exporter = JsonLinesExporter(path)
    exporter.export(originals[:4])
    real_write = os.write

    def crash_halfway(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise SystemExit("killed mid-write")  # what a crash looks like from the file's side

    monkeypatch.setattr(os, "write", crash_halfway)
    with pytest.raises(SystemExit):
        exporter._write(b"x" * 10 + b"\n")
    monkeypatch.undo()
    with pytest.warns(TraceFileWarning, match=r"trace.jsonl: skipped a truncated last line \(5 bytes"):
        read = read_spans(path)
    assert_lines_hold(read, [originals[:4]])
    # The next writer starts a fresh line: the torn one stays alone and is skipped.
    exporter.export(originals[4:])
    exporter.shutdown()
    with pytest.warns(TraceFileWarning, match="skipped line 2: not JSON"):
        read = read_spans(path)
    assert_lines_hold(read, [originals[:4], originals[4:]])


def test_jsonl_write_failure_returns_failure_and_counts_drop(
    spans: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests that a failing write never raises: FAILURE, the spans counted as dropped."""
    originals = sample(spans)
    exporter = JsonLinesExporter(tmp_path / "trace.jsonl")

    def disk_full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    assert exporter.export(originals) is SpanExportResult.FAILURE
    monkeypatch.undo()
    exporter.shutdown()
    assert (exporter.counters.dropped, exporter.counters.failed_exports) == (7, 1)
    assert exporter.counters.last_error == "OSError: [Errno 28] No space left on device"
    assert exporter.export(originals) is SpanExportResult.FAILURE  # after shutdown
    exporter.shutdown()  # idempotent


def test_jsonl_refuses_to_append_to_a_foreign_file(tmp_path: Path) -> None:
    """Tests that a file that is not OTLP JSON lines is refused and left untouched."""
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    with pytest.raises(ValueError, match=r"refusing to overwrite .*notes.txt: it is not a OTLP JSON lines trace file"):
        JsonLinesExporter(path)
    assert path.read_text() == "my notes\n"


def test_jsonl_stream_gets_one_line_per_batch(spans: object) -> None:
    """Tests that stream= writes the same lines to a text stream."""
    originals = sample(spans)
    out = io.StringIO()
    exporter = JsonLinesExporter(stream=out)
    exporter.export(originals)
    exporter.shutdown()
    assert len(out.getvalue().splitlines()) == 1
    assert json.loads(out.getvalue()) == json.loads(json.dumps(encode_spans(originals)))
    with pytest.raises(ValueError, match="path= or stream=, exactly one"):
        JsonLinesExporter()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"  \n\n", "the file is empty"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId"', "holds no complete line"),
        (b"name,value\nx,1\n", r"not an OTLP JSON lines file \(line 1 is not an OTLP/JSON trace request\)"),
        (b'{"hello": "world"}\n', r"not an OTLP JSON lines file"),
    ],
)
def test_read_spans_bad_file_raises_clear_error(content: bytes | None, message: str, tmp_path: Path) -> None:
    """Tests that missing, empty, truncated and foreign files are TraceFileErrors naming the file."""
    path = tmp_path / "trace.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TraceFileError, match=f"^{re.escape(str(path))}: .*{message}"):
        read_spans(path)


def test_configure_jsonl_spec_writes_trace_on_flush(tmp_path: Path) -> None:
    """Tests that configure(export='jsonl=PATH') writes every span of a traced request by flush()."""
    path = tmp_path / "trace.jsonl"
    provider = tracebridge.configure(export=f"jsonl={path}", service_name="jsonl-test", set_global=False)
    try:
        from sample_traces import hop_trace as run

        run(provider, lambda: [])
        assert tracebridge.flush() is True
        read = read_spans(path)
    finally:
        tracebridge.set_tracer_provider(None)
        provider.shutdown()
    assert sorted(span.name for span in read) == sorted(
        ["request", semconv.ASYNC_TO_SYNC, semconv.SYNC_TO_ASYNC, semconv.HANDOFF, semconv.LOCAL_ACCESS,
         "SELECT users", semconv.SYNC_TO_ASYNC]
    )
    assert {span.resource.attributes["service.name"] for span in read} == {"jsonl-test"}
    assert specs.parse(f"jsonl={path}")[0].name == "jsonl"


def test_jsonl_tracing_off_writes_nothing(tmp_path: Path) -> None:
    """Tests that with tracing off the bridges produce no span, so the file stays empty."""
    path = tmp_path / "trace.jsonl"
    exporter = JsonLinesExporter(path)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracebridge.set_tracer_provider(None)
    hop_trace(TracerProvider(), lambda: [])  # no provider installed for tracebridge; user spans go elsewhere
    tracebridge.flush()
    provider.shutdown()
    assert path.read_bytes() == b""


def test_read_spans_user_kinds_and_resources_round_trip(tmp_path: Path) -> None:
    """Tests that span kinds, several resources and scopes survive the file."""
    provider_a = TracerProvider(resource=Resource({"service.name": "a", "deployment": "test"}))
    provider_b = TracerProvider(resource=Resource({"service.name": "b"}))
    made: list[ReadableSpan] = []
    for provider, kind in ((provider_a, SpanKind.SERVER), (provider_b, SpanKind.CLIENT)):
        span = provider.get_tracer("scope", "9").start_span("x", kind=kind)
        span.set_status(StatusCode.OK)
        span.end()
        made.append(span)  # type: ignore[arg-type]
    exporter = JsonLinesExporter(tmp_path / "t.jsonl")
    exporter.export(made)
    exporter.shutdown()
    read = read_spans(tmp_path / "t.jsonl")
    assert [(span.kind, span.resource.attributes["service.name"], span.status.status_code) for span in read] == [
        (SpanKind.SERVER, "a", StatusCode.OK),
        (SpanKind.CLIENT, "b", StatusCode.OK),
    ]
    for got, original in zip(read, made, strict=True):
        assert_same_span(got, original)
