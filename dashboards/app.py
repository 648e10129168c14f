"""``tracebridge top``: the live view of threads, loops, executors and bridge calls (Textual).

The app never reacts to events one by one: a timer (``set_interval``) polls
its source for the newest :class:`~tracebridge.flow.FlowSnapshot` a few times a
second and redraws from it, so it stays responsive however many hops per
second the application makes (each redraw is bounded: at most a few hundred
rows).  Keys: ``p`` pause/resume, ``t`` pick a thread (then ↑/↓ and Enter) to
see its hop chain and stack, ``f`` filter by function name, ``s`` change the
sort of the hops in flight, ``?`` help, ``q`` quit.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, Input, Static

from tracebridge.flow import FinishedHop, FlowSnapshot, LocalAccess, TimeoutExpiry

from . import views
from .source import SnapshotSource

__all__ = ["HelpScreen", "TopApp", "run_top"]

FEED_ROWS = 200
"""Finished hops kept on screen (newest first)."""

HELP = """\
tracebridge top — what every thread, event loop and executor is doing, live

  p        pause / resume the display (the app keeps running)
  t        go to the threads panel: ↑/↓ to move, Enter to select a thread
           (its hop chain and current stack appear on the right)
  f        filter hops by function name (Enter to apply, empty to clear)
  s        sort the hops in flight: age → function → thread → state
  ?        this help
  q        quit

Panels
  Threads      each thread and what it does in bridge terms
  Loops        each event loop, its thread and heartbeat lag
  Executors    running item and queue of every executor in use
  In flight    sync_to_async / async_to_sync calls not yet returned
  Finished     the newest completed calls: queue wait and run time
  Locals       Local attribute accesses (names only, never values)
  Timeouts     timeout blocks that expired
  Red panel    the watchdog's deadlock / stall / blocked-loop reports

Press Escape or ? to close this help."""


class HelpScreen(ModalScreen[None]):
    """The key and panel reference."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("question_mark", "close", "Close")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    #help { width: 84; height: auto; border: thick $accent; padding: 1 2; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help")

    def action_close(self) -> None:
        self.dismiss(None)


