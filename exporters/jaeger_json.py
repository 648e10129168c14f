"""Jaeger UI JSON: the file the Jaeger UI's "upload JSON" (and its API) reads.

Layout, as the Jaeger query API returns it::

    {"data": [{"traceID": "<32 hex>",
               "spans": [{"traceID", "spanID", "flags", "operationName",
                          "references": [{"refType": "CHILD_OF", "traceID", "spanID"}],
                          "startTime": <µs since epoch>, "duration": <µs>,
                          "tags": [{"key", "type", "value"}], "logs": [...],
                          "processID": "p1", "warnings": null}],
               "processes": {"p1": {"serviceName", "tags"}},
               "warnings": null}],
     "total": 0, "limit": 0, "offset": 0, "errors": null}

Tags are typed (``string``, ``bool``, ``int64``, ``float64``, ``binary``).
OpenTelemetry fields with no Jaeger equivalent become tags the way
OpenTelemetry's own OTLP-to-Jaeger translation names them (``span.kind``,
``otel.status_code``, ``otel.scope.name`` ...), and span events become logs.
:func:`decode` reads such a file back into spans.

:class:`JaegerJsonExporter` keeps every span it is given and rewrites the whole
file, atomically, at each flush and at shutdown.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ._files import DEFAULT_MAX_SPANS, TraceFileError, WholeDocumentExporter, json_bytes
from .otlp_json import hex_span_id, hex_trace_id

__all__ = [
    "DEFAULT_MAX_SPANS",
    "FORMAT_NAME",
    "JaegerJsonExporter",
    "decode",
    "decode_tags",
    "encode",
    "encode_tags",
    "is_jaeger_json",
]

FORMAT_NAME = "Jaeger JSON"

# Jaeger's names for OpenTelemetry fields (OTLP-to-Jaeger translation).
_TAG_SPAN_KIND = "span.kind"
_TAG_STATUS_CODE = "otel.status_code"
_TAG_STATUS_DESCRIPTION = "otel.status_description"
_TAG_ERROR = "error"
_TAG_SCOPE_NAME = "otel.scope.name"
_TAG_SCOPE_VERSION = "otel.scope.version"
_LOG_EVENT = "event"
_SERVICE_NAME = "service.name"
_UNKNOWN_SERVICE = "unknown_service"
_SPECIAL_TAGS = frozenset(
    {_TAG_SPAN_KIND, _TAG_STATUS_CODE, _TAG_STATUS_DESCRIPTION, _TAG_ERROR, _TAG_SCOPE_NAME, _TAG_SCOPE_VERSION}
)
_KIND_NAMES = {
    SpanKind.INTERNAL: "internal",
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}
_KINDS_BY_NAME = {name: kind for kind, name in _KIND_NAMES.items()}


# ---------------------------------------------------------------------------
# Encoding.


def encode(spans: Iterable[ReadableSpan]) -> dict[str, Any]:
    """Spans of any number of traces as one Jaeger JSON document (traces in start order)."""
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    traces = sorted(by_trace.items(), key=lambda item: min(span.start_time or 0 for span in item[1]))
    return {
        "data": [_encode_trace(trace_id, trace_spans) for trace_id, trace_spans in traces],
        "total": 0,
        "limit": 0,
        "offset": 0,
        "errors": None,
    }


def _encode_trace(trace_id: int, spans: list[ReadableSpan]) -> dict[str, Any]:
    processes: dict[str, dict[str, Any]] = {}
    process_ids: dict[Resource, str] = {}
    encoded = []
    for span in sorted(spans, key=lambda span: (span.start_time or 0, span.context.span_id)):
        process_id = process_ids.get(span.resource)
        if process_id is None:
            process_id = process_ids[span.resource] = f"p{len(process_ids) + 1}"
            processes[process_id] = _encode_process(span.resource)
        encoded.append(_encode_span(span, process_id))
    return {"traceID": hex_trace_id(trace_id), "spans": encoded, "processes": processes, "warnings": None}


def _encode_process(resource: Resource) -> dict[str, Any]:
    attributes = dict(resource.attributes)
    service = attributes.pop(_SERVICE_NAME, None)
    return {"serviceName": str(service) if service else _UNKNOWN_SERVICE, "tags": encode_tags(attributes)}


def _micros(nanos: int | None) -> int:
    return (nanos or 0) // 1000


def _encode_span(span: ReadableSpan, process_id: str) -> dict[str, Any]:
    context = span.context
    trace_id = hex_trace_id(context.trace_id)
    references = []
    if span.parent is not None:
        references.append(
            {"refType": "CHILD_OF", "traceID": hex_trace_id(span.parent.trace_id), "spanID": hex_span_id(span.parent.span_id)}
        )
    for link in span.links:
        references.append(
            {"refType": "FOLLOWS_FROM", "traceID": hex_trace_id(link.context.trace_id),
             "spanID": hex_span_id(link.context.span_id)}
        )
    tags = encode_tags(span.attributes or {})
    scope = span.instrumentation_scope
    if scope is not None and scope.name:
        tags.append(_tag(_TAG_SCOPE_NAME, scope.name))
        if scope.version:
            tags.append(_tag(_TAG_SCOPE_VERSION, scope.version))
    if span.kind is not SpanKind.INTERNAL:
        tags.append(_tag(_TAG_SPAN_KIND, _KIND_NAMES[span.kind]))
    status = span.status
    if status.status_code is not StatusCode.UNSET:
        tags.append(_tag(_TAG_STATUS_CODE, status.status_code.name))
        if status.status_code is StatusCode.ERROR:
            tags.append(_tag(_TAG_ERROR, True))
            if status.description:
                tags.append(_tag(_TAG_STATUS_DESCRIPTION, status.description))
    start = _micros(span.start_time)
    return {
        "traceID": trace_id,
        "spanID": hex_span_id(context.span_id),
        # Jaeger's flags are its own (2 means "debug"), not W3C's: only "sampled" carries over.
        "flags": 1 if context.trace_flags.sampled else 0,
        "operationName": span.name,
        "references": references,
        "startTime": start,
        # From the rounded ends, so a child never seems to outlast its parent.
        "duration": max(0, _micros(span.end_time) - start),
        "tags": tags,
        "logs": [_encode_log(event) for event in span.events],
        "processID": process_id,
        "warnings": None,
    }


def _encode_log(event: Event) -> dict[str, Any]:
    return {
        "timestamp": _micros(event.timestamp),
        "fields": [_tag(_LOG_EVENT, event.name), *encode_tags(event.attributes or {})],
    }


def encode_tags(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Typed Jaeger tags of an attribute mapping, in its order."""
    return [_tag(key, value) for key, value in attributes.items()]


