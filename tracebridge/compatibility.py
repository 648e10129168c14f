"""ASGI 2 ("double callable") applications, adapted to the ASGI 3 calling style.

An ASGI 2 application is called twice: ``app(scope)`` returns an instance, and
``await instance(receive, send)`` serves the connection.  ASGI 3 folds that into
one ``await app(scope, receive, send)``.  Servers and test harnesses call
:func:`guarantee_single_callable` once and then only speak ASGI 3.

Tracing: the adapter made by :func:`double_to_single_callable` marks the span
current when it runs (a ``StatelessServer`` instance span, a WSGI span, a user's
request span) with :data:`~tracebridge.semconv.ASGI_DOUBLE_CALLABLE_ADAPTED`, so
a trace says which requests went through the ASGI 2 shim.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace as otel_trace

from . import _telemetry, semconv
from .sync import iscoroutinefunction

__all__ = [
    "double_to_single_callable",
    "guarantee_single_callable",
    "is_double_callable",
]


def is_double_callable(application: object) -> bool:
    """Whether ``application`` uses the ASGI 2 (double callable) style.

    The rules, first match wins:

    1. An explicit hint: a truthy ``_asgi_single_callable`` means single, a
       truthy ``_asgi_double_callable`` means double.
    2. A class is double: calling it with the scope makes the instance.
    3. An object whose ``__call__`` is a coroutine function is single.
    4. Anything else is double unless it is itself a coroutine function (so a
       plain function returning a coroutine function, or a lambda, is double).
    """
    if getattr(application, "_asgi_single_callable", False):
        return False
    if getattr(application, "_asgi_double_callable", False):
        return True
    if inspect.isclass(application):
        return True
    call = getattr(application, "__call__", None)
    if call is not None and iscoroutinefunction(call):
        return False
    return not iscoroutinefunction(application)


def double_to_single_callable(application: Any) -> Callable[[Any, Any, Any], Awaitable[Any]]:
    """Wrap an ASGI 2 application into an ASGI 3 ``async (scope, receive, send)`` callable.

    The wrapper makes the instance (``application(scope)``) and awaits
    ``instance(receive, send)`` on every call, returning what it returns.  It is
    itself detected as single-callable.
    """

    async def new_application(scope: Any, receive: Any, send: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841
        if _telemetry.get_tracer() is not None:
            _mark_adapted(application)
        instance = application(scope)
        return await instance(receive, send)

    return new_application


def guarantee_single_callable(application: Any) -> Any:
    """Return ``application`` in ASGI 3 style: unchanged if it already is, else adapted."""
    if is_double_callable(application):
        application = double_to_single_callable(application)
    return application


def _mark_adapted(application: object) -> None:
    # Runs in the task that serves the call, so the current span is the one of
    # the call this adaptation served.  Nothing is started here: an attribute
    # on a span somebody else owns costs nothing when that span does not record.
    try:
        span = otel_trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    semconv.ASGI_DOUBLE_CALLABLE_ADAPTED: True,
                    semconv.ASGI_APPLICATION: _telemetry.function_name(application),
                }
            )
    except Exception:
        _telemetry.tracing_failed("marking a double-callable adaptation")
