"""OTLP/JSON: spans as ``ExportTraceServiceRequest`` JSON objects, and back.

A pure encoder and decoder (no files here; see :mod:`.jsonl`).  The encoding
follows the OTLP/JSON rules of the OpenTelemetry protocol specification, which
differ from protobuf's canonical JSON mapping in two places: trace and span ids
are lower-case hex strings (not base64), and enums are integers.  64-bit
integers (timestamps, ``intValue``) are decimal strings, as proto3 JSON says.

What the OTLP encoder of the OpenTelemetry SDK would send over the wire is what
this writes: same grouping (resource, then instrumentation scope), same flags.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

__all__ = [
    "TraceFormatError",
    "decode_attributes",
    "decode_request",
    "decode_value",
    "encode_attributes",
    "encode_spans",
    "encode_value",
    "hex_span_id",
    "hex_trace_id",
]

# proto SpanFlags: the low byte is the W3C trace flags; bit 8 says whether
# bit 9 ("the parent is remote") is known.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200

_KIND_TO_OTLP = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_OTLP_TO_KIND = {number: kind for kind, number in _KIND_TO_OTLP.items()}
_STATUS_TO_OTLP = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}
_OTLP_TO_STATUS = {number: code for code, number in _STATUS_TO_OTLP.items()}


class TraceFormatError(ValueError):
    """A file or document is not the trace format it was read as.  The message says where and why."""


def hex_trace_id(trace_id: int) -> str:
    """A trace id as OTLP/JSON and Jaeger write it: 32 lower-case hex digits."""
    return f"{trace_id:032x}"


def hex_span_id(span_id: int) -> str:
    """A span id as OTLP/JSON and Jaeger write it: 16 lower-case hex digits."""
    return f"{span_id:016x}"


# ---------------------------------------------------------------------------
# Encoding.


def encode_spans(spans: Iterable[ReadableSpan]) -> dict[str, Any]:
    """One ``ExportTraceServiceRequest`` holding ``spans``, as a JSON-ready dict."""
    grouped: dict[Resource, dict[InstrumentationScope | None, list[dict[str, Any]]]] = {}
    for span in spans:
        by_scope = grouped.setdefault(span.resource, {})
        by_scope.setdefault(span.instrumentation_scope or None, []).append(_encode_span(span))
    resource_spans = []
    for resource, by_scope in grouped.items():
        scope_spans = []
        for scope, encoded in by_scope.items():
            entry: dict[str, Any] = {"scope": _encode_scope(scope), "spans": encoded}
            if scope is not None and scope.schema_url:
                entry["schemaUrl"] = scope.schema_url
            scope_spans.append(entry)
        block: dict[str, Any] = {
            "resource": {"attributes": encode_attributes(resource.attributes)},
            "scopeSpans": scope_spans,
        }
        if resource.schema_url:
            block["schemaUrl"] = resource.schema_url
        resource_spans.append(block)
    return {"resourceSpans": resource_spans}


def _encode_scope(scope: InstrumentationScope | None) -> dict[str, Any]:
    if scope is None:
        return {}
    encoded: dict[str, Any] = {"name": scope.name}
    if scope.version:
        encoded["version"] = scope.version
    if scope.attributes:
        encoded["attributes"] = encode_attributes(scope.attributes)
    return encoded


def _flags(context: SpanContext | None) -> int:
    flags = _HAS_IS_REMOTE
    if context is not None and context.is_remote:
        flags |= _IS_REMOTE
    return flags


def _encode_span(span: ReadableSpan) -> dict[str, Any]:
    context = span.context
    encoded: dict[str, Any] = {
        "traceId": hex_trace_id(context.trace_id),
        "spanId": hex_span_id(context.span_id),
    }
    if context.trace_state:
        encoded["traceState"] = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
    if span.parent is not None:
        encoded["parentSpanId"] = hex_span_id(span.parent.span_id)
    encoded["flags"] = _flags(span.parent) | int(context.trace_flags)
    encoded["name"] = span.name
    encoded["kind"] = _KIND_TO_OTLP[span.kind]
    encoded["startTimeUnixNano"] = str(span.start_time or 0)
    encoded["endTimeUnixNano"] = str(span.end_time or 0)
    encoded["attributes"] = encode_attributes(span.attributes)
    if span.dropped_attributes:
        encoded["droppedAttributesCount"] = span.dropped_attributes
    if span.events:
        encoded["events"] = [_encode_event(event) for event in span.events]
    if span.dropped_events:
        encoded["droppedEventsCount"] = span.dropped_events
    if span.links:
        encoded["links"] = [_encode_link(link) for link in span.links]
    if span.dropped_links:
        encoded["droppedLinksCount"] = span.dropped_links
    status: dict[str, Any] = {}
    if span.status.status_code is not StatusCode.UNSET:
        status["code"] = _STATUS_TO_OTLP[span.status.status_code]
    if span.status.description:
        status["message"] = span.status.description
    encoded["status"] = status
    return encoded


def _encode_event(event: Event) -> dict[str, Any]:
    encoded: dict[str, Any] = {
        "timeUnixNano": str(event.timestamp),
        "name": event.name,
        "attributes": encode_attributes(event.attributes),
    }
    if event.dropped_attributes:
        encoded["droppedAttributesCount"] = event.dropped_attributes
    return encoded


def _encode_link(link: Link) -> dict[str, Any]:
    encoded: dict[str, Any] = {
        "traceId": hex_trace_id(link.context.trace_id),
        "spanId": hex_span_id(link.context.span_id),
        "attributes": encode_attributes(link.attributes),
        "flags": _flags(link.context) | int(link.context.trace_flags),
    }
    if link.context.trace_state:
        encoded["traceState"] = ",".join(f"{key}={value}" for key, value in link.context.trace_state.items())
    if link.dropped_attributes:
        encoded["droppedAttributesCount"] = link.dropped_attributes
    return encoded


def encode_attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """OTLP ``KeyValue`` list of an attribute mapping."""
    return [{"key": key, "value": encode_value(value)} for key, value in (attributes or {}).items()]


def encode_value(value: Any) -> dict[str, Any]:
    """OTLP ``AnyValue`` of one attribute value."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        if math.isnan(value):
            return {"doubleValue": "NaN"}
        if math.isinf(value):
            return {"doubleValue": "Infinity" if value > 0 else "-Infinity"}
        return {"doubleValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": encode_attributes(value)}}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [encode_value(item) for item in value]}}
    return {"stringValue": str(value)}


