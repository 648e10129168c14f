"""A real OTLP trace receiver on loopback, for tests and the export benchmark.

Jaeger cannot be installed on these machines, so this stands in for it: a gRPC
``TraceService`` server and an HTTP ``POST /v1/traces`` endpoint, both built on
the official ``opentelemetry-proto`` messages, listening on 127.0.0.1.  It
records every request and can misbehave on demand: refuse (UNAVAILABLE / 503),
hang until released, answer slowly, stop, and start again on the same port.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

__all__ = ["OtlpReceiver", "ReceivedSpan", "any_value"]

Protocol = Literal["grpc", "http"]
# A hanging handler never waits longer than this, so a test that forgets to
# release it still ends (and the server threads with it).
_MAX_HANG_S = 30.0


@dataclass
class ReceivedSpan:
    """One span as the collector got it, with the resource and scope it came under."""

    span: SpanMessage
    resource: dict[str, Any]
    scope_name: str
    scope_version: str

    @property
    def attributes(self) -> dict[str, Any]:
        return {item.key: any_value(item.value) for item in self.span.attributes}


def any_value(value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue``."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(any_value(item) for item in value.array_value.values)
    if which == "kvlist_value":
        return {item.key: any_value(item.value) for item in value.kvlist_value.values}
    return getattr(value, which) if which else None


class OtlpReceiver:
    """A loopback OTLP collector speaking ``protocol``.

    Behaviour switches (set them at any time, from the test's thread):

    * ``refuse``: answer every export with UNAVAILABLE (gRPC) or 503 (HTTP).
    * ``gate``: an unset ``threading.Event`` makes every export wait for it
      (a hanging collector); ``entered`` is set when an export arrives.
    * ``delay_s``: answer each export after this long (a slow collector).
    """

    def __init__(self, protocol: Protocol = "grpc") -> None:
        self.protocol = protocol
        self.port = 0
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.refuse = False
        self.delay_s = 0.0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.arrived = threading.Condition()
        self.handler_threads: set[str] = set()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()  # open keep-alive connections (HTTP)

    # -- lifecycle --------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Listen (on the same port as before, after a :meth:`stop`)."""
        if self.protocol == "grpc":
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-receiver"))
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self), server)
            self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
            server.start()
            self._grpc = server
        else:
            http = ThreadingHTTPServer(("127.0.0.1", self.port), _http_handler(self))
            http.daemon_threads = True
            self.port = http.server_address[1]
            self._http = http
            self._http_thread = threading.Thread(target=http.serve_forever, name="otlp-receiver-http", daemon=True)
            self._http_thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused until :meth:`start`)."""
        if self.gate is not None:
            self.gate.set()  # no handler may outlive the server
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(5)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            # A stopped collector must not keep answering on keep-alive
            # connections the client opened before.
            for connection in list(self._connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            assert self._http_thread is not None
            self._http_thread.join(5)
            self._http = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint to give ``otlp=``: ``http://127.0.0.1:PORT`` (plus ``/v1/traces`` for HTTP)."""
        base = f"http://127.0.0.1:{self.port}"
        return base if self.protocol == "grpc" else base + "/v1/traces"

    # -- what arrived ---------------------------------------------------------

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self.arrived:
            requests = list(self.requests)
        found = []
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = {item.key: any_value(item.value) for item in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append(
                            ReceivedSpan(span, resource, scope_spans.scope.name, scope_spans.scope.version)
                        )
        return found

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """The spans received, once there are at least ``count`` (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while self._count() < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.arrived.wait(remaining)
        return self.spans()

    def _count(self) -> int:
        return sum(
            len(scope.spans) for request in self.requests for block in request.resource_spans for scope in block.scope_spans
        )

    # -- handling (on the server's threads) ------------------------------------

    def _handle(self, request: trace_service_pb2.ExportTraceServiceRequest, metadata: dict[str, str]) -> bool:
        """Record ``request``; False means refuse it."""
        self.handler_threads.add(threading.current_thread().name)
        self.entered.set()
        gate = self.gate
        if gate is not None:
            gate.wait(_MAX_HANG_S)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.refuse:
            return False
        with self.arrived:
            self.requests.append(request)
            self.metadata.append(metadata)
            self.arrived.notify_all()
        return True


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(  # noqa: N802 - the gRPC method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        if not self.receiver._handle(request, metadata):
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver refusing (test)")
        return trace_service_pb2.ExportTraceServiceResponse()


def _http_handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            receiver._connections.add(self.connection)

        def finish(self) -> None:
            receiver._connections.discard(self.connection)
            super().finish()

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces":
                self._reply(404, b"")
                return
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            headers = {key.lower(): value for key, value in self.headers.items()}
            if not receiver._handle(request, headers):
                self._reply(503, b"receiver refusing (test)")
                return
            self._reply(200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

    return Handler


def iter_attributes(span: SpanMessage) -> Iterator[tuple[str, Any]]:
    """(key, value) of a span message's attributes."""
    for item in span.attributes:
        yield item.key, any_value(item.value)