class TopApp(App[int]):
    """The live view.  ``source`` gives snapshots (see :mod:`tracebridge.dashboards.source`)."""

    TITLE = "tracebridge top"
    AUTO_FOCUS = "#hops"  # never the (hidden) filter box, which would swallow the keys

    CSS = """
    #status { height: 1; background: $boost; padding: 0 1; }
    #alert { display: none; height: auto; max-height: 18; border: heavy red; padding: 0 1; }
    #alert-text { color: red; }
    #alert.active { display: block; }
    #filter { display: none; }
    #filter.active { display: block; }
    .row { height: 1fr; }
    DataTable { height: 1fr; border: round $primary-darken-2; }
    DataTable:focus { border: round $accent; }
    #threads { width: 2fr; }
    #side { width: 1fr; }
    #hops { width: 2fr; }
    #detail-box { width: 1fr; border: round $primary-darken-2; }
    #finished { width: 2fr; }
    #locals, #timeouts { width: 1fr; }
    """

    BINDINGS = [
        Binding("p", "toggle_pause", "Pause"),
        Binding("t", "focus_threads", "Threads"),
        Binding("f", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "close_filter", "Close filter", show=False),
    ]

    def __init__(self, source: SnapshotSource, *, interval: float = 0.25, subtitle: str = "") -> None:
        super().__init__()
        self.source = source
        self.interval = interval
        self.sub_title = subtitle or source.name
        self.paused = False
        self.needle = ""
        self.sort = views.HOP_SORTS[0]
        self.selected: int | None = None
        self.snapshot: FlowSnapshot | None = None
        self.polls = 0
        self.redraw_seconds = 0.0
        self.rates = views.Rates()
        self._feed: list[FinishedHop] = []
        self._locals: list[LocalAccess] = []
        self._timeouts: list[TimeoutExpiry] = []
        self._thread_keys: list[int] = []

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting…", id="status")
        with VerticalScroll(id="alert"):  # scrollable: reports carry stacks
            yield Static("", id="alert-text")
        yield Input(placeholder="filter hops by function name, Enter to apply", id="filter")
        with Horizontal(classes="row"):
            yield DataTable(id="threads", cursor_type="row")
            with Vertical(id="side"):
                yield DataTable(id="loops", cursor_type="row")
                yield DataTable(id="executors", cursor_type="row")
        with Horizontal(classes="row"):
            yield DataTable(id="hops", cursor_type="row")
            with VerticalScroll(id="detail-box"):
                yield Static(views.thread_detail(FlowSnapshot(0, 0), None), id="detail")
        with Horizontal(classes="row"):
            yield DataTable(id="finished", cursor_type="row")
            yield DataTable(id="locals", cursor_type="row")
            yield DataTable(id="timeouts", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        titles = {
            "threads": ("Threads", views.THREAD_COLUMNS),
            "loops": ("Loops", views.LOOP_COLUMNS),
            "executors": ("Executors", views.EXECUTOR_COLUMNS),
            "hops": ("In flight", views.HOP_COLUMNS),
            "finished": ("Finished", views.FINISHED_COLUMNS),
            "locals": ("Locals", views.LOCAL_COLUMNS),
            "timeouts": ("Timeouts", views.TIMEOUT_COLUMNS),
        }
        for widget_id, (title, columns) in titles.items():
            table = self.query_one(f"#{widget_id}", DataTable)
            table.border_title = title
            table.add_columns(*columns)
        self.query_one("#detail-box").border_title = "Selected thread"
        self.query_one("#alert").border_title = "watchdog (scroll for stacks)"
        self.tick()
        self.set_interval(self.interval, self.tick)

    # ------------------------------------------------------------------ the fixed-rate redraw

    def tick(self) -> None:
        """Poll the source once and redraw everything from the newest snapshot (the only redraw path)."""
        if self.paused:
            return
        select = (self.selected,) if self.selected is not None else ()
        snapshot = self.source.poll(select)
        self.polls += 1
        if snapshot is None:
            with contextlib.suppress(NoMatches):
                if self.snapshot is None:
                    self.query_one("#status", Static).update(f"{self.source.name}: waiting for the first snapshot…")
                elif not self.source.alive:
                    self.query_one("#status", Static).update(f"{self.source.name} — showing the last state received")
            return
        started = time.perf_counter()
        try:
            self.apply(snapshot)
        except NoMatches:  # the app is closing: its widgets are gone
            return
        self.redraw_seconds = time.perf_counter() - started

    def apply(self, snapshot: FlowSnapshot) -> None:
        self.snapshot = snapshot
        rate = self.rates.update(snapshot)
        self._feed = (self._feed + list(snapshot.finished))[-FEED_ROWS:]
        self._locals = (self._locals + list(snapshot.locals))[-100:]
        self._timeouts = (self._timeouts + list(snapshot.timeouts))[-50:]

        self.query_one("#status", Static).update(
            views.status_line(snapshot, rate, source=self.source.name, paused=False, dropped=self.source.dropped)
        )
        text = views.alert_text(snapshot)
        self.query_one("#alert").set_class(text is not None, "active")
        self.query_one("#alert-text", Static).update(text or "")

        thread_rows = views.thread_rows(snapshot)
        self._thread_keys = [ident for ident, _ in thread_rows]
        self._fill("threads", [cells for _, cells in thread_rows])
        self._fill("loops", views.loop_rows(snapshot))
        self._fill("executors", views.executor_rows(snapshot))
        self._fill("hops", [cells for _, cells in views.hop_rows(snapshot, sort=self.sort, needle=self.needle)])
        self._fill("finished", views.finished_rows(self._feed, needle=self.needle, limit=FEED_ROWS))
        self._fill("locals", views.local_rows(self._locals))
        self._fill("timeouts", views.timeout_rows(self._timeouts))
        self.query_one("#hops", DataTable).border_title = f"In flight (sort: {self.sort}" + (
            f", filter: {self.needle})" if self.needle else ")"
        )
        self.query_one("#detail", Static).update(views.thread_detail(snapshot, self.selected))

    def _fill(self, widget_id: str, rows: list[tuple[str, ...]]) -> None:
        table = self.query_one(f"#{widget_id}", DataTable)
        cursor = table.cursor_row
        table.clear()
        table.add_rows(rows)
        if rows and table.has_focus:
            table.move_cursor(row=min(cursor, len(rows) - 1), scroll=False)

    # ------------------------------------------------------------------ keys

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        status = self.query_one("#status", Static)
        if self.paused and self.snapshot is not None:
            status.update(
                views.status_line(self.snapshot, self.rates.per_second, source=self.source.name, paused=True)
            )
        elif not self.paused:
            self.tick()

    def action_focus_threads(self) -> None:
        self.query_one("#threads", DataTable).focus()

    def action_sort(self) -> None:
        index = views.HOP_SORTS.index(self.sort)
        self.sort = views.HOP_SORTS[(index + 1) % len(views.HOP_SORTS)]
        if self.snapshot is not None:
            self.apply_view_only()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("active")
        box.value = self.needle
        box.focus()

    def action_close_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_class("active"):
            box.remove_class("active")
            self.query_one("#hops", DataTable).focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_quit(self) -> None:  # type: ignore[override]
        self.exit(0)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.needle = event.value.strip()
        event.input.remove_class("active")
        self.query_one("#hops", DataTable).focus()
        if self.snapshot is not None:
            self.apply_view_only()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "threads":
            return
        row = event.cursor_row
        if 0 <= row < len(self._thread_keys):
            self.selected = self._thread_keys[row]
            self.tick()  # fetch the stack now rather than at the next tick

    def apply_view_only(self) -> None:
        """Redraw the hop panels from the current snapshot (after a sort or filter change)."""
        snapshot = self.snapshot
        if snapshot is None:
            return
        self._fill("hops", [cells for _, cells in views.hop_rows(snapshot, sort=self.sort, needle=self.needle)])
        self._fill("finished", views.finished_rows(self._feed, needle=self.needle, limit=FEED_ROWS))
        self.query_one("#hops", DataTable).border_title = f"In flight (sort: {self.sort}" + (
            f", filter: {self.needle})" if self.needle else ")"
        )


def run_top(
    *,
    address: str | None = None,
    token: str | None = None,
    demo: bool = False,
    detect: bool = True,
    stall_threshold: float | None = None,
    loop_threshold: float | None = None,
    title: str = "",
) -> int:
    """Run the TUI against a stream (``address`` + ``token``) or the in-process demo (``demo=True``)."""
    from tracebridge import flow, stream

    from .source import DemoWorkload, LocalSource, RemoteSource

    workload: DemoWorkload | None = None
    watchdog: Any = None
    source: SnapshotSource
    if address is not None:
        client = stream.FlowStreamClient(address, token or "")
        if not client.connected.wait(10) or client.error:
            client.close()
            raise SystemExit(f"tracebridge top: {address}: {client.error or 'no answer'}")
        source = RemoteSource(client)
        subtitle = title or f"{address} (pid {client.pid})"
    else:
        if not demo:
            raise ValueError("run_top needs an address, or demo=True")
        from tracebridge import _telemetry, watchdog as watchdog_module
        from tracebridge.configure import configure

        if _telemetry.get_tracer_provider() is None:
            configure(export=(), service_name="tracebridge-top-demo", set_global=False)
        model = flow.enable()
        if detect:
            options: dict[str, Any] = {"log": False}
            if stall_threshold is not None:
                options["stall_threshold"] = stall_threshold
            if loop_threshold is not None:
                options["loop_threshold"] = loop_threshold
            watchdog = watchdog_module.watch(**options)
        workload = DemoWorkload().start()
        source = LocalSource(model, "demo workload, in this process")
        subtitle = title or "the built-in demo, in this process"
    try:
        result = TopApp(source, subtitle=subtitle).run()
    finally:
        source.close()
        if workload is not None:
            workload.stop()
        if watchdog is not None:
            watchdog.stop()
    return int(result or 0)
