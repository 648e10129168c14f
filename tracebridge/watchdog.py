"""The deadlock and stall detector: a thread that watches the flow model.

Usage::

    from tracebridge import watchdog

    dog = watchdog.watch(stall_threshold=5.0, on_report=print)   # at start-up
    ...
    dog.stop()

Every ``interval`` seconds the watchdog takes a :class:`~tracebridge.flow.FlowSnapshot`,
builds its wait-for graph (:mod:`tracebridge.waitfor`) and reports:

* **deadlock** — a cycle in the graph (confirmed on a second look ``confirm``
  seconds later, so typically under a second after it formed);
* **stall** — bridge work queued longer than ``stall_threshold`` without
  starting (head-of-line blocking on a one-thread executor: what it waits
  behind, and what that is doing), or an ``async_to_sync`` coroutine that never
  started;
* **blocked loop** — an event loop that has not run the watchdog's heartbeat
  callback for ``loop_threshold`` seconds: its thread is stuck in a sync call,
  named with its stack.

A report names every participant in plain words, with each involved thread's
stack, each involved task's stack and where each queued call was made.  It is
logged (logger ``tracebridge.watchdog``), handed to your ``on_report``
callbacks, written as a :data:`~tracebridge.semconv.WATCHDOG_REPORT` event on
the spans of the hops involved, and the still-open spans of the traces involved
are exported at once, marked :data:`~tracebridge.semconv.INCOMPLETE` (a partial
trace: OpenTelemetry never exports a span that never ends).

**Never in the way.**  The watchdog runs on its own daemon thread and needs
no application thread to make progress: it reads the model (atomic copies,
no application locks), other threads' stacks (``sys._current_frames()``) and
pings loops with ``call_soon_threadsafe`` (which never blocks).  Each problem
is reported once, and again only if it clears and comes back.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import INVALID_SPAN_CONTEXT

from . import _stacks, _telemetry, flow, semconv, waitfor
from .flow import QUEUED, FlowModel, FlowSnapshot, HopInfo, Live, ReportInfo
from .waitfor import Edge, WaitForGraph

__all__ = [
    "ENV_DETECT",
    "ENV_LOOP_THRESHOLD",
    "ENV_STALL_THRESHOLD",
    "Report",
    "Watchdog",
    "current",
    "watch",
    "watch_from_env",
]

logger = logging.getLogger("tracebridge.watchdog")

DEFAULT_INTERVAL_S = 0.25
DEFAULT_STALL_THRESHOLD_S = 5.0
DEFAULT_LOOP_THRESHOLD_S = 1.0
DEFAULT_CONFIRM_S = 0.5
_TRACING_CHECK_SCANS = 8  # warn once, after a couple of seconds, if tracing never came on

ReportCallback = Callable[["Report"], None]


@dataclass
class Report:
    """One detected problem.  ``str(report)`` is the full text, stacks included."""

    id: int
    kind: str
    """``semconv.WATCHDOG_KIND_DEADLOCK``, ``..._STALL`` or ``..._BLOCKED_LOOP``."""
    title: str
    """One line: what is wrong, in plain words."""
    lines: list[str]
    """The chain of waits, one participant per line."""
    stacks: list[tuple[str, list[str]]] = field(default_factory=list)
    """(who, formatted frames outermost first) for each involved thread and task."""
    sites: list[str] = field(default_factory=list)
    """Each queued call and where it was made."""
    hint: str = ""
    threads: list[str] = field(default_factory=list)
    """Names of the threads involved."""
    tasks: list[str] = field(default_factory=list)
    """Names of the asyncio tasks involved."""
    functions: list[str] = field(default_factory=list)
    """``module.QualName`` of the bridge calls involved."""
    cycle: list[str] = field(default_factory=list)
    """Deadlocks: the cycle's participants in order (``thread `x```, ``task `y` (coro)``, ``sync_to_async(`f`)``)."""
    detected_ns: int = 0
    formed_ns: int = 0
    """When the last wait of the problem began (deadlocks: when the cycle closed), as far as the model knows."""
    hop_keys: list[int] = field(default_factory=list)

    @property
    def message(self) -> str:
        """Title and chain, without stacks (what goes on spans)."""
        return "\n".join([self.title, *(f"  {line}" for line in self.lines), *([f"  {self.hint}"] if self.hint else [])])

    @property
    def text(self) -> str:
        """Everything: title, chain, hint, stacks and call sites."""
        parts = [f"tracebridge watchdog: {self.message}"]
        if self.stacks:
            parts.append("  Stacks (innermost call last):")
            for who, frames in self.stacks:
                parts.append(f"    {who}:")
                for frame in frames or ["(no Python frames)"]:
                    parts.extend(f"      {line}" for line in frame.splitlines())
        if self.sites:
            parts.append("  Queued calls, and where each was made:")
            parts.extend(f"    {site}" for site in self.sites)
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.text

    def info(self, resolved_ns: int = 0) -> ReportInfo:
        return ReportInfo(self.id, self.kind, self.title, self.text, self.detected_ns, resolved_ns)


