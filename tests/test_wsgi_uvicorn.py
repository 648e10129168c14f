"""End to end: a WSGI app behind WsgiToAsgi, served by a real uvicorn on loopback, and its trace."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn  # in the test extra: this test must run in CI, never skip
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from tracebridge import semconv
from tracebridge.wsgi import WsgiToAsgi

LOOP_THREAD_NAME = "uvicorn-loop"


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answers with the name of the thread it ran on; /echo echoes the body; /fail raises."""
    path = environ["PATH_INFO"]
    if path == "/fail":
        raise RuntimeError("the WSGI app failed on purpose")
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]
    name = threading.current_thread().name.encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ran on ", name]


class RunningServer:
    def __init__(self, port: int, thread: threading.Thread) -> None:
        self.port = port
        self.thread = thread

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@pytest.fixture
def server(spans: Any) -> Iterator[RunningServer]:
    """uvicorn serving WsgiToAsgi(wsgi_app) on 127.0.0.1, a free port, in a thread; always stopped."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        WsgiToAsgi(wsgi_app), lifespan="off", log_level="critical", access_log=False, loop="asyncio", http="h11"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, name=LOOP_THREAD_NAME, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not instance.started:
            assert thread.is_alive(), "uvicorn exited during startup"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.01)
        yield RunningServer(port, thread)
    finally:
        instance.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop within 10 s"


def wait_for_spans(spans: Any, name: str, count: int) -> list[ReadableSpan]:
    """The ``count`` spans called ``name``, waiting (bounded) for the server to end them."""
    deadline = time.monotonic() + 5
    while True:
        found = spans.named(name)
        if len(found) >= count or time.monotonic() > deadline:
            return sorted(found, key=lambda s: s.start_time or 0)
        time.sleep(0.01)


def children(spans: Any, parent: ReadableSpan, name: str) -> list[ReadableSpan]:
    return [
        s for s in spans.named(name) if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def test_wsgi_to_asgi_under_uvicorn_get_traced_with_hop_and_threads(server: RunningServer, spans: Any) -> None:
    """Tests a real GET: the response, the WSGI span, its hop into the sync thread, and the thread names."""
    status, body = server.request("GET", "/hello?token=secret")
    assert status == 200
    assert body.startswith(b"ran on ")
    app_thread_name = body[len(b"ran on ") :].decode()
    assert app_thread_name != LOOP_THREAD_NAME

    (span,) = wait_for_spans(spans, semconv.WSGI_CALL, 1)
    attributes = dict(span.attributes or {})
    thread_id = attributes.pop(semconv.THREAD_ID)
    ttfb = attributes.pop(semconv.WSGI_TIME_TO_FIRST_BYTE_MS)
    assert isinstance(thread_id, int)
    assert isinstance(ttfb, float) and ttfb >= 0
    assert attributes == {
        semconv.HTTP_REQUEST_METHOD: "GET",
        semconv.URL_PATH: "/hello",
        semconv.URL_SCHEME: "http",
        semconv.NETWORK_PROTOCOL_VERSION: "1.1",
        semconv.SERVER_ADDRESS: "127.0.0.1",
        semconv.SERVER_PORT: server.port,
        semconv.WSGI_REQUEST_HEADER_COUNT: 2,  # http.client sends Host and Accept-Encoding
        semconv.WSGI_APPLICATION: f"{__name__}.wsgi_app",
        semconv.THREAD_NAME: app_thread_name,
        semconv.HTTP_REQUEST_BODY_SIZE: 0,
        semconv.WSGI_REQUEST_BODY_SPOOLED: False,
        semconv.HTTP_RESPONSE_STATUS_CODE: 200,
        semconv.HTTP_RESPONSE_BODY_SIZE: len(body),
        semconv.WSGI_RESPONSE_CHUNKS: 2,
        semconv.WSGI_ITERABLE_CLOSED: False,
    }
    assert span.status.status_code is StatusCode.UNSET

    # The bridge hop into the sync thread: a child of the WSGI span, called
    # from uvicorn's loop thread, run on the thread the app reported.
    (hop,) = children(spans, span, semconv.SYNC_TO_ASYNC)
    hop_attributes = dict(hop.attributes or {})
    assert hop_attributes[semconv.CODE_FUNCTION_NAME] == "tracebridge.wsgi.WsgiToAsgiInstance.run_wsgi_app"
    assert hop_attributes[semconv.CALLER_THREAD_NAME] == LOOP_THREAD_NAME
    assert hop_attributes[semconv.THREAD_NAME] == app_thread_name
    assert hop_attributes[semconv.THREAD_ID] == thread_id

    # Each send went back from the app's thread to uvicorn's loop thread.
    sends = children(spans, hop, semconv.ASYNC_TO_SYNC)
    assert len(sends) == 4  # start, two chunks, the terminator
    for send in sends:
        send_attributes = dict(send.attributes or {})
        assert send_attributes[semconv.CALLER_THREAD_NAME] == app_thread_name
        assert send_attributes[semconv.THREAD_NAME] == LOOP_THREAD_NAME


def test_wsgi_to_asgi_under_uvicorn_post_body_echoed_and_sized(server: RunningServer, spans: Any) -> None:
    """Tests a real POST: the body reaches wsgi.input and both body sizes are on the span."""
    payload = b"x" * 100_000  # over 64 KiB: spooled to a temporary file
    status, body = server.request("POST", "/echo", payload)
    assert (status, body) == (200, payload)
    (span,) = wait_for_spans(spans, semconv.WSGI_CALL, 1)
    attributes = dict(span.attributes or {})
    assert attributes[semconv.HTTP_REQUEST_METHOD] == "POST"
    assert attributes[semconv.HTTP_REQUEST_BODY_SIZE] == len(payload)
    assert attributes[semconv.WSGI_REQUEST_BODY_SPOOLED] is True
    assert attributes[semconv.HTTP_RESPONSE_BODY_SIZE] == len(payload)


def test_wsgi_to_asgi_under_uvicorn_app_raises_500_then_serves_next(server: RunningServer, spans: Any) -> None:
    """Tests that a raising app gets uvicorn's 500, an error span, and the next request is served."""
    status, _ = server.request("GET", "/fail")
    assert status == 500
    status, body = server.request("GET", "/hello")
    assert status == 200
    assert body.startswith(b"ran on ")

    failed, fine = wait_for_spans(spans, semconv.WSGI_CALL, 2)
    failed_attributes = dict(failed.attributes or {})
    assert failed_attributes[semconv.URL_PATH] == "/fail"
    assert failed_attributes[semconv.ERROR_TYPE] == "RuntimeError"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "RuntimeError: the WSGI app failed on purpose"
    assert dict(fine.attributes or {})[semconv.HTTP_RESPONSE_STATUS_CODE] == 200
    assert fine.status.status_code is StatusCode.UNSET


def test_wsgi_to_asgi_under_uvicorn_many_requests_one_span_each(server: RunningServer, spans: Any) -> None:
    """Tests that sequential requests each get exactly one WSGI span, all on the same sync thread."""
    names = set()
    for _ in range(10):
        status, body = server.request("GET", "/hello")
        assert status == 200
        names.add(body[len(b"ran on ") :].decode())
    assert len(names) == 1  # thread-sensitive: one sync thread serves them all
    found = wait_for_spans(spans, semconv.WSGI_CALL, 10)
    assert len(found) == 10
    assert {dict(s.attributes or {})[semconv.THREAD_NAME] for s in found} == names