# ---------------------------------------------------------------------------
# Decoding.


def decode_request(document: Any, where: str = "document") -> list[ReadableSpan]:
    """The spans of one ``ExportTraceServiceRequest`` JSON object.

    Args:
        document: the parsed JSON.
        where: names the document in error messages (``trace.jsonl line 3``).

    Raises:
        TraceFormatError: ``document`` is not an OTLP/JSON trace request.
    """
    if not isinstance(document, dict) or not isinstance(document.get("resourceSpans"), list):
        raise TraceFormatError(f"{where}: not an OTLP/JSON trace request (no \"resourceSpans\" list)")
    spans: list[ReadableSpan] = []
    try:
        for block in document["resourceSpans"]:
            resource_doc = block.get("resource") or {}
            resource = Resource(decode_attributes(resource_doc.get("attributes")), block.get("schemaUrl") or None)
            for scope_block in block.get("scopeSpans") or []:
                scope = _decode_scope(scope_block.get("scope") or {}, scope_block.get("schemaUrl"))
                for span in scope_block.get("spans") or []:
                    spans.append(_decode_span(span, resource, scope))
    except TraceFormatError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise TraceFormatError(f"{where}: malformed OTLP/JSON span data ({type(exc).__name__}: {exc})") from None
    return spans


def _decode_scope(scope: Mapping[str, Any], schema_url: str | None) -> InstrumentationScope | None:
    if not scope.get("name"):
        return None
    return InstrumentationScope(
        scope["name"], scope.get("version") or None, schema_url or None, decode_attributes(scope.get("attributes"))
    )


