"""tracebridge.testing.ApplicationCommunicator: the same test harness as asgiref's."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
from types import ModuleType
from typing import Any

import pytest

HTTP_SCOPE = {
    "type": "http",
    "http_version": "1.0",
    "method": "GET",
    "path": "/foo/",
    "query_string": b"bar=baz",
    "headers": [],
}


@pytest.fixture(params=["asgiref", "tracebridge"])
def testing(request: pytest.FixtureRequest) -> ModuleType:
    """The testing module of asgiref (the reference) or of tracebridge."""
    return importlib.import_module(f"{request.param}.testing")


def _wsgi_communicator(implementation: str) -> Any:
    testing = importlib.import_module(f"{implementation}.testing")
    wsgi = importlib.import_module(f"{implementation}.wsgi")

    def wsgi_application(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        yield b"content"

    return testing.ApplicationCommunicator(wsgi.WsgiToAsgi(wsgi_application), dict(HTTP_SCOPE))


async def _three_messages_then_nothing(instance: Any) -> None:
    assert await instance.receive_nothing() is True
    await instance.send_input({"type": "http.request"})
    for _ in range(3):  # start, one chunk, the terminator
        assert await instance.receive_nothing() is False
        await instance.receive_output()
    assert await instance.receive_nothing(0.01) is True


@pytest.mark.parametrize("implementation", ["asgiref", "tracebridge"])
async def test_receive_nothing_before_and_after_each_message_reports_queue(implementation: str) -> None:
    """Tests that receive_nothing is True only while the application has sent nothing new."""
    await _three_messages_then_nothing(_wsgi_communicator(implementation))


@pytest.mark.parametrize("implementation", ["asgiref", "tracebridge"])
def test_receive_nothing_built_outside_loop_binds_queues_lazily(implementation: str) -> None:
    """Tests that a communicator made outside any event loop works inside one later."""
    instance = _wsgi_communicator(implementation)
    asyncio.run(_three_messages_then_nothing(instance))


async def test_receive_output_timeout_cancels_app_and_keeps_cancelling_count(testing: ModuleType) -> None:
    """Tests that a receive_output timeout cancels a silent app and leaves the caller's cancelling() alone."""
    cancelled = asyncio.Event()

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    instance = testing.ApplicationCommunicator(silent, {"type": "test"})
    task = asyncio.current_task()
    assert task is not None
    before = task.cancelling()
    with pytest.raises(TimeoutError):
        await instance.receive_output(0.05)
    assert task.cancelling() == before
    assert cancelled.is_set()
    assert instance.future.cancelled()


async def test_receive_output_app_raised_reraises_its_exception(testing: ModuleType) -> None:
    """Tests that receive_output surfaces the exception of an application that already failed."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("broken app")

    instance = testing.ApplicationCommunicator(broken, {"type": "test"})
    with pytest.raises(LookupError, match="broken app"):
        await instance.receive_output(0.5)
    with pytest.raises(LookupError, match="broken app"):
        await instance.send_input({"type": "x"})


async def test_wait_app_returns_completes_and_app_raises_reraises(testing: ModuleType) -> None:
    """Tests that wait returns when the app returns and re-raises when it raised."""

    async def echo_once(scope: Any, receive: Any, send: Any) -> None:
        await send(await receive())

    instance = testing.ApplicationCommunicator(echo_once, {"type": "test"})
    await instance.send_input({"type": "ping"})
    await instance.wait()
    assert await instance.receive_output() == {"type": "ping"}

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("nope")

    failing = testing.ApplicationCommunicator(broken, {"type": "test"})
    with pytest.raises(KeyError):
        await failing.wait()


async def test_wait_app_never_returns_cancels_it_and_returns(testing: ModuleType) -> None:
    """Tests that wait cancels an app that outlives the timeout and then returns (the app's CancelledError is swallowed)."""

    async def forever(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.Event().wait()

    instance = testing.ApplicationCommunicator(forever, {"type": "test"})
    task = asyncio.current_task()
    assert task is not None
    before = task.cancelling()
    # The timeout cancels the awaited app task; its CancelledError is
    # swallowed inside the timeout block, so no TimeoutError surfaces (asgiref 3.13).
    assert await instance.wait(0.05) is None
    assert instance.future.cancelled()
    assert task.cancelling() == before


async def test_future_app_starts_in_empty_context(testing: ModuleType) -> None:
    """Tests that context variables set by the test are not visible inside the application."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("set by the test")

    async def report(scope: Any, receive: Any, send: Any) -> None:
        await send({"seen": var.get()})

    instance = testing.ApplicationCommunicator(report, {"type": "test"})
    assert await instance.receive_output() == {"seen": "unset"}


async def test_stop_running_app_cancels_and_failed_app_reraises(testing: ModuleType) -> None:
    """Tests that stop cancels a running app and re-raises a failed app's exception unless told not to."""

    async def forever(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.Event().wait()

    running = testing.ApplicationCommunicator(forever, {"type": "test"})
    running.stop()  # never started: nothing to do
    assert running._future is None
    future = running.future
    await asyncio.sleep(0)
    running.stop()
    with pytest.raises(asyncio.CancelledError):
        await future

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise OSError("gone")

    failed = testing.ApplicationCommunicator(broken, {"type": "test"})
    with pytest.raises(OSError):
        await failed.future
    failed.stop(exceptions=False)
    with pytest.raises(OSError, match="gone"):
        failed.stop()


async def test_application_communicator_double_callable_is_adapted(testing: ModuleType) -> None:
    """Tests that an ASGI 2 application is adapted before it is run."""

    class Legacy:
        def __init__(self, scope: Any) -> None:
            self.scope = scope

        async def __call__(self, receive: Any, send: Any) -> None:
            await send({"path": self.scope["path"]})

    instance = testing.ApplicationCommunicator(Legacy, {"type": "http", "path": "/legacy"})
    assert await instance.receive_output() == {"path": "/legacy"}


def test_application_communicator_module_exports_asgiref_names() -> None:
    """Tests that tracebridge.testing exports what asgiref.testing does."""
    import tracebridge.testing as module

    assert module.__all__ == ["ApplicationCommunicator"]
