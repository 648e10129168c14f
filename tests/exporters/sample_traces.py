"""Real tracebridge traces for the exporter tests: hops, handoffs, Local accesses, an error, a queue wait."""

from __future__ import annotations

import asyncio
import threading
import time

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from tracebridge.local import Local
from tracebridge.sync import ThreadSensitiveContext, async_to_sync, sync_to_async

__all__ = ["SLOW_S", "concurrent_trace", "hop_trace", "queued_trace"]

SLOW_S = 0.05
"""How long the blocking call of :func:`queued_trace` holds the thread-sensitive thread."""

state = Local()


class PaymentDeclined(Exception):
    """Raised by the failing call of :func:`hop_trace`."""


def _lookup() -> str:
    state.user = "ada"  # a Local set on the sync thread
    with _tracer.start_as_current_span("SELECT users"):
        pass
    return threading.current_thread().name


def _charge() -> None:
    raise PaymentDeclined("card declined")


async def _view() -> str:
    name = await sync_to_async(_lookup)()
    try:
        await sync_to_async(_charge, thread_sensitive=False)()
    except PaymentDeclined:
        pass
    return name


_tracer = TracerProvider().get_tracer("placeholder")


def hop_trace(provider: TracerProvider, finished: object) -> list[ReadableSpan]:
    """One request: root span, async_to_sync, thread-sensitive sync_to_async (+ handoff,
    Local set, a user span), a failing thread_sensitive=False call.  Returns the finished spans.

    Args:
        provider: the provider tracebridge records into (for the user spans).
        finished: a callable returning every finished span so far (``spans.finished``).
    """
    global _tracer
    _tracer = provider.get_tracer("sample", "0.1")
    with _tracer.start_as_current_span("request"):
        async_to_sync(_view)()
    return list(finished())  # type: ignore[operator]


def _hold(started: threading.Event) -> None:
    started.set()
    time.sleep(SLOW_S)


def _quick() -> None:
    pass


async def _two_calls() -> None:
    started = threading.Event()
    async with ThreadSensitiveContext():
        # Both need the context's one thread: the second queues behind the first.
        first = asyncio.ensure_future(sync_to_async(_hold)(started))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        await sync_to_async(_quick)()
        await first


def queued_trace(provider: TracerProvider, finished: object) -> list[ReadableSpan]:
    """One request whose second thread-sensitive call waits ~:data:`SLOW_S` for the first."""
    with provider.get_tracer("sample").start_as_current_span("request"):
        asyncio.run(_two_calls())
    return list(finished())  # type: ignore[operator]


def _nap() -> None:
    time.sleep(0.01)


async def _request(
    name: str, provider: TracerProvider, ends_after: asyncio.Event | None = None, ended: asyncio.Event | None = None
) -> None:
    with provider.get_tracer("sample").start_as_current_span(name):
        await asyncio.sleep(0.005)
        await sync_to_async(_nap, thread_sensitive=False)()
        if ends_after is not None:
            await ends_after.wait()
        await asyncio.sleep(0.005)
    if ended is not None:
        ended.set()


async def _concurrently(provider: TracerProvider) -> None:
    # "second" starts after "first" (gather starts them in order) and ends after it
    # (it waits for it): the two overlap without either containing the other,
    # however the threads are scheduled.  (Racing, "second" sometimes ended first
    # and its slice nested inside "first"'s.)
    first_ended = asyncio.Event()
    await asyncio.gather(
        _request("first", provider, ended=first_ended), _request("second", provider, ends_after=first_ended)
    )


def concurrent_trace(provider: TracerProvider, finished: object) -> list[ReadableSpan]:
    """Two requests interleaved on one event loop (their spans overlap on the loop's thread)."""
    asyncio.run(_concurrently(provider))
    return list(finished())  # type: ignore[operator]
