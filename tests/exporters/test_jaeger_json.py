"""Tests for the Jaeger UI JSON exporter: the format field by field, atomic writes, reading back."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode
from sample_traces import hop_trace

from tracebridge import semconv
from tracebridge.exporters import JaegerJsonExporter, TraceFileError, read_trace_file, specs
from tracebridge.exporters.jaeger_json import decode, encode

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
JAEGER_TYPES = {bool: "bool", int: "int64", float: "float64", str: "string"}


def sample(spans: object) -> list[ReadableSpan]:
    return hop_trace(spans.provider, spans.finished)  # type: ignore[attr-defined]


def written(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def tags(items: list[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    return {item["key"]: (item["type"], item["value"]) for item in items}


def test_jaeger_json_document_is_valid_field_by_field(spans: object, tmp_path: Path) -> None:
    """Tests every field Jaeger's upload reads: ids, references, times, typed tags, logs, processes."""
    originals = sample(spans)
    path = tmp_path / "trace.json"
    exporter = JaegerJsonExporter(path)
    exporter.export(originals)
    assert not path.exists()  # written at flush, not per batch
    assert exporter.force_flush() is True
    document = written(path)

    assert set(document) == {"data", "total", "limit", "offset", "errors"}
    (trace,) = document["data"]
    assert set(trace) == {"traceID", "spans", "processes", "warnings"}
    assert HEX32.match(trace["traceID"])
    assert trace["traceID"] == f"{originals[0].context.trace_id:032x}"
    by_id = {span.context.span_id: span for span in originals}
    assert len(trace["spans"]) == len(originals) == 7
    span_ids = [span["spanID"] for span in trace["spans"]]
    assert len(set(span_ids)) == len(span_ids)
    starts = [span["startTime"] for span in trace["spans"]]
    assert starts == sorted(starts)
    for span in trace["spans"]:
        assert set(span) == {
            "traceID", "spanID", "flags", "operationName", "references", "startTime", "duration",
            "tags", "logs", "processID", "warnings",
        }
        original = by_id[int(span["spanID"], 16)]
        assert HEX16.match(span["spanID"])
        assert span["traceID"] == trace["traceID"]
        assert span["flags"] == 1
        assert span["operationName"] == original.name
        assert isinstance(span["startTime"], int) and isinstance(span["duration"], int)
        assert span["startTime"] == original.start_time // 1000
        assert span["duration"] == original.end_time // 1000 - original.start_time // 1000
        assert span["processID"] in trace["processes"]
        assert span["warnings"] is None
        if original.parent is None:
            assert span["references"] == []
        else:
            assert span["references"] == [
                {"refType": "CHILD_OF", "traceID": trace["traceID"], "spanID": f"{original.parent.span_id:016x}"}
            ]
            assert span["references"][0]["spanID"] in span_ids
        got = tags(span["tags"])
        for key, value in (original.attributes or {}).items():
            assert got[key] == (JAEGER_TYPES[type(value)], value), key
        scope = original.instrumentation_scope
        assert got["otel.scope.name"] == ("string", scope.name)
        assert "span.kind" not in got  # internal spans carry no kind tag, as in OpenTelemetry's translation
        if original.status.status_code is StatusCode.ERROR:
            assert got["otel.status_code"] == ("string", "ERROR")
            assert got["error"] == ("bool", True)
            assert got["otel.status_description"] == ("string", "PaymentDeclined: card declined")
            (log,) = span["logs"]
            assert log["timestamp"] == original.events[0].timestamp // 1000
            fields = tags(log["fields"])
            assert fields["event"] == ("string", semconv.EXCEPTION_EVENT)
            assert fields[semconv.EXCEPTION_TYPE] == ("string", "sample_traces.PaymentDeclined")
            assert fields[semconv.EXCEPTION_MESSAGE] == ("string", "card declined")
        else:
            assert "otel.status_code" not in got and "error" not in got
            assert span["logs"] == []
    process = trace["processes"]["p1"]
    resource = dict(spans.provider.resource.attributes)  # type: ignore[attr-defined]
    assert process["serviceName"] == resource.pop("service.name")
    assert tags(process["tags"]) == {key: (JAEGER_TYPES[type(value)], value) for key, value in resource.items()}
    exporter.shutdown()


def test_jaeger_json_tag_types_for_every_attribute_kind(tmp_path: Path) -> None:
    """Tests that bool/int/float/str map to bool/int64/float64/string, arrays and non-finite floats to strings."""
    provider = TracerProvider(resource=Resource({"service.name": "types"}))
    span = provider.get_tracer("t").start_span(
        "typed",
        kind=SpanKind.SERVER,
        attributes={"b": True, "i": 3, "f": 1.5, "s": "x", "a": ("p", "q"), "n": float("inf")},
    )
    span.set_status(StatusCode.OK)
    span.end()
    document = encode([span])  # type: ignore[list-item]
    got = tags(document["data"][0]["spans"][0]["tags"])
    assert got == {
        "b": ("bool", True),
        "i": ("int64", 3),
        "f": ("float64", 1.5),
        "s": ("string", "x"),
        "a": ("string", '["p", "q"]'),
        "n": ("string", "inf"),
        "otel.scope.name": ("string", "t"),
        "span.kind": ("string", "server"),
        "otel.status_code": ("string", "OK"),
    }
    json.dumps(document, allow_nan=False)  # valid JSON: no NaN/Infinity literals


