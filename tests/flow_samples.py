"""Synthetic flow snapshots shared by the wait-for graph and watchdog tests."""

from __future__ import annotations

from tracebridge import semconv
from tracebridge.flow import (
    BLOCKED_ASYNC_TO_SYNC,
    KIND_CURRENT_THREAD,
    KIND_SINGLE_THREAD,
    RUNNING_LOOP,
    ExecutorInfo,
    FlowSnapshot,
    HopInfo,
    LoopInfo,
    TaskInfo,
    ThreadInfo,
    ThreadRef,
)

MAIN = ThreadRef(1, "MainThread")
SYNC = ThreadRef(2, "tracebridge-sync_0")
S2A = semconv.DIRECTION_SYNC_TO_ASYNC
A2S = semconv.DIRECTION_ASYNC_TO_SYNC
LOOP = 500
GLOBAL = 600


def s2a(key: int, function: str, task: int, executor: int, *, start: int = 0, thread: ThreadRef | None = None) -> HopInfo:
    return HopInfo(
        key=key, direction=S2A, function=function, caller=MAIN, caller_task=task, thread=thread, callee_task=None,
        executor=executor, route=semconv.EXECUTOR_GLOBAL_SYNC_THREAD, loop=LOOP, submit_ns=100 + key,
        start_ns=start, end_ns=0,
    )


def a2s(key: int, function: str, caller: ThreadRef, executor: int, *, callee_task: int | None) -> HopInfo:
    return HopInfo(
        key=key, direction=A2S, function=function, caller=caller, caller_task=None,
        thread=MAIN if callee_task else None, callee_task=callee_task, executor=executor,
        route=semconv.LOOP_ROUTE_PARENT_LOOP, loop=LOOP, submit_ns=200 + key, start_ns=300 if callee_task else 0,
        end_ns=0,
    )


def global_sync_thread_deadlock() -> FlowSnapshot:
    """The demo's deadlock: view on the global thread waits for a task queued behind it."""
    view = s2a(10, "app.view", task=1000, executor=GLOBAL, start=150, thread=SYNC)
    wait = a2s(11, "app.wait_for_prefetch", SYNC, executor=700, callee_task=1002)
    load = s2a(12, "app.load_settings", task=1001, executor=GLOBAL)
    return FlowSnapshot(
        taken_ns=1_000,
        pid=1,
        threads=(
            ThreadInfo(1, "MainThread", False, RUNNING_LOOP, "running event loop", (), LOOP),
            ThreadInfo(2, "tracebridge-sync_0", True, BLOCKED_ASYNC_TO_SYNC, "blocked", (10, 11)),
        ),
        loops=(LoopInfo(LOOP, MAIN, True, False),),
        executors=(
            ExecutorInfo(GLOBAL, KIND_SINGLE_THREAD, "the global sync thread executor", (SYNC,), 1),
            ExecutorInfo(700, KIND_CURRENT_THREAD, "the CurrentThreadExecutor of thread `tracebridge-sync_0`", (SYNC,), 1),
        ),
        hops=(view, wait, load),
        tasks=(
            TaskInfo(1000, "Task-1", "handle_request", LOOP, False),
            TaskInfo(1001, "Task-2", "warm_cache", LOOP, False),
            TaskInfo(1002, "Task-3", "wait_for_prefetch via async_to_sync", LOOP, False, awaits=(1001,)),
        ),
    )


def fields(snapshot: FlowSnapshot) -> dict[str, object]:
    return {name: getattr(snapshot, name) for name in snapshot.__dataclass_fields__}
