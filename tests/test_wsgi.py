"""tracebridge.wsgi.WsgiToAsgi: asgiref's behaviour (checked against asgiref itself) and its WSGI span."""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NoOpTracerProvider, StatusCode

import tracebridge
import tracebridge.wsgi
from tracebridge import _telemetry, semconv
from tracebridge.testing import ApplicationCommunicator
from tracebridge.wsgi import (
    DEFAULT_REDACTED_KEYS,
    HttpCapture,
    WsgiToAsgi,
    WsgiToAsgiInstance,
    get_http_capture,
    set_http_capture,
)

IMPLEMENTATIONS = ["asgiref", "tracebridge"]


class AtLeastZero:
    """Equal to any non-negative number: stands in for durations in whole-dict asserts."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (int, float)) and other >= 0

    def __repr__(self) -> str:
        return "<number >= 0>"


@pytest.fixture(params=IMPLEMENTATIONS)
def wsgi(request: pytest.FixtureRequest) -> ModuleType:
    """The wsgi module of asgiref (the reference) or of tracebridge."""
    return importlib.import_module(f"{request.param}.wsgi")


@pytest.fixture
def capture() -> Iterator[None]:
    """Restores the process-wide HttpCapture after the test."""
    previous = get_http_capture()
    try:
        yield
    finally:
        set_http_capture(previous)


def http_scope(**overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [],
    }
    scope.update(overrides)
    return scope


async def serve(app: Any, scope: dict[str, Any], *messages: Any) -> list[Any]:
    """Every message the app sends for one request (up to the final body message)."""
    instance = ApplicationCommunicator(app, scope)
    for message in messages or ({"type": "http.request"},):
        await instance.send_input(message)
    sent = []
    while True:
        message = await instance.receive_output(5)
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            break
    await instance.wait(5)
    return sent


async def serve_failing(app: Any, scope: Any, *messages: Any) -> tuple[BaseException, list[Any]]:
    """The exception a failing request raises out of the ASGI call, and what was sent before it."""
    instance = ApplicationCommunicator(app, scope)
    for message in messages or ({"type": "http.request"},):
        await instance.send_input(message)
    with pytest.raises(BaseException) as raised:
        await instance.wait(5)
    sent = []
    while not instance.output_queue.empty():
        sent.append(instance.output_queue.get_nowait())
    return raised.value, sent


def start(status: int, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers or []}


def chunk(body: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": body, "more_body": True}


END = {"type": "http.response.body"}

# ---------------------------------------------------------------------------
# Behaviour, run against asgiref and tracebridge alike.


async def test_wsgi_to_asgi_instance_subclass_run_wsgi_app_override_is_used(wsgi: ModuleType) -> None:
    """Tests that a subclass overriding run_wsgi_app gets its override called (the method is looked up on self)."""
    ran_on: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"body"]

    class Instance(wsgi.WsgiToAsgiInstance):  # type: ignore[name-defined,misc]
        @importlib.import_module(wsgi.__name__.replace(".wsgi", ".sync")).sync_to_async
        def run_wsgi_app(self, body: Any) -> None:
            ran_on.append("override")
            wsgi.WsgiToAsgiInstance.__dict__["run_wsgi_app"].func(self, body)

    async def application(scope: Any, receive: Any, send: Any) -> None:
        await Instance(app)(scope, receive, send)

    assert await serve(application, http_scope()) == [start(200), chunk(b"body"), END]
    assert ran_on == ["override"]


async def test_wsgi_to_asgi_basic_request_streams_each_chunk(wsgi: ModuleType) -> None:
    """Tests that repeated headers are joined and every chunk is its own body message."""

    def app(environ: Any, start_response: Any) -> Any:
        assert environ["HTTP_TEST_HEADER"] == "test value 1,test value 2"
        start_response("200 OK", [["X-Colour", "Blue"]])
        yield b"first chunk "
        yield b"second chunk"

    scope = http_scope(
        http_version="1.0",
        path="/foo/",
        query_string=b"bar=baz",
        headers=[[b"test-header", b"test value 1"], [b"test-header", b"test value 2"]],
    )
    assert await serve(wsgi.WsgiToAsgi(app), scope) == [
        start(200, [(b"x-colour", b"Blue")]),
        chunk(b"first chunk "),
        chunk(b"second chunk"),
        END,
    ]


def test_build_environ_root_path_splits_script_name(wsgi: ModuleType) -> None:
    """Tests that root_path becomes SCRIPT_NAME and is stripped from PATH_INFO."""
    scope = http_scope(root_path="/base", path="/base/foo/", headers=[[b"test-header", b"v"]])
    adapter = wsgi.WsgiToAsgiInstance(None)
    adapter.scope = scope
    environ = adapter.build_environ(scope, None)
    assert environ["SCRIPT_NAME"] == "/base"
    assert environ["PATH_INFO"] == "/foo/"


def test_build_environ_full_scope_gives_whole_environ(wsgi: ModuleType) -> None:
    """Tests the complete environ for a scope with server, client, scheme and special headers."""
    body = object()
    scope = http_scope(
        method="POST",
        path="/p",
        query_string=b"a=1",
        scheme="https",
        server=("example.org", 8443),
        client=("10.1.2.3", 5555),
        headers=[
            (b"content-length", b"3"),
            (b"content-type", b"text/plain"),
            (b"x-forwarded-for", b"a"),
            (b"x-forwarded-for", b"b"),
        ],
    )
    adapter = wsgi.WsgiToAsgiInstance(None)
    adapter.scope = scope
    assert adapter.build_environ(scope, body) == {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/p",
        "QUERY_STRING": "a=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "SERVER_NAME": "example.org",
        "SERVER_PORT": "8443",
        "REMOTE_ADDR": "10.1.2.3",
        "CONTENT_LENGTH": "3",
        "CONTENT_TYPE": "text/plain",
        "HTTP_X_FORWARDED_FOR": "a,b",
    }


@pytest.mark.parametrize(
    ("server", "name", "port"),
    [(None, "localhost", "80"), (("/tmp/sock", None), "/tmp/sock", "0"), (("h", 81), "h", "81")],
)
def test_build_environ_server_variants_give_name_and_port(wsgi: ModuleType, server: Any, name: str, port: str) -> None:
    """Tests SERVER_NAME/SERVER_PORT for no server, a unix socket (port None) and a TCP server."""
    scope = http_scope(server=server)
    adapter = wsgi.WsgiToAsgiInstance(None)
    adapter.scope = scope
    environ = adapter.build_environ(scope, None)
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == (name, port)
    assert "REMOTE_ADDR" not in environ


async def test_wsgi_to_asgi_non_ascii_path_latin1_in_environ(wsgi: ModuleType) -> None:
    """Tests that non-ASCII root_path and path reach the app as UTF-8 bytes decoded as latin-1."""

    def app(environ: Any, start_response: Any) -> Any:
        assert environ["SCRIPT_NAME"] == "/中国".encode().decode("latin-1")
        assert environ["PATH_INFO"] == "/中文".encode().decode("latin-1")
        start_response("200 OK", [])
        yield b""

    scope = http_scope(path="/中文", root_path="/中国")
    assert await serve(wsgi.WsgiToAsgi(app), scope) == [start(200), chunk(b""), END]


async def test_wsgi_to_asgi_empty_iterable_still_sends_start(wsgi: ModuleType) -> None:
    """Tests that an app returning an empty list still gets its status sent (#41)."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("204 No Content", [])
        return []

    assert await serve(wsgi.WsgiToAsgi(app), http_scope()) == [start(204), END]


async def test_wsgi_to_asgi_body_longer_than_content_length_clamped(wsgi: ModuleType) -> None:
    """Tests that the body is cut to Content-Length bytes."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "8")])
        return [b"0123", b"45", b"6789"]

    assert await serve(wsgi.WsgiToAsgi(app), http_scope()) == [
        start(200, [(b"content-length", b"8")]),
        chunk(b"0123"),
        chunk(b"45"),
        chunk(b"67"),
        END,
    ]


async def test_wsgi_to_asgi_content_length_reached_stops_iterating(wsgi: ModuleType) -> None:
    """Tests that the iterable is not advanced once Content-Length bytes were sent."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "4")])
        yield b"0123"
        pytest.fail("WsgiToAsgi iterated past Content-Length")

    assert await serve(wsgi.WsgiToAsgi(app), http_scope()) == [
        start(200, [(b"content-length", b"4")]),
        chunk(b"0123"),
        END,
    ]


async def test_start_response_again_with_exc_info_replaces_pending_start(wsgi: ModuleType) -> None:
    """Tests that a second start_response with exc_info before any body replaces status and Content-Length."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "5")])
        try:
            raise ValueError("Application Error")
        except ValueError:
            start_response("500 Server Error", [], sys.exc_info())
            return [b"Some long error message"]

    assert await serve(wsgi.WsgiToAsgi(app), http_scope()) == [start(500), chunk(b"Some long error message"), END]


async def test_wsgi_to_asgi_body_in_parts_reaches_wsgi_input(wsgi: ModuleType) -> None:
    """Tests that several http.request messages are joined into wsgi.input."""
    seen = []

    def app(environ: Any, start_response: Any) -> Any:
        seen.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return []

    scope = http_scope(method="POST", headers=[[b"content-length", b"12"]])
    messages = [
        {"type": "http.request", "body": b"Hello ", "more_body": True},
        {"type": "http.request", "body": b"World!"},
    ]
    assert await serve(wsgi.WsgiToAsgi(app), scope, *messages) == [start(200), END]
    assert seen == [b"Hello World!"]


async def test_wsgi_to_asgi_too_many_duplicate_headers_answers_400(wsgi: ModuleType) -> None:
    """Tests that more values for one header than the limit get a 400 without running the app."""

    def app(environ: Any, start_response: Any) -> Any:
        pytest.fail("the app must not run")

    application = wsgi.WsgiToAsgi(app, duplicate_header_limit=5)
    scope = http_scope(headers=[[b"x-test", b"value"] for _ in range(10)])
    assert await serve(application, scope) == [
        start(400, [(b"content-type", b"text/plain")]),
        {"type": "http.response.body", "body": b"Bad Request: Too many duplicate headers"},
    ]


async def test_wsgi_to_asgi_duplicate_header_limit_none_allows_any(wsgi: ModuleType) -> None:
    """Tests that duplicate_header_limit=None turns the check off."""

    def app(environ: Any, start_response: Any) -> Any:
        assert environ["HTTP_X_TEST"] == ",".join(["value"] * 200)
        start_response("200 OK", [])
        return [b"OK"]

    scope = http_scope(headers=[[b"x-test", b"value"] for _ in range(200)])
    assert await serve(wsgi.WsgiToAsgi(app, duplicate_header_limit=None), scope) == [start(200), chunk(b"OK"), END]


async def test_wsgi_to_asgi_non_ascii_query_string_answers_400(wsgi: ModuleType) -> None:
    """Tests asgiref's quirk: any ValueError from build_environ (here a UnicodeDecodeError) gives the 400."""

    def app(environ: Any, start_response: Any) -> Any:
        pytest.fail("the app must not run")

    sent = await serve(wsgi.WsgiToAsgi(app), http_scope(query_string="q=é".encode()))
    assert sent[0] == start(400, [(b"content-type", b"text/plain")])


async def test_wsgi_to_asgi_app_runs_on_sync_thread_not_loop(wsgi: ModuleType) -> None:
    """Tests that the WSGI app (and start_response) run on a thread other than the event loop's."""
    loop_thread = threading.get_ident()
    app_threads = []

    def app(environ: Any, start_response: Any) -> Any:
        app_threads.append(threading.get_ident())
        start_response("200 OK", [])
        return [b"x"]

    await serve(wsgi.WsgiToAsgi(app), http_scope())
    assert len(app_threads) == 1
    assert app_threads[0] != loop_thread


# Bad input: the same outcome as asgiref, and the next request still served.


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
async def test_wsgi_to_asgi_non_http_scope_raises_value_error(wsgi: ModuleType, scope_type: str) -> None:
    """Tests that websocket and lifespan scopes are refused with asgiref's ValueError."""
    error, sent = await serve_failing(wsgi.WsgiToAsgi(lambda e, s: []), {"type": scope_type})
    assert isinstance(error, ValueError)
    assert str(error) == "WSGI wrapper received a non-HTTP scope"
    assert sent == []


async def test_wsgi_to_asgi_disconnect_before_body_raises_value_error(wsgi: ModuleType) -> None:
    """Tests that an http.disconnect while the body is buffered is refused with asgiref's ValueError."""
    error, sent = await serve_failing(
        wsgi.WsgiToAsgi(lambda e, s: []),
        http_scope(),
        {"type": "http.request", "body": b"a", "more_body": True},
        {"type": "http.disconnect"},
    )
    assert isinstance(error, ValueError)
    assert str(error) == "WSGI wrapper received a non-HTTP-request message"
    assert sent == []


async def test_wsgi_to_asgi_message_without_type_raises_key_error(wsgi: ModuleType) -> None:
    """Tests that a receive() message with no 'type' fails with KeyError('type')."""
    error, sent = await serve_failing(wsgi.WsgiToAsgi(lambda e, s: []), http_scope(), {"body": b""})
    assert isinstance(error, KeyError)
    assert error.args == ("type",)
    assert sent == []


async def test_wsgi_to_asgi_app_raises_before_start_response_propagates(wsgi: ModuleType) -> None:
    """Tests that an exception before start_response leaves the ASGI call with nothing sent."""

    def app(environ: Any, start_response: Any) -> Any:
        raise RuntimeError("app broke early")

    error, sent = await serve_failing(wsgi.WsgiToAsgi(app), http_scope())
    assert isinstance(error, RuntimeError)
    assert str(error) == "app broke early"
    assert sent == []


async def test_wsgi_to_asgi_app_raises_after_first_chunk_propagates(wsgi: ModuleType) -> None:
    """Tests that an exception while iterating propagates after what was already streamed."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        yield b"partial"
        raise RuntimeError("app broke late")

    error, sent = await serve_failing(wsgi.WsgiToAsgi(app), http_scope())
    assert isinstance(error, RuntimeError)
    assert sent == [start(200), chunk(b"partial")]


async def test_wsgi_to_asgi_app_returns_none_raises_type_error(wsgi: ModuleType) -> None:
    """Tests that a non-iterable result fails with TypeError and nothing is sent."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        return None

    error, sent = await serve_failing(wsgi.WsgiToAsgi(app), http_scope())
    assert isinstance(error, TypeError)
    assert str(error) == "'NoneType' object is not iterable"
    assert sent == []


async def test_start_response_twice_without_exc_info_raises_value_error(wsgi: ModuleType) -> None:
    """Tests that a second start_response without exc_info raises asgiref's ValueError."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        start_response("201 Created", [])
        return []

    error, sent = await serve_failing(wsgi.WsgiToAsgi(app), http_scope())
    assert isinstance(error, ValueError)
    assert str(error) == "You cannot call start_response a second time without exc_info"
    assert sent == []


async def test_start_response_exc_info_after_body_reraises_it(wsgi: ModuleType) -> None:
    """Tests that start_response with exc_info after the response started re-raises that exception."""

    class Late(Exception):
        pass

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        yield b"first"
        try:
            raise Late("too late to change the status")
        except Late:
            start_response("500 Error", [], sys.exc_info())
        yield b"never"

    error, sent = await serve_failing(wsgi.WsgiToAsgi(app), http_scope())
    assert isinstance(error, Late)
    assert sent == [start(200), chunk(b"first")]


async def test_start_response_again_after_body_without_exc_info_raises_type_error(wsgi: ModuleType) -> None:
    """Tests asgiref's outcome for start_response without exc_info after the body started: TypeError."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        yield b"first"
        start_response("500 Error", [])

    error, sent = await serve_failing(wsgi.WsgiToAsgi(app), http_scope())
    assert isinstance(error, TypeError)
    assert str(error) == "'NoneType' object is not subscriptable"
    assert sent == [start(200), chunk(b"first")]


async def test_wsgi_to_asgi_non_callable_app_raises_type_error(wsgi: ModuleType) -> None:
    """Tests that a non-callable WSGI application fails with TypeError when a request comes."""
    error, sent = await serve_failing(wsgi.WsgiToAsgi(42), http_scope())
    assert isinstance(error, TypeError)
    assert str(error) == "'int' object is not callable"
    assert sent == []


async def test_wsgi_to_asgi_after_failed_request_serves_next(wsgi: ModuleType) -> None:
    """Tests that a request that raised leaves the adapter (and the sync thread) able to serve the next."""
    calls = []

    def app(environ: Any, start_response: Any) -> Any:
        calls.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/fail":
            raise RuntimeError("boom")
        start_response("200 OK", [])
        return [b"fine"]

    application = wsgi.WsgiToAsgi(app)
    error, _ = await serve_failing(application, http_scope(path="/fail"))
    assert isinstance(error, RuntimeError)
    assert await serve(application, http_scope(path="/ok")) == [start(200), chunk(b"fine"), END]
    assert calls == ["/fail", "/ok"]


# ---------------------------------------------------------------------------
# tracebridge only: clear notes on bad input, and close() on the iterable.


async def test_wsgi_to_asgi_bad_input_errors_carry_a_note() -> None:
    """Tests that asgiref-identical errors get a note saying what was wrong."""
    error, _ = await serve_failing(WsgiToAsgi(42), http_scope())
    assert error.__notes__ == ["WsgiToAsgi was given 42, which is not a WSGI application"]

    def returns_none(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])

    error, _ = await serve_failing(WsgiToAsgi(returns_none), http_scope())
    assert error.__notes__ == ["the WSGI application returned NoneType; it must return an iterable of bytes"]

    error, _ = await serve_failing(WsgiToAsgi(lambda e, s: []), http_scope(), {"body": b""})
    assert error.__notes__ == ["WsgiToAsgi: receive() must return a dict with a 'type' key"]

    def bad_status(environ: Any, start_response: Any) -> Any:
        start_response("200", [])
        return []

    error, _ = await serve_failing(WsgiToAsgi(bad_status), http_scope())
    assert isinstance(error, ValueError)
    assert error.__notes__ == ["start_response: the status must look like '200 OK', got '200'"]

    def body_first(environ: Any, start_response: Any) -> Any:
        yield b"no start_response"

    error, _ = await serve_failing(WsgiToAsgi(body_first), http_scope())
    assert isinstance(error, AttributeError)
    assert error.__notes__ == ["the WSGI application produced a body before calling start_response"]


