"""Jaeger, Tempo, any OpenTelemetry collector: OTLP over gRPC or HTTP/protobuf.

"Export to Jaeger" means OTLP: Jaeger ingests it natively (gRPC on 4317,
HTTP on 4318).  The sending is done by OpenTelemetry's own OTLP exporters,
installed with the ``otlp`` extra (``pip install 'tracebridge[otlp]'``);
this module chooses one from a URL, wraps it so that failures are counted and
reported once (:class:`~._delivery.ReliableExporter`), and puts it behind a
batch processor, so the traced application never waits for the network.

Which protocol:

* ``otlp`` (no URL): the standard variables decide, as for any OpenTelemetry
  SDK: ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``
  (``grpc``, the default, or ``http/protobuf``), and the endpoint from
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``
  (default ``localhost:4317`` or ``localhost:4318/v1/traces``).
* ``otlp=URL``: HTTP/protobuf when the URL's port is 4318 or its path ends in
  ``/v1/traces`` (the path is added when missing); gRPC when the port is 4317;
  otherwise the protocol variable, else gRPC.  ``http://`` is plain text,
  ``https://`` is TLS.  A bare ``HOST:PORT`` means ``http://HOST:PORT``.

Headers, timeout, compression and certificates come from the usual
``OTEL_EXPORTER_OTLP_*`` variables; ``service.name`` from
``OTEL_SERVICE_NAME`` (see ``tracebridge.configure``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from opentelemetry.sdk.trace.export import SpanExporter

from ._delivery import DEFAULT_COOLDOWN_S, CountingBatchSpanProcessor, ReliableExporter, register_stats

__all__ = [
    "GRPC_PORT",
    "HTTP_PORT",
    "OtlpEndpoint",
    "build_exporter",
    "build_processor",
    "resolve",
]

GRPC_PORT = 4317
"""The OTLP/gRPC port Jaeger and collectors listen on."""

HTTP_PORT = 4318
"""The OTLP/HTTP port Jaeger and collectors listen on."""

Protocol = Literal["grpc", "http/protobuf"]

_TRACES_PATH = "/v1/traces"
_EXTRA_HINT = "pip install 'tracebridge[otlp]'"
# Loggers of the OTLP exporters, whose per-retry and per-batch messages
# tracebridge folds into its once-per-outage report.
_OTLP_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
)


@dataclass(frozen=True)
class OtlpEndpoint:
    """Where and how spans are sent."""

    protocol: Protocol
    """``grpc`` or ``http/protobuf``."""

    url: str | None
    """The endpoint URL handed to the exporter; None lets the OTLP exporter read its variables."""

    def describe(self) -> str:
        """``otlp grpc http://localhost:4317``: names the exporter in logs and stats."""
        return f"otlp {'grpc' if self.protocol == 'grpc' else 'http'} {self.url or _env_endpoint(self.protocol)}"


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _env_protocol() -> Protocol:
    value = _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if value is None or value == "grpc":
        return "grpc"
    if value == "http/protobuf":
        return "http/protobuf"
    raise ValueError(
        f"OTLP protocol {value!r} (from OTEL_EXPORTER_OTLP_*PROTOCOL) is not supported: "
        f"use 'grpc' or 'http/protobuf'"
    )


def _env_endpoint(protocol: Protocol) -> str:
    traces = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    if protocol == "grpc":
        return base or f"http://localhost:{GRPC_PORT}"
    return (base or f"http://localhost:{HTTP_PORT}").rstrip("/") + _TRACES_PATH


