"""tracebridge.server.StatelessServer: asgiref's behaviour (checked against asgiref) and instance spans."""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
import threading
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NoOpTracerProvider, StatusCode

import tracebridge
from tracebridge import semconv
from tracebridge.server import StatelessServer

IMPLEMENTATIONS = ["asgiref", "tracebridge"]


class AtLeastZero:
    """Equal to any non-negative number: stands in for durations in whole-dict asserts."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (int, float)) and other >= 0

    def __repr__(self) -> str:
        return "<number >= 0>"


@pytest.fixture(params=IMPLEMENTATIONS)
def server_module(request: pytest.FixtureRequest) -> ModuleType:
    """The server module of asgiref (the reference) or of tracebridge."""
    return importlib.import_module(f"{request.param}.server")


# ---------------------------------------------------------------------------
# A real connectionless server: UDP on loopback, routing "To <name> <msg>".


async def recvfrom(sock: socket.socket, size: int) -> tuple[bytes, Any]:
    while True:
        try:
            return sock.recvfrom(size)
        except BlockingIOError:
            await asyncio.sleep(0.001)


def udp_server_class(base: type) -> type:
    class UdpServer(base):  # type: ignore[valid-type,misc]
        def __init__(self, application: Any, max_applications: int = 1000) -> None:
            super().__init__(application, max_applications=max_applications)
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setblocking(False)
            self.sock.bind(("127.0.0.1", 0))

        @property
        def address(self) -> Any:
            return self.sock.getsockname()

        async def handle(self) -> None:
            while True:
                data, address = await recvfrom(self.sock, 4096)
                text = data.decode()
                if text.startswith("Register"):
                    _, name = text.split(" ")
                    self.get_or_create_application_instance(name, address).put_nowait(b"Welcome")
                elif text.startswith("To"):
                    _, name, message = text.split(" ", 2)
                    self.get_or_create_application_instance(name, address).put_nowait(message.encode())

        async def application_send(self, scope: Any, message: Any) -> None:
            self.sock.sendto(message, scope)

        def close(self) -> None:
            self.sock.close()
            for details in self.application_instances.values():
                details["future"].cancel()

    return UdpServer


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    while True:
        await send(await receive())


class Client:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(("127.0.0.1", 0))

    def send(self, address: Any, text: str) -> None:
        self.sock.sendto(text.encode(), address)

    async def receive(self) -> tuple[bytes, Any]:
        return await asyncio.wait_for(recvfrom(self.sock, 4096), timeout=2.0)

    def close(self) -> None:
        self.sock.close()


async def until(condition: Any, timeout: float = 5.0) -> None:
    """Let the loop run until ``condition()`` is true (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


class _Done(Exception):
    pass


async def run_until(server: Any, scenario: Any) -> None:
    """Run the server's arun() beside ``scenario`` until the scenario finishes (bounded)."""

    async def scenario_then_stop() -> None:
        await scenario()
        raise _Done

    try:
        await asyncio.wait_for(asyncio.gather(server.arun(), scenario_then_stop()), timeout=10)
    except _Done:
        pass


async def test_stateless_server_udp_clients_talk_through_instances(server_module: ModuleType) -> None:
    """Tests that instances keyed by name relay messages between two UDP clients."""
    server = udp_server_class(server_module.StatelessServer)(echo_app, 10)
    one, two = Client(), Client()

    async def scenario() -> None:
        one.send(server.address, "Register one")
        assert await one.receive() == (b"Welcome", server.address)
        two.send(server.address, "Register two")
        assert await two.receive() == (b"Welcome", server.address)
        one.send(server.address, "To two Hello")
        assert await two.receive() == (b"Hello", server.address)

    try:
        await run_until(server, scenario)
    finally:
        server.close()
        one.close()
        two.close()


async def test_get_or_create_application_instance_more_than_max_evicts_to_max_plus_one(
    server_module: ModuleType,
) -> None:
    """Tests asgiref's eviction bound: with max_applications=10, 20 names leave 11 instances alive."""
    server = udp_server_class(server_module.StatelessServer)(echo_app, 10)
    client = Client()

    async def scenario() -> None:
        for i in range(20):
            client.send(server.address, f"Register client{i}")
            assert await client.receive() == (b"Welcome", server.address)
        assert len(server.application_instances) == 11
        assert set(server.application_instances) == {f"client{i}" for i in range(9, 20)}

    try:
        await run_until(server, scenario)
    finally:
        server.close()
        client.close()


def test_stateless_server_run_from_plain_thread_runs_handle(server_module: ModuleType) -> None:
    """Tests that run() makes its own loop in a thread that has none, and returns when handle() does."""

    class RunServer(server_module.StatelessServer):  # type: ignore[name-defined,misc]
        handled_on: int | None = None

        async def handle(self) -> None:
            self.handled_on = threading.get_ident()

        async def application_send(self, scope: Any, message: Any) -> None:
            pass

    server = RunServer(echo_app)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, name="run-server")
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert errors == []
    assert server.handled_on == thread.ident