class _Beat:
    """One heartbeat: sent from the watchdog, answered on the loop's thread."""

    __slots__ = ("sent_ns", "answered_ns")

    def __init__(self, sent_ns: int) -> None:
        self.sent_ns = sent_ns
        self.answered_ns = 0

    def answer(self) -> None:
        self.answered_ns = time.time_ns()


class Watchdog:
    """Watches a :class:`~tracebridge.flow.FlowModel` from its own thread (see the module docstring).

    Args:
        model: the flow model (default: :func:`tracebridge.flow.enable`).
        interval: seconds between scans.
        stall_threshold: seconds queued work may wait to start before it is a stall.
        loop_threshold: seconds a loop may go without running a callback before it is blocked.
        confirm: seconds a cycle must persist before it is reported as a deadlock.
        on_report: callbacks, called on the watchdog thread with each new :class:`Report`.
        log: log each report (``tracebridge.watchdog``, level ERROR).
        spans: write reports on spans and export the involved traces' open spans.
        clock: wall-clock nanoseconds (the hops' timestamps are ``time.time_ns()``); for tests.
    """

    def __init__(
        self,
        model: FlowModel | None = None,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        stall_threshold: float = DEFAULT_STALL_THRESHOLD_S,
        loop_threshold: float = DEFAULT_LOOP_THRESHOLD_S,
        confirm: float = DEFAULT_CONFIRM_S,
        on_report: ReportCallback | Iterable[ReportCallback] | None = None,
        log: bool = True,
        spans: bool = True,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.model = model if model is not None else flow.enable()
        self._clock = clock
        self.interval = interval
        self.stall_threshold = stall_threshold
        self.loop_threshold = loop_threshold
        self.confirm = confirm
        if on_report is None:
            self.callbacks: list[ReportCallback] = []
        elif callable(on_report):
            self.callbacks = [on_report]
        else:
            self.callbacks = list(on_report)
        self.log = log
        self.spans = spans
        self.reports: deque[Report] = deque(maxlen=100)
        self.scans = 0
        self.delivered = 0
        self._delivered_changed = threading.Condition()
        self._next_id = 1
        self._active: dict[tuple[Any, ...], Report] = {}
        self._first_seen: dict[tuple[Any, ...], int] = {}
        self._beats: dict[int, _Beat] = {}
        self._exported: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------

    def start(self) -> Watchdog:
        """Start the watchdog thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="tracebridge-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (at most ``timeout`` seconds)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.scan()
            except Exception:  # the watchdog must outlive anything it looks at
                _telemetry.tracing_failed("watchdog scan")

    # ------------------------------------------------------------------

    def scan(self) -> list[Report]:
        """Look once; return the reports this scan produced (also delivered)."""
        now = self._clock()
        self._heartbeat(now)
        snapshot, live = self.model.capture(limit=0)
        graph = waitfor.build(snapshot)
        describer = _Describer(snapshot, live, now)
        seen: set[tuple[Any, ...]] = set()
        new: list[Report] = []
        key: tuple[Any, ...]

        # 1. Deadlocks: cycles that persist for `confirm` seconds.
        in_cycle: set[str] = set()
        for cycle in graph.cycles():
            nodes = frozenset(edge.source for edge in cycle)
            in_cycle |= nodes
            key = (semconv.WATCHDOG_KIND_DEADLOCK, nodes)
            seen.add(key)
            first = self._first_seen.setdefault(key, now)
            if key not in self._active and now - first >= self.confirm * 1e9:
                new.append(self._remember(key, describer.deadlock(self._take_id(), cycle, graph)))

        # 2. Blocked loops.
        for loop in snapshot.loops:
            beat = self._beats.get(loop.key)
            if loop.blocked and beat is not None:
                key = (semconv.WATCHDOG_KIND_BLOCKED_LOOP, loop.key, beat.sent_ns)
                seen.add(key)
                if key not in self._active:
                    new.append(self._remember(key, describer.blocked_loop(self._take_id(), loop, graph, self.loop_threshold)))

        # 3. Stalls: queued work older than the threshold, outside any cycle, grouped by what it waits behind.
        threshold_ns = self.stall_threshold * 1e9
        groups: dict[tuple[Any, ...], list[HopInfo]] = {}
        for hop in snapshot.hops:
            if hop.state != QUEUED or now - hop.submit_ns < threshold_ns:
                continue
            if waitfor.hop_node(hop.key) in in_cycle:
                continue
            if hop.is_sync_to_async:
                chain = graph.chain(waitfor.hop_node(hop.key))
                blocker = chain[-1].target if chain else None
                groups.setdefault((semconv.WATCHDOG_KIND_STALL, hop.executor, blocker), []).append(hop)
            else:
                groups.setdefault((semconv.WATCHDOG_KIND_STALL, "coroutine", hop.key), []).append(hop)
        for executor in snapshot.executors:
            for item in executor.queued:
                if item.hop is None and now - item.submit_ns >= threshold_ns:
                    key = (semconv.WATCHDOG_KIND_STALL, "item", executor.key, item.submit_ns)
                    seen.add(key)
                    if key not in self._active:
                        new.append(self._remember(key, describer.stalled_item(self._take_id(), executor, item)))
        for key, hops in groups.items():
            seen.add(key)
            if key not in self._active:
                new.append(self._remember(key, describer.stall(self._take_id(), hops, graph, self.stall_threshold)))

        # Forget what cleared (so it is reported again if it comes back).
        for key in list(self._active):
            if key not in seen:
                report = self._active.pop(key)
                self.model.reports[report.id] = report.info(resolved_ns=now)
        for key in list(self._first_seen):
            if key not in seen:
                del self._first_seen[key]
        # Keep the model's report list short: the 20 newest.
        if len(self.model.reports) > 20:
            for report_id in sorted(self.model.reports)[:-20]:
                del self.model.reports[report_id]

        self.scans += 1
        if self.scans == _TRACING_CHECK_SCANS and _telemetry.get_tracer() is None:
            logger.warning(
                "tracebridge watchdog: tracing is off, so it sees no bridge calls; "
                "call tracebridge.configure() (or install a TracerProvider)"
            )
        for report in new:
            self._deliver(report, live, snapshot)
        return new

    def _take_id(self) -> int:
        report_id = self._next_id
        self._next_id += 1
        return report_id

    def _remember(self, key: tuple[Any, ...], report: Report) -> Report:
        self._active[key] = report
        return report

    def _heartbeat(self, now: int) -> None:
        """Ping every running loop; a ping unanswered for ``loop_threshold`` means the loop is blocked."""
        health = self.model.loop_health
        threshold_ns = self.loop_threshold * 1e9
        for key, (ref, _ident, _name) in list(self.model.recorder.loops.items()):
            loop = ref()
            if loop is None or not loop.is_running() or loop.is_closed():
                self._beats.pop(key, None)
                health.pop(key, None)
                continue
            beat = self._beats.get(key)
            if beat is not None and not beat.answered_ns:
                lag = now - beat.sent_ns
                health[key] = (lag / 1e6, lag > threshold_ns)
                continue
            if beat is not None:
                health[key] = ((beat.answered_ns - beat.sent_ns) / 1e6, False)
            beat = _Beat(now)
            try:
                loop.call_soon_threadsafe(beat.answer)  # never blocks: a byte down the loop's self-pipe
            except RuntimeError:  # closed meanwhile
                continue
            self._beats[key] = beat

    # ------------------------------------------------------------------

    def _deliver(self, report: Report, live: Live, snapshot: FlowSnapshot) -> None:
        self.reports.append(report)
        self.model.reports[report.id] = report.info()
        if self.log:
            logger.error("%s", report.text)
        for callback in list(self.callbacks):
            try:
                callback(report)
            except Exception:
                logger.exception("tracebridge watchdog: the on_report callback %r raised", callback)
        if self.spans:
            try:
                self._write_spans(report, live, snapshot)
            except Exception:
                _telemetry.tracing_failed("watchdog report on spans")
        with self._delivered_changed:
            self.delivered += 1
            self._delivered_changed.notify_all()

    def wait_delivered(self, count: int = 1, timeout: float | None = None) -> bool:
        """Wait until ``count`` reports were fully delivered (logged, called back, on spans and exported)."""
        with self._delivered_changed:
            return self._delivered_changed.wait_for(lambda: self.delivered >= count, timeout)

    def _write_spans(self, report: Report, live: Live, snapshot: FlowSnapshot) -> None:
        """Events on the involved hops' spans, and the involved traces' open spans exported now."""
        if _telemetry.get_tracer() is None:
            return
        now = time.time_ns()
        base = {
            semconv.WATCHDOG_KIND: report.kind,
            semconv.WATCHDOG_MESSAGE: report.message,
            semconv.WATCHDOG_REPORT_ID: report.id,
        }
        roles = _roles(report, snapshot)
        trace_ids = set()
        events_by_key: dict[int, list[tuple[str, dict[str, Any], int]]] = {}
        for key in report.hop_keys:
            hop = live.hops.get(key)
            info = snapshot.hop(key)
            if hop is None or info is None:
                continue
            attributes = dict(base)
            attributes[semconv.WATCHDOG_ROLE] = roles.get(key, "")
            hop.add_event(semconv.WATCHDOG_REPORT, attributes, now)
            events_by_key[key] = [(semconv.WATCHDOG_REPORT, attributes, now)]
            trace_ids.add(info.trace_id)
        # The partial trace: every hop and real span still open in those traces, ending now.
        exported = False
        for info in snapshot.hops:
            hop = live.hops.get(info.key)
            if hop is None or info.trace_id not in trace_ids:
                continue
            span_id = int(info.span_id, 16)
            if span_id in self._exported:
                continue
            if hop.export_partial(events_by_key.get(info.key, [])):
                self._exported.add(span_id)
                exported = True
        tracer = _telemetry.get_tracer()
        for span_id, span in list(self.model.recorder.open_spans.items()):
            context = span.get_span_context()
            if f"{context.trace_id:032x}" not in trace_ids or span_id in self._exported:
                continue
            parent = span.parent or INVALID_SPAN_CONTEXT
            events = [(event.name, dict(event.attributes or {}), event.timestamp) for event in span.events]
            if _telemetry.record_partial(
                tracer,  # type: ignore[arg-type]
                span.name,
                parent,
                context.trace_id,
                span_id,
                span.start_time or now,
                dict(span.attributes or {}),
                events,
            ):
                self._exported.add(span_id)
                exported = True
        if exported:
            _telemetry.flush(timeout_millis=5000)


def _roles(report: Report, snapshot: FlowSnapshot) -> dict[int, str]:
    """hop key -> the report line that says what that hop is doing (its subject line, else any mention)."""
    roles: dict[int, str] = {}
    lines = [line.split(". ", 1)[-1] if line[:1].isdigit() else line for line in report.lines]
    for key in report.hop_keys:
        hop = snapshot.hop(key)
        if hop is None:
            continue
        label = hop.label()
        subject = [line for line in lines if line.startswith(label)]
        mention = [line for line in lines if label in line]
        chosen = (subject or mention or [""])[0]
        roles[key] = chosen.rstrip(";.").split(" — back to step 1", 1)[0]
    return roles


class _Describer:
    """Plain words for nodes and edges of one snapshot, and the reports built from them."""

    def __init__(self, snapshot: FlowSnapshot, live: Live, now: int) -> None:
        self.snapshot = snapshot
        self.live = live
        self.now = now
        self._frames: dict[int, Any] | None = None

    @property
    def frames(self) -> dict[int, Any]:
        """Every thread's current frame, read once per report-producing scan."""
        if self._frames is None:
            self._frames = sys._current_frames()
        return self._frames

    # -- nodes ---------------------------------------------------------

    def label(self, node: str) -> str:
        kind, key = waitfor.node_kind(node), waitfor.node_key(node)
        if kind == "thread":
            thread = self.snapshot.thread(key)
            return f"thread `{thread.name if thread is not None else key}`"
        if kind == "task":
            task = self.snapshot.task(key)
            return task.label() if task is not None else f"task {key:#x}"
        hop = self.snapshot.hop(key)
        return hop.label() if hop is not None else f"bridge call {key:#x}"

    def age(self, since_ns: int) -> str:
        seconds = max(0.0, (self.now - since_ns) / 1e9)
        return f"{seconds:.1f} s"

    def sentence(self, edge: Edge, graph: WaitForGraph) -> str:
        source, target = self.label(edge.source), self.label(edge.target)
        why = edge.why
        if why == waitfor.BLOCKED_IN:
            hop = self.snapshot.hop(waitfor.node_key(edge.target))
            since = f" (for {self.age(hop.submit_ns)})" if hop is not None else ""
            return f"{source} is blocked in {target}{since}, waiting for its coroutine"
        if why == waitfor.RUNS_AS:
            task = self.snapshot.task(waitfor.node_key(edge.target))
            loop = self.snapshot.loop(task.loop) if task is not None else None
            where = f" on the event loop of thread `{loop.thread.name}`" if loop is not None else ""
            return f"{source} runs as {target}{where}"
        if why == waitfor.AWAITS_TASK:
            return f"{source} awaits {target}"
        if why == waitfor.AWAITS_HOP:
            return f"{source} awaits {target}"
        if why == waitfor.QUEUED_BEHIND:
            hop = self.snapshot.hop(waitfor.node_key(edge.source))
            executor = self.snapshot.executor(hop.executor) if hop is not None else None
            where = executor.label if executor is not None else "a one-thread executor"
            since = self.age(hop.submit_ns) if hop is not None else "?"
            return f"{source} has been queued for {since} on {where}, whose only thread, {target[len('thread '):]}, is busy"
        if why == waitfor.RUNS_ON:
            return f"{source} runs on {target}"
        if why == waitfor.LOOP_STUCK:
            return f"{source} cannot run: its event loop's thread {target} is stuck in a sync call"
        return f"{source} waits for {target}"

    def sink(self, node: str) -> str:
        """What a thread at the end of a chain is doing (it waits on something the model cannot see)."""
        if waitfor.node_kind(node) != "thread":
            return f"{self.label(node)} is not making progress"
        ident = waitfor.node_key(node)
        thread = self.snapshot.thread(ident)
        name = thread.name if thread is not None else str(ident)
        doing = thread.doing if thread is not None else "alive"
        frame = self.frames.get(ident)
        where = ""
        if frame is not None:
            innermost = _stacks.site_of(frame)
            user = _stacks.innermost_call(frame)
            where = f", stuck in {innermost}"
            if user and user != innermost:
                where += f", called from {user}"
        return f"thread `{name}` is {doing}{where}"

    # -- participants --------------------------------------------------

    def _collect(self, report: Report, nodes: Iterable[str]) -> None:
        threads: list[int] = []
        tasks: list[int] = []
        for node in nodes:
            kind, key = waitfor.node_kind(node), waitfor.node_key(node)
            if kind == "thread" and key not in threads:
                threads.append(key)
            elif kind == "task" and key not in tasks:
                tasks.append(key)
            elif kind == "hop":
                hop = self.snapshot.hop(key)
                if hop is None:
                    continue
                if key not in report.hop_keys:
                    report.hop_keys.append(key)
                if hop.function not in report.functions:
                    report.functions.append(hop.function)
                # The threads a hop involves: for a queued call, whoever queued it (a loop thread).
                for ref in (hop.caller, hop.thread):
                    if ref is not None and ref.ident not in threads and not hop.is_sync_to_async:
                        threads.append(ref.ident)
                if hop.caller_task is not None and hop.caller_task not in tasks:
                    tasks.append(hop.caller_task)
        for ident in threads:
            thread = self.snapshot.thread(ident)
            name = thread.name if thread is not None else str(ident)
            report.threads.append(name)
            frame = self.frames.get(ident)
            report.stacks.append((f"thread `{name}`", _stacks.format_frame_stack(frame) if frame is not None else []))
        for key in tasks:
            info = self.snapshot.task(key)
            task = self.live.tasks.get(key)
            if info is None:
                continue
            report.tasks.append(info.name)
            if task is not None:
                stack = _stacks.format_task_stack(task)
                if stack:
                    report.stacks.append((info.label(), stack))
        # Where each queued call was made: the awaiting task's innermost user frame.
        for key in report.hop_keys:
            hop = self.snapshot.hop(key)
            if hop is None or hop.state != QUEUED or not hop.is_sync_to_async:
                continue
            task = self.live.tasks.get(hop.caller_task) if hop.caller_task is not None else None
            site = _stacks.call_site(task) if task is not None else ""
            waiter = self.snapshot.task(hop.caller_task) if hop.caller_task is not None else None
            by = f" by {waiter.label()}" if waiter is not None else ""
            report.sites.append(f"{hop.label()}: made{by}" + (f" at {site}" if site else "") + f", queued {self.age(hop.submit_ns)} ago")

    # -- reports -------------------------------------------------------

    def deadlock(self, report_id: int, cycle: list[Edge], graph: WaitForGraph) -> Report:
        nodes = [edge.source for edge in cycle]
        people = [self.label(node) for node in nodes if waitfor.node_kind(node) != "hop"]
        lines = [f"{index}. {self.sentence(edge, graph)};" for index, edge in enumerate(cycle, 1)]
        lines[-1] = lines[-1].rstrip(";") + f" — back to step 1: {self.label(cycle[0].source)}."
        title = (
            f"DEADLOCK: {_join(people)} wait for each other in a cycle; none of them can ever move again."
        )
        formed = 0
        for node in nodes:
            if waitfor.node_kind(node) == "hop":
                hop = self.snapshot.hop(waitfor.node_key(node))
                if hop is not None:
                    formed = max(formed, hop.start_ns if hop.state != QUEUED and hop.is_sync_to_async else hop.submit_ns)
        report = Report(
            id=report_id,
            kind=semconv.WATCHDOG_KIND_DEADLOCK,
            title=title,
            lines=lines,
            hint=_deadlock_hint(self.snapshot, cycle),
            cycle=[self.label(node) for node in nodes],
            detected_ns=self.now,
            formed_ns=formed,
        )
        self._collect(report, nodes)
        return report

    def stall(self, report_id: int, hops: list[HopInfo], graph: WaitForGraph, threshold: float) -> Report:
        first = min(hops, key=lambda hop: hop.submit_ns)
        if not first.is_sync_to_async:
            return self._coroutine_stall(report_id, first, threshold)
        executor = self.snapshot.executor(first.executor)
        where = executor.label if executor is not None else "its executor"
        calls = _join([hop.label() for hop in hops])
        verb = "has" if len(hops) == 1 else "have"
        title = (
            f"STALL: {calls} {verb} waited {self.age(first.submit_ns)} to start on {where} "
            f"(stall threshold {threshold:g} s)."
        )
        lines: list[str] = []
        nodes: list[str] = []
        for hop in hops:
            node = waitfor.hop_node(hop.key)
            waiters = [edge for edge in graph.all_edges() if edge.target == node]
            for edge in waiters:
                lines.append(self.sentence(edge, graph) + ";")
                nodes.append(edge.source)
        chain = graph.chain(waitfor.hop_node(first.key))
        for edge in chain:
            lines.append(self.sentence(edge, graph) + ";")
            nodes.append(edge.source)
        nodes.extend(waitfor.hop_node(hop.key) for hop in hops)
        hint = ""
        if chain:
            last = chain[-1].target
            nodes.append(last)
            if waitfor.node_kind(last) == "thread":
                # The call the busy thread is running is part of the story: its span gets the report too.
                thread = self.snapshot.thread(waitfor.node_key(last))
                if thread is not None and thread.frames:
                    nodes.append(waitfor.hop_node(thread.frames[-1]))
            lines.append(self.sink(last) + ".")
            if chain[-1].why == waitfor.QUEUED_BEHIND or any(edge.why == waitfor.RUNS_ON for edge in chain):
                hint = (
                    "Head-of-line blocking: the queued call cannot start until the running one returns. If the "
                    "running one waits for something only a queued call would do, this never ends."
                )
        elif executor is not None and executor.kind not in (flow.KIND_CURRENT_THREAD, flow.KIND_SINGLE_THREAD):
            busy = len(executor.running)
            lines.append(f"{where} has {busy} call(s) running on {executor.max_workers or '?'} worker(s).")
        report = Report(
            id=report_id,
            kind=semconv.WATCHDOG_KIND_STALL,
            title=title,
            lines=[f"{index}. {line}" for index, line in enumerate(_dedupe(lines), 1)],
            hint=hint,
            detected_ns=self.now,
            formed_ns=first.submit_ns,
        )
        self._collect(report, _dedupe(nodes))
        return report

    def _coroutine_stall(self, report_id: int, hop: HopInfo, threshold: float) -> Report:
        loop = self.snapshot.loop(hop.loop)
        if loop is None:
            state = "on a loop the model has not seen run"
        elif loop.closed:
            state = f"on event loop {loop.key:#x} (thread `{loop.thread.name}`), which is closed"
        elif not loop.running:
            state = f"on event loop {loop.key:#x} (thread `{loop.thread.name}`), which is not running"
        elif loop.blocked:
            state = f"on event loop {loop.key:#x}, whose thread `{loop.thread.name}` is stuck in a sync call"
        else:
            state = f"on event loop {loop.key:#x} (thread `{loop.thread.name}`)"
        title = (
            f"STALL: {hop.label()} from thread `{hop.caller.name}` has waited {self.age(hop.submit_ns)} "
            f"for its coroutine to start (stall threshold {threshold:g} s)."
        )
        report = Report(
            id=report_id,
            kind=semconv.WATCHDOG_KIND_STALL,
            title=title,
            lines=[f"1. thread `{hop.caller.name}` is blocked in {hop.label()}; the coroutine was scheduled {state}."],
            detected_ns=self.now,
            formed_ns=hop.submit_ns,
        )
        nodes = [waitfor.thread_node(hop.caller.ident), waitfor.hop_node(hop.key)]
        if loop is not None:
            nodes.append(waitfor.thread_node(loop.thread.ident))
        self._collect(report, nodes)
        return report

    def stalled_item(self, report_id: int, executor: flow.ExecutorInfo, item: flow.WorkInfo) -> Report:
        thread = executor.threads[0] if executor.threads else None
        title = (
            f"STALL: `{item.function}` has waited {self.age(item.submit_ns)} in the queue of {executor.label}."
        )
        lines = [f"1. `{item.function}` was queued by thread `{item.queued_by}`;"]
        nodes = []
        if thread is not None:
            lines.append("2. " + self.sink(waitfor.thread_node(thread.ident)) + ".")
            nodes.append(waitfor.thread_node(thread.ident))
        report = Report(
            id=report_id,
            kind=semconv.WATCHDOG_KIND_STALL,
            title=title,
            lines=lines,
            detected_ns=self.now,
            formed_ns=item.submit_ns,
        )
        report.functions.append(item.function)
        self._collect(report, nodes)
        return report

    def blocked_loop(self, report_id: int, loop: flow.LoopInfo, graph: WaitForGraph, threshold: float) -> Report:
        frame = self.frames.get(loop.thread.ident)
        stack = _stacks.format_frame_stack(frame) if frame is not None else []
        call = _stacks.innermost_call(frame) if frame is not None else ""
        at = f" at {call}" if call else ""
        title = (
            f"BLOCKED LOOP: event loop {loop.key:#x} on thread `{loop.thread.name}` has not run a callback for "
            f"{loop.lag_ms / 1000:.1f} s (threshold {threshold:g} s): its thread is stuck in a sync call{at}."
        )
        lines = []
        if frame is not None:
            lines.append(
                f"1. thread `{loop.thread.name}` has been in {_stacks.site_of(frame)} for at least "
                f"{loop.lag_ms / 1000:.1f} s, so no task on this loop can run;"
            )
        waiting = [hop for hop in self.snapshot.hops if hop.loop == loop.key and hop.state != flow.RETURNING]
        if waiting:
            lines.append(
                f"{len(lines) + 1}. {len(waiting)} bridge call(s) on this loop cannot resume until it returns: "
                + _join([hop.label() for hop in waiting[:5]]) + ("…" if len(waiting) > 5 else "") + "."
            )
        report = Report(
            id=report_id,
            kind=semconv.WATCHDOG_KIND_BLOCKED_LOOP,
            title=title,
            lines=lines,
            hint="Blocking calls in async code freeze every task on the loop: wrap them in sync_to_async.",
            detected_ns=self.now,
            formed_ns=self.now - int(loop.lag_ms * 1e6),
        )
        report.threads.append(loop.thread.name)
        report.stacks.append((f"thread `{loop.thread.name}`", stack))
        for hop in waiting:
            report.hop_keys.append(hop.key)
            if hop.function not in report.functions:
                report.functions.append(hop.function)
        return report


def _deadlock_hint(snapshot: FlowSnapshot, cycle: list[Edge]) -> str:
    for edge in cycle:
        if edge.why != waitfor.QUEUED_BEHIND:
            continue
        hop = snapshot.hop(waitfor.node_key(edge.source))
        if hop is None:
            continue
        executor = snapshot.executor(hop.executor)
        if executor is None:
            continue
        if executor.kind == flow.KIND_CURRENT_THREAD:
            return (
                "A task that outlived its sync frame's context queued thread-sensitive work on an outer "
                "CurrentThreadExecutor while that thread waits in a newer async_to_sync for it. Await the "
                "task inside the frame that created it, or use thread_sensitive=False for it."
            )
        return (
            f"Thread-sensitive calls share one thread ({executor.label}); a task started before the sync "
            "call queued its own sync call there, behind the code that now waits for it. Start the task "
            "from the sync code's async_to_sync, or make that call thread_sensitive=False."
        )
    return ""


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


# ---------------------------------------------------------------------------

_current: Watchdog | None = None
_current_lock = threading.Lock()


def watch(
    *,
    interval: float = DEFAULT_INTERVAL_S,
    stall_threshold: float = DEFAULT_STALL_THRESHOLD_S,
    loop_threshold: float = DEFAULT_LOOP_THRESHOLD_S,
    confirm: float = DEFAULT_CONFIRM_S,
    on_report: ReportCallback | Iterable[ReportCallback] | None = None,
    log: bool = True,
    spans: bool = True,
) -> Watchdog:
    """Turn on the flow model and start a watchdog (replacing one started here before).

    See :class:`Watchdog` for the arguments.  Called from inside a running
    event loop, that loop is watched for blocking from the start.
    """
    global _current
    import asyncio

    model = flow.enable()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        model.recorder.register_loop(loop, threading.current_thread())
    with _current_lock:
        if _current is not None:
            _current.stop()
        _current = Watchdog(
            model,
            interval=interval,
            stall_threshold=stall_threshold,
            loop_threshold=loop_threshold,
            confirm=confirm,
            on_report=on_report,
            log=log,
            spans=spans,
        ).start()
        return _current


def current() -> Watchdog | None:
    """The watchdog :func:`watch` started, if any."""
    return _current


ENV_DETECT = "TRACEBRIDGE_DETECT"
"""``1``: start the watchdog at ``configure()`` (``tracebridge run`` sets it unless ``--no-detect``)."""

ENV_STALL_THRESHOLD = "TRACEBRIDGE_STALL_THRESHOLD"
"""Seconds; the watchdog's ``stall_threshold`` when started from the environment."""

ENV_LOOP_THRESHOLD = "TRACEBRIDGE_LOOP_THRESHOLD"
"""Seconds; the watchdog's ``loop_threshold`` when started from the environment."""


def watch_from_env(environ: Mapping[str, str] | None = None) -> Watchdog | None:
    """Start the watchdog if ``TRACEBRIDGE_DETECT`` asks for it, reports to stderr; never raises."""
    env = os.environ if environ is None else environ
    if env.get(ENV_DETECT, "").strip() in ("", "0"):
        return None
    try:
        stall = float(env.get(ENV_STALL_THRESHOLD) or DEFAULT_STALL_THRESHOLD_S)
        loop = float(env.get(ENV_LOOP_THRESHOLD) or DEFAULT_LOOP_THRESHOLD_S)
    except ValueError as exc:
        print(f"tracebridge: {ENV_STALL_THRESHOLD}/{ENV_LOOP_THRESHOLD}: {exc}; using the defaults", file=sys.stderr)
        stall, loop = DEFAULT_STALL_THRESHOLD_S, DEFAULT_LOOP_THRESHOLD_S
    return watch(stall_threshold=stall, loop_threshold=loop, on_report=_to_stderr, log=False)


def _to_stderr(report: Report) -> None:
    print(report.text, file=sys.stderr, flush=True)