def resolve(argument: str | None) -> OtlpEndpoint:
    """The endpoint an ``otlp[=URL]`` spec names (see the module docstring for the rules).

    Raises:
        ValueError: the URL is not an ``http(s)://HOST[:PORT][/PATH]`` URL, or
            names a path for gRPC (which has none).  The message quotes the spec.
    """
    if argument is None:
        return OtlpEndpoint(_env_protocol(), None)
    text = argument.strip()
    spec = f"otlp={argument}"
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"export target {spec!r}: not a valid URL ({exc}); {_usage()}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"export target {spec!r}: scheme {parts.scheme!r} is not http or https; {_usage()}")
    if not parts.hostname:
        raise ValueError(f"export target {spec!r}: the URL has no host; {_usage()}")
    if parts.query or parts.fragment:
        raise ValueError(f"export target {spec!r}: an OTLP endpoint has no query or fragment; {_usage()}")
    path = parts.path.rstrip("/")
    if port == HTTP_PORT or path.endswith(_TRACES_PATH):
        protocol: Protocol = "http/protobuf"
    elif port == GRPC_PORT:
        protocol = "grpc"
    else:
        protocol = _env_protocol()
    base = f"{parts.scheme}://{parts.netloc}"
    if protocol == "grpc":
        if path:
            raise ValueError(
                f"export target {spec!r}: gRPC endpoints have no path ({parts.path!r}); "
                f"for OTLP over HTTP use port {HTTP_PORT} or a path ending in {_TRACES_PATH}"
            )
        return OtlpEndpoint("grpc", base)
    if not path.endswith(_TRACES_PATH):
        path += _TRACES_PATH
    return OtlpEndpoint("http/protobuf", base + path)


def _usage() -> str:
    return f"write otlp=http://HOST:{GRPC_PORT} (gRPC) or otlp=http://HOST:{HTTP_PORT} (HTTP/protobuf)"


def build_exporter(endpoint: OtlpEndpoint, *, timeout_s: float | None = None) -> SpanExporter:
    """OpenTelemetry's OTLP span exporter for ``endpoint`` (unwrapped).

    Raises:
        ImportError: the ``otlp`` extra is not installed (the message says how).
    """
    try:
        if endpoint.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http
    except ImportError as exc:
        raise ImportError(
            f"the otlp exporter needs OpenTelemetry's OTLP exporters ({exc.name} is missing): {_EXTRA_HINT}"
        ) from exc
    if endpoint.protocol == "grpc":
        return Grpc(endpoint=endpoint.url, timeout=timeout_s)
    return Http(endpoint=endpoint.url, timeout=timeout_s)


def build_processor(
    argument: str | None = None,
    *,
    timeout_s: float | None = None,
    cooldown_s: float = DEFAULT_COOLDOWN_S,
    schedule_delay_millis: float | None = None,
    max_queue_size: int | None = None,
    max_export_batch_size: int | None = None,
) -> CountingBatchSpanProcessor:
    """A batch processor sending to the OTLP endpoint ``argument`` names (what ``otlp[=URL]`` builds).

    Args:
        argument: the spec's URL, or None for the ``OTEL_EXPORTER_OTLP_*`` variables.
        timeout_s: per-export deadline, retries included (default
            ``OTEL_EXPORTER_OTLP_TIMEOUT``, else 10 s).  It bounds how long a
            flush or shutdown can wait for a hanging collector.
        cooldown_s: after a failed export, batches are dropped (counted)
            without trying for this long.
        schedule_delay_millis, max_queue_size, max_export_batch_size: the batch
            processor's settings (default: the ``OTEL_BSP_*`` variables, else
            the SDK's defaults).

    Raises:
        ValueError: ``argument`` is not a valid endpoint.
        ImportError: the ``otlp`` extra is not installed.
    """
    endpoint = resolve(argument)
    inner = build_exporter(endpoint, timeout_s=timeout_s)
    counters = register_stats(endpoint.describe())
    exporter = ReliableExporter(inner, counters, cooldown_s=cooldown_s, quiet=_OTLP_LOGGERS)
    return CountingBatchSpanProcessor(
        exporter,
        counters,
        schedule_delay_millis=schedule_delay_millis,
        max_queue_size=max_queue_size,
        max_export_batch_size=max_export_batch_size,
    )