async def test_stateless_server_unimplemented_hooks_raise_not_implemented(server_module: ModuleType) -> None:
    """Tests that handle() and application_send() must be overridden, with asgiref's messages."""
    server = server_module.StatelessServer(echo_app)
    with pytest.raises(NotImplementedError, match=r"^You must implement handle\(\)$"):
        await server.handle()
    with pytest.raises(NotImplementedError, match=r"^You must implement application_send\(\)$"):
        await server.application_send({}, {})


def quiet_server_class(base: type) -> type:
    """A server with no network: tests drive get_or_create_application_instance directly."""

    class QuietServer(base):  # type: ignore[valid-type,misc]
        application_checker_interval = 0.01

        def __init__(self, application: Any, max_applications: int = 1000) -> None:
            super().__init__(application, max_applications)
            self.sent: list[Any] = []
            self.reported: list[tuple[BaseException, Any]] = []
            self.reported_event = asyncio.Event()

        async def handle(self) -> None:
            pass

        async def application_send(self, scope: Any, message: Any) -> None:
            self.sent.append((scope, message))

        async def application_exception(self, exception: BaseException, application_details: Any) -> None:
            self.reported.append((exception, application_details))
            self.reported_event.set()

    return QuietServer


QuietServer: Any = quiet_server_class(StatelessServer)


async def test_get_or_create_application_instance_same_id_same_queue(server_module: ModuleType) -> None:
    """Tests that a known scope id returns its existing queue and refreshes last_used."""
    server = quiet_server_class(server_module.StatelessServer)(echo_app)
    queue = server.get_or_create_application_instance("a", {"type": "t"})
    first_used = server.application_instances["a"]["last_used"]
    await asyncio.sleep(0.01)
    assert server.get_or_create_application_instance("a", {"type": "ignored"}) is queue
    details = server.application_instances["a"]
    assert set(details) == {"input_queue", "future", "scope", "last_used"}
    assert details["scope"] == {"type": "t"}
    assert details["last_used"] > first_used
    queue.put_nowait("ping")
    await until(lambda: server.sent)
    assert server.sent == [({"type": "t"}, "ping")]
    server.delete_application_instance("a")


