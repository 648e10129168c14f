"""``tracebridge demo --server``: a WSGI app behind WsgiToAsgi, served by a real uvicorn.

The app is a tiny classic WSGI application (the kind people keep running under
an ASGI server during a migration).  uvicorn serves it on 127.0.0.1 on a free
port, in a thread of this process; the demo sends real HTTP requests over
loopback, stops the server and prints each request's trace: the WSGI call span,
the hop into the sync thread that ran the app, and the hops back to the loop
for every ``send``.

uvicorn is not a dependency of tracebridge: it comes with the ``test`` extra
(``pip install -e '.[test]'``) or ``pip install uvicorn``.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

from . import _telemetry
from .configure import configure
from .wsgi import WsgiToAsgi

__all__ = ["main", "wsgi_app"]

SERVICE_NAME = "tracebridge-demo-server"
LOOP_THREAD_NAME = "uvicorn-loop"
REQUESTS: tuple[tuple[str, str, bytes | None], ...] = (
    ("GET", "/hello", None),
    ("POST", "/echo", b"x" * 2048),
    ("GET", "/fail", None),
)
_START_TIMEOUT_S = 10.0


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Greets on /hello (naming the thread it ran on), echoes /echo, raises on /fail."""
    path = environ["PATH_INFO"]
    if path == "/fail":
        raise RuntimeError("the WSGI app failed on purpose")
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from ", threading.current_thread().name.encode()]


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _request(port: int, method: str, path: str, body: bytes | None) -> tuple[int, int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, len(response.read())
    finally:
        connection.close()


def serve_and_request(requests: Sequence[tuple[str, str, bytes | None]] = REQUESTS) -> list[tuple[str, str, int, int]]:
    """Start uvicorn on loopback, send ``requests``, stop it; (method, path, status, size) each."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            "tracebridge demo --server needs uvicorn: pip install uvicorn (or install tracebridge's 'test' extra)"
        ) from exc
    sock = _free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        WsgiToAsgi(wsgi_app), lifespan="off", log_level="critical", access_log=False, loop="asyncio", http="h11"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=LOOP_THREAD_NAME, daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start on 127.0.0.1 within 10 s")
        time.sleep(0.01)  # polling uvicorn's own flag: it offers no event to wait on
    try:
        return [(method, path, *_request(port, method, path, body)) for method, path, body in requests]
    finally:
        server.should_exit = True
        thread.join(_START_TIMEOUT_S)
        sock.close()


def main(export: Sequence[str | SpanExporter | SpanProcessor] | None = None) -> int:
    """Configure tracing, serve the requests through uvicorn, and deliver their traces."""
    provider = configure(export=export, service_name=SERVICE_NAME)
    for method, path, status, size in serve_and_request():
        # The /fail request is meant to fail: its trace shows the error.
        print(f"{method} {path} -> {status} ({size} bytes)")
    flushed = _telemetry.flush()
    provider.shutdown()
    return 0 if flushed else 1