def _tag(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"key": key, "type": "float64", "value": value}
        return {"key": key, "type": "string", "value": repr(value)}  # JSON has no NaN/Infinity
    if isinstance(value, bytes):
        return {"key": key, "type": "binary", "value": base64.b64encode(value).decode("ascii")}
    if isinstance(value, str):
        return {"key": key, "type": "string", "value": value}
    if isinstance(value, Sequence):
        # Jaeger has no array type: the OTLP translation writes them as JSON text.
        return {"key": key, "type": "string", "value": json.dumps(list(value), default=str)}
    return {"key": key, "type": "string", "value": str(value)}


def is_jaeger_json(data: bytes, whole: bool = True) -> bool:
    """Whether ``data`` (a whole file, or the start of a huge one) is a Jaeger JSON document."""
    if not whole:
        head = data.lstrip()
        return head.startswith(b"{") and b'"data"' in head[:64]
    try:
        document = json.loads(data)
    except ValueError:
        return False
    return _is_document(document)


def _is_document(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and isinstance(document.get("data"), list)
        and all(isinstance(trace, dict) and "spans" in trace and "traceID" in trace for trace in document["data"])
    )


# ---------------------------------------------------------------------------
# Decoding.


def decode(document: Any, where: str = "document") -> list[ReadableSpan]:
    """The spans of a Jaeger JSON document (times at microsecond precision).

    Raises:
        TraceFileError: ``document`` is not Jaeger JSON, or a span in it is malformed.
    """
    if not _is_document(document):
        raise TraceFileError(f"{where}: not a {FORMAT_NAME} file (no \"data\" list of traces)")
    spans = []
    try:
        for trace in document["data"]:
            processes = trace.get("processes") or {}
            resources: dict[str, Resource] = {}
            for span in trace["spans"]:
                process_id = span.get("processID")
                if process_id not in resources:
                    if process_id not in processes:
                        raise TraceFileError(f"{where}: span {span.get('spanID')} names undefined process {process_id!r}")
                    resources[process_id] = _decode_process(processes[process_id])
                spans.append(_decode_span(span, resources[process_id]))
    except TraceFileError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise TraceFileError(f"{where}: malformed {FORMAT_NAME} span ({type(exc).__name__}: {exc})") from None
    return spans


