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
    "ASYNC_TO_SYNC",
    "CALLER_THREAD_ID",
    "CALLER_THREAD_NAME",
    "CODE_FUNCTION_NAME",
    "DIRECTION",
    "DIRECTION_ASYNC_TO_SYNC",
    "DIRECTION_SYNC_TO_ASYNC",
    "ERROR_TYPE",
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
    "QUEUED_THREAD_ID",
    "QUEUED_THREAD_NAME",
    "QUEUE_WAIT_MS",
    "RUN_TIME_MS",
    "SYNC_TO_ASYNC",
    "THREAD_ID",
    "THREAD_NAME",
    "THREAD_SENSITIVE",
    "TIMEOUT_CANCELLED_TASK",
    "TIMEOUT_ELAPSED_MS",
    "TIMEOUT_EXPIRY",
    "TIMEOUT_LIMIT_MS",
]

INSTRUMENTATION_NAME: Final = "tracebridge"
"""Instrumentation scope name of every tracer tracebridge asks for."""

# ---------------------------------------------------------------------------
# Standard OpenTelemetry keys (semantic conventions), used verbatim.

THREAD_ID: Final = "thread.id"
"""``threading.get_ident()`` of the thread the span's work ran on."""

THREAD_NAME: Final = "thread.name"
"""Name of the thread the span's work ran on."""

CODE_FUNCTION_NAME: Final = "code.function.name"
"""Fully qualified name (``module.QualName``) of the function a hop calls."""

ERROR_TYPE: Final = "error.type"
"""Fully qualified class name of the exception that ended the span."""

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
