"""The flow model's snapshot: plain, frozen, JSON-round-trippable data.

:meth:`tracebridge.flow.FlowModel.snapshot` builds these; the watchdog, the
streaming server and the TUI read them (the TUI possibly in another process,
from the JSON lines :func:`to_json` writes).  Nothing here touches a live
thread, loop or executor, so any thread may hold a snapshot as long as it likes.

Everything here is also importable from :mod:`tracebridge.flow`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import semconv

__all__ = [
    "BLOCKED_ASYNC_TO_SYNC",
    "ExecutorInfo",
    "FinishedHop",
    "FlowSnapshot",
    "HopInfo",
    "IDLE",
    "KIND_CURRENT_THREAD",
    "KIND_OTHER",
    "KIND_POOL",
    "KIND_SINGLE_THREAD",
    "LOOP_BLOCKED",
    "LocalAccess",
    "LoopInfo",
    "QUEUED",
    "RETURNING",
    "RUNNING",
    "RUNNING_LOOP",
    "RUNNING_SYNC",
    "ReportInfo",
    "TaskInfo",
    "ThreadInfo",
    "ThreadRef",
    "TimeoutExpiry",
    "WorkInfo",
    "from_json",
    "to_json",
]

# Executor kinds (ExecutorInfo.kind).
KIND_CURRENT_THREAD = "current_thread"
KIND_SINGLE_THREAD = "single_thread"
KIND_POOL = "pool"
KIND_OTHER = "other"

# Hop states (HopInfo.state).
QUEUED = "queued"
RUNNING = "running"
RETURNING = "returning"

# Thread states (ThreadInfo.state).
IDLE = "idle"
RUNNING_SYNC = "running_sync"
BLOCKED_ASYNC_TO_SYNC = "blocked_async_to_sync"
RUNNING_LOOP = "running_loop"
LOOP_BLOCKED = "loop_blocked"


# ---------------------------------------------------------------------------
# The snapshot: plain data.


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """A thread, by ``threading.get_ident()`` and name."""

    ident: int
    name: str


@dataclass(frozen=True, slots=True)
class HopInfo:
    """One ``sync_to_async`` or ``async_to_sync`` call in flight."""

    key: int
    """Unique among hops in flight (``id()`` of the hop)."""
    direction: str
    """``semconv.DIRECTION_SYNC_TO_ASYNC`` or ``semconv.DIRECTION_ASYNC_TO_SYNC``."""
    function: str
    caller: ThreadRef
    """The thread that made the call (a loop thread for ``sync_to_async``)."""
    caller_task: int | None
    """``sync_to_async``: key of the task awaiting the call."""
    thread: ThreadRef | None
    """The thread the callee runs on, once it started (for ``async_to_sync``: the loop's)."""
    callee_task: int | None
    """``async_to_sync``: key of the task the coroutine runs as, once it started."""
    executor: int | None
    """``sync_to_async``: key of the executor whose queue holds it; ``async_to_sync``: the caller's CurrentThreadExecutor."""
    route: str
    """``semconv.EXECUTOR_*`` (``sync_to_async``) or ``semconv.LOOP_ROUTE_*`` (``async_to_sync``), if known."""
    loop: int | None
    """The loop involved: the caller's (``sync_to_async``) or the coroutine's (``async_to_sync``)."""
    submit_ns: int
    start_ns: int
    """0 while queued."""
    end_ns: int
    """0 until the callee finished."""
    trace_id: str = ""
    span_id: str = ""

    @property
    def state(self) -> str:
        """``queued``, ``running`` or ``returning`` (callee done, caller not yet resumed)."""
        if not self.start_ns:
            return QUEUED
        return RUNNING if not self.end_ns else RETURNING

    @property
    def is_sync_to_async(self) -> bool:
        return self.direction == semconv.DIRECTION_SYNC_TO_ASYNC

    def age_s(self, now_ns: int) -> float:
        """Seconds since the call was made."""
        return max(0.0, (now_ns - self.submit_ns) / 1e9)

    def label(self) -> str:
        """``sync_to_async(`module.f`)``: the call in plain words."""
        return f"{self.direction}(`{self.function}`)"


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """An asyncio task taking part in a hop (or awaited by one that does)."""

    key: int
    name: str
    coro: str
    """Qualified name of the task's coroutine."""
    loop: int | None
    done: bool
    awaits: tuple[int, ...] = ()
    """Keys of the tasks it is waiting for right now (directly or through ``gather``)."""

    def label(self) -> str:
        return f"task `{self.name}` ({self.coro})"


@dataclass(frozen=True, slots=True)
class WorkInfo:
    """One work item queued on, or run by, an executor."""

    function: str
    submit_ns: int
    start_ns: int = 0
    hop: int | None = None
    """Key of the ``sync_to_async`` hop this item carries, if any."""
    queued_by: str = ""


@dataclass(frozen=True, slots=True)
class ExecutorInfo:
    """An executor some hop in flight uses, with what it runs and what waits in it."""

    key: int
    kind: str
    """``current_thread``, ``single_thread`` (a one-worker pool), ``pool`` or ``other``."""
    label: str
    """Plain words, e.g. "the global sync thread executor"."""
    threads: tuple[ThreadRef, ...]
    max_workers: int
    running: tuple[WorkInfo, ...] = ()
    queued: tuple[WorkInfo, ...] = ()
    serving: bool = False
    """CurrentThreadExecutor: its thread waits in ``async_to_sync`` for this executor's work."""
    broken: bool = False
    """CurrentThreadExecutor: its frame finished; new work falls through to an outer one."""


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """A live thread and what it is doing in bridge terms."""

    ident: int
    name: str
    daemon: bool
    state: str
    """``idle``, ``running_sync``, ``blocked_async_to_sync``, ``running_loop`` or ``loop_blocked``."""
    doing: str
    """Plain words."""
    frames: tuple[int, ...] = ()
    """Keys of the hops this thread is inside, outermost first (the hop chain)."""
    loop: int | None = None
    """The event loop this thread runs, if any."""
    since_ns: int = 0
    """When the current state began (0: unknown)."""


@dataclass(frozen=True, slots=True)
class LoopInfo:
    """An event loop the model has seen."""

    key: int
    thread: ThreadRef
    running: bool
    closed: bool
    lag_ms: float = 0.0
    """How long the watchdog's heartbeat has waited (or last waited) for the loop to run it."""
    blocked: bool = False
    """The heartbeat has waited longer than the watchdog's loop threshold."""


@dataclass(frozen=True, slots=True)
class FinishedHop:
    """One hop that completed (the scrolling feed)."""

    seq: int
    direction: str
    function: str
    caller: str
    thread: str
    route: str
    queue_wait_ms: float
    run_ms: float
    total_ms: float
    error: str
    end_ns: int


@dataclass(frozen=True, slots=True)
class LocalAccess:
    """One ``Local`` get/set/delete (key only: values are never recorded)."""

    seq: int
    operation: str
    attribute: str
    found: bool
    thread_critical: bool
    thread: str
    time_ns: int


@dataclass(frozen=True, slots=True)
class TimeoutExpiry:
    """One ``timeout`` block that expired and cancelled its task."""

    seq: int
    limit_ms: float
    elapsed_ms: float
    task: str
    thread: str
    time_ns: int


@dataclass(frozen=True, slots=True)
class ReportInfo:
    """A watchdog report, for display (the full object is :class:`tracebridge.watchdog.Report`)."""

    id: int
    kind: str
    """``semconv.WATCHDOG_KIND_*``."""
    title: str
    text: str
    detected_ns: int
    resolved_ns: int = 0
    """0 while the problem persists."""


@dataclass(frozen=True, slots=True)
class FlowSnapshot:
    """Everything the model knows at one instant.  Plain data; see :func:`to_json`."""

    taken_ns: int
    pid: int
    threads: tuple[ThreadInfo, ...] = ()
    loops: tuple[LoopInfo, ...] = ()
    executors: tuple[ExecutorInfo, ...] = ()
    hops: tuple[HopInfo, ...] = ()
    tasks: tuple[TaskInfo, ...] = ()
    finished: tuple[FinishedHop, ...] = ()
    """Finished hops newer than the reader's cursor (at most its limit, newest last)."""
    locals: tuple[LocalAccess, ...] = ()
    timeouts: tuple[TimeoutExpiry, ...] = ()
    reports: tuple[ReportInfo, ...] = ()
    finished_seq: int = 0
    """Number of the newest finished hop (== hops finished since the model started)."""
    side_seq: int = 0
    """Number of the newest Local access / timeout expiry."""
    skipped: int = 0
    """Finished hops newer than the cursor that this snapshot leaves out (ring overwrote them, or over the limit)."""
    stacks: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    """Formatted current stacks of the threads the reader asked for."""

    def hop(self, key: int) -> HopInfo | None:
        for hop in self.hops:
            if hop.key == key:
                return hop
        return None

    def thread(self, ident: int) -> ThreadInfo | None:
        for thread in self.threads:
            if thread.ident == ident:
                return thread
        return None

    def task(self, key: int) -> TaskInfo | None:
        for task in self.tasks:
            if task.key == key:
                return task
        return None

    def executor(self, key: int | None) -> ExecutorInfo | None:
        for executor in self.executors:
            if executor.key == key:
                return executor
        return None

    def loop(self, key: int | None) -> LoopInfo | None:
        for loop in self.loops:
            if loop.key == key:
                return loop
        return None


# ---------------------------------------------------------------------------
# JSON (the streaming protocol carries snapshots as JSON lines).

_NESTED: dict[type, dict[str, type]] = {
    HopInfo: {"caller": ThreadRef, "thread": ThreadRef},
    ExecutorInfo: {"threads": ThreadRef, "running": WorkInfo, "queued": WorkInfo},
    LoopInfo: {"thread": ThreadRef},
    FlowSnapshot: {
        "threads": ThreadInfo, "loops": LoopInfo, "executors": ExecutorInfo, "hops": HopInfo,
        "tasks": TaskInfo, "finished": FinishedHop, "locals": LocalAccess, "timeouts": TimeoutExpiry,
        "reports": ReportInfo,
    },
}

_T = TypeVar("_T")


_SCALARS = (str, int, float, bool, type(None))
# Dataclass -> its field names.  The stream thread encodes a frame every
# interval, hundreds of finished hops each: dataclasses.fields() per object
# was most of a frame's cost.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _encode(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    cls = type(value)
    names = _FIELD_NAMES.get(cls)
    if names is None and dataclasses.is_dataclass(value):
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: _encode(getattr(value, name)) for name in names}
    if isinstance(value, (tuple, list)):
        return [_encode(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _encode(item) for key, item in value.items()}
    return value


def _decode(cls: type[_T], data: Mapping[str, Any]) -> _T:
    nested = _NESTED.get(cls, {})
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue  # an older/newer peer: the field's default
        value = data[f.name]
        inner = nested.get(f.name)
        if inner is not None and value is not None:
            if isinstance(value, list):
                value = tuple(_decode(inner, item) for item in value)
            else:
                value = _decode(inner, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    if cls is FlowSnapshot and "stacks" in kwargs:
        kwargs["stacks"] = {int(key): tuple(lines) for key, lines in kwargs["stacks"].items()}
    return cls(**kwargs)


def _fields(value: Any) -> dict[str, Any]:
    """json.dumps's ``default``: a snapshot dataclass as a dict (json encodes the values, nested ones again through here)."""
    names = _FIELD_NAMES.get(type(value))
    if names is None:
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            raise TypeError(f"{type(value).__name__} is not part of a flow snapshot and has no JSON form")
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in dataclasses.fields(value))
    return {name: getattr(value, name) for name in names}


def to_json(snapshot: FlowSnapshot) -> str:
    """One line of JSON (no newline inside) for ``snapshot``."""
    # The same text as json.dumps(_encode(snapshot)), built by the C encoder in one pass.
    return json.dumps(snapshot, separators=(",", ":"), default=_fields)


def from_json(text: str | bytes) -> FlowSnapshot:
    """The snapshot :func:`to_json` wrote."""
    return _decode(FlowSnapshot, json.loads(text))
