"""The ASGI Server Core: application instances for connectionless protocols.

:class:`StatelessServer` keeps one running application instance per *scope id*
(a user, a peer address, a channel name: whatever identifies a conversation in
a protocol without connections), feeds each one messages through its queue,
reaps instances that finished or raised, and evicts the least recently used
when there are too many.

Tracing (when a TracerProvider is set): each application instance gets one
:data:`~tracebridge.semconv.SERVER_INSTANCE` span covering its whole lifetime,
current inside the instance's task (so spans the application makes are its
children), ended with the reason (finished, failed, evicted, deleted,
cancelled).  When the checker reaps an instance that raised, a
:data:`~tracebridge.semconv.SERVER_REAP` span, child of the instance span,
wraps the call to :meth:`StatelessServer.application_exception`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import weakref
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY
from opentelemetry.trace import Span

from . import _telemetry, semconv
from .compatibility import guarantee_single_callable

__all__ = ["StatelessServer"]

logger = logging.getLogger(__name__)


class _HandleReturned(Exception):
    """Raised when ``handle()`` returns, to stop ``arun``'s gather."""


class _Lifetime:
    """The span of one application instance and what ends it (tracing on only)."""

    __slots__ = ("span", "scope_id", "reason", "lookups", "last_used")

    def __init__(self, span: Span, scope_id: object) -> None:
        self.span = span
        self.scope_id = scope_id
        self.reason: str | None = None  # set before a deliberate cancel (evicted/deleted)
        self.lookups = 0
        self.last_used = time.monotonic()


# Instance future -> its lifetime.  Weak keys: the entry goes with the future,
# whoever drops it (the checker, a delete, a subclass that manages its own).
_lifetimes: weakref.WeakKeyDictionary[asyncio.Future[Any], _Lifetime] = weakref.WeakKeyDictionary()


