"""What each panel of ``tracebridge top`` shows: pure functions from snapshots to rows and text.

No Textual here (and no rich beyond plain strings): the app (``app.py``) puts
these rows into its tables; tests call them directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tracebridge import semconv
from tracebridge.flow import (
    BLOCKED_ASYNC_TO_SYNC,
    IDLE,
    LOOP_BLOCKED,
    RUNNING_LOOP,
    RUNNING_SYNC,
    FinishedHop,
    FlowSnapshot,
    HopInfo,
    LocalAccess,
    ReportInfo,
    TimeoutExpiry,
)

__all__ = [
    "EXECUTOR_COLUMNS",
    "FINISHED_COLUMNS",
    "HOP_COLUMNS",
    "HOP_SORTS",
    "LOCAL_COLUMNS",
    "LOOP_COLUMNS",
    "Rates",
    "THREAD_COLUMNS",
    "TIMEOUT_COLUMNS",
    "active_reports",
    "alert_text",
    "executor_rows",
    "finished_rows",
    "hop_rows",
    "local_rows",
    "loop_rows",
    "status_line",
    "thread_detail",
    "thread_rows",
    "timeout_rows",
]

THREAD_COLUMNS = ("thread", "state", "doing")
LOOP_COLUMNS = ("loop", "thread", "state", "lag")
EXECUTOR_COLUMNS = ("executor", "threads", "running", "queued", "oldest wait")
HOP_COLUMNS = ("age", "state", "call", "function", "caller → thread", "route")
FINISHED_COLUMNS = ("call", "wait", "run", "function", "caller → thread", "error")
LOCAL_COLUMNS = ("op", "attribute", "found", "thread")
TIMEOUT_COLUMNS = ("limit", "elapsed", "task", "thread")

HOP_SORTS = ("age", "function", "thread", "state")
"""Sort orders of the hops-in-flight panel, in the order the sort key cycles through them."""

_STATE_WORDS = {
    IDLE: "idle",
    RUNNING_SYNC: "running sync",
    BLOCKED_ASYNC_TO_SYNC: "in async_to_sync",
    RUNNING_LOOP: "event loop",
    LOOP_BLOCKED: "LOOP BLOCKED",
}
_SHORT_DIRECTION = {semconv.DIRECTION_SYNC_TO_ASYNC: "s2a", semconv.DIRECTION_ASYNC_TO_SYNC: "a2s"}


def _age(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.0f}m"


def _ms(value: float) -> str:
    return f"{value:.2f}ms" if value < 10 else f"{value:.0f}ms"


def thread_rows(snapshot: FlowSnapshot) -> list[tuple[int, tuple[str, ...]]]:
    """(ident, cells) per thread, busy ones first."""
    return [
        (thread.ident, (thread.name, _STATE_WORDS.get(thread.state, thread.state), thread.doing))
        for thread in snapshot.threads
    ]


def loop_rows(snapshot: FlowSnapshot) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for loop in snapshot.loops:
        state = "BLOCKED" if loop.blocked else ("running" if loop.running else ("closed" if loop.closed else "stopped"))
        rows.append((f"{loop.key:#x}", loop.thread.name, state, _ms(loop.lag_ms)))
    return rows


def executor_rows(snapshot: FlowSnapshot) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    now = snapshot.taken_ns
    for executor in snapshot.executors:
        running = ", ".join(item.function.rsplit(".", 1)[-1] for item in executor.running) or "-"
        oldest = min((item.submit_ns for item in executor.queued), default=0)
        rows.append(
            (
                executor.label.removeprefix("the "),
                ", ".join(thread.name for thread in executor.threads) or "-",
                running,
                str(len(executor.queued)),
                _age((now - oldest) / 1e9) if oldest else "-",
            )
        )
    return rows


def _filtered(functions: Iterable[str], needle: str) -> bool:
    needle = needle.lower()
    return not needle or any(needle in function.lower() for function in functions)


def hop_rows(snapshot: FlowSnapshot, *, sort: str = "age", needle: str = "") -> list[tuple[int, tuple[str, ...]]]:
    """(hop key, cells) per hop in flight, filtered by function name and sorted (oldest first by default)."""
    now = snapshot.taken_ns
    hops = [hop for hop in snapshot.hops if _filtered([hop.function], needle)]
    keys = {
        "age": lambda hop: hop.submit_ns,
        "function": lambda hop: hop.function,
        "thread": lambda hop: (hop.thread.name if hop.thread else "", hop.caller.name),
        "state": lambda hop: (hop.state, hop.submit_ns),
    }
    hops.sort(key=keys.get(sort, keys["age"]))
    return [(hop.key, _hop_cells(hop, now)) for hop in hops]


def _hop_cells(hop: HopInfo, now: int) -> tuple[str, ...]:
    target = hop.thread.name if hop.thread is not None else "…"
    return (
        _age(hop.age_s(now)),
        hop.state,
        _SHORT_DIRECTION.get(hop.direction, hop.direction),
        hop.function,
        f"{hop.caller.name} → {target}",
        hop.route,
    )


def finished_rows(hops: Sequence[FinishedHop], *, needle: str = "", limit: int = 200) -> list[tuple[str, ...]]:
    """The newest ``limit`` finished hops, newest first."""
    rows: list[tuple[str, ...]] = []
    for hop in reversed(hops):
        if not _filtered([hop.function], needle):
            continue
        rows.append(
            (
                _SHORT_DIRECTION.get(hop.direction, hop.direction),
                _ms(hop.queue_wait_ms),
                _ms(hop.run_ms),
                hop.function,
                f"{hop.caller} → {hop.thread or '…'}",
                hop.error,
            )
        )
        if len(rows) >= limit:
            break
    return rows


def local_rows(accesses: Sequence[LocalAccess], *, limit: int = 100) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for access in reversed(accesses[-limit:]):
        found = "yes" if access.found else "no"
        critical = " (thread-critical)" if access.thread_critical else ""
        rows.append((access.operation, access.attribute + critical, found, access.thread))
    return rows


def timeout_rows(expiries: Sequence[TimeoutExpiry], *, limit: int = 50) -> list[tuple[str, ...]]:
    return [
        (f"{expiry.limit_ms:.1f}ms", f"{expiry.elapsed_ms:.1f}ms", expiry.task, expiry.thread)
        for expiry in reversed(expiries[-limit:])
    ]


def active_reports(snapshot: FlowSnapshot) -> list[ReportInfo]:
    """Reports whose problem persists, newest first."""
    return sorted((report for report in snapshot.reports if not report.resolved_ns), key=lambda r: -r.id)


def alert_text(snapshot: FlowSnapshot) -> str | None:
    """The red panel's text: every active report (newest first), or None when all is well."""
    reports = active_reports(snapshot)
    if not reports:
        return None
    return "\n\n".join(report.text.removeprefix("tracebridge watchdog: ") for report in reports)