class ClosingBody:
    """A response iterable with close(), like Django's HttpResponse."""

    def __init__(self, chunks: list[bytes], fail: bool = False) -> None:
        self.chunks = chunks
        self.fail = fail
        self.closed_on: list[int] = []

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.fail:
            raise RuntimeError("iteration failed")

    def close(self) -> None:
        self.closed_on.append(threading.get_ident())


async def test_wsgi_to_asgi_iterable_with_close_closed_on_app_thread() -> None:
    """Tests that close() is called once, on the app's thread, after a full response (PEP 3333)."""
    body = ClosingBody([b"a", b"b"])
    app_threads = []

    def app(environ: Any, start_response: Any) -> Any:
        app_threads.append(threading.get_ident())
        start_response("200 OK", [])
        return body

    assert await serve(WsgiToAsgi(app), http_scope()) == [start(200), chunk(b"a"), chunk(b"b"), END]
    assert body.closed_on == app_threads


async def test_wsgi_to_asgi_iteration_fails_still_closes_iterable() -> None:
    """Tests that close() is called when iterating the response raised, and the error still propagates."""
    body = ClosingBody([b"a"], fail=True)

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        return body

    error, sent = await serve_failing(WsgiToAsgi(app), http_scope())
    assert isinstance(error, RuntimeError)
    assert sent == [start(200), chunk(b"a")]
    assert len(body.closed_on) == 1


