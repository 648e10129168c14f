"""The one span vocabulary of tracebridge.

Every span name and attribute key that tracebridge writes is a constant in this
module, each followed by a docstring saying what it means.  No other module
spells one of these strings: a test greps the package for stray literals.

Where OpenTelemetry has a standard key (``thread.id``, ``thread.name``,
``code.function.name``, ``error.type``) it is used as is.  Everything of our own
lives under the ``tracebridge.`` prefix.

Durations are float milliseconds (``*_ms``): these attributes are read by people
in Jaeger and Perfetto, and microsecond hops read best in milliseconds.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ASGI_APPLICATION",
    "ASGI_DOUBLE_CALLABLE_ADAPTED",
    "ASYNC_TO_SYNC",
    "CALLER_THREAD_ID",
    "CALLER_THREAD_NAME",
    "CENSUS_ASYNC_TO_SYNC",
    "CENSUS_BY_EXECUTOR",
    "CENSUS_BY_FUNCTION",
    "CENSUS_HOPS",
    "CENSUS_QUEUE_WAIT_MS",
    "CENSUS_SYNC_TO_ASYNC",
    "CENSUS_THREADS",
    "CODE_FUNCTION_NAME",
    "DIRECTION",
    "DIRECTION_ASYNC_TO_SYNC",
    "DIRECTION_SYNC_TO_ASYNC",
    "ERROR_TYPE",
    "EXCEPTION_ESCAPED",
    "EXCEPTION_EVENT",
    "EXCEPTION_MESSAGE",
    "EXCEPTION_STACKTRACE",
    "EXCEPTION_TYPE",
    "EXECUTOR_GIVEN",
    "EXECUTOR_GLOBAL_SYNC_THREAD",
    "EXECUTOR_ID",
    "EXECUTOR_KIND",
    "EXECUTOR_LOOP_DEFAULT",
    "EXECUTOR_LOOP_THREAD",
    "EXECUTOR_OUTER_CURRENT_THREAD",
    "EXECUTOR_THREAD_SENSITIVE_CONTEXT",
    "HANDOFF",
    "HANDOFF_EXECUTOR_CURRENT_THREAD",
    "HANDOFF_EXECUTOR_THREAD_POOL",
    "HTTP_REQUEST_BODY_SIZE",
    "HTTP_REQUEST_HEADER_PREFIX",
    "HTTP_REQUEST_METHOD",
    "HTTP_REQUEST_METHOD_ORIGINAL",
    "HTTP_REQUEST_METHOD_OTHER",
    "HTTP_RESPONSE_BODY_SIZE",
    "HTTP_RESPONSE_HEADER_PREFIX",
    "HTTP_RESPONSE_STATUS_CODE",
    "INCOMPLETE",
    "INSTRUMENTATION_NAME",
    "LOCAL_ACCESS",
    "LOCAL_ATTRIBUTE",
    "LOCAL_FOUND",
    "LOCAL_ID",
    "LOCAL_OPERATION",
    "LOCAL_OP_DELETE",
    "LOCAL_OP_GET",
    "LOCAL_OP_SET",
    "LOCAL_THREAD_CRITICAL",
    "LOOP_ID",
    "LOOP_NEW",
    "LOOP_ROUTE",
    "LOOP_ROUTE_NEW_LOOP",
    "LOOP_ROUTE_PARENT_LOOP",
    "LOOP_ROUTE_SINGLE_THREAD_CONTEXT",
    "NETWORK_PROTOCOL_VERSION",
    "QUEUED_THREAD_ID",
    "QUEUED_THREAD_NAME",
    "QUEUE_WAIT_MS",
    "REDACTED",
    "RUN_TIME_MS",
    "SERVER_ADDRESS",
    "SERVER_END_CANCELLED",
    "SERVER_END_DELETED",
    "SERVER_END_EVICTED",
    "SERVER_END_FAILED",
    "SERVER_END_FINISHED",
    "SERVER_END_REASON",
    "SERVER_IDLE_MS",
    "SERVER_INSTANCE",
    "SERVER_LIVE_INSTANCES",
    "SERVER_LOOKUPS",
    "SERVER_MAX_APPLICATIONS",
    "SERVER_PORT",
    "SERVER_REAP",
    "SERVER_SCOPE_ID",
    "SYNC_TO_ASYNC",
    "THREAD_ID",
    "THREAD_NAME",
    "THREAD_SENSITIVE",
    "TIMEOUT_CANCELLED_TASK",
    "TIMEOUT_ELAPSED_MS",
    "TIMEOUT_EXPIRY",
    "TIMEOUT_LIMIT_MS",
    "URL_PATH",
    "URL_QUERY",
    "URL_SCHEME",
    "WATCHDOG_KIND",
    "WATCHDOG_KIND_BLOCKED_LOOP",
    "WATCHDOG_KIND_DEADLOCK",
    "WATCHDOG_KIND_STALL",
    "WATCHDOG_MESSAGE",
    "WATCHDOG_REPORT",
    "WATCHDOG_REPORT_ID",
    "WATCHDOG_ROLE",
    "WSGI_APPLICATION",
    "WSGI_CALL",
    "WSGI_ITERABLE_CLOSED",
    "WSGI_REQUEST_BODY_SPOOLED",
    "WSGI_REQUEST_HEADER_COUNT",
    "WSGI_RESPONSE_CHUNKS",
    "WSGI_TIME_TO_FIRST_BYTE_MS",
]

INSTRUMENTATION_NAME: Final = "tracebridge"
"""Instrumentation scope name of every tracer tracebridge asks for."""

# ---------------------------------------------------------------------------
# Standard OpenTelemetry keys (semantic conventions), used verbatim.

THREAD_ID: Final = "thread.id"
"""``threading.get_ident()`` of the thread the span's work ran on."""