class StatelessServer:
    """Base class for servers of protocols without connections (UDP, chat, queues).

    Override :meth:`handle` (receive from the network; for each message call
    :meth:`get_or_create_application_instance` with a scope id and a scope,
    and put the message on the queue it returns) and :meth:`application_send`
    (deliver what an application sends).  For example::

        queue = self.get_or_create_application_instance(
            "user-123456", {"type": "testprotocol", "user_id": "123456"}
        )
        queue.put_nowait(message)

    Creating an instance while more than ``max_applications`` exist shuts the
    least recently used one down first.  Every ``application_checker_interval``
    seconds, instances that finished are removed, and those that raised are
    handed to :meth:`application_exception` (override it to do more than log).
    If you override :meth:`run`, start :meth:`application_checker` yourself.
    """

    application_checker_interval = 0.1

    def __init__(self, application: Any, max_applications: int = 1000) -> None:
        self.application = application
        self.max_applications = max_applications
        # scope_id -> {"input_queue", "future", "scope", "last_used"}
        self.application_instances: dict[Any, dict[str, Any]] = {}

    ### Main loop and handling

    def run(self) -> None:
        """Run the server on a new event loop until :meth:`handle` returns (or Ctrl-C)."""
        try:
            asyncio.run(self.arun())
        except KeyboardInterrupt:
            logger.info("Exiting due to Ctrl-C/interrupt")

    async def arun(self) -> None:
        """Run :meth:`handle` and the application checker until :meth:`handle` returns.

        The checker is not cancelled here: under :meth:`run` it stops with the
        loop; under your own loop it keeps running until that loop ends.
        """

        async def handle_then_stop() -> None:
            await self.handle()
            raise _HandleReturned

        try:
            await asyncio.gather(self.application_checker(), handle_then_stop())
        except _HandleReturned:
            pass

    async def handle(self) -> None:
        """Receive from the network and route messages to instances.  Override this."""
        raise NotImplementedError("You must implement handle()")

    async def application_send(self, scope: Any, message: Any) -> None:
        """Deliver a message an application sent.  Override this."""
        raise NotImplementedError("You must implement application_send()")

    ### Application instance management

    def get_or_create_application_instance(self, scope_id: Any, scope: Any) -> asyncio.Queue[Any]:
        """The input queue of the instance for ``scope_id``, creating the instance if needed.

        Must be called on the server's event loop (it starts a task there).
        """
        details = self.application_instances.get(scope_id)
        if details is not None:
            details["last_used"] = time.time()
            if _lifetimes:
                _note_lookup(details["future"])
            return details["input_queue"]  # type: ignore[no-any-return]
        # Make room.  "More than" (not "at least"): up to max_applications + 1
        # instances can be alive, as with asgiref.
        while len(self.application_instances) > self.max_applications:
            self.delete_oldest_application_instance()
        input_queue: asyncio.Queue[Any] = asyncio.Queue()
        application_instance = guarantee_single_callable(self.application)
        coroutine = application_instance(
            scope=scope,
            receive=input_queue.get,
            send=lambda message: self.application_send(scope, message),
        )
        tracer = _telemetry.get_tracer()
        if tracer is None:
            future = asyncio.ensure_future(coroutine)
        else:
            future = self._start_traced(tracer, scope_id, coroutine)
        self.application_instances[scope_id] = {
            "input_queue": input_queue,
            "future": future,
            "scope": scope,
            "last_used": time.time(),
        }
        return input_queue

    def _start_traced(self, tracer: Any, scope_id: Any, coroutine: Any) -> asyncio.Future[Any]:
        lifetime = _open_lifetime(tracer, scope_id, len(self.application_instances) + 1, self.max_applications)
        if lifetime is None:
            return asyncio.ensure_future(coroutine)
        # The task copies the current context when it is created: with the
        # instance span current here, everything the application traces is
        # its child.  Detached right away, so handle() is unaffected.
        token = _telemetry.attach_span(lifetime.span)
        try:
            future = asyncio.ensure_future(coroutine)
        except BaseException as error:  # not awaitable: the instance never started
            _telemetry.detach(token)
            _telemetry.end_span(lifetime.span, error, {semconv.SERVER_END_REASON: semconv.SERVER_END_FAILED})
            raise
        _telemetry.detach(token)
        try:
            _lifetimes[future] = lifetime
            future.add_done_callback(_instance_done)
        except Exception:
            _telemetry.tracing_failed("watching an application instance")
        return future

    def delete_oldest_application_instance(self) -> None:
        """Shut down the least recently used instance (one only, even on a tie)."""
        oldest_time = min(details["last_used"] for details in self.application_instances.values())
        for scope_id, details in self.application_instances.items():
            if details["last_used"] == oldest_time:
                if _lifetimes:
                    _note_reason(details["future"], semconv.SERVER_END_EVICTED)
                self.delete_application_instance(scope_id)
                return

    def delete_application_instance(self, scope_id: Any) -> None:
        """Remove the instance for ``scope_id`` and cancel its task if it still runs."""
        details = self.application_instances[scope_id]
        del self.application_instances[scope_id]
        future = details["future"]
        if not future.done():
            if _lifetimes:
                _note_reason(future, semconv.SERVER_END_DELETED)
            future.cancel()

    async def application_checker(self) -> None:
        """Forever: every interval, drop finished instances, reporting those that raised.

        An instance whose task cancelled *itself* makes this raise
        ``CancelledError`` (as in asgiref); instances removed with
        ``delete_*`` leave the table before they are cancelled, so they never do.
        """
        while True:
            await asyncio.sleep(self.application_checker_interval)
            for scope_id, details in list(self.application_instances.items()):
                future = details["future"]
                if not future.done():
                    continue
                exception = future.exception()
                if exception:
                    tracer = _telemetry.get_tracer()
                    if tracer is None:
                        await self.application_exception(exception, details)
                    else:
                        await self._reap_traced(tracer, scope_id, exception, details)
                try:
                    del self.application_instances[scope_id]
                except KeyError:
                    pass  # application_exception (or a concurrent delete) already removed it

    async def _reap_traced(self, tracer: Any, scope_id: Any, exception: BaseException, details: Any) -> None:
        span = _open_reap(tracer, scope_id, exception, details["future"])
        if span is None:
            await self.application_exception(exception, details)
            return
        token = _telemetry.attach_span(span)
        failure: BaseException | None = None
        try:
            await self.application_exception(exception, details)
        except BaseException as error:
            failure = error
            raise
        finally:
            _telemetry.detach(token)
            _end_reap(span, exception, failure)

    async def application_exception(self, exception: BaseException, application_details: Any) -> None:
        """Called for every application instance that raised.  Logs it (root logger)."""
        logging.error(
            "Exception inside application: %s\n%s%s",
            exception,
            "".join(traceback.format_tb(exception.__traceback__)),
            f"  {exception}",
        )


