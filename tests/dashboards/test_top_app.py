"""Headless tests of ``tracebridge top`` (Textual's Pilot): panels, keys, the alert, and load."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

import pytest

pytest.importorskip("textual")

from textual.widgets import DataTable, Input, Static  # noqa: E402

from tracebridge import semconv  # noqa: E402
from tracebridge.dashboards.app import FEED_ROWS, HelpScreen, TopApp  # noqa: E402
from tracebridge.flow import (  # noqa: E402
    BLOCKED_ASYNC_TO_SYNC,
    KIND_SINGLE_THREAD,
    RUNNING_LOOP,
    RUNNING_SYNC,
    ExecutorInfo,
    FinishedHop,
    FlowSnapshot,
    HopInfo,
    LocalAccess,
    LoopInfo,
    ReportInfo,
    ThreadInfo,
    ThreadRef,
    TimeoutExpiry,
    WorkInfo,
)

NOW = 10_000_000_000
MAIN = ThreadRef(1, "MainThread")
SYNC = ThreadRef(2, "tracebridge-sync_0")
S2A = semconv.DIRECTION_SYNC_TO_ASYNC


def hop(key: int, function: str, *, age_s: float, thread: ThreadRef | None = None) -> HopInfo:
    submit = NOW - int(age_s * 1e9)
    return HopInfo(
        key=key, direction=S2A, function=function, caller=MAIN, caller_task=100 + key, thread=thread,
        callee_task=None, executor=600, route=semconv.EXECUTOR_GLOBAL_SYNC_THREAD, loop=500, submit_ns=submit,
        start_ns=submit + 1000 if thread else 0, end_ns=0,
    )


def finished(seq: int, function: str = "app.load") -> FinishedHop:
    return FinishedHop(seq, S2A, function, "MainThread", "tracebridge-sync_0", "global_sync_thread", 0.1, 1.5, 1.7, "", NOW)


def sample(*, reports: tuple[ReportInfo, ...] = (), stacks: dict[int, tuple[str, ...]] | None = None) -> FlowSnapshot:
    """One busy moment: a call running on the global sync thread, two queued behind it."""
    return FlowSnapshot(
        taken_ns=NOW,
        pid=4242,
        threads=(
            ThreadInfo(2, "tracebridge-sync_0", True, RUNNING_SYNC, "running sync_to_async(`app.hold`) for 3.0 s", (10,)),
            ThreadInfo(1, "MainThread", False, RUNNING_LOOP, "running event loop 0x1f4", (), 500),
            ThreadInfo(3, "request-thread", False, BLOCKED_ASYNC_TO_SYNC, "blocked in async_to_sync(`app.fetch`)", ()),
        ),
        loops=(LoopInfo(500, MAIN, True, False, 3.0),),
        executors=(
            ExecutorInfo(
                600, KIND_SINGLE_THREAD, "the global sync thread executor", (SYNC,), 1,
                running=(WorkInfo("app.hold", NOW - 3_000_000_000, NOW - 2_900_000_000, 10, "MainThread"),),
                queued=(WorkInfo("app.release", NOW - 2_000_000_000, 0, 11, "MainThread"),),
            ),
        ),
        hops=(
            hop(10, "app.hold", age_s=3.0, thread=SYNC),
            hop(11, "app.release", age_s=2.0),
            hop(12, "app.audit", age_s=0.5),
        ),
        finished=(finished(1), finished(2, "app.other")),
        locals=(LocalAccess(1, "get", "user", True, False, "MainThread", NOW), LocalAccess(2, "get", "lang", False, True, "worker", NOW)),
        timeouts=(TimeoutExpiry(3, 20.0, 21.5, "Task-7 (handle)", "MainThread", NOW),),
        reports=reports,
        finished_seq=2,
        side_seq=3,
        stacks=stacks or {},
    )


class FakeSource:
    """Hands the app prepared snapshots; records polls and thread selections."""

    name = "fake source"
    dropped = 0
    alive = True

    def __init__(self, *snapshots: FlowSnapshot) -> None:
        self.snapshots = list(snapshots)
        self.polls = 0
        self.selects: list[tuple[int, ...]] = []
        self.closed = False

    def poll(self, select: Iterable[int] = ()) -> FlowSnapshot | None:
        self.polls += 1
        self.selects.append(tuple(select))
        if not self.snapshots:
            return None
        return self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]

    def close(self) -> None:
        self.closed = True


def rows(app: TopApp, table_id: str) -> list[list[str]]:
    table = app.query_one(f"#{table_id}", DataTable)
    return [[str(cell) for cell in table.get_row_at(index)] for index in range(table.row_count)]


def text(app: TopApp, widget_id: str) -> str:
    return str(app.query_one(f"#{widget_id}", Static).render())


SIZE = (200, 60)


async def test_top_panels_show_every_part_of_the_snapshot() -> None:
    """Tests that threads, loops, executors, hops in flight, finished hops, Locals and timeouts all appear."""
    app = TopApp(FakeSource(sample()), interval=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert rows(app, "threads") == [
            ["tracebridge-sync_0", "running sync", "running sync_to_async(`app.hold`) for 3.0 s"],
            ["MainThread", "event loop", "running event loop 0x1f4"],
            ["request-thread", "in async_to_sync", "blocked in async_to_sync(`app.fetch`)"],
        ]
        assert rows(app, "loops") == [["0x1f4", "MainThread", "running", "3.00ms"]]
        assert rows(app, "executors") == [["global sync thread executor", "tracebridge-sync_0", "hold", "1", "2.0s"]]
        assert rows(app, "hops") == [
            ["3.0s", "running", "s2a", "app.hold", "MainThread → tracebridge-sync_0", "global_sync_thread"],
            ["2.0s", "queued", "s2a", "app.release", "MainThread → …", "global_sync_thread"],
            ["500ms", "queued", "s2a", "app.audit", "MainThread → …", "global_sync_thread"],
        ]
        assert [row[3] for row in rows(app, "finished")] == ["app.other", "app.load"]  # newest first
        assert rows(app, "locals") == [
            ["get", "lang (thread-critical)", "no", "worker"],
            ["get", "user", "yes", "MainThread"],
        ]
        assert rows(app, "timeouts") == [["20.0ms", "21.5ms", "Task-7 (handle)", "MainThread"]]
        assert text(app, "status").startswith("fake source  ·  pid 4242  ·  ")
        assert not app.query_one("#alert").has_class("active")


async def test_top_alert_panel_shows_active_reports_and_hides_resolved_ones() -> None:
    """Tests that the red panel shows an active report's text and disappears once it is resolved."""
    report = ReportInfo(1, "deadlock", "DEADLOCK: …", "tracebridge watchdog: DEADLOCK: thread `x` waits", NOW)
    source = FakeSource(sample(reports=(report,)))
    app = TopApp(source, interval=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        alert = app.query_one("#alert")
        assert alert.has_class("active") and alert.display
        assert text(app, "alert-text") == "DEADLOCK: thread `x` waits"
        source.snapshots = [sample(reports=(ReportInfo(1, "deadlock", "t", "x", NOW, resolved_ns=NOW + 1),))]
        app.tick()
        await pilot.pause()
        assert not alert.has_class("active") and not alert.display


async def test_top_pause_key_stops_redraws_and_resume_continues() -> None:
    """Tests that p freezes the display (no polling) and p again resumes."""
    source = FakeSource(sample())
    app = TopApp(source, interval=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("p")
        assert app.paused and "PAUSED (p to resume)" in text(app, "status")
        polls = source.polls
        app.tick()
        assert source.polls == polls
        await pilot.press("p")
        assert not app.paused and source.polls == polls + 1
        assert "PAUSED" not in text(app, "status")


async def test_top_filter_key_keeps_matching_functions_only() -> None:
    """Tests that f opens the filter box and Enter keeps only hops whose function matches."""
    app = TopApp(FakeSource(sample()), interval=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("f")
        box = app.query_one("#filter", Input)
        assert box.has_focus and box.has_class("active")
        await pilot.press(*"RELEASE", "enter")
        assert [row[3] for row in rows(app, "hops")] == ["app.release"]
        assert rows(app, "finished") == []
        assert app.query_one("#hops", DataTable).border_title == "In flight (sort: age, filter: RELEASE)"
        assert not box.has_class("active")
        await pilot.press("f", *["backspace"] * 7, "enter")
        assert len(rows(app, "hops")) == 3


async def test_top_sort_key_cycles_orders_of_hops_in_flight() -> None:
    """Tests that s cycles the hops' sort: age (oldest first), then function name."""
    app = TopApp(FakeSource(sample()), interval=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert [row[3] for row in rows(app, "hops")] == ["app.hold", "app.release", "app.audit"]
        await pilot.press("s")
        assert app.sort == "function"
        assert [row[3] for row in rows(app, "hops")] == ["app.audit", "app.hold", "app.release"]
        await pilot.press("s", "s", "s")
        assert app.sort == "age"


async def test_top_select_thread_shows_hop_chain_and_stack() -> None:
    """Tests that t, Enter on a thread asks the source for its stack and shows its hop chain and stack."""
    stack = ('File "app.py", line 12, in hold\n    event.wait()',)
    source = FakeSource(sample(stacks={2: stack}))
    app = TopApp(source, interval=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert text(app, "detail").startswith("Select a thread")
        await pilot.press("t")
        assert app.query_one("#threads", DataTable).has_focus
        await pilot.press("enter")
        await pilot.pause()
        assert app.selected == 2 and source.selects[-1] == (2,)
        detail = text(app, "detail")
        assert detail.splitlines()[:4] == [
            "tracebridge-sync_0: running sync_to_async(`app.hold`) for 3.0 s",
            "",
            "hop chain (outermost first):",
            "  runs sync_to_async(`app.hold`)  [running, 3.0s]",
        ]
        assert detail.splitlines()[-2:] == ['  File "app.py", line 12, in hold', "      event.wait()"]


async def test_top_help_opens_and_closes_and_q_quits() -> None:
    """Tests that ? opens the help screen, Escape closes it, and q quits with status 0."""
    app = TopApp(FakeSource(sample()), interval=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("q")
    assert app.return_value == 0


class Firehose(FakeSource):
    """10,000 finished hops per second at a 0.05 s redraw interval: 500 per poll, plus the busy snapshot."""

    def __init__(self) -> None:
        super().__init__(sample())
        self.seq = 0

    def poll(self, select: Iterable[int] = ()) -> FlowSnapshot | None:
        self.polls += 1
        batch = tuple(finished(self.seq + i) for i in range(1, 501))
        self.seq += 500
        base = sample()
        return FlowSnapshot(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, "finished": batch,
                               "finished_seq": self.seq, "taken_ns": NOW + self.polls * 50_000_000})


async def test_top_stays_responsive_at_ten_thousand_hops_per_second() -> None:
    """Tests that under 10k finished hops/s the feed stays bounded, redraws stay quick and keys still work."""
    source = Firehose()
    app = TopApp(source, interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(1.0)
        assert source.polls >= 5
        assert app.query_one("#finished", DataTable).row_count == FEED_ROWS
        assert app.redraw_seconds < 0.25  # generous: a loaded 2-core machine
        await pilot.press("p")
        assert app.paused
        await pilot.press("p")
        assert not app.paused
    assert rows  # the app quit cleanly under load


async def test_top_remote_source_shows_a_streaming_app() -> None:
    """Tests the TUI against a real stream: an in-process server, a client, real bridge calls."""
    from tracebridge import flow, stream
    from tracebridge.configure import configure
    from tracebridge.dashboards.source import RemoteSource
    from tracebridge.sync import sync_to_async

    provider = configure(export=(), set_global=False)
    server = stream.serve(interval=0.05, detect=False, announce=False, info_file=None)
    client = stream.FlowStreamClient(server.address, server.token)
    try:
        assert await asyncio.get_running_loop().run_in_executor(None, client.connected.wait, 10)
        app = TopApp(RemoteSource(client), interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(20):
                await sync_to_async(threading.get_ident)()
            for _ in range(100):
                await pilot.pause(0.05)
                if app.query_one("#finished", DataTable).row_count >= 20:
                    break
            assert app.query_one("#finished", DataTable).row_count >= 20
            assert text(app, "status").startswith(f"{server.address}  ·  pid ")
    finally:
        client.close()
        server.close()
        flow.disable()
        import tracebridge

        tracebridge.set_tracer_provider(None)
        provider.shutdown()