THREAD_NAME: Final = "thread.name"
"""Name of the thread the span's work ran on (the name it had at its first traced operation)."""

CODE_FUNCTION_NAME: Final = "code.function.name"
"""Fully qualified name (``module.QualName``) of the function a hop calls."""

ERROR_TYPE: Final = "error.type"
"""Fully qualified class name of the exception that ended the span."""

EXCEPTION_EVENT: Final = "exception"
"""Name of the span event that records an exception (OpenTelemetry's)."""

EXCEPTION_TYPE: Final = "exception.type"
"""On the exception event: the exception's fully qualified class name."""

EXCEPTION_MESSAGE: Final = "exception.message"
"""On the exception event: ``str(exception)``."""

EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
"""On the exception event: the formatted traceback."""

EXCEPTION_ESCAPED: Final = "exception.escaped"
"""On an exception event that code inside a hop recorded (``record_exception``): "True" if it escaped, as the SDK writes it."""

# ---------------------------------------------------------------------------
# Span names.  Few and fixed: what varies (function, thread) is an attribute.

SYNC_TO_ASYNC: Final = "tracebridge.sync_to_async"
"""One call through ``sync_to_async``: an awaiting task runs sync code on a thread."""

ASYNC_TO_SYNC: Final = "tracebridge.async_to_sync"
"""One call through ``async_to_sync``: a sync thread runs a coroutine on a loop."""

HANDOFF: Final = "tracebridge.handoff"
"""One work item handed to a thread-sensitive executor and run by its thread."""

LOCAL_ACCESS: Final = "tracebridge.local"
"""One get, set or delete of an attribute of a ``Local``."""

TIMEOUT_EXPIRY: Final = "tracebridge.timeout.expiry"
"""A ``timeout`` block that ran out of time and cancelled its task."""

# ---------------------------------------------------------------------------
# Hop attributes (sync_to_async / async_to_sync spans).

DIRECTION: Final = "tracebridge.hop.direction"
"""``sync_to_async`` or ``async_to_sync``: which way the hop crosses."""

