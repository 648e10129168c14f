"""Tests for the live flow model: real bridge calls in flight, read back as snapshots."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import SpanRecorder

import tracebridge
from tracebridge import _telemetry, flow, semconv
from tracebridge.flow import (
    BLOCKED_ASYNC_TO_SYNC,
    KIND_CURRENT_THREAD,
    KIND_SINGLE_THREAD,
    RUNNING,
    RUNNING_SYNC,
    FinishedHop,
    FlowModel,
    FlowSnapshot,
    HopInfo,
    LocalAccess,
    ThreadRef,
    WorkInfo,
)
from tracebridge.local import Local
from tracebridge.sync import SyncToAsync, async_to_sync, sync_to_async
from tracebridge.timeout import timeout

WAIT_S = 10.0


@pytest.fixture
def model(spans: SpanRecorder) -> Iterator[FlowModel]:
    """The flow model on, tracing into the test's provider; off again afterwards."""
    flow.disable()
    model = flow.enable()
    try:
        yield model
    finally:
        flow.disable()


def ref(thread: threading.Thread) -> ThreadRef:
    return ThreadRef(thread.ident or 0, thread.name)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Yield to the loop until ``condition()`` holds (fail after WAIT_S)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def hold_sync_thread(started: threading.Event, release: threading.Event) -> threading.Thread:
    """Thread-sensitive work that holds the global sync thread until released."""
    started.set()
    release.wait(WAIT_S)
    return threading.current_thread()


def queued_behind() -> threading.Thread:
    return threading.current_thread()


async def test_flow_snapshot_queued_call_behind_running_one_on_global_sync_thread(model: FlowModel) -> None:
    """Tests that a snapshot shows the running and the queued call, their executor, tasks and the busy thread."""
    started, release = threading.Event(), threading.Event()
    loop = asyncio.get_running_loop()
    main = threading.current_thread()
    holder = asyncio.create_task(sync_to_async(hold_sync_thread)(started, release))
    try:
        await loop.run_in_executor(None, started.wait, WAIT_S)
        waiter = asyncio.create_task(sync_to_async(queued_behind)())
        await until(lambda: len(model.recorder.inflight) == 2, "two hops in flight")
        worker = next(t for t in threading.enumerate() if t.name.startswith("tracebridge-sync"))
        snapshot = model.snapshot()
    finally:
        release.set()
    assert await holder is worker and await waiter is worker

    running, queued = snapshot.hops
    executor_id = id(SyncToAsync.single_thread_executor)
    assert running == HopInfo(
        key=running.key, direction=semconv.DIRECTION_SYNC_TO_ASYNC,
        function=_telemetry.function_name(hold_sync_thread), caller=ref(main), caller_task=id(holder),
        thread=ref(worker), callee_task=None, executor=executor_id, route=semconv.EXECUTOR_GLOBAL_SYNC_THREAD,
        loop=id(loop), submit_ns=running.submit_ns, start_ns=running.start_ns, end_ns=0,
        trace_id=running.trace_id, span_id=running.span_id,
    )
    assert queued == HopInfo(
        key=queued.key, direction=semconv.DIRECTION_SYNC_TO_ASYNC,
        function=_telemetry.function_name(queued_behind), caller=ref(main), caller_task=id(waiter),
        thread=None, callee_task=None, executor=executor_id, route=semconv.EXECUTOR_GLOBAL_SYNC_THREAD,
        loop=id(loop), submit_ns=queued.submit_ns, start_ns=0, end_ns=0,
        trace_id=queued.trace_id, span_id=queued.span_id,
    )
    assert running.state == RUNNING and queued.state == flow.QUEUED
    assert running.submit_ns <= running.start_ns <= queued.submit_ns <= snapshot.taken_ns

    (executor,) = [e for e in snapshot.executors if e.key == executor_id]
    assert (executor.kind, executor.label, executor.threads, executor.max_workers) == (
        KIND_SINGLE_THREAD, "the global sync thread executor", (ref(worker),), 1,
    )
    assert executor.running == (WorkInfo(running.function, running.submit_ns, running.start_ns, running.key, main.name),)
    assert executor.queued == (WorkInfo(queued.function, queued.submit_ns, 0, queued.key, main.name),)

    busy = snapshot.thread(worker.ident or 0)
    assert busy is not None
    assert (busy.state, busy.frames) == (RUNNING_SYNC, (running.key,))
    assert busy.doing.startswith(f"running sync_to_async(`{running.function}`) for ")
    assert {task.name for task in snapshot.tasks} == {holder.get_name(), waiter.get_name()}
    assert snapshot.loop(id(loop)) is not None and snapshot.loop(id(loop)).thread == ref(main)  # type: ignore[union-attr]

    after = model.snapshot()
    assert after.hops == ()
    assert [(h.seq, h.function, h.thread, h.route, h.error) for h in after.finished] == [
        (1, running.function, worker.name, semconv.EXECUTOR_GLOBAL_SYNC_THREAD, ""),
        (2, queued.function, worker.name, semconv.EXECUTOR_GLOBAL_SYNC_THREAD, ""),
    ]
    assert after.finished[1].queue_wait_ms > 0 and after.finished_seq == 2 and after.skipped == 0


