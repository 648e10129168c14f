"""Drive an ASGI application from a test, one message at a time.

:class:`ApplicationCommunicator` plays the server: it starts the application as
a task, feeds it messages through ``send_input`` and collects what it sends with
``receive_output``.  OpenTelemetry's own ASGI test base class imports it, so it
works there with tracebridge in place of asgiref.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

from .compatibility import guarantee_single_callable

__all__ = ["ApplicationCommunicator"]


class ApplicationCommunicator:
    """Runs an ASGI application in test mode: send it messages, receive what it sends.

    The application starts lazily, on the first use of :attr:`future`, as a
    task of the running loop.  It starts in a fresh, empty context, as under a
    real server: context variables set by the test do not leak into it.
    """

    def __init__(self, application: Any, scope: Any) -> None:
        self._future: asyncio.Task[Any] | None = None
        self.application = guarantee_single_callable(application)
        self.scope = scope
        self._input_queue: asyncio.Queue[Any] | None = None
        self._output_queue: asyncio.Queue[Any] | None = None

    # The queues are made on first use, so a communicator can be built outside
    # any event loop and used later inside one.

    @property
    def input_queue(self) -> asyncio.Queue[Any]:
        """Messages for the application; its ``receive`` is this queue's ``get``."""
        if self._input_queue is None:
            self._input_queue = asyncio.Queue()
        return self._input_queue

    @property
    def output_queue(self) -> asyncio.Queue[Any]:
        """Messages from the application; its ``send`` is this queue's ``put``."""
        if self._output_queue is None:
            self._output_queue = asyncio.Queue()
        return self._output_queue

    @property
    def future(self) -> asyncio.Task[Any]:
        """The application's task, started on first access."""
        if self._future is None:
            coroutine = self.application(self.scope, self.input_queue.get, self.output_queue.put)
            # An empty Context, not a copy of the test's: the app must start
            # the way a server would start it.
            self._future = contextvars.Context().run(asyncio.create_task, coroutine)
        return self._future

    def _raise_if_finished(self) -> None:
        # A finished application cannot take or give messages any more:
        # surface why it finished (its exception, or CancelledError) instead.
        future = self.future
        if future.done():
            future.result()

    async def wait(self, timeout: float = 1) -> None:
        """Wait for the application to return, re-raising its exception.

        An application still running after ``timeout`` seconds is cancelled
        and awaited; its ``CancelledError`` is swallowed and ``wait`` returns
        normally, without ``TimeoutError`` (as asgiref's does).
        """
        try:
            async with asyncio.timeout(timeout):
                try:
                    await self.future
                    self.future.result()
                except asyncio.CancelledError:
                    pass
        finally:
            future = self.future
            if not future.done():
                future.cancel()
                try:
                    await future
                except asyncio.CancelledError:
                    pass

    def stop(self, exceptions: bool = True) -> None:
        """Cancel the application if it is running; else re-raise its exception (if ``exceptions``)."""
        future = self._future
        if future is None:
            return
        if not future.done():
            future.cancel()
        elif exceptions:
            future.result()

    def __del__(self) -> None:
        try:
            self.stop(exceptions=False)
        except RuntimeError:
            pass  # its event loop is already closed

    async def send_input(self, message: Any) -> None:
        """Give the application one message (re-raising its exception if it already ended)."""
        self._raise_if_finished()
        await self.input_queue.put(message)

    async def receive_output(self, timeout: float = 1) -> Any:
        """The next message the application sent, waiting up to ``timeout`` seconds.

        Raises:
            TimeoutError: nothing came in time.  If the application had ended,
                its own exception is raised instead; if it was still running,
                it is cancelled (and awaited) first.
        """
        self._raise_if_finished()
        try:
            async with asyncio.timeout(timeout):
                return await self.output_queue.get()
        except TimeoutError as timed_out:
            future = self.future
            if future.done():
                future.result()
            else:
                future.cancel()
                try:
                    await future
                except asyncio.CancelledError:
                    pass
            raise timed_out

    async def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        """True if the application sends nothing for ``timeout`` seconds (polled every ``interval``)."""
        self._raise_if_finished()
        # Poll rather than wait on the queue: a get() would consume the message.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.output_queue.empty():
                return False
            await asyncio.sleep(interval)
        return self.output_queue.empty()