DIRECTION_SYNC_TO_ASYNC: Final = "sync_to_async"
"""Value of :data:`DIRECTION`: async caller, sync callee."""

DIRECTION_ASYNC_TO_SYNC: Final = "async_to_sync"
"""Value of :data:`DIRECTION`: sync caller, coroutine callee."""

CALLER_THREAD_ID: Final = "tracebridge.caller.thread.id"
"""``threading.get_ident()`` of the thread that made the call (and waits for it)."""

CALLER_THREAD_NAME: Final = "tracebridge.caller.thread.name"
"""Name of the thread that made the call."""

THREAD_SENSITIVE: Final = "tracebridge.thread_sensitive"
"""The ``thread_sensitive`` flag a ``sync_to_async`` call was made with."""

EXECUTOR_KIND: Final = "tracebridge.executor.kind"
"""Which rule chose the executor of a ``sync_to_async`` call: one of the ``EXECUTOR_*`` values."""

EXECUTOR_OUTER_CURRENT_THREAD: Final = "outer_current_thread_executor"
"""The sync thread of the nearest enclosing ``async_to_sync`` (its CurrentThreadExecutor)."""

EXECUTOR_THREAD_SENSITIVE_CONTEXT: Final = "thread_sensitive_context"
"""The single thread of the active ``ThreadSensitiveContext``."""

EXECUTOR_LOOP_THREAD: Final = "loop_thread_executor"
"""The CurrentThreadExecutor registered for a loop that ``async_to_sync`` created."""

EXECUTOR_GLOBAL_SYNC_THREAD: Final = "global_sync_thread"
"""The one process-wide sync thread (no enclosing sync frame, no context)."""

EXECUTOR_LOOP_DEFAULT: Final = "loop_default"
"""The event loop's default executor (``thread_sensitive=False``)."""

EXECUTOR_GIVEN: Final = "given_executor"
"""The ``executor=`` the caller passed (``thread_sensitive=False``)."""

EXECUTOR_ID: Final = "tracebridge.executor.id"
"""``id()`` of the executor object that ran the work: equal ids, same queue."""

LOOP_ID: Final = "tracebridge.loop.id"
"""``id()`` of the event loop involved in the hop."""

LOOP_NEW: Final = "tracebridge.loop.new"
"""True when ``async_to_sync`` had to create an event loop for the call."""

LOOP_ROUTE: Final = "tracebridge.loop.route"
"""Where ``async_to_sync`` ran the coroutine: one of the ``LOOP_ROUTE_*`` values."""

LOOP_ROUTE_PARENT_LOOP: Final = "parent_loop"
"""On the loop of the enclosing ``sync_to_async`` (the outer loop thread)."""

LOOP_ROUTE_NEW_LOOP: Final = "new_loop"
"""On a new loop in a new thread, made for this call."""

LOOP_ROUTE_SINGLE_THREAD_CONTEXT: Final = "single_thread_context"
"""On a new loop on the ``AsyncSingleThreadContext`` worker thread."""

QUEUE_WAIT_MS: Final = "tracebridge.queue_wait_ms"
"""Milliseconds from submission to the moment the callee started running."""

RUN_TIME_MS: Final = "tracebridge.run_time_ms"
"""Milliseconds the callee ran (start to finish on its own thread or loop)."""

# ---------------------------------------------------------------------------
# Handoff attributes (plus THREAD_ID/THREAD_NAME for the thread that ran it,
# QUEUE_WAIT_MS, RUN_TIME_MS, EXECUTOR_ID, CODE_FUNCTION_NAME).

HANDOFF_EXECUTOR_CURRENT_THREAD: Final = "current_thread_executor"
"""Value of :data:`EXECUTOR_KIND` on a handoff through a CurrentThreadExecutor."""

HANDOFF_EXECUTOR_THREAD_POOL: Final = "thread_sensitive_thread"
"""Value of :data:`EXECUTOR_KIND` on a handoff to a single-thread pool."""

QUEUED_THREAD_ID: Final = "tracebridge.queued_by.thread.id"
"""``threading.get_ident()`` of the thread that queued the work item."""