def thread_detail(snapshot: FlowSnapshot, ident: int | None) -> str:
    """The selected thread: what it does, its hop chain (outermost first) and its current stack."""
    if ident is None:
        return "Select a thread (t, then ↑/↓ and Enter) to see its hop chain and stack."
    thread = snapshot.thread(ident)
    if thread is None:
        return f"thread {ident} has ended."
    lines = [f"{thread.name}: {thread.doing}", "", "hop chain (outermost first):"]
    if not thread.frames:
        lines.append("  (not inside any bridge call)")
    for depth, key in enumerate(thread.frames):
        hop = snapshot.hop(key)
        if hop is None:
            continue
        role = "runs" if hop.is_sync_to_async else "waits in"
        lines.append(f"  {'  ' * depth}{role} {hop.label()}  [{hop.state}, {_age(hop.age_s(snapshot.taken_ns))}]")
    lines += ["", "stack (innermost last):"]
    stack = snapshot.stacks.get(ident)
    if stack is None:
        lines.append("  (fetching…)")
    else:
        for frame in stack:
            lines.extend(f"  {line}" for line in frame.splitlines())
    return "\n".join(lines)


@dataclass
class Rates:
    """Hops per second, from the finished-hop counter of consecutive snapshots."""

    last_seq: int = 0
    last_ns: int = 0
    per_second: float = 0.0

    def update(self, snapshot: FlowSnapshot) -> float:
        if self.last_ns and snapshot.taken_ns > self.last_ns:
            seconds = (snapshot.taken_ns - self.last_ns) / 1e9
            current = max(0, snapshot.finished_seq - self.last_seq) / seconds
            self.per_second = current if not self.per_second else 0.5 * self.per_second + 0.5 * current
        self.last_seq, self.last_ns = snapshot.finished_seq, snapshot.taken_ns
        return self.per_second


def status_line(snapshot: FlowSnapshot, rate: float, *, source: str, paused: bool, dropped: int = 0) -> str:
    """One line: where the data comes from, throughput, what is in flight, and drops."""
    parts = [
        source,
        f"pid {snapshot.pid}",
        f"{rate:,.0f} hops/s",
        f"{len(snapshot.hops)} in flight",
        f"{snapshot.finished_seq:,} done",
        f"{len(snapshot.threads)} threads",
    ]
    if snapshot.skipped or dropped:
        parts.append(f"feed skipped {snapshot.skipped:,}, frames dropped {dropped}")
    if paused:
        parts.append("PAUSED (p to resume)")
    return "  ·  ".join(parts)
