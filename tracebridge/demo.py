"""``tracebridge demo``: one traced request through every kind of hop.

The story is an ASGI app serving ``GET /users/7/dashboard`` the way a Django
view does under ASGI: the event loop runs the request, a sync view runs on the
request's own thread (a ``ThreadSensitiveContext``, like Django's ASGI handler),
the view calls back into async code (``async_to_sync``), which calls sync code
again: thread-sensitive, so it must come back to the request's thread, and not
thread-sensitive, so it goes to the loop's thread pool.  Along the way it uses
request-scoped and per-thread ``Local`` state, hits a ``timeout`` on a slow
service, and survives a failing payment call.

Everything is imported from tracebridge's own modules: swap them for
``asgiref.*`` and the code runs the same, untraced.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import NoOpTracer, Tracer

from . import _telemetry
from .configure import configure
from .local import Local
from .sync import ThreadSensitiveContext, async_to_sync, sync_to_async
from .timeout import timeout

__all__ = ["PaymentDeclined", "handle_request", "main", "run_request"]

SERVICE_NAME = "tracebridge-demo"
"""``service.name`` of the demo's traces."""

# Per-request state, like Django's active language: each request (task and the
# threads it hops to) sees its own values.
request_state = Local()
# Per-thread state, like django.db.connections: a connection belongs to the
# thread that opened it, so thread-sensitive calls of one request share it.
connections = Local(thread_critical=True)


class PaymentDeclined(Exception):
    """The fake payment provider said no."""


class _FakeConnection:
    """Stands in for a database connection: opened once per thread."""

    def execute(self, _sql: str) -> None:
        time.sleep(0.002)  # the query's round trip, on the calling thread


def _tracer() -> Tracer:
    # The demo's own spans are what a user's instrumentation would make.
    provider = _telemetry.get_tracer_provider()
    return provider.get_tracer(__name__) if provider is not None else NoOpTracer()


# -- sync code: runs on the request's thread or the loop's thread pool ------


def dashboard_view(user_id: int) -> dict[str, Any]:
    """The sync view: a Django-style function that reads request state and the ORM."""
    request_id = request_state.request_id  # set on the loop; the hop carried it here
    language = getattr(request_state, "language", "en")  # never set: a missing read
    user = get_user(user_id)
    # Back into async code from inside the sync view (e.g. an async HTTP client).
    avatar = async_to_sync(fetch_avatar)(user)
    return {"request": request_id, "language": language, "user": user, "avatar": avatar}


def get_user(user_id: int) -> dict[str, Any]:
    """A sync ORM call: opens this thread's connection on first use."""
    connection = getattr(connections, "default", None)
    if connection is None:
        connection = _FakeConnection()
        connections.default = connection
    with _tracer().start_as_current_span("SELECT auth_user"):
        connection.execute("SELECT ... FROM auth_user WHERE id = %s")
    return {"id": user_id, "name": "Ada"}


def record_avatar_view(user: dict[str, Any]) -> None:
    """Thread-sensitive ORM write: must run on the thread holding the connection."""
    connections.default.execute("UPDATE profile SET avatar_views = avatar_views + 1")


def resize_avatar(size: int) -> int:
    """CPU-bound and thread-safe, so it may run on any pool thread."""
    time.sleep(0.003)
    return size // 2


def load_site_settings() -> dict[str, Any]:
    """A sync call made outside the request's ThreadSensitiveContext."""
    time.sleep(0.001)
    return {"maintenance": False}


def charge_subscription(user_id: int) -> None:
    """A blocking payment API call that fails."""
    time.sleep(0.001)
    raise PaymentDeclined(f"card of user {user_id} declined")


# -- async code: runs on the event loop -------------------------------------


async def fetch_avatar(user: dict[str, Any]) -> int:
    """Async code called from the sync view through async_to_sync."""
    await asyncio.sleep(0.001)  # the avatar service's round trip
    size = await sync_to_async(resize_avatar, thread_sensitive=False)(256)
    await sync_to_async(record_avatar_view)(user)
    return size


async def fetch_recommendations(user_id: int) -> list[str]:
    """A call to a slow service under a 20 ms budget: it times out, the page goes on."""
    with warnings.catch_warnings():
        # tracebridge.timeout is deprecated like asgiref's (use asyncio.timeout);
        # the demo shows how its expiry is traced.
        warnings.simplefilter("ignore", DeprecationWarning)
        budget = timeout(0.02)
    try:
        async with budget:
            await asyncio.sleep(1)  # the slow service
    except TimeoutError:
        return []
    return ["never reached"]


async def handle_request(user_id: int = 7) -> dict[str, Any]:
    """The ASGI side of one request: the demo's root span and every hop under it."""
    with _tracer().start_as_current_span(f"GET /users/{user_id}/dashboard"):
        request_state.request_id = "req-7f3a"
        async with ThreadSensitiveContext():
            page = await sync_to_async(dashboard_view)(user_id)
        page["settings"] = await sync_to_async(load_site_settings)()
        try:
            await sync_to_async(charge_subscription, thread_sensitive=False)(user_id)
        except PaymentDeclined:
            page["banner"] = "Your payment was declined."
        page["recommendations"] = await fetch_recommendations(user_id)
        del request_state.request_id
        return page


def run_request() -> dict[str, Any]:
    """Serve the demo request on a fresh event loop (on this thread)."""
    return asyncio.run(handle_request())


def main(export: Sequence[str | SpanExporter | SpanProcessor] | None = None) -> int:
    """Configure tracing, serve the request, and deliver its trace.

    Args:
        export: export specs (or exporters/processors); None means
            ``TRACEBRIDGE_EXPORT``, else ``console``, as for ``configure()``.

    Returns:
        The process exit status: 0, or 1 if the trace could not be flushed.
    """
    provider = configure(export=export, service_name=SERVICE_NAME)
    run_request()
    # Builds the deferred Local/handoff spans, then makes every processor
    # export; the console exporter prints the tree on this flush.
    flushed = _telemetry.flush()
    provider.shutdown()
    return 0 if flushed else 1