QUEUED_THREAD_NAME: Final = "tracebridge.queued_by.thread.name"
"""Name of the thread that queued the work item."""

# ---------------------------------------------------------------------------
# Local access attributes (plus THREAD_ID/THREAD_NAME).  Never the value.

LOCAL_ID: Final = "tracebridge.local.id"
"""Which ``Local``: ``hex(id(local))``, stable for the object's lifetime."""

LOCAL_ATTRIBUTE: Final = "tracebridge.local.attribute"
"""Name of the attribute accessed.  The value is never recorded."""

LOCAL_OPERATION: Final = "tracebridge.local.operation"
"""``get``, ``set`` or ``delete``."""

LOCAL_OP_GET: Final = "get"
"""Value of :data:`LOCAL_OPERATION`."""

LOCAL_OP_SET: Final = "set"
"""Value of :data:`LOCAL_OPERATION`."""

LOCAL_OP_DELETE: Final = "delete"
"""Value of :data:`LOCAL_OPERATION`."""

LOCAL_THREAD_CRITICAL: Final = "tracebridge.local.thread_critical"
"""Whether the ``Local`` was made with ``thread_critical=True``."""

LOCAL_FOUND: Final = "tracebridge.local.found"
"""Whether the attribute existed (false means the access raised AttributeError)."""

# ---------------------------------------------------------------------------
# Timeout expiry attributes (plus THREAD_ID/THREAD_NAME).

TIMEOUT_LIMIT_MS: Final = "tracebridge.timeout.limit_ms"
"""The limit the ``timeout`` block was given, in milliseconds."""

TIMEOUT_ELAPSED_MS: Final = "tracebridge.timeout.elapsed_ms"
"""Milliseconds from entering the block to the cancellation."""

TIMEOUT_CANCELLED_TASK: Final = "tracebridge.timeout.cancelled_task"
"""Name of the asyncio task the expiry cancelled (``Task.get_name()``) and its coroutine."""

# ---------------------------------------------------------------------------
# WSGI (tracebridge.wsgi): one span per WsgiToAsgi call.  The HTTP keys are the
# stable OpenTelemetry HTTP semantic conventions, used verbatim.  Query strings
# and header values are recorded only when the user opts in
# (tracebridge.wsgi.set_http_capture), and sensitive keys are then REDACTED.

WSGI_CALL: Final = "tracebridge.wsgi"
"""One request served by ``WsgiToAsgi``: body buffered, WSGI app run on a sync thread, response sent."""

HTTP_REQUEST_METHOD: Final = "http.request.method"
"""The request method (``GET``) from the ASGI scope; ``_OTHER`` for a method HTTP does not define."""

HTTP_REQUEST_METHOD_ORIGINAL: Final = "http.request.method_original"
"""The method as sent, only when :data:`HTTP_REQUEST_METHOD` had to say ``_OTHER``."""

HTTP_REQUEST_METHOD_OTHER: Final = "_OTHER"
"""Value of :data:`HTTP_REQUEST_METHOD` for a method outside the HTTP specs."""

URL_PATH: Final = "url.path"
"""The request path from the ASGI scope (``root_path`` included, query string excluded)."""

URL_SCHEME: Final = "url.scheme"
"""``http`` or ``https`` (the scope's ``scheme``, ``http`` when absent)."""

URL_QUERY: Final = "url.query"
"""The query string, only with ``HttpCapture(query_string=True)``; sensitive values REDACTED."""

HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
"""The status the response started with (400 when asgiref's duplicate-header guard answered)."""

SERVER_ADDRESS: Final = "server.address"
"""Host of the listening socket, from the scope's ``server`` (absent when the scope has none)."""

SERVER_PORT: Final = "server.port"
"""Port of the listening socket (absent for a unix socket or no ``server``)."""

NETWORK_PROTOCOL_VERSION: Final = "network.protocol.version"
"""HTTP version from the scope (``1.1``, ``2``)."""

