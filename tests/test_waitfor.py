"""Tests for the wait-for graph, built from synthetic flow snapshots (no threads involved)."""

from __future__ import annotations

from tracebridge import waitfor
from tracebridge.flow import (
    BLOCKED_ASYNC_TO_SYNC,
    IDLE,
    KIND_CURRENT_THREAD,
    KIND_POOL,
    KIND_SINGLE_THREAD,
    RUNNING_LOOP,
    RUNNING_SYNC,
    ExecutorInfo,
    FlowSnapshot,
    LoopInfo,
    TaskInfo,
    ThreadInfo,
)
from tracebridge.waitfor import Edge, hop_node, task_node, thread_node

from flow_samples import GLOBAL, LOOP, MAIN, SYNC, a2s, fields, global_sync_thread_deadlock, s2a


def test_waitfor_global_sync_thread_deadlock_is_one_cycle_from_the_thread() -> None:
    """Tests that the demo's deadlock yields exactly one cycle, starting at the blocked thread, edge by edge."""
    graph = waitfor.build(global_sync_thread_deadlock())
    assert graph.cycles() == [
        [
            Edge(thread_node(2), hop_node(11), waitfor.BLOCKED_IN),
            Edge(hop_node(11), task_node(1002), waitfor.RUNS_AS),
            Edge(task_node(1002), task_node(1001), waitfor.AWAITS_TASK),
            Edge(task_node(1001), hop_node(12), waitfor.AWAITS_HOP),
            Edge(hop_node(12), thread_node(2), waitfor.QUEUED_BEHIND),
        ]
    ]
    # The view's own task waits on the cycle without being part of it.
    assert graph.chain(task_node(1000))[0] == Edge(task_node(1000), hop_node(10), waitfor.AWAITS_HOP)


def test_waitfor_current_thread_executor_serving_its_queue_has_no_edge() -> None:
    """Tests that a call queued on the CurrentThreadExecutor its thread is serving right now waits on nobody."""
    snapshot = global_sync_thread_deadlock()
    # The same call, but queued on the executor the blocked thread serves (the healthy nested case).
    load = s2a(12, "app.load_settings", task=1001, executor=700)
    snapshot = FlowSnapshot(**{**fields(snapshot), "hops": (snapshot.hops[0], snapshot.hops[1], load)})
    graph = waitfor.build(snapshot)
    assert graph.cycles() == []
    assert graph.out(hop_node(12)) == []


def test_waitfor_outer_current_thread_executor_queue_waits_on_the_thread() -> None:
    """Tests that a call queued on an outer CurrentThreadExecutor waits on its thread, now in a newer frame."""
    outer = a2s(20, "app.outer", MAIN, executor=800, callee_task=None)
    view = s2a(21, "app.view", task=2000, executor=800, start=400, thread=MAIN)
    inner = a2s(22, "app.inner", MAIN, executor=801, callee_task=2001)
    queued = s2a(23, "app.compute", task=2002, executor=800)
    snapshot = FlowSnapshot(
        taken_ns=1_000,
        pid=1,
        threads=(ThreadInfo(1, "MainThread", False, BLOCKED_ASYNC_TO_SYNC, "blocked", (20, 21, 22)),),
        executors=(
            ExecutorInfo(800, KIND_CURRENT_THREAD, "outer", (MAIN,), 1),
            ExecutorInfo(801, KIND_CURRENT_THREAD, "inner", (MAIN,), 1, serving=True),
        ),
        hops=(outer, view, inner, queued),
        tasks=(
            TaskInfo(2000, "Task-1", "outer", LOOP, False),
            TaskInfo(2001, "Task-3", "inner via async_to_sync", LOOP, False, awaits=(2002,)),
            TaskInfo(2002, "Task-2", "early_work", LOOP, False),
        ),
    )
    cycles = waitfor.build(snapshot).cycles()
    assert [[edge.why for edge in cycle] for cycle in cycles] == [
        [waitfor.BLOCKED_IN, waitfor.RUNS_AS, waitfor.AWAITS_TASK, waitfor.AWAITS_HOP, waitfor.QUEUED_BEHIND]
    ]
    assert cycles[0][0].source == thread_node(1)


