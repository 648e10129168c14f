"""Serve the example Django project with uvicorn, traced by tracebridge without touching its code.

Run from this folder::

    python serve.py                          # console trace trees, port 8000
    python serve.py --port 0 --spans-file spans.jsonl --export discard
    python serve.py --no-trace               # the same server, untraced

What it does, in order — the same four steps trace any Django (or other asgiref
based) ASGI project:

1. ``tracebridge.configure(...)``: an OpenTelemetry SDK provider, installed globally.
2. ``AsgirefInstrumentor().instrument()``: the installed asgiref now traces every
   hop, handoff, Local access and timeout expiry Django makes, and a hop census
   is added to the provider.
3. Wrap the unchanged ``mysite.asgi:application`` in OpenTelemetry's ASGI
   middleware, which opens one server span per request: the trace's root, where
   the hop census lands.
4. Run uvicorn on an already-bound socket, print ``listening on http://HOST:PORT``
   (useful with ``--port 0``), and flush every span on shutdown (Ctrl-C / SIGTERM).

``--export`` takes any tracebridge export spec (``console``, ...; repeat it for
several) or ``discard`` (spans built and dropped: what tracing costs, for
benchmarks).  ``--spans-file PATH`` also writes each span as one flat JSON
object per line as it ends (:class:`SpanLinesExporter`), for tests and scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

HERE = Path(__file__).resolve().parent


class SpanLinesExporter(SpanExporter):
    """Writes each finished span as one flat JSON line: name, kind, hex ids, times, status, attributes."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in shutdown()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": f"{span.context.trace_id:032x}",
                        "span_id": f"{span.context.span_id:016x}",
                        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
                        "start_ns": span.start_time,
                        "end_ns": span.end_time,
                        "status": span.status.status_code.name,
                        "attributes": {key: _plain(value) for key, value in (span.attributes or {}).items()},
                    }
                )
            )
        with self._lock:
            self._file.write("".join(line + "\n" for line in lines))
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class DiscardExporter(SpanExporter):
    """Drops every span (it was still built, processed and batched: the real cost of tracing)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _export_items(specs: Sequence[str], spans_file: str | None) -> list[Any]:
    items: list[Any] = [BatchSpanProcessor(DiscardExporter()) if spec == "discard" else spec for spec in specs]
    if spans_file:
        # Written as each span ends: whoever reads the file after shutdown sees everything.
        items.append(SimpleSpanProcessor(SpanLinesExporter(spans_file)))
    return items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    parser.add_argument("--export", action="append", help="a tracebridge export spec, or discard (default: console)")
    parser.add_argument("--spans-file", metavar="PATH", help="also append each span to PATH as one JSON line")
    parser.add_argument("--no-trace", action="store_true", help="serve without any tracing")
    parser.add_argument(
        "--instrument-only", action="store_true",
        help="instrument asgiref but install no tracer provider (what the patches cost with tracing off)",
    )
    parser.add_argument(
        "--no-request-spans", action="store_true",
        help="trace hops without OpenTelemetry's ASGI middleware (no request span, so no hop census)",
    )
    parser.add_argument("--app", default="mysite.asgi:application", help="the ASGI application, module:attribute")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    provider = None
    if args.instrument_only:
        from tracebridge.instrumentation import AsgirefInstrumentor

        AsgirefInstrumentor().instrument()
    elif not args.no_trace:
        import tracebridge
        from tracebridge.instrumentation import AsgirefInstrumentor

        specs = args.export or ([] if args.spans_file else ["console"])
        provider = tracebridge.configure(export=_export_items(specs, args.spans_file), service_name="django-example")
        AsgirefInstrumentor().instrument()

    module_name, _, attribute = args.app.partition(":")
    application = getattr(__import__(module_name, fromlist=[attribute]), attribute)
    if provider is not None and not args.no_request_spans:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        application = OpenTelemetryMiddleware(application, exclude_spans=["receive", "send"])

    import uvicorn

    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted sockets only
    # then (with proto 0, Nagle + delayed ACKs add ~40 ms per keep-alive response).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)  # connections made from now on wait in the backlog until uvicorn accepts
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(application, lifespan="off", log_level="warning", access_log=False))
    print(f"listening on http://{host}:{port}", flush=True)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal
    # again for the previous handler: make both end here, through the flush.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if provider is not None:
            import tracebridge

            tracebridge.flush()
            provider.shutdown()
    return 0


if __name__ == "__main__":
    os.chdir(HERE)
    sys.exit(main())