def test_flow_snapshot_async_to_sync_caller_blocked_serving_its_executor(model: FlowModel) -> None:
    """Tests that a thread in async_to_sync is shown blocked, serving its CurrentThreadExecutor, with the loop task."""
    inside, gate = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    async def wait_for_gate() -> None:
        seen["loop"] = asyncio.get_running_loop()
        seen["task"] = asyncio.current_task()
        seen["thread"] = threading.current_thread()
        inside.set()
        await asyncio.to_thread(gate.wait, WAIT_S)

    caller = threading.Thread(target=async_to_sync(wait_for_gate), name="request-thread")
    caller.start()
    try:
        assert inside.wait(WAIT_S)
        snapshot = model.snapshot()
    finally:
        gate.set()
        caller.join(WAIT_S)
    assert not caller.is_alive()

    (hop,) = [h for h in snapshot.hops if h.direction == semconv.DIRECTION_ASYNC_TO_SYNC]
    assert (hop.caller, hop.thread, hop.callee_task, hop.route, hop.loop, hop.state) == (
        ref(caller), ref(seen["thread"]), id(seen["task"]), semconv.LOOP_ROUTE_NEW_LOOP, id(seen["loop"]), RUNNING,
    )
    blocked = snapshot.thread(caller.ident or 0)
    assert blocked is not None and (blocked.state, blocked.frames) == (BLOCKED_ASYNC_TO_SYNC, (hop.key,))
    assert blocked.doing.startswith(f"blocked in async_to_sync(`{hop.function}`) for ")
    assert blocked.doing.endswith(
        f"waiting for task `{seen['task'].get_name()}` (test_flow_snapshot_async_to_sync_caller_blocked_serving_its_executor"
        ".<locals>.wait_for_gate via async_to_sync); serving its CurrentThreadExecutor"
    )
    executor = snapshot.executor(hop.executor)
    assert executor is not None
    assert (executor.kind, executor.threads, executor.serving, executor.broken) == (
        KIND_CURRENT_THREAD, (ref(caller),), True, False,
    )
    assert executor.label == "the CurrentThreadExecutor of thread `request-thread`"
    loop = snapshot.loop(id(seen["loop"]))
    assert loop is not None and loop.thread == ref(seen["thread"]) and loop.running


async def test_flow_snapshot_json_round_trip_is_equal(model: FlowModel) -> None:
    """Tests that a snapshot with hops, tasks, executors, finished hops and stacks survives to_json/from_json."""
    started, release = threading.Event(), threading.Event()
    await sync_to_async(queued_behind)()  # one finished hop
    holder = asyncio.create_task(sync_to_async(hold_sync_thread)(started, release))
    try:
        await asyncio.get_running_loop().run_in_executor(None, started.wait, WAIT_S)
        snapshot = model.snapshot(stacks_for=[threading.get_ident()])
    finally:
        release.set()
    await holder
    assert snapshot.hops and snapshot.finished and snapshot.stacks
    assert flow.from_json(flow.to_json(snapshot)) == snapshot
    assert "\n" not in flow.to_json(snapshot)


