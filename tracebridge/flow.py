"""The live flow model: what every thread, loop, executor and bridge call is doing, now.

Turn it on with :func:`enable` (the watchdog, ``tracebridge top`` and the
streaming server do it for you).  From then on the bridges report each hop as
it opens, starts and closes (see :mod:`tracebridge._flow_recorder`), and
:meth:`FlowModel.snapshot` turns that, plus a read of each executor's queue, the
thread list and what each task awaits, into a :class:`FlowSnapshot`: plain,
frozen, JSON-round-trippable data (:mod:`tracebridge.flow_snapshot`) that the watchdog, the streaming server and
the TUI all read.  Nothing here imports a UI library.

The model sees hops only while tracing is on (a hop exists only then):
:func:`enable` installs a bare SDK provider if there is none.

Memory is bounded however long the process runs: hops in flight are as many as
the program has in flight; finished hops, Local accesses and timeout expiries
live in fixed-size rings (numbered, so a reader knows how many it missed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import _stacks, _telemetry, semconv
from ._flow_recorder import CALLEE_TASK, CALLER_LOOP, CALLER_TASK, EXECUTOR, FlowRecorder, FlowSpanProcessor
from .current_thread_executor import CurrentThreadExecutor

# The snapshot types and their JSON form live in flow_snapshot; re-exported
# here so ``from tracebridge.flow import HopInfo`` (and ``flow.QUEUED``) keep working.
from .flow_snapshot import (  # noqa: F401  (re-exports)
    BLOCKED_ASYNC_TO_SYNC,
    IDLE,
    KIND_CURRENT_THREAD,
    KIND_OTHER,
    KIND_POOL,
    KIND_SINGLE_THREAD,
    LOOP_BLOCKED,
    QUEUED,
    RETURNING,
    RUNNING,
    RUNNING_LOOP,
    RUNNING_SYNC,
    ExecutorInfo,
    FinishedHop,
    FlowSnapshot,
    HopInfo,
    LocalAccess,
    LoopInfo,
    ReportInfo,
    TaskInfo,
    ThreadInfo,
    ThreadRef,
    TimeoutExpiry,
    WorkInfo,
    _decode,
    _encode,
    from_json,
    to_json,
)

__all__ = [
    "ExecutorInfo",
    "FinishedHop",
    "FlowModel",
    "FlowSnapshot",
    "HopInfo",
    "LocalAccess",
    "LoopInfo",
    "ReportInfo",
    "TaskInfo",
    "ThreadInfo",
    "ThreadRef",
    "TimeoutExpiry",
    "WorkInfo",
    "disable",
    "enable",
    "from_json",
    "get_model",
    "to_json",
]


# ---------------------------------------------------------------------------
# The model: live objects in, snapshots out.


@dataclass
class Live:
    """The live objects behind one snapshot, by key (for stacks and span events; never sent anywhere)."""

    hops: dict[int, Any] = field(default_factory=dict)
    tasks: dict[int, asyncio.Task[Any]] = field(default_factory=dict)
    loops: dict[int, asyncio.AbstractEventLoop] = field(default_factory=dict)
    threads: dict[int, threading.Thread] = field(default_factory=dict)


class FlowModel:
    """Builds :class:`FlowSnapshot` objects from a :class:`FlowRecorder`.

    Thread-safe: any thread may call :meth:`snapshot` (the watchdog, the
    streaming server and the TUI do, each with its own cursor into the rings).
    It never takes a lock an application thread could be holding: queues are
    copied with single atomic operations, never under the executors' locks.
    """

    def __init__(self, recorder: FlowRecorder) -> None:
        self.recorder = recorder
        # Executors that ran hops lately (key -> (weak ref, last seen ns, route)),
        # so the executors panel does not blink empty between hops.  Guarded
        # by _lock (the model's own: no application thread ever takes it).
        self._lock = threading.Lock()
        self._seen_executors: dict[int, tuple[weakref.ref[Any], int, str]] = {}
        self._seen_cursor = 0
        # Written by the watchdog: loop key -> (lag_ms, blocked).
        self.loop_health: dict[int, tuple[float, bool]] = {}
        # Written by the watchdog: the reports to show (id -> ReportInfo).
        self.reports: dict[int, ReportInfo] = {}

    def snapshot(
        self,
        *,
        since: int = 0,
        limit: int = 200,
        side_since: int = 0,
        stacks_for: Iterable[int] = (),
    ) -> FlowSnapshot:
        """The state now, plus finished hops with ``seq > since`` (and side events ``> side_since``).

        Args:
            since: the reader's cursor into the finished-hop ring (its last ``finished_seq``).
            limit: at most this many finished hops (the newest); the rest count as ``skipped``.
            side_since: the reader's cursor into the Local/timeout rings (its last ``side_seq``).
            stacks_for: thread idents whose current stacks to include.
        """
        return self.capture(since=since, limit=limit, side_since=side_since, stacks_for=stacks_for)[0]

    def capture(
        self,
        *,
        since: int = 0,
        limit: int = 200,
        side_since: int = 0,
        stacks_for: Iterable[int] = (),
    ) -> tuple[FlowSnapshot, Live]:
        """:meth:`snapshot` and the live objects behind it (for the watchdog)."""
        now = time.time_ns()
        recorder = self.recorder
        if recorder.active:
            _attach_processor(recorder)  # a provider installed after enable() (configure() at start-up)
        live = Live()
        inflight = _copy_dict(recorder.inflight)

        threads_by_ident = {thread.ident: thread for thread in threading.enumerate() if thread.ident is not None}
        live.threads = threads_by_ident

        # Executors: every one a hop in flight names, and those that ran one lately.
        records = _copy_seq(recorder.finished)
        executors, seen_routes = self._recent_executors(records, now)
        for hop, entry in inflight.items():
            executor = entry[EXECUTOR]
            if executor is not None:
                executors[id(executor)] = executor
            elif hop.name == semconv.SYNC_TO_ASYNC and entry[CALLER_LOOP] is not None:
                loop = entry[CALLER_LOOP]
                executors[id(loop)] = loop  # the loop's default executor stands for itself
        span_to_hop = {}
        for hop in inflight:
            try:
                span_to_hop[hop.span.get_span_context().span_id] = hop
            except Exception:  # pragma: no cover - a hop without a span cannot exist
                continue

        # CurrentThreadExecutor queues (where a hop really landed: submit may fall through to an outer one).
        placement: dict[Any, int] = {}
        cte_work: dict[int, tuple[tuple[WorkInfo, ...], tuple[WorkInfo, ...]]] = {}
        for key, executor in executors.items():
            if isinstance(executor, CurrentThreadExecutor):
                cte_work[key] = _read_cte(executor, span_to_hop, placement)

        # Hops.
        hops: list[HopInfo] = []
        tasks: dict[int, asyncio.Task[Any]] = {}
        for hop, entry in inflight.items():
            s2a = hop.name == semconv.SYNC_TO_ASYNC
            executor = entry[EXECUTOR]
            caller_task = entry[CALLER_TASK] if s2a else None
            callee_task = entry[CALLEE_TASK] if not s2a else None
            if caller_task is not None:
                tasks[id(caller_task)] = caller_task
            if callee_task is not None:
                tasks[id(callee_task)] = callee_task
            if s2a:
                executor_key = placement.get(hop)
                if executor_key is None:
                    executor_key = id(executor) if executor is not None else _loop_key(entry[CALLER_LOOP])
                loop_key = _loop_key(entry[CALLER_LOOP])
            else:
                executor_key = id(executor) if executor is not None else None
                loop_key = _loop_key(entry[3]) or hop.loop_id
            thread = hop.thread
            context = hop.span.get_span_context()
            info = HopInfo(
                key=id(hop),
                direction=semconv.DIRECTION_SYNC_TO_ASYNC if s2a else semconv.DIRECTION_ASYNC_TO_SYNC,
                function=hop.function,
                caller=ThreadRef(hop.caller.ident or 0, hop.caller.name),
                caller_task=id(caller_task) if caller_task is not None else None,
                thread=ThreadRef(thread.ident or 0, thread.name) if thread is not None else None,
                callee_task=id(callee_task) if callee_task is not None else None,
                executor=executor_key,
                route=hop.route,
                loop=loop_key,
                submit_ns=hop.submit_ns,
                start_ns=hop.start_ns,
                end_ns=hop.end_ns,
                trace_id=f"{context.trace_id:032x}",
                span_id=f"{context.span_id:016x}",
            )
            hops.append(info)
            live.hops[info.key] = hop
        hops.sort(key=lambda h: h.submit_ns)

        # Tasks, following what each awaits (a few levels: enough for task -> task -> hop).
        task_infos = _read_tasks(tasks, live)
        for info in hops:
            task = task_infos.get(info.caller_task) if info.caller_task is not None else None
            if task is not None and task.coro == "SyncToAsync.__call__":
                # A task made straight from `sync_to_async(f)(...)`: name it after f.
                task_infos[task.key] = dataclasses.replace(task, coro=f"sync_to_async({_short(info.function)})")
            task = task_infos.get(info.callee_task) if info.callee_task is not None else None
            if task is not None and task.coro in _WRAPPERS:
                # The bridge's wrapper, caught running (no cr_await to follow): name the coroutine it runs.
                task_infos[task.key] = dataclasses.replace(task, coro=f"{_short(info.function)} via async_to_sync")

        # Loops.
        loops: list[LoopInfo] = []
        for key, (ref, ident, name) in list(recorder.loops.items()):
            loop = ref()
            if loop is None or loop.is_closed():
                if loop is None or not loop.is_running():
                    recorder.loops.pop(key, None)  # forget dead loops: the registry stays small
                    self.loop_health.pop(key, None)
                    continue
            live.loops[key] = loop
            lag_ms, blocked = self.loop_health.get(key, (0.0, False))
            loops.append(
                LoopInfo(key, ThreadRef(ident, name), loop.is_running(), loop.is_closed(), lag_ms, blocked)
            )
        loops_by_thread = {loop.thread.ident: loop for loop in loops if loop.running}

        # Executors, described.
        executor_infos = [
            _describe_executor(key, executor, hops, cte_work.get(key), seen_routes.get(key, ""))
            for key, executor in executors.items()
        ]

        # Threads, with their hop chains.
        frames: dict[int, list[HopInfo]] = {}
        for info in hops:
            if info.is_sync_to_async:
                if info.state == RUNNING and info.thread is not None:
                    frames.setdefault(info.thread.ident, []).append(info)
            elif not info.end_ns:
                frames.setdefault(info.caller.ident, []).append(info)
        hop_by_key = {hop.key: hop for hop in hops}
        thread_infos = [
            _describe_thread(thread, frames.get(ident, []), loops_by_thread.get(ident), hop_by_key, task_infos, now)
            for ident, thread in threads_by_ident.items()
        ]

        # Rings.
        finished, finished_seq, skipped = _read_finished(records, since, limit)
        locals_, timeouts, side_seq = _read_side(recorder.locals, recorder.timeouts, side_since, limit)

        stacks: dict[int, tuple[str, ...]] = {}
        wanted = set(stacks_for)
        if wanted:
            current = sys._current_frames()
            for ident in wanted:
                frame = current.get(ident)
                if frame is not None:
                    stacks[ident] = tuple(_stacks.format_frame_stack(frame))
            del current

        snapshot = FlowSnapshot(
            taken_ns=now,
            pid=os.getpid(),
            threads=tuple(sorted(thread_infos, key=lambda t: (t.state == IDLE, t.name))),
            loops=tuple(loops),
            executors=tuple(executor_infos),
            hops=tuple(hops),
            tasks=tuple(task_infos.values()),
            finished=finished,
            locals=locals_,
            timeouts=timeouts,
            reports=tuple(sorted(self.reports.values(), key=lambda r: r.id)),
            finished_seq=finished_seq,
            side_seq=side_seq,
            skipped=skipped,
            stacks=stacks,
        )
        return snapshot, live


    _SEEN_FOR_NS = 30_000_000_000  # an executor idle this long leaves the panel

    def _recent_executors(self, records: list[Any], now: int) -> tuple[dict[int, Any], dict[int, str]]:
        """Executors that ran a hop in the last 30 s and still exist (a finished CTE frame's do not)."""
        with self._lock:
            seen = self._seen_executors
            for record in records:
                if record[0] <= self._seen_cursor:
                    continue
                executor = record[4]
                if executor is not None and not isinstance(executor, CurrentThreadExecutor):
                    try:
                        seen[id(executor)] = (weakref.ref(executor), record[2], str(record[1].executor_kind or ""))
                    except TypeError:  # not weakly referenceable: shown only while in use
                        pass
            if records:
                self._seen_cursor = max(self._seen_cursor, records[-1][0])
            alive: dict[int, Any] = {}
            routes: dict[int, str] = {}
            for key, (ref, last, route) in list(seen.items()):
                executor = ref()
                if executor is None or now - last > self._SEEN_FOR_NS or getattr(executor, "_shutdown", False):
                    del seen[key]
                    continue
                alive[key] = executor
                routes[key] = route
            return alive, routes


def _loop_key(loop: Any) -> int | None:
    return id(loop) if loop is not None else None


def _copy_dict(mapping: dict[Any, Any]) -> dict[Any, Any]:
    # dict.copy runs in C without releasing the GIL: atomic against the bridges' writes.
    for _ in range(10):
        try:
            return mapping.copy()
        except RuntimeError:  # pragma: no cover - defensive
            continue
    return {}  # pragma: no cover


def _copy_seq(items: Any) -> list[Any]:
    for _ in range(10):
        try:
            return list(items)
        except RuntimeError:  # mutated while copied (not expected under the GIL)
            continue
    return []  # pragma: no cover


def _read_cte(
    executor: CurrentThreadExecutor, span_to_hop: dict[int, Any], placement: dict[Any, int]
) -> tuple[tuple[WorkInfo, ...], tuple[WorkInfo, ...]]:
    """(running, queued) of a CurrentThreadExecutor, without taking its lock."""
    key = id(executor)
    queued: list[WorkInfo] = []
    for item in _copy_seq(executor._work_items):
        queued.append(_work_info(item, span_to_hop, placement, key))
    running: list[WorkInfo] = []
    item = executor._running
    if item is not None:
        running.append(_work_info(item, span_to_hop, placement, key))
    return tuple(running), tuple(queued)


def _work_info(item: Any, span_to_hop: dict[int, Any], placement: dict[Any, int], key: int) -> WorkInfo:
    parent = item.parent
    hop = span_to_hop.get(_telemetry.resolve_parent(parent).span_id) if parent is not None else None
    if hop is not None:
        placement[hop] = key
    function = item.function or _telemetry.function_name(item.fn)
    queued_by = item.queued_by
    return WorkInfo(
        function=function,
        submit_ns=item.submitted_ns,
        start_ns=item.started_ns or 0,
        hop=id(hop) if hop is not None else None,
        queued_by=queued_by.name if queued_by is not None else "",
    )


def _describe_executor(
    key: int,
    executor: Any,
    hops: list[HopInfo],
    cte_work: tuple[tuple[WorkInfo, ...], tuple[WorkInfo, ...]] | None,
    seen_route: str = "",
) -> ExecutorInfo:
    mine = [hop for hop in hops if hop.is_sync_to_async and hop.executor == key]
    if isinstance(executor, CurrentThreadExecutor):
        owner = executor._thread
        running, queued = cte_work or ((), ())
        serving = any(
            not hop.is_sync_to_async and not hop.end_ns and hop.executor == key for hop in hops
        )
        return ExecutorInfo(
            key=key,
            kind=KIND_CURRENT_THREAD,
            label=f"the CurrentThreadExecutor of thread `{owner.name}`",
            threads=(ThreadRef(owner.ident or 0, owner.name),),
            max_workers=1,
            running=running,
            queued=queued,
            serving=serving,
            broken=executor._broken,
        )
    running = tuple(
        WorkInfo(hop.function, hop.submit_ns, hop.start_ns, hop.key, hop.caller.name) for hop in mine if hop.state != QUEUED
    )
    queued = tuple(WorkInfo(hop.function, hop.submit_ns, 0, hop.key, hop.caller.name) for hop in mine if hop.state == QUEUED)
    if isinstance(executor, asyncio.AbstractEventLoop):
        pool = getattr(executor, "_default_executor", None)
        workers = tuple(_copy_seq(pool._threads)) if pool is not None else ()
        max_workers = pool._max_workers if pool is not None else 0
        return ExecutorInfo(
            key=key,
            kind=KIND_POOL,
            label=f"the default executor of loop {key:#x}",
            threads=tuple(ThreadRef(t.ident or 0, t.name) for t in workers),
            max_workers=max_workers,
            running=running,
            queued=queued,
        )
    if isinstance(executor, ThreadPoolExecutor):
        workers = tuple(_copy_seq(executor._threads))
        max_workers = executor._max_workers
        kind = KIND_SINGLE_THREAD if max_workers == 1 else KIND_POOL
        # Which rule chose it says what it is (the hop's executor kind).
        routes = {hop.route for hop in mine} | {seen_route}
        from .sync import SyncToAsync  # late: sync imports nothing of ours back

        if executor is SyncToAsync.single_thread_executor:
            label = "the global sync thread executor"
        elif semconv.EXECUTOR_THREAD_SENSITIVE_CONTEXT in routes:
            label = "the ThreadSensitiveContext's single-thread executor"
        else:
            label = f"executor {type(executor).__name__}(max_workers={max_workers}) {key:#x}"
        threads = tuple(ThreadRef(t.ident or 0, t.name) for t in workers)
        if not threads:
            threads = tuple({hop.thread for hop in mine if hop.thread is not None})
        return ExecutorInfo(key=key, kind=kind, label=label, threads=threads, max_workers=max_workers,
                            running=running, queued=queued)
    threads = tuple({hop.thread for hop in mine if hop.thread is not None})
    return ExecutorInfo(
        key=key,
        kind=KIND_OTHER,
        label=f"executor {type(executor).__name__} {key:#x}",
        threads=threads,
        max_workers=0,
        running=running,
        queued=queued,
    )


def _describe_thread(
    thread: threading.Thread,
    frames: list[HopInfo],
    loop: LoopInfo | None,
    hop_by_key: dict[int, HopInfo],
    tasks: dict[int, TaskInfo],
    now: int,
) -> ThreadInfo:
    ident = thread.ident or 0
    frames.sort(key=lambda hop: hop.start_ns if hop.is_sync_to_async else hop.submit_ns)
    keys = tuple(hop.key for hop in frames)
    loop_key = loop.key if loop is not None else None
    if frames:
        inner = frames[-1]
        if inner.is_sync_to_async:
            since = inner.start_ns
            doing = f"running {inner.label()} for {_age(now, since)}"
            waiter = tasks.get(inner.caller_task) if inner.caller_task is not None else None
            if waiter is not None:
                doing += f" for {waiter.label()}"
            return ThreadInfo(ident, thread.name, thread.daemon, RUNNING_SYNC, doing, keys, loop_key, since)
        since = inner.submit_ns
        target = tasks.get(inner.callee_task) if inner.callee_task is not None else None
        waits = target.label() if target is not None else "its coroutine to start"
        doing = f"blocked in {inner.label()} for {_age(now, since)}, waiting for {waits}; serving its CurrentThreadExecutor"
        return ThreadInfo(ident, thread.name, thread.daemon, BLOCKED_ASYNC_TO_SYNC, doing, keys, loop_key, since)
    if loop is not None:
        if loop.blocked:
            doing = f"event loop {loop.key:#x} stuck for {loop.lag_ms / 1000:.1f} s in a sync call"
            return ThreadInfo(ident, thread.name, thread.daemon, LOOP_BLOCKED, doing, keys, loop_key)
        return ThreadInfo(ident, thread.name, thread.daemon, RUNNING_LOOP, f"running event loop {loop.key:#x}", keys, loop_key)
    return ThreadInfo(ident, thread.name, thread.daemon, IDLE, "not in a bridge call", keys, loop_key)


def _age(now: int, since: int) -> str:
    seconds = max(0.0, (now - since) / 1e9)
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _read_tasks(tasks: dict[int, asyncio.Task[Any]], live: Live) -> dict[int, TaskInfo]:
    infos: dict[int, TaskInfo] = {}
    todo = list(tasks.values())
    depth = 0
    while todo and depth < 6:
        next_round: list[asyncio.Task[Any]] = []
        for task in todo:
            key = id(task)
            if key in infos:
                continue
            awaited = _awaited_tasks(task)
            live.tasks[key] = task
            infos[key] = TaskInfo(
                key=key,
                name=_safe(task.get_name, "?"),
                coro=_coro_name(task),
                loop=_loop_key(_safe(task.get_loop, None)),
                done=task.done(),
                awaits=tuple(id(t) for t in awaited),
            )
            next_round.extend(t for t in awaited if id(t) not in infos)
        todo = next_round
        depth += 1
    return infos


def _awaited_tasks(task: asyncio.Task[Any]) -> list[asyncio.Task[Any]]:
    """The tasks ``task`` is suspended on right now (through ``await`` or ``gather``)."""
    if task.done():
        return []
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is None:
        return []
    if isinstance(waiter, asyncio.Task):
        return [waiter]
    children = getattr(waiter, "_children", None)  # asyncio.gather's future
    if children:
        return [child for child in _copy_seq(children) if isinstance(child, asyncio.Task) and not child.done()]
    return []


# The bridge's own coroutine wrappers around an async_to_sync callee.
_WRAPPERS = frozenset({"AsyncToSync.main_wrap", "AsyncToSync._run_in_new_loop.<locals>.new_loop_wrap"})


def _coro_name(task: asyncio.Task[Any]) -> str:
    coro = _safe(task.get_coro, None)
    name = getattr(coro, "__qualname__", None) or type(coro).__name__
    depth = 0
    while name in _WRAPPERS and depth < 4:
        # Name the user's coroutine the wrapper awaits (an attribute read of a
        # suspended coroutine; no frame is touched).
        coro = getattr(coro, "cr_await", None)
        inner = getattr(coro, "__qualname__", None)
        if not inner:
            return name
        name = inner
        depth += 1
    return f"{name} via async_to_sync" if depth else name


def _short(function: str) -> str:
    """``QualName`` of a ``module.QualName`` (best effort: module names have no ``<locals>``)."""
    head, _, tail = function.partition(".<locals>.")
    qualname = head.rsplit(".", 1)[-1]
    return f"{qualname}.<locals>.{tail}" if tail else qualname


def _safe(call: Any, default: Any) -> Any:
    try:
        return call()
    except Exception:
        return default


def _read_finished(ring: Any, since: int, limit: int) -> tuple[tuple[FinishedHop, ...], int, int]:
    records = _copy_seq(ring)
    if not records:
        return (), since, 0
    newest = records[-1][0]
    fresh = [record for record in records if record[0] > since]
    skipped = max(0, newest - since - len(fresh))  # overwritten in the ring before we read them
    if len(fresh) > limit:
        skipped += len(fresh) - limit
        fresh = _newest(fresh, limit)
    hops = []
    for seq, hop, close, error, _executor in fresh:
        submit, start, end = hop.submit_ns, hop.start_ns, hop.end_ns
        thread = hop.thread
        hops.append(
            FinishedHop(
                seq=seq,
                direction=hop.direction,
                function=hop.function,
                caller=hop.caller.name,
                thread=thread.name if thread is not None else "",
                route=hop.route,
                queue_wait_ms=(start - submit) / 1e6 if start else (close - submit) / 1e6,
                run_ms=(end - start) / 1e6 if start and end else 0.0,
                total_ms=(close - submit) / 1e6,
                error=_error_name(error) if error is not None else "",
                end_ns=close,
            )
        )
    return tuple(hops), max(newest, since), skipped


def _newest(records: list[Any], limit: int) -> list[Any]:
    """The last ``limit`` records; none for 0 (``records[-0:]`` would be all of them)."""
    return records[-limit:] if limit > 0 else []


def _error_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _read_side(
    locals_ring: Any, timeouts_ring: Any, since: int, limit: int
) -> tuple[tuple[LocalAccess, ...], tuple[TimeoutExpiry, ...], int]:
    local_records = _newest([record for record in _copy_seq(locals_ring) if record[0] > since], limit)
    timeout_records = _newest([record for record in _copy_seq(timeouts_ring) if record[0] > since], limit)
    newest = since
    if local_records:
        newest = max(newest, local_records[-1][0])
    if timeout_records:
        newest = max(newest, timeout_records[-1][0])
    return (
        tuple(LocalAccess(*record) for record in local_records),
        tuple(TimeoutExpiry(*record) for record in timeout_records),
        newest,
    )


# ---------------------------------------------------------------------------
# Switching it on.

_lock = threading.RLock()  # enable() holds it while attaching a processor
_model: FlowModel | None = None
# provider -> the processor enable() added to it (weak: providers come and go in tests).
_processors: weakref.WeakKeyDictionary[Any, FlowSpanProcessor] = weakref.WeakKeyDictionary()


def enable(*, feed_capacity: int = 4096) -> FlowModel:
    """Turn the flow model on (idempotent) and return it.

    Installs the recorder as the bridges' live feed and, when tracebridge's
    provider is an SDK ``TracerProvider``, adds a :class:`FlowSpanProcessor` to
    it (Local accesses, timeout expiries and open real spans; a provider set
    later, e.g. by ``tracebridge.configure()``, gets one at the next snapshot).

    **The model sees bridge calls only while tracing is on** (a hop exists only
    then): call ``tracebridge.configure()`` (or install a provider) too.
    """
    global _model
    with _lock:
        if _model is None or _telemetry.flow is not _model.recorder:
            recorder = FlowRecorder(feed_capacity=feed_capacity)
            _model = FlowModel(recorder)
            _telemetry.flow = recorder
        _attach_processor(_model.recorder)
        return _model


def _attach_processor(recorder: FlowRecorder) -> None:
    """Give tracebridge's current SDK provider a FlowSpanProcessor feeding ``recorder`` (once per provider)."""
    provider = _telemetry.get_tracer_provider()
    if provider is None:
        return
    with _lock:
        try:
            processor = _processors.get(provider)
            if processor is not None:
                processor.recorder = recorder  # a provider cannot drop a processor: re-point it
                return
            add = getattr(provider, "add_span_processor", None)
            if add is not None:
                processor = FlowSpanProcessor(recorder)
                add(processor)
                _processors[provider] = processor
        except TypeError:  # a provider that cannot be weakly referenced: feed it no spans
            return


def disable() -> None:
    """Turn the flow model off: the bridges stop reporting (the model's last state is dropped)."""
    global _model
    with _lock:
        if _model is not None:
            _model.recorder.active = False
        _telemetry.flow = None
        _model = None


def get_model() -> FlowModel | None:
    """The flow model, if :func:`enable` turned it on."""
    return _model