async def test_application_checker_failed_instance_reported_and_removed(server_module: ModuleType) -> None:
    """Tests that the checker hands a raised exception and the instance details to application_exception."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("instance broke")

    server = quiet_server_class(server_module.StatelessServer)(broken)
    server.get_or_create_application_instance("bad", {"type": "t"})
    details = server.application_instances["bad"]
    checker = asyncio.ensure_future(server.application_checker())
    try:
        await asyncio.wait_for(server.reported_event.wait(), timeout=5)
        await until(lambda: "bad" not in server.application_instances)  # dropped right after the report
    finally:
        checker.cancel()
    ((exception, reported_details),) = server.reported
    assert isinstance(exception, LookupError)
    assert reported_details is details
    assert server.application_instances == {}


async def test_application_exception_default_logs_to_root_logger(
    server_module: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """Tests that the default application_exception logs the exception and its traceback."""
    try:
        raise LookupError("logged")
    except LookupError as error:
        exception = error
    server = server_module.StatelessServer(echo_app)
    with caplog.at_level(logging.ERROR):
        await server.application_exception(exception, {})
    (record,) = caplog.records
    assert record.name == "root"
    assert record.getMessage().startswith("Exception inside application: logged\n")
    assert record.getMessage().endswith("  logged")


async def test_delete_application_instance_running_cancels_its_task(server_module: ModuleType) -> None:
    """Tests that deleting an instance removes it at once and cancels its task."""
    server = quiet_server_class(server_module.StatelessServer)(echo_app)
    server.get_or_create_application_instance("a", {"type": "t"})
    future = server.application_instances["a"]["future"]
    server.delete_application_instance("a")
    assert "a" not in server.application_instances
    with pytest.raises(asyncio.CancelledError):
        await future


# ---------------------------------------------------------------------------
# Spans: one per instance lifetime, one per reap.


def instance_spans(spans: Any) -> dict[str, ReadableSpan]:
    return {str((s.attributes or {})[semconv.SERVER_SCOPE_ID]): s for s in spans.named(semconv.SERVER_INSTANCE)}


async def settle(future: asyncio.Future[Any]) -> None:
    """Wait (bounded) until ``future`` is done and its done-callbacks have run."""
    await asyncio.wait([future], timeout=5)
    await asyncio.sleep(0)


async def test_instance_span_finished_app_whole_attributes(spans: Any) -> None:
    """Tests the whole span of an instance that returned after two lookups."""

    async def two_messages(scope: Any, receive: Any, send: Any) -> None:
        await send(await receive())
        await send(await receive())

    server = QuietServer(two_messages, max_applications=5)
    server.get_or_create_application_instance("peer-1", {"type": "t"}).put_nowait("a")
    server.get_or_create_application_instance("peer-1", {"type": "t"})
    server.get_or_create_application_instance("peer-1", {"type": "t"}).put_nowait("b")
    await settle(server.application_instances["peer-1"]["future"])

    span = instance_spans(spans)["peer-1"]
    assert dict(span.attributes or {}) == {
        semconv.SERVER_SCOPE_ID: "peer-1",
        semconv.SERVER_LIVE_INSTANCES: 1,
        semconv.SERVER_MAX_APPLICATIONS: 5,
        semconv.SERVER_END_REASON: semconv.SERVER_END_FINISHED,
        semconv.SERVER_LOOKUPS: 2,
        semconv.SERVER_IDLE_MS: AtLeastZero(),
    }
    assert span.status.status_code is StatusCode.UNSET
    assert server.sent == [({"type": "t"}, "a"), ({"type": "t"}, "b")]


async def test_instance_span_app_raises_failed_and_reap_span_child(spans: Any) -> None:
    """Tests that a raising instance ends 'failed' with the error, and its reap is a child span."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("instance broke")

    server = QuietServer(broken)
    server.get_or_create_application_instance("bad", {"type": "t"})
    checker = asyncio.ensure_future(server.application_checker())
    try:
        await asyncio.wait_for(server.reported_event.wait(), timeout=5)
    finally:
        checker.cancel()
    await asyncio.sleep(0)

    span = instance_spans(spans)["bad"]
    attributes = dict(span.attributes or {})
    assert attributes[semconv.SERVER_END_REASON] == semconv.SERVER_END_FAILED
    assert attributes[semconv.ERROR_TYPE] == "LookupError"
    assert span.status.status_code is StatusCode.ERROR
    (reap,) = spans.named(semconv.SERVER_REAP)
    assert reap.parent is not None and reap.parent.span_id == span.context.span_id
    assert dict(reap.attributes or {}) == {semconv.SERVER_SCOPE_ID: "bad", semconv.ERROR_TYPE: "LookupError"}
    assert [event.name for event in reap.events] == ["exception"]


async def test_instance_span_lru_evicted_reason_evicted(spans: Any) -> None:
    """Tests that the instance pushed out by max_applications ends 'evicted'."""
    server = QuietServer(echo_app, max_applications=1)
    server.get_or_create_application_instance("old", {"type": "t"})
    await asyncio.sleep(0.01)
    server.get_or_create_application_instance("mid", {"type": "t"})
    old = server.application_instances["old"]["future"]
    server.get_or_create_application_instance("new", {"type": "t"})  # 2 > 1: "old" goes
    await settle(old)
    assert set(server.application_instances) == {"mid", "new"}
    ended = instance_spans(spans)
    assert set(ended) == {"old"}
    assert dict(ended["old"].attributes or {})[semconv.SERVER_END_REASON] == semconv.SERVER_END_EVICTED
    assert dict(ended["old"].attributes or {})[semconv.SERVER_LIVE_INSTANCES] == 1
    for scope_id in ("mid", "new"):
        server.delete_application_instance(scope_id)