# ---------------------------------------------------------------------------
# The WSGI span.


def _wsgi_span(spans: Any) -> ReadableSpan:
    (span,) = spans.named(semconv.WSGI_CALL)
    return span  # type: ignore[no-any-return]


def _children(spans: Any, parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans.finished() if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_wsgi_to_asgi_traced_request_one_span_parent_of_hop(spans: Any) -> None:
    """Tests the whole WSGI span of a request and that it parents the hop into the app's thread."""
    app_thread: list[threading.Thread] = []

    def app(environ: Any, start_response: Any) -> Any:
        app_thread.append(threading.current_thread())
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"hello ", b"world"]

    scope = http_scope(
        method="POST",
        path="/items",
        scheme="https",
        http_version="2",
        server=("127.0.0.1", 8000),
        query_string=b"secret=1",
        headers=[(b"host", b"x"), (b"authorization", b"Bearer abc")],
    )
    sent = await serve(WsgiToAsgi(app), scope, {"type": "http.request", "body": b"12345"})
    assert sent == [start(201, [(b"content-type", b"text/plain")]), chunk(b"hello "), chunk(b"world"), END]

    span = _wsgi_span(spans)
    (thread,) = app_thread
    assert dict(span.attributes or {}) == {
        semconv.HTTP_REQUEST_METHOD: "POST",
        semconv.URL_PATH: "/items",
        semconv.URL_SCHEME: "https",
        semconv.NETWORK_PROTOCOL_VERSION: "2",
        semconv.SERVER_ADDRESS: "127.0.0.1",
        semconv.SERVER_PORT: 8000,
        semconv.WSGI_REQUEST_HEADER_COUNT: 2,
        semconv.WSGI_APPLICATION: f"{__name__}.test_wsgi_to_asgi_traced_request_one_span_parent_of_hop.<locals>.app",
        semconv.THREAD_ID: thread.ident,
        semconv.THREAD_NAME: thread.name,
        semconv.HTTP_REQUEST_BODY_SIZE: 5,
        semconv.WSGI_REQUEST_BODY_SPOOLED: False,
        semconv.HTTP_RESPONSE_STATUS_CODE: 201,
        semconv.WSGI_TIME_TO_FIRST_BYTE_MS: AtLeastZero(),
        semconv.HTTP_RESPONSE_BODY_SIZE: 11,
        semconv.WSGI_RESPONSE_CHUNKS: 2,
        semconv.WSGI_ITERABLE_CLOSED: False,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()

    hops = [s for s in _children(spans, span) if s.name == semconv.SYNC_TO_ASYNC]
    assert len(hops) == 1
    (hop,) = hops
    assert (hop.attributes or {})[semconv.CODE_FUNCTION_NAME] == "tracebridge.wsgi.WsgiToAsgiInstance.run_wsgi_app"
    assert (hop.attributes or {})[semconv.THREAD_NAME] == thread.name
    assert (hop.attributes or {})[semconv.CALLER_THREAD_NAME] == threading.current_thread().name
    # Each send went back to the loop through an async_to_sync hop inside the sync one.
    assert {s.context.trace_id for s in spans.named(semconv.ASYNC_TO_SYNC)} == {span.context.trace_id}


async def test_wsgi_to_asgi_traced_app_raises_span_error_next_request_fine(spans: Any) -> None:
    """Tests that a failing request's span records the error and the next request gets a clean span."""

    def app(environ: Any, start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/fail":
            raise RuntimeError("boom")
        start_response("200 OK", [])
        return [b"ok"]

    application = WsgiToAsgi(app)
    error, _ = await serve_failing(application, http_scope(path="/fail"))
    assert isinstance(error, RuntimeError)
    assert await serve(application, http_scope(path="/ok")) == [start(200), chunk(b"ok"), END]

    failed, fine = sorted(spans.named(semconv.WSGI_CALL), key=lambda s: s.start_time or 0)
    # Built on the spot (it failed) yet with the ids its hop child was given.
    assert len([s for s in _children(spans, failed) if s.name == semconv.SYNC_TO_ASYNC]) == 1
    failed_attributes = dict(failed.attributes or {})
    assert failed_attributes[semconv.ERROR_TYPE] == "RuntimeError"
    assert semconv.HTTP_RESPONSE_STATUS_CODE not in failed_attributes
    assert semconv.WSGI_ITERABLE_CLOSED not in failed_attributes  # the app raised before returning an iterable
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]
    assert fine.status.status_code is StatusCode.UNSET
    assert dict(fine.attributes or {})[semconv.HTTP_RESPONSE_STATUS_CODE] == 200
    assert semconv.ERROR_TYPE not in dict(fine.attributes or {})


async def test_wsgi_to_asgi_traced_non_sdk_tracer_span_made_on_the_spot(spans: Any, monkeypatch: Any) -> None:
    """Tests that without replayable ids the WSGI span is a live span with the same attributes and children."""
    monkeypatch.setattr(_telemetry, "replay_ids", lambda: None)

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        return [b"ok"]

    await serve(WsgiToAsgi(app), http_scope(server=("h", 1)))
    span = _wsgi_span(spans)
    attributes = dict(span.attributes or {})
    assert attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 200
    assert attributes[semconv.SERVER_PORT] == 1
    assert attributes[semconv.WSGI_RESPONSE_CHUNKS] == 1
    assert len([s for s in _children(spans, span) if s.name == semconv.SYNC_TO_ASYNC]) == 1


async def test_wsgi_to_asgi_instrumentation_suppressed_records_no_wsgi_span(spans: Any) -> None:
    """Tests that a request served while instrumentation is suppressed makes no WSGI span."""
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(message)

    # Called directly, not through ApplicationCommunicator: that one starts
    # the app in an empty context, which would drop the suppression.
    token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        await WsgiToAsgi(lambda e, s: (s("200 OK", []), [])[1])(http_scope(), receive, send)
    finally:
        detach(token)
    assert sent == [start(200), END]
    assert spans.named(semconv.WSGI_CALL) == []


async def test_wsgi_to_asgi_traced_duplicate_headers_span_400_with_error(spans: Any) -> None:
    """Tests that the 400 for too many duplicate headers is on the span with the ValueError behind it."""
    scope = http_scope(headers=[[b"x-test", b"v"] for _ in range(3)])
    sent = await serve(WsgiToAsgi(lambda e, s: [], duplicate_header_limit=2), scope)
    assert sent[0]["status"] == 400
    span = _wsgi_span(spans)
    attributes = dict(span.attributes or {})
    assert attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 400
    assert attributes[semconv.ERROR_TYPE] == "ValueError"
    assert attributes[semconv.HTTP_RESPONSE_BODY_SIZE] == len(b"Bad Request: Too many duplicate headers")
    assert semconv.WSGI_ITERABLE_CLOSED not in attributes  # the app never ran
    assert span.status.status_code is StatusCode.ERROR


async def test_wsgi_to_asgi_traced_non_http_scope_span_records_value_error(spans: Any) -> None:
    """Tests that a lifespan scope gives an error span with no HTTP attributes."""
    error, _ = await serve_failing(WsgiToAsgi(lambda e, s: []), {"type": "lifespan"})
    assert isinstance(error, ValueError)
    span = _wsgi_span(spans)
    assert dict(span.attributes or {}) == {
        semconv.WSGI_APPLICATION: f"{__name__}.test_wsgi_to_asgi_traced_non_http_scope_span_records_value_error"
        ".<locals>.<lambda>",
        semconv.ERROR_TYPE: "ValueError",
    }
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: WSGI wrapper received a non-HTTP scope"


async def test_wsgi_to_asgi_traced_app_answers_500_span_error_type_is_status(spans: Any) -> None:
    """Tests that a 5xx the app answers itself marks the span as an error typed '500'."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("500 Internal Server Error", [])
        return [b"oops"]

    await serve(WsgiToAsgi(app), http_scope())
    span = _wsgi_span(spans)
    assert dict(span.attributes or {})[semconv.ERROR_TYPE] == "500"
    assert span.status.status_code is StatusCode.ERROR


async def test_wsgi_to_asgi_traced_unknown_method_recorded_as_other(spans: Any) -> None:
    """Tests that a method outside HTTP's list is recorded as _OTHER with the original beside it."""
    await serve(WsgiToAsgi(lambda e, s: (s("200 OK", []), [])[1]), http_scope(method="BREW"))
    attributes = dict(_wsgi_span(spans).attributes or {})
    assert attributes[semconv.HTTP_REQUEST_METHOD] == "_OTHER"
    assert attributes[semconv.HTTP_REQUEST_METHOD_ORIGINAL] == "BREW"


async def test_wsgi_to_asgi_traced_large_body_spooled_flag_true(spans: Any) -> None:
    """Tests that a body over 64 KiB is reported as spooled to disk, with its size."""
    sizes = []

    def app(environ: Any, start_response: Any) -> Any:
        sizes.append(len(environ["wsgi.input"].read()))
        start_response("200 OK", [])
        return []

    body = b"x" * 70000
    await serve(WsgiToAsgi(app), http_scope(method="POST"), {"type": "http.request", "body": body})
    attributes = dict(_wsgi_span(spans).attributes or {})
    assert sizes == [70000]
    assert attributes[semconv.HTTP_REQUEST_BODY_SIZE] == 70000
    assert attributes[semconv.WSGI_REQUEST_BODY_SPOOLED] is True


async def test_wsgi_to_asgi_traced_closing_iterable_reports_closed(spans: Any) -> None:
    """Tests that calling the iterable's close() is reported on the span."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        return ClosingBody([b"a"])

    await serve(WsgiToAsgi(app), http_scope())
    assert dict(_wsgi_span(spans).attributes or {})[semconv.WSGI_ITERABLE_CLOSED] is True


async def test_wsgi_to_asgi_traced_default_capture_no_query_or_header_values(spans: Any) -> None:
    """Tests that by default no query string and no header value reaches the span."""
    scope = http_scope(query_string=b"password=hunter2&q=1", headers=[(b"cookie", b"sid=abc"), (b"accept", b"*/*")])
    await serve(WsgiToAsgi(lambda e, s: (s("200 OK", [("Set-Cookie", "sid=new")]), [])[1]), scope)
    attributes = dict(_wsgi_span(spans).attributes or {})
    values = [str(value) for value in attributes.values()]
    assert not any("hunter2" in v or "sid=" in v or "*/*" in v or "q=1" in v for v in values)
    assert not any(key.startswith(("http.request.header.", "http.response.header.", "url.query")) for key in attributes)


async def test_wsgi_to_asgi_traced_opt_in_capture_redacts_sensitive(spans: Any, capture: None) -> None:
    """Tests that opted-in query and headers are recorded with sensitive values REDACTED."""
    set_http_capture(
        HttpCapture(query_string=True, request_headers=["Accept", "Cookie", "X-CSRF-Token"], response_headers={"*"})
    )
    scope = http_scope(
        query_string=b"q=shoes&access_token=abc&api_key=k&page=2",
        headers=[(b"accept", b"text/html"), (b"accept", b"*/*"), (b"cookie", b"sid=1"), (b"x-csrf-token", b"t"),
                 (b"user-agent", b"not captured")],
    )

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Set-Cookie", "sid=2")])
        return [b"ok"]

    await serve(WsgiToAsgi(app), scope)
    attributes = dict(_wsgi_span(spans).attributes or {})
    captured = {k: v for k, v in attributes.items() if k.startswith(("url.query", "http.request.header.", "http.response.header."))}
    assert captured == {
        semconv.URL_QUERY: "q=shoes&access_token=REDACTED&api_key=REDACTED&page=2",
        semconv.HTTP_REQUEST_HEADER_PREFIX + "accept": ("text/html", "*/*"),
        semconv.HTTP_REQUEST_HEADER_PREFIX + "cookie": ("REDACTED",),
        semconv.HTTP_REQUEST_HEADER_PREFIX + "x-csrf-token": ("REDACTED",),
        semconv.HTTP_RESPONSE_HEADER_PREFIX + "content-type": ("text/plain",),
        semconv.HTTP_RESPONSE_HEADER_PREFIX + "set-cookie": ("REDACTED",),
    }


def test_http_capture_from_environ_reads_switches_and_extra_redactions() -> None:
    """Tests the environment-variable opt-in, and that extra redactions add to the defaults."""
    capture = HttpCapture.from_environ(
        {
            "TRACEBRIDGE_HTTP_CAPTURE_QUERY": "true",
            "TRACEBRIDGE_HTTP_CAPTURE_REQUEST_HEADERS": "User-Agent, accept",
            "TRACEBRIDGE_HTTP_CAPTURE_RESPONSE_HEADERS": "",
            "TRACEBRIDGE_HTTP_REDACT": "X_Tenant",
        }
    )
    assert capture == HttpCapture(
        query_string=True,
        request_headers={"user-agent", "accept"},
        response_headers=(),
        redact=DEFAULT_REDACTED_KEYS | {"x-tenant"},
    )
    assert capture.enabled is True
    assert HttpCapture.from_environ({}).enabled is False
    assert HttpCapture.from_environ({}) == HttpCapture()


async def test_wsgi_to_asgi_tracing_failure_swallowed_request_served(spans: Any, monkeypatch: Any) -> None:
    """Tests that an exception inside tracing code is counted and never reaches the request."""

    def broken(*args: Any) -> Any:
        raise RuntimeError("tracing code broke")

    monkeypatch.setattr(tracebridge.wsgi, "_scope_attributes", broken)
    before = tracebridge.stats().tracing_errors
    assert await serve(WsgiToAsgi(lambda e, s: (s("200 OK", []), [b"x"])[1]), http_scope()) == [
        start(200),
        chunk(b"x"),
        END,
    ]
    tracebridge.flush()  # the request attributes are read when the span is built, off the request path
    assert tracebridge.stats().tracing_errors > before


async def test_wsgi_to_asgi_tracing_off_records_nothing(spans: Any) -> None:
    """Tests that with tracing off a request makes no span and keeps no trace state."""
    tracebridge.set_tracer_provider(NoOpTracerProvider())  # off, whatever the global provider is
    instances: list[WsgiToAsgiInstance] = []
    original = WsgiToAsgiInstance.__call__

    async def spy(self: WsgiToAsgiInstance, scope: Any, receive: Any, send: Any) -> None:
        instances.append(self)
        await original(self, scope, receive, send)

    WsgiToAsgiInstance.__call__ = spy  # type: ignore[method-assign]
    try:
        assert await serve(WsgiToAsgi(lambda e, s: (s("200 OK", []), [b"x"])[1]), http_scope()) == [
            start(200),
            chunk(b"x"),
            END,
        ]
    finally:
        WsgiToAsgiInstance.__call__ = original  # type: ignore[method-assign]
    assert [instance._trace for instance in instances] == [None]
    tracebridge.set_tracer_provider(spans.provider)
    assert spans.finished() == []


def test_wsgi_module_exports_are_sorted_and_include_asgiref_names() -> None:
    """Tests that tracebridge.wsgi exports asgiref's names plus the capture settings, sorted."""
    import tracebridge.wsgi as module

    assert module.__all__ == sorted(module.__all__)
    assert {"WsgiToAsgi", "WsgiToAsgiInstance"} <= set(module.__all__)


def test_wsgi_to_asgi_traced_call_leaves_no_reference_cycles(spans: Any) -> None:
    """Tests that a traced WSGI call's span object is freed by reference counting, not kept for the collector."""
    from test_sync_spans import planned_spans_in_cycles

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        return [b"ok"]

    assert planned_spans_in_cycles(lambda: asyncio.run(serve(WsgiToAsgi(app), http_scope()))) == []
    assert len(spans.named(semconv.WSGI_CALL)) == 1