# ---------------------------------------------------------------------------
# Tracing helpers (loop thread only; each swallows its own failures).


def _open_lifetime(tracer: Any, scope_id: Any, live: int, max_applications: Any) -> _Lifetime | None:
    try:
        if otel_context.get_value(_SUPPRESS_KEY):
            return None  # an exporter or another instrumentation asked for silence
        attributes: dict[str, Any] = {
            semconv.SERVER_SCOPE_ID: str(scope_id),
            semconv.SERVER_LIVE_INSTANCES: live,
        }
        if isinstance(max_applications, int):
            attributes[semconv.SERVER_MAX_APPLICATIONS] = max_applications
        span = tracer.start_span(semconv.SERVER_INSTANCE, attributes=attributes)
        return _Lifetime(span, scope_id)
    except Exception:
        _telemetry.tracing_failed("opening an application instance span")
        return None


def _note_lookup(future: asyncio.Future[Any]) -> None:
    try:
        lifetime = _lifetimes.get(future)
        if lifetime is not None:
            lifetime.lookups += 1
            lifetime.last_used = time.monotonic()
    except Exception:
        _telemetry.tracing_failed("counting an instance lookup")


def _note_reason(future: asyncio.Future[Any], reason: str) -> None:
    try:
        lifetime = _lifetimes.get(future)
        if lifetime is not None and lifetime.reason is None:
            lifetime.reason = reason
    except Exception:
        _telemetry.tracing_failed("noting why an instance ends")


def _instance_done(future: asyncio.Future[Any]) -> None:
    # A done-callback on the loop thread, right after the instance's task ended.
    try:
        lifetime = _lifetimes.get(future)
        if lifetime is None:
            return
        error: BaseException | None = None
        if lifetime.reason is not None:
            reason = lifetime.reason
        elif future.cancelled():
            reason = semconv.SERVER_END_CANCELLED
        else:
            # Peek without marking the exception retrieved: asyncio's "exception
            # was never retrieved" warning must fire exactly as without tracing.
            error = getattr(future, "_exception", None)
            reason = semconv.SERVER_END_FINISHED if error is None else semconv.SERVER_END_FAILED
        attributes = {
            semconv.SERVER_END_REASON: reason,
            semconv.SERVER_LOOKUPS: lifetime.lookups,
            semconv.SERVER_IDLE_MS: (time.monotonic() - lifetime.last_used) * 1000.0,
        }
    except Exception:
        _telemetry.tracing_failed("ending an application instance span")
        return
    _telemetry.end_span(lifetime.span, error, attributes)


def _open_reap(tracer: Any, scope_id: Any, exception: BaseException, future: asyncio.Future[Any]) -> Span | None:
    try:
        lifetime = _lifetimes.get(future)
        context = None
        if lifetime is not None:
            context = otel_trace.set_span_in_context(lifetime.span)
        return tracer.start_span(  # type: ignore[no-any-return]
            semconv.SERVER_REAP,
            context=context,
            attributes={semconv.SERVER_SCOPE_ID: str(scope_id)},
        )
    except Exception:
        _telemetry.tracing_failed("opening a reap span")
        return None


def _end_reap(span: Span, exception: BaseException, failure: BaseException | None) -> None:
    # The reaped exception is what this span reports.  If the handler itself
    # failed, the reaped one stays as an event and the handler's failure sets
    # the status and error.type.
    if failure is not None:
        try:
            span.record_exception(exception)
        except Exception:
            _telemetry.tracing_failed("recording a reaped exception")
    _telemetry.end_span(span, failure if failure is not None else exception)