async def test_instance_span_deleted_and_cancelled_reasons(spans: Any) -> None:
    """Tests 'deleted' for delete_application_instance and 'cancelled' for a task cancelled by others."""
    server = QuietServer(echo_app)
    server.get_or_create_application_instance("deleted", {"type": "t"})
    server.get_or_create_application_instance("cancelled", {"type": "t"})
    deleted = server.application_instances["deleted"]["future"]
    cancelled = server.application_instances["cancelled"]["future"]
    server.delete_application_instance("deleted")
    cancelled.cancel()
    await settle(deleted)
    await settle(cancelled)
    ended = instance_spans(spans)
    assert dict(ended["deleted"].attributes or {})[semconv.SERVER_END_REASON] == semconv.SERVER_END_DELETED
    assert dict(ended["cancelled"].attributes or {})[semconv.SERVER_END_REASON] == semconv.SERVER_END_CANCELLED
    assert ended["deleted"].status.status_code is StatusCode.UNSET


async def test_instance_span_is_parent_of_app_spans_and_marks_adaptation(spans: Any) -> None:
    """Tests that spans made inside the app are children of the instance span, and ASGI 2 adaptation marks it."""
    tracer = spans.provider.get_tracer("test")

    class Legacy:
        def __init__(self, scope: Any) -> None:
            pass

        async def __call__(self, receive: Any, send: Any) -> None:
            with tracer.start_as_current_span("inside"):
                await send(await receive())

    server = QuietServer(Legacy)
    server.get_or_create_application_instance("legacy", {"type": "t"}).put_nowait("hi")
    await settle(server.application_instances["legacy"]["future"])
    span = instance_spans(spans)["legacy"]
    (inside,) = spans.named("inside")
    assert inside.parent is not None and inside.parent.span_id == span.context.span_id
    attributes = dict(span.attributes or {})
    assert attributes[semconv.ASGI_DOUBLE_CALLABLE_ADAPTED] is True
    assert attributes[semconv.ASGI_APPLICATION] == f"{__name__}.{Legacy.__qualname__}"


async def test_get_or_create_application_instance_leaves_caller_context_untouched(spans: Any) -> None:
    """Tests that creating an instance does not leave its span current in handle()'s context."""
    from opentelemetry import trace as otel_trace

    server = QuietServer(echo_app)
    before = otel_trace.get_current_span()
    server.get_or_create_application_instance("a", {"type": "t"})
    assert otel_trace.get_current_span() is before
    server.delete_application_instance("a")


async def test_stateless_server_tracing_off_records_nothing(spans: Any) -> None:
    """Tests that with tracing off instances, failures and reaps make no span and no bookkeeping."""
    from tracebridge import server as server_module

    tracebridge.set_tracer_provider(NoOpTracerProvider())  # off, whatever the global provider is

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("instance broke")

    server = QuietServer(broken)
    server.get_or_create_application_instance("bad", {"type": "t"})
    assert server.application_instances["bad"]["future"] not in server_module._lifetimes
    checker = asyncio.ensure_future(server.application_checker())
    try:
        await asyncio.wait_for(server.reported_event.wait(), timeout=5)
    finally:
        checker.cancel()
    tracebridge.set_tracer_provider(spans.provider)
    assert spans.finished() == []


async def test_get_or_create_application_instance_non_callable_app_reaped_with_type_error(
    server_module: ModuleType,
) -> None:
    """Tests that a non-callable application fails inside its instance and is reported, as in asgiref."""
    server = quiet_server_class(server_module.StatelessServer)(42)
    server.get_or_create_application_instance("a", {"type": "t"})
    checker = asyncio.ensure_future(server.application_checker())
    try:
        await asyncio.wait_for(server.reported_event.wait(), timeout=5)
    finally:
        checker.cancel()
    ((exception, _),) = server.reported
    assert isinstance(exception, TypeError)
    assert str(exception) == "'int' object is not callable"
    # The server keeps serving: a new id gets a new instance.
    server.application = echo_app
    server.get_or_create_application_instance("b", {"type": "t"}).put_nowait("ping")
    await until(lambda: server.sent)
    assert server.sent == [({"type": "t"}, "ping")]
    server.delete_application_instance("b")


async def test_get_or_create_application_instance_not_awaitable_raises_and_ends_span(spans: Any) -> None:
    """Tests that an app returning a non-awaitable raises TypeError at creation and its span ends 'failed'."""

    class NotAwaitable:
        _asgi_single_callable = True

        def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            return None

    server = QuietServer(NotAwaitable())
    with pytest.raises(TypeError):
        server.get_or_create_application_instance("a", {"type": "t"})
    assert server.application_instances == {}
    span = instance_spans(spans)["a"]
    attributes = dict(span.attributes or {})
    assert attributes[semconv.SERVER_END_REASON] == semconv.SERVER_END_FAILED
    assert attributes[semconv.ERROR_TYPE] == "TypeError"
