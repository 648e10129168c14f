"""Real hangs of mixed sync/async code, for ``tracebridge demo --deadlock`` and the watchdog's tests.

Each scenario is ordinary asgiref-style code (swap ``tracebridge.sync`` for
``asgiref.sync`` and it hangs the same way) that never returns.  Run one in a
child process, with the watchdog on, and it prints the watchdog's report::

    python -m tracebridge.demo_deadlock global-sync-thread

The process exits (status 0) as soon as the report is out and the partial
trace exported, or with status 3 if no report came within ``--timeout``.

Scenarios (:data:`SCENARIOS`):

``global-sync-thread`` (deadlock, the demo's)
    A request starts a background task, then calls a sync view with
    ``sync_to_async``: the view runs on the one global sync thread and waits
    (``async_to_sync``) for the task.  The task makes a thread-sensitive call:
    it queues on that same global thread, behind the view.  asgiref's
    "would deadlock" guard misses it: the task was created before the view call.
``current-thread-executor`` (deadlock)
    Under ``async_to_sync`` (a sync main thread), a coroutine starts a task and
    then calls a sync view that waits for it through a nested ``async_to_sync``.
    The task's thread-sensitive call queues on the outer frame's
    CurrentThreadExecutor, which the main thread no longer serves
    (asgiref#249/#348).
``thread-sensitive-context`` (deadlock)
    The Django shape: inside a request's ``ThreadSensitiveContext`` a task
    (an audit-log write) is started, then the sync view waits for it; the task's
    ORM call queues on the context's one thread, which runs the view.
``blocker`` (stall)
    asgiref's own xfail test: a thread-sensitive ``event.wait`` holds the
    global sync thread while the ``event.set`` that would release it is queued
    behind it (head-of-line blocking).
``context-executor`` (stall)
    ``ThreadSensitiveContext(executor=pool)`` with a one-worker pool: sync code
    blocks on an Event that only a later call, queued on the same pool, sets.
``blocked-loop`` (blocked loop)
    An ``async def`` view calls blocking code (``time.sleep``) directly on the
    event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry.trace import NoOpTracer, Tracer

from . import _telemetry
from .sync import ThreadSensitiveContext, async_to_sync, sync_to_async

__all__ = ["SCENARIOS", "main"]


def _tracer() -> Tracer:
    # The request's own span, as a web framework's instrumentation would make it.
    provider = _telemetry.get_tracer_provider()
    return provider.get_tracer(__name__) if provider is not None else NoOpTracer()


# -- global-sync-thread ------------------------------------------------------


def load_site_settings() -> dict[str, Any]:
    """A thread-sensitive ORM read (runs on the global sync thread outside any context)."""
    return {"maintenance": False}


async def warm_cache() -> dict[str, Any]:
    """The background task: one thread-sensitive call."""
    return await sync_to_async(load_site_settings)()


async def wait_for_prefetch(prefetch: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
    """The async helper the sync view calls: it waits for the background task."""
    return await prefetch


def dashboard_view(prefetch: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
    """The sync view, on the global sync thread: needs the prefetched settings."""
    return async_to_sync(wait_for_prefetch)(prefetch)


async def handle_request() -> dict[str, Any]:
    """The ASGI side: start the prefetch, then run the sync view."""
    with _tracer().start_as_current_span("GET /dashboard"):
        prefetch = asyncio.create_task(warm_cache())
        return await sync_to_async(dashboard_view)(prefetch)


def global_sync_thread() -> None:
    asyncio.run(handle_request())


# -- current-thread-executor -------------------------------------------------


def compute_totals() -> int:
    """Thread-sensitive work: must run on the main thread (the outer sync frame's)."""
    return 42


async def early_work() -> int:
    return await sync_to_async(compute_totals)()


async def wait_for_early(task: asyncio.Task[int]) -> int:
    return await task


def report_view(task: asyncio.Task[int]) -> int:
    """Runs on the main thread (its CurrentThreadExecutor) and waits for the early task."""
    return async_to_sync(wait_for_early)(task)


async def build_report() -> int:
    early = asyncio.create_task(early_work())
    return await sync_to_async(report_view)(early)


def current_thread_executor() -> None:
    async_to_sync(build_report)()


# -- thread-sensitive-context ------------------------------------------------


def save_audit_entry() -> None:
    """An ORM write: thread-sensitive, so it runs on the request context's thread."""


async def write_audit_log() -> None:
    await sync_to_async(save_audit_entry)()


async def wait_for_audit(audit: asyncio.Task[None]) -> None:
    await audit


def checkout_view(audit: asyncio.Task[None]) -> None:
    """The sync view, on the request's own thread; makes sure the audit entry is written."""
    async_to_sync(wait_for_audit)(audit)


async def handle_checkout() -> None:
    async with ThreadSensitiveContext():  # what Django's ASGI handler does per request
        audit = asyncio.create_task(write_audit_log())
        await sync_to_async(checkout_view)(audit)


def thread_sensitive_context() -> None:
    asyncio.run(handle_checkout())


# -- blocker (asgiref's xfail test) -------------------------------------------


async def blocker_main() -> None:
    event = threading.Event()

    async def trigger() -> None:
        await asyncio.sleep(0.05)
        await sync_to_async(event.set)()

    task = asyncio.create_task(trigger())
    await sync_to_async(event.wait)()
    await task


def blocker() -> None:
    asyncio.run(blocker_main())


# -- context-executor --------------------------------------------------------


def wait_for_stock(ready: threading.Event) -> None:
    """Blocks the context's only thread until stock arrives."""
    ready.wait()


def restock(ready: threading.Event) -> None:
    ready.set()


async def context_executor_main() -> None:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orders-db")
    ready = threading.Event()
    async with ThreadSensitiveContext(executor=pool):
        consumer = asyncio.create_task(sync_to_async(wait_for_stock)(ready))
        await asyncio.sleep(0.05)
        await sync_to_async(restock)(ready)
        await consumer


def context_executor() -> None:
    asyncio.run(context_executor_main())


# -- blocked-loop ------------------------------------------------------------


def warm_up() -> None:
    """A normal sync call first (the loop is now known to tracebridge)."""


async def slow_async_view() -> None:
    await sync_to_async(warm_up)()
    # A blocking call on the event loop: every task on it freezes.
    time.sleep(60)


def blocked_loop() -> None:
    asyncio.run(slow_async_view())


SCENARIOS: dict[str, tuple[str, Callable[[], None]]] = {
    "global-sync-thread": ("deadlock", global_sync_thread),
    "current-thread-executor": ("deadlock", current_thread_executor),
    "thread-sensitive-context": ("deadlock", thread_sensitive_context),
    "blocker": ("stall", blocker),
    "context-executor": ("stall", context_executor),
    "blocked-loop": ("blocked_loop", blocked_loop),
}
"""name -> (expected report kind, the code that hangs)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one scenario with the watchdog on; exit once it is reported (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m tracebridge.demo_deadlock", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS), nargs="?", default="global-sync-thread")
    parser.add_argument("--stall-threshold", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument("--loop-threshold", type=float, default=0.5, metavar="SECONDS")
    parser.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS", help="give up after this long")
    parser.add_argument("--json", action="store_true", help="also print the report as one JSON line on stdout")
    parser.add_argument("--export", action="append", metavar="SPEC", help="where the partial trace goes (default: none)")
    parser.add_argument("--stream", metavar="ADDRESS", help="also stream the flow model (for tracebridge top)")
    parser.add_argument("--stream-info", metavar="FILE", help="with --stream: write address and token here")
    parser.add_argument("--linger", type=float, default=0.0, metavar="SECONDS", help="stay alive after the report")
    args = parser.parse_args(argv)

    from . import watchdog
    from .configure import configure

    configure(export=args.export or (), service_name="tracebridge-deadlock-demo", set_global=False)
    if args.stream:
        from . import stream

        stream.serve(args.stream, info_file=args.stream_info)
    reported = threading.Event()

    def on_report(report: watchdog.Report) -> None:
        print(report.text, file=sys.stderr, flush=True)
        if args.json:
            print(json.dumps(_summary(report)), flush=True)
        reported.set()

    dog = watchdog.watch(
        stall_threshold=args.stall_threshold, loop_threshold=args.loop_threshold, on_report=on_report, log=False
    )

    def finish() -> None:
        # A daemon thread: the main thread is about to hang for good.
        if not reported.wait(args.timeout):
            print(f"tracebridge: no report within {args.timeout:g} s", file=sys.stderr, flush=True)
            os._exit(3)
        dog.wait_delivered(1, timeout=10)
        time.sleep(args.linger)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # the hung threads can never be joined

    threading.Thread(target=finish, name="tracebridge-demo-exit", daemon=True).start()
    SCENARIOS[args.scenario][1]()
    print("tracebridge: the scenario finished without hanging", file=sys.stderr, flush=True)
    return 4


def _summary(report: Any) -> dict[str, Any]:
    return {
        "kind": report.kind,
        "title": report.title,
        "lines": report.lines,
        "threads": report.threads,
        "tasks": report.tasks,
        "functions": report.functions,
        "cycle": report.cycle,
        "sites": report.sites,
        "stacks": [who for who, _ in report.stacks],
        "text": report.text,
        "latency_s": (report.detected_ns - report.formed_ns) / 1e9 if report.formed_ns else None,
    }


if __name__ == "__main__":
    sys.exit(main())