HTTP_REQUEST_HEADER_PREFIX: Final = "http.request.header."
"""Prefix of ``http.request.header.<lower-case name>`` (a list of values); opt-in only."""

HTTP_RESPONSE_HEADER_PREFIX: Final = "http.response.header."
"""Prefix of ``http.response.header.<lower-case name>`` (a list of values); opt-in only."""

HTTP_REQUEST_BODY_SIZE: Final = "http.request.body.size"
"""Bytes of request body buffered before the WSGI app ran."""

HTTP_RESPONSE_BODY_SIZE: Final = "http.response.body.size"
"""Bytes of response body sent (after clamping to ``Content-Length``)."""

REDACTED: Final = "REDACTED"
"""The value recorded in place of a sensitive query parameter or header value."""

WSGI_APPLICATION: Final = "tracebridge.wsgi.application"
"""``module.QualName`` of the WSGI application ``WsgiToAsgi`` wraps."""

WSGI_TIME_TO_FIRST_BYTE_MS: Final = "tracebridge.wsgi.time_to_first_byte_ms"
"""Milliseconds from the ASGI call to the moment the response start was handed to ``send``."""

WSGI_REQUEST_BODY_SPOOLED: Final = "tracebridge.wsgi.request.body.spooled"
"""True when the request body outgrew 64 KiB of RAM and was spooled to a temporary file."""

WSGI_REQUEST_HEADER_COUNT: Final = "tracebridge.wsgi.request.header_count"
"""Number of request header lines in the scope (names and values are not recorded)."""

WSGI_RESPONSE_CHUNKS: Final = "tracebridge.wsgi.response.chunks"
"""Number of body chunks sent (each one blocked the sync thread until ``send`` completed)."""

WSGI_ITERABLE_CLOSED: Final = "tracebridge.wsgi.iterable_closed"
"""True when the app's response iterable had a ``close()`` and it was called (PEP 3333)."""

# ---------------------------------------------------------------------------
# ASGI server (tracebridge.server.StatelessServer): one span per application
# instance lifetime, and one when the checker reaps an instance that raised.

SERVER_INSTANCE: Final = "tracebridge.server.instance"
"""One application instance, from its creation to its end (see :data:`SERVER_END_REASON`)."""

SERVER_REAP: Final = "tracebridge.server.reap"
"""The application checker handing an instance's exception to ``application_exception``."""

SERVER_SCOPE_ID: Final = "tracebridge.server.scope_id"
"""``str()`` of the scope id the server keyed the instance by."""

SERVER_END_REASON: Final = "tracebridge.server.end_reason"
"""Why the instance ended: one of the ``SERVER_END_*`` values."""

SERVER_END_FINISHED: Final = "finished"
"""Value of :data:`SERVER_END_REASON`: the application returned."""

SERVER_END_FAILED: Final = "failed"
"""Value of :data:`SERVER_END_REASON`: the application raised (the span carries the error)."""

SERVER_END_EVICTED: Final = "evicted"
"""Value of :data:`SERVER_END_REASON`: least recently used, removed to stay near ``max_applications``."""

SERVER_END_DELETED: Final = "deleted"
"""Value of :data:`SERVER_END_REASON`: removed by ``delete_application_instance``."""

SERVER_END_CANCELLED: Final = "cancelled"
"""Value of :data:`SERVER_END_REASON`: its task was cancelled by someone else (e.g. shutdown)."""

SERVER_LIVE_INSTANCES: Final = "tracebridge.server.live_instances"
"""Application instances alive right after this one was created (itself included)."""

SERVER_MAX_APPLICATIONS: Final = "tracebridge.server.max_applications"
"""The server's ``max_applications`` setting."""

SERVER_LOOKUPS: Final = "tracebridge.server.instance.lookups"
"""Times ``get_or_create_application_instance`` found this instance already alive."""

SERVER_IDLE_MS: Final = "tracebridge.server.instance.idle_ms"
"""Milliseconds since the instance was last looked up, when it ended."""