def _decode_id(value: Any, digits: int, what: str) -> int:
    if not isinstance(value, str) or len(value) != digits:
        raise TraceFormatError(f"{what} {value!r} is not {digits} hex digits")
    try:
        return int(value, 16)
    except ValueError:
        raise TraceFormatError(f"{what} {value!r} is not {digits} hex digits") from None


def _decode_trace_state(value: Any) -> TraceState | None:
    if not value:
        return None
    pairs = [item.split("=", 1) for item in str(value).split(",") if "=" in item]
    return TraceState([(key.strip(), val.strip()) for key, val in pairs])


def _decode_span(doc: Mapping[str, Any], resource: Resource, scope: InstrumentationScope | None) -> ReadableSpan:
    trace_id = _decode_id(doc["traceId"], 32, "traceId")
    flags = int(doc.get("flags") or 1)
    context = SpanContext(
        trace_id, _decode_id(doc["spanId"], 16, "spanId"), is_remote=False,
        trace_flags=TraceFlags(flags & 0xFF), trace_state=_decode_trace_state(doc.get("traceState")),
    )
    parent = None
    if doc.get("parentSpanId"):
        parent = SpanContext(
            trace_id, _decode_id(doc["parentSpanId"], 16, "parentSpanId"),
            is_remote=bool(flags & _IS_REMOTE), trace_flags=TraceFlags(flags & 0xFF),
        )
    status_doc = doc.get("status") or {}
    code = _OTLP_TO_STATUS.get(int(status_doc.get("code") or 0), StatusCode.UNSET)
    status = Status(code, status_doc.get("message") or None) if code is StatusCode.ERROR else Status(code)
    events = [
        Event(event.get("name", ""), decode_attributes(event.get("attributes")), int(event.get("timeUnixNano") or 0))
        for event in doc.get("events") or []
    ]
    links = [
        Link(
            SpanContext(
                _decode_id(link["traceId"], 32, "link traceId"), _decode_id(link["spanId"], 16, "link spanId"),
                is_remote=bool(int(link.get("flags") or 0) & _IS_REMOTE),
                trace_flags=TraceFlags(int(link.get("flags") or 0) & 0xFF),
                trace_state=_decode_trace_state(link.get("traceState")),
            ),
            decode_attributes(link.get("attributes")),
        )
        for link in doc.get("links") or []
    ]
    return ReadableSpan(
        name=str(doc.get("name", "")),
        context=context,
        parent=parent,
        resource=resource,
        attributes=decode_attributes(doc.get("attributes")),
        events=events,
        links=links,
        kind=_OTLP_TO_KIND.get(int(doc.get("kind") or 1), SpanKind.INTERNAL),
        status=status,
        start_time=int(doc.get("startTimeUnixNano") or 0),
        end_time=int(doc.get("endTimeUnixNano") or 0),
        instrumentation_scope=scope,
    )


def decode_attributes(items: Any) -> dict[str, Any]:
    """An attribute dict from an OTLP ``KeyValue`` list."""
    return {str(item["key"]): decode_value(item.get("value") or {}) for item in items or []}


def decode_value(value: Mapping[str, Any]) -> Any:
    """A Python value from an OTLP ``AnyValue``."""
    if "stringValue" in value:
        return str(value["stringValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])  # float() reads "NaN" and "Infinity" too
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    if "arrayValue" in value:
        return tuple(decode_value(item) for item in (value["arrayValue"] or {}).get("values") or [])
    if "kvlistValue" in value:
        return decode_attributes((value["kvlistValue"] or {}).get("values"))
    return None