async def test_flow_finished_ring_is_bounded_and_counts_what_a_reader_missed(spans: SpanRecorder) -> None:
    """Tests that the finished-hop ring keeps the newest N and a reader's cursor sees how many it missed."""
    flow.disable()
    model = flow.enable(feed_capacity=8)
    try:
        for _ in range(20):
            await sync_to_async(queued_behind)()
        everything = model.snapshot(since=0)
        newest_three = model.snapshot(since=0, limit=3)
        nothing_new = model.snapshot(since=20)
    finally:
        flow.disable()
    assert [hop.seq for hop in everything.finished] == list(range(13, 21))
    assert (everything.finished_seq, everything.skipped) == (20, 12)
    assert [hop.seq for hop in newest_three.finished] == [18, 19, 20]
    assert newest_three.skipped == 17
    assert (nothing_new.finished, nothing_new.skipped, nothing_new.finished_seq) == ((), 0, 20)
    assert len(model.recorder.finished) == 8 and model.recorder.inflight == {}


async def test_flow_snapshot_limit_zero_reads_no_feed_but_counts_it(spans: SpanRecorder) -> None:
    """Tests that limit=0 (the watchdog's capture) builds no finished hops and counts them all as skipped."""
    flow.disable()
    model = flow.enable(feed_capacity=8)
    try:
        for _ in range(5):
            await sync_to_async(queued_behind)()
        snapshot = model.snapshot(since=0, limit=0)
    finally:
        flow.disable()
    assert (snapshot.finished, snapshot.finished_seq, snapshot.skipped) == ((), 5, 5)
    assert snapshot.locals == () and snapshot.timeouts == ()


async def test_flow_local_accesses_and_timeout_expiries_reach_their_rings(model: FlowModel) -> None:
    """Tests that Local accesses (names, never values) and timeout expiries appear in the snapshot."""
    state = Local()
    state.user = "secret-value"
    assert state.user == "secret-value"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        budget = timeout(0.01)
    with pytest.raises(TimeoutError):
        async with budget:
            await asyncio.sleep(5)
    tracebridge.flush()
    snapshot = model.snapshot()
    main = threading.current_thread().name
    assert [(a.operation, a.attribute, a.found, a.thread_critical, a.thread) for a in snapshot.locals] == [
        ("set", "user", True, False, main),
        ("get", "user", True, False, main),
    ]
    assert all(isinstance(a, LocalAccess) for a in snapshot.locals)
    assert "secret-value" not in flow.to_json(snapshot)
    (expiry,) = snapshot.timeouts
    assert (expiry.limit_ms, expiry.thread) == (10.0, main)
    assert expiry.elapsed_ms >= 10.0 and expiry.task.startswith(asyncio.current_task().get_name())  # type: ignore[union-attr]
    assert snapshot.side_seq == 3


async def test_flow_tracing_off_records_nothing() -> None:
    """Tests that with tracing off the bridges make no hops, so the model stays empty."""
    if _telemetry.get_tracer_provider() is not None:
        pytest.skip("a global tracer provider is installed in this process")
    flow.disable()
    model = flow.enable()
    try:
        await sync_to_async(queued_behind)()
        await asyncio.get_running_loop().run_in_executor(None, async_to_sync(asyncio.sleep), 0)
        snapshot = model.snapshot()
    finally:
        flow.disable()
    assert model.recorder.inflight == {} and len(model.recorder.finished) == 0
    assert (snapshot.hops, snapshot.finished, snapshot.finished_seq) == ((), (), 0)


async def test_flow_disable_uninstalls_the_feed(spans: SpanRecorder) -> None:
    """Tests that after disable() the bridges no longer report to the old recorder."""
    flow.disable()
    model = flow.enable()
    flow.disable()
    assert _telemetry.flow is None and flow.get_model() is None
    await sync_to_async(queued_behind)()
    assert len(model.recorder.finished) == 0


def test_flow_forgets_closed_loops(model: FlowModel) -> None:
    """Tests that loops async_to_sync made and closed leave the loop registry at the next snapshot."""
    for _ in range(30):
        async_to_sync(asyncio.sleep)(0)
    gc.collect()
    snapshot = model.snapshot()
    assert snapshot.loops == ()
    assert model.recorder.loops == {}
    assert [hop.direction for hop in snapshot.finished] == [semconv.DIRECTION_ASYNC_TO_SYNC] * 30


def test_flow_snapshot_dataclasses_are_frozen() -> None:
    """Tests that snapshots are immutable values (safe to hand to other threads)."""
    snapshot = FlowSnapshot(taken_ns=1, pid=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.pid = 3  # type: ignore[misc]
    assert FinishedHop.__slots__