def test_jaeger_json_several_services_get_their_own_processes() -> None:
    """Tests that spans of two resources in one trace get two processes, each referenced and defined."""
    frontend = TracerProvider(resource=Resource({"service.name": "frontend"}))
    backend = TracerProvider(resource=Resource({"service.name": "backend", "host.name": "db1"}))
    with frontend.get_tracer("t").start_as_current_span("call") as parent:
        child = backend.get_tracer("t").start_span("serve")
        child.end()
    (trace,) = encode([parent, child])["data"]  # type: ignore[list-item]
    assert trace["processes"] == {
        "p1": {"serviceName": "frontend", "tags": []},
        "p2": {"serviceName": "backend", "tags": [{"key": "host.name", "type": "string", "value": "db1"}]},
    }
    assert [span["processID"] for span in trace["spans"]] == ["p1", "p2"]


def test_jaeger_json_decode_reads_back_what_encode_wrote(spans: object) -> None:
    """Tests that decoding the document gives the spans back (times at microsecond precision)."""
    originals = sample(spans)
    read = decode(json.loads(json.dumps(encode(originals))))
    by_id = {span.context.span_id: span for span in read}
    for original in originals:
        got = by_id[original.context.span_id]
        assert got.name == original.name
        assert got.context.trace_id == original.context.trace_id
        assert (got.parent.span_id if got.parent else None) == (original.parent.span_id if original.parent else None)
        assert got.start_time == original.start_time // 1000 * 1000
        assert dict(got.attributes or {}) == dict(original.attributes or {})
        assert got.status.status_code is original.status.status_code
        assert got.status.description == original.status.description
        assert [event.name for event in got.events] == [event.name for event in original.events]
        assert dict(got.resource.attributes) == dict(original.resource.attributes)
        assert got.instrumentation_scope.name == original.instrumentation_scope.name


def test_jaeger_json_write_is_atomic(spans: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that a write failing before the rename leaves the previous file whole and no temporary file."""
    originals = sample(spans)
    path = tmp_path / "trace.json"
    exporter = JaegerJsonExporter(path)
    exporter.export(originals[:2])
    exporter.force_flush()
    before = path.read_bytes()

    def crash(source: str, target: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    exporter.export(originals[2:])
    assert exporter.force_flush() is False
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["trace.json"]
    assert exporter.counters.failed_exports == 1
    monkeypatch.undo()
    assert exporter.force_flush() is True  # the spans were kept: the next write has them all
    assert len(written(path)["data"][0]["spans"]) == 7
    exporter.shutdown()
    assert exporter.counters.exported == 7 and exporter.counters.dropped == 0


def test_jaeger_json_refuses_to_overwrite_a_foreign_file(tmp_path: Path) -> None:
    """Tests that a JSON file that is not a Jaeger trace is refused and left as it was."""
    path = tmp_path / "settings.json"
    path.write_text('{"data": 3, "theme": "dark"}')
    with pytest.raises(ValueError, match=r"refusing to overwrite .*settings.json: it is not a Jaeger JSON trace file"):
        specs.build([f"jaeger-json={path}"])
    assert path.read_text() == '{"data": 3, "theme": "dark"}'


def test_jaeger_json_replaces_an_earlier_trace_file(spans: object, tmp_path: Path) -> None:
    """Tests that an existing Jaeger JSON file (an earlier run's) is replaced at the first write."""
    originals = sample(spans)
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"data": [], "total": 0, "limit": 0, "offset": 0, "errors": None}))
    exporter = JaegerJsonExporter(path)
    exporter.export(originals)
    exporter.shutdown()
    assert len(written(path)["data"][0]["spans"]) == 7


def test_jaeger_json_max_spans_drops_and_counts(spans: object, tmp_path: Path) -> None:
    """Tests that spans beyond max_spans are dropped and counted, not kept without bound."""
    originals = sample(spans)
    exporter = JaegerJsonExporter(tmp_path / "trace.json", max_spans=5)
    assert exporter.export(originals) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert (exporter.counters.exported, exporter.counters.dropped) == (5, 2)
    assert exporter.export(originals) is SpanExportResult.FAILURE


def test_jaeger_json_no_spans_writes_no_file(tmp_path: Path) -> None:
    """Tests that with nothing traced (tracing off) no file is written."""
    exporter = JaegerJsonExporter(tmp_path / "trace.json")
    exporter.force_flush()
    exporter.shutdown()
    assert not (tmp_path / "trace.json").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"data": [{"traceID": "ab", "spans": [', "truncated OTLP JSON lines or Jaeger JSON file"),
        (b'{"data": [{"traceID": "ab", "spans": [{"spanID": "01", "processID": "p9"}], "processes": {}}]}',
         "names undefined process 'p9'"),
        (b'{"config": true}', "not a trace file tracebridge can read"),
    ],
)
def test_read_trace_file_bad_jaeger_file_raises(content: bytes, message: str, tmp_path: Path) -> None:
    """Tests that truncated, inconsistent and foreign JSON files are TraceFileErrors naming the file."""
    path = tmp_path / "trace.json"
    path.write_bytes(content)
    with pytest.raises(TraceFileError, match=re.escape(str(path)) + ": .*" + re.escape(message)):
        read_trace_file(path)