def _decode_process(process: Mapping[str, Any]) -> Resource:
    attributes = {_SERVICE_NAME: process.get("serviceName") or _UNKNOWN_SERVICE}
    attributes.update(decode_tags(process.get("tags")))
    return Resource(attributes)


def decode_tags(tags: Any) -> dict[str, Any]:
    """Attributes from typed Jaeger tags."""
    attributes: dict[str, Any] = {}
    for tag in tags or []:
        value = tag.get("value")
        kind = tag.get("type", "string")
        if kind == "int64":
            value = int(value)
        elif kind == "float64":
            value = float(value)
        elif kind == "bool":
            value = value if isinstance(value, bool) else str(value).lower() == "true"
        elif kind == "binary":
            value = base64.b64decode(value)
        else:
            value = str(value)
        attributes[str(tag["key"])] = value
    return attributes


def _id(value: Any, digits: int) -> int:
    text = str(value)
    if not text or len(text) > digits:
        raise ValueError(f"id {value!r} is not at most {digits} hex digits")
    return int(text, 16)  # Jaeger itself drops leading zeros: accept short ids


def _decode_span(doc: Mapping[str, Any], resource: Resource) -> ReadableSpan:
    trace_id = _id(doc["traceID"], 32)
    flags = TraceFlags(int(doc.get("flags", 1)) & TraceFlags.SAMPLED)
    parent = None
    links = []
    for reference in doc.get("references") or []:
        context = SpanContext(_id(reference["traceID"], 32), _id(reference["spanID"], 16), False, flags)
        if reference.get("refType") == "CHILD_OF" and parent is None:
            parent = context
        else:
            links.append(Link(context))
    tags = decode_tags(doc.get("tags"))
    attributes = {key: value for key, value in tags.items() if key not in _SPECIAL_TAGS}
    scope = None
    if tags.get(_TAG_SCOPE_NAME):
        scope = InstrumentationScope(str(tags[_TAG_SCOPE_NAME]), tags.get(_TAG_SCOPE_VERSION) or None)
    code = StatusCode.ERROR if tags.get(_TAG_ERROR) is True else StatusCode.UNSET
    if str(tags.get(_TAG_STATUS_CODE, "")).upper() in ("OK", "ERROR"):
        code = StatusCode[str(tags[_TAG_STATUS_CODE]).upper()]
    description = tags.get(_TAG_STATUS_DESCRIPTION) if code is StatusCode.ERROR else None
    events = []
    for log in doc.get("logs") or []:
        fields = decode_tags(log.get("fields"))
        name = str(fields.pop(_LOG_EVENT, "log"))
        events.append(Event(name, fields, int(log.get("timestamp") or 0) * 1000))
    start = int(doc["startTime"]) * 1000
    return ReadableSpan(
        name=str(doc.get("operationName", "")),
        context=SpanContext(trace_id, _id(doc["spanID"], 16), False, flags),
        parent=parent,
        resource=resource,
        attributes=attributes,
        events=events,
        links=links,
        kind=_KINDS_BY_NAME.get(str(tags.get(_TAG_SPAN_KIND, "")), SpanKind.INTERNAL),
        status=Status(code, description),
        start_time=start,
        end_time=start + int(doc.get("duration") or 0) * 1000,
        instrumentation_scope=scope,
    )


# ---------------------------------------------------------------------------
# The exporter.


class JaegerJsonExporter(WholeDocumentExporter):
    """Collects spans and writes them as one Jaeger JSON file at each flush and at shutdown.

    Args:
        path: the file.  A Jaeger JSON file already there is replaced (at the
            first flush); anything else is refused.
        max_spans: spans kept at most; later ones are dropped and counted.

    Raises:
        ValueError: ``path`` holds something other than a Jaeger JSON trace, or
            its folder does not exist.
    """

    format_name = FORMAT_NAME
    spec_name = "jaeger-json"

    @staticmethod
    def is_ours(data: bytes, whole: bool) -> bool:
        return is_jaeger_json(data, whole)

    @staticmethod
    def encode_document(spans: Sequence[ReadableSpan]) -> bytes:
        return json_bytes(encode(spans))