def test_waitfor_head_of_line_blocking_is_a_chain_to_a_running_thread() -> None:
    """Tests that a call queued behind a running one is a chain ending at the busy thread, not a cycle."""
    running = s2a(30, "threading.Event.wait", task=3000, executor=GLOBAL, start=150, thread=SYNC)
    queued = s2a(31, "threading.Event.set", task=3001, executor=GLOBAL)
    snapshot = FlowSnapshot(
        taken_ns=1_000,
        pid=1,
        threads=(ThreadInfo(2, "tracebridge-sync_0", True, RUNNING_SYNC, "running", (30,)),),
        executors=(ExecutorInfo(GLOBAL, KIND_SINGLE_THREAD, "global", (SYNC,), 1),),
        hops=(running, queued),
        tasks=(TaskInfo(3000, "Task-1", "main", LOOP, False), TaskInfo(3001, "Task-2", "trigger", LOOP, False)),
    )
    graph = waitfor.build(snapshot)
    assert graph.cycles() == []
    assert graph.chain(task_node(3001)) == [
        Edge(task_node(3001), hop_node(31), waitfor.AWAITS_HOP),
        Edge(hop_node(31), thread_node(2), waitfor.QUEUED_BEHIND),
    ]
    assert graph.out(thread_node(2)) == []  # running sync code: what it waits on is invisible


def test_waitfor_idle_single_thread_and_multi_worker_pool_add_no_edge() -> None:
    """Tests that a call queued on an idle one-thread executor or on a multi-worker pool waits on no thread."""
    idle = s2a(40, "app.a", task=4000, executor=GLOBAL)
    pooled = s2a(41, "app.b", task=4001, executor=LOOP)
    snapshot = FlowSnapshot(
        taken_ns=1_000,
        pid=1,
        threads=(ThreadInfo(2, "tracebridge-sync_0", True, IDLE, "not in a bridge call"),),
        executors=(
            ExecutorInfo(GLOBAL, KIND_SINGLE_THREAD, "global", (SYNC,), 1),
            ExecutorInfo(LOOP, KIND_POOL, "default", (SYNC,), 8),
        ),
        hops=(idle, pooled),
        tasks=(TaskInfo(4000, "Task-1", "a", LOOP, False), TaskInfo(4001, "Task-2", "b", LOOP, False)),
    )
    graph = waitfor.build(snapshot)
    assert graph.out(hop_node(40)) == [] and graph.out(hop_node(41)) == []


def test_waitfor_blocked_loop_tasks_wait_on_its_thread() -> None:
    """Tests that tasks on a blocked loop wait on the loop's thread, and done tasks wait on nothing."""
    snapshot = FlowSnapshot(
        taken_ns=1_000,
        pid=1,
        threads=(ThreadInfo(1, "MainThread", False, RUNNING_LOOP, "loop", (), LOOP),),
        loops=(LoopInfo(LOOP, MAIN, True, False, lag_ms=2000.0, blocked=True),),
        tasks=(TaskInfo(5000, "Task-1", "view", LOOP, False), TaskInfo(5001, "Task-2", "old", LOOP, True)),
    )
    graph = waitfor.build(snapshot)
    assert graph.out(task_node(5000)) == [Edge(task_node(5000), thread_node(1), waitfor.LOOP_STUCK)]
    assert graph.out(task_node(5001)) == []


def test_waitfor_finished_callee_and_done_tasks_break_the_cycle() -> None:
    """Tests that a cycle disappears once the awaited task is done (the state a resolving hang passes through)."""
    snapshot = global_sync_thread_deadlock()
    tasks = tuple(
        TaskInfo(t.key, t.name, t.coro, t.loop, True, t.awaits) if t.key == 1001 else t for t in snapshot.tasks
    )
    graph = waitfor.build(FlowSnapshot(**{**fields(snapshot), "tasks": tasks}))
    assert graph.cycles() == []