# ---------------------------------------------------------------------------
# ASGI compatibility (tracebridge.compatibility): set on the span current when
# an adapted ASGI 2 application serves a call.

ASGI_DOUBLE_CALLABLE_ADAPTED: Final = "tracebridge.asgi.double_callable_adapted"
"""True: this call was served by an ASGI 2 (double callable) app through the ASGI 3 adapter."""

ASGI_APPLICATION: Final = "tracebridge.asgi.application"
"""``module.QualName`` of the adapted ASGI 2 application."""

# ---------------------------------------------------------------------------
# Hop census (tracebridge.instrumentation.census.HopCensus): set on a request's
# root span (any span without a local parent) just before it ends, so "this
# request did 5 hops, 2 caused by sync-only middleware X" reads off one span.

CENSUS_HOPS: Final = "tracebridge.census.hops"
"""Thread hops (``sync_to_async`` plus ``async_to_sync`` calls) made in this root span's trace while it was open."""

CENSUS_SYNC_TO_ASYNC: Final = "tracebridge.census.sync_to_async"
"""How many of :data:`CENSUS_HOPS` were ``sync_to_async`` calls."""

CENSUS_ASYNC_TO_SYNC: Final = "tracebridge.census.async_to_sync"
"""How many of :data:`CENSUS_HOPS` were ``async_to_sync`` calls."""

CENSUS_BY_FUNCTION: Final = "tracebridge.census.by_function"
"""Where the hops came from: ``"<direction> <module.QualName>: <count>"`` per called function, most first."""

CENSUS_BY_EXECUTOR: Final = "tracebridge.census.by_executor"
"""Which rule routed the hops: ``"<executor kind or loop route>: <count>"``, most first."""

CENSUS_THREADS: Final = "tracebridge.census.threads"
"""Names of the distinct threads the hops' callees ran on, sorted."""

CENSUS_QUEUE_WAIT_MS: Final = "tracebridge.census.queue_wait_ms"
"""Milliseconds the hops' callees waited, summed, from the call to the moment they started."""

# ---------------------------------------------------------------------------
# Flow model and watchdog (tracebridge.flow, tracebridge.watchdog): what the
# deadlock/stall detector writes on the spans of the work it names, and the mark
# of a span exported while its work was still in flight (a partial trace).

INCOMPLETE: Final = "tracebridge.incomplete"
"""True on a span exported before its work finished (a hang's partial trace); its end time is the export time."""

WATCHDOG_REPORT: Final = "tracebridge.watchdog.report"
"""Span event: the watchdog found this span's work deadlocked, stalled or on a blocked loop."""

WATCHDOG_KIND: Final = "tracebridge.watchdog.kind"
"""On :data:`WATCHDOG_REPORT`: one of the ``WATCHDOG_KIND_*`` values."""

WATCHDOG_KIND_DEADLOCK: Final = "deadlock"
"""Value of :data:`WATCHDOG_KIND`: a cycle in the wait-for graph; nothing in it can ever move."""

WATCHDOG_KIND_STALL: Final = "stall"
"""Value of :data:`WATCHDOG_KIND`: queued work made no progress for longer than the stall threshold."""

WATCHDOG_KIND_BLOCKED_LOOP: Final = "blocked_loop"
"""Value of :data:`WATCHDOG_KIND`: an event loop's thread has been stuck in one sync call too long."""

WATCHDOG_MESSAGE: Final = "tracebridge.watchdog.message"
"""On :data:`WATCHDOG_REPORT`: the report in plain words (every participant, without the stacks)."""

WATCHDOG_REPORT_ID: Final = "tracebridge.watchdog.report_id"
"""On :data:`WATCHDOG_REPORT`: the report's number in this process (the same on every span it names)."""

WATCHDOG_ROLE: Final = "tracebridge.watchdog.role"
"""On :data:`WATCHDOG_REPORT`: this span's part in the report, e.g. ``queued behind thread `MainThread```."""
