"""Where ``tracebridge top`` gets its snapshots: this process's flow model, or a stream.

A source has ``poll(select)`` (the newest snapshot not yet seen, or None),
``name`` and ``close()``.  ``select`` is the thread idents whose stacks to include.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Protocol

from tracebridge.flow import FlowModel, FlowSnapshot
from tracebridge.stream import FlowStreamClient

__all__ = ["DemoWorkload", "LocalSource", "RemoteSource", "SnapshotSource"]


class SnapshotSource(Protocol):
    @property
    def name(self) -> str: ...

    def poll(self, select: Iterable[int] = ()) -> FlowSnapshot | None: ...

    def close(self) -> None: ...

    @property
    def alive(self) -> bool:
        """False once no new snapshot can come (the streaming app went away)."""
        ...

    @property
    def dropped(self) -> int: ...


class LocalSource:
    """Snapshots of this process's flow model (the TUI thread builds them; no stream involved)."""

    def __init__(self, model: FlowModel, name: str = "this process", *, feed_limit: int = 500) -> None:
        self.model = model
        self.name = name
        self.feed_limit = feed_limit
        self._since = 0
        self._side_since = 0

    def poll(self, select: Iterable[int] = ()) -> FlowSnapshot | None:
        snapshot = self.model.snapshot(
            since=self._since, side_since=self._side_since, limit=self.feed_limit, stacks_for=select
        )
        self._since, self._side_since = snapshot.finished_seq, snapshot.side_seq
        return snapshot

    @property
    def dropped(self) -> int:
        return 0

    @property
    def alive(self) -> bool:
        return True

    def close(self) -> None:
        pass


class RemoteSource:
    """Snapshots streamed by another process (:class:`tracebridge.stream.FlowStreamClient`)."""

    def __init__(self, client: FlowStreamClient) -> None:
        self.client = client
        self._selected: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        if self.client.error and not self.client.alive:
            return f"{self.client.address}: {self.client.error}"
        return f"{self.client.address}"

    def poll(self, select: Iterable[int] = ()) -> FlowSnapshot | None:
        selected = tuple(select)
        if selected != self._selected:
            self._selected = selected
            self.client.select(selected)
        return self.client.poll()

    @property
    def dropped(self) -> int:
        return self.client.dropped

    @property
    def alive(self) -> bool:
        return self.client.alive

    def close(self) -> None:
        self.client.close()


class DemoWorkload:
    """The demo's request, served over and over, several at a time, on a loop in a background thread.

    For ``tracebridge top`` without an address: something to look at.
    """

    def __init__(self, concurrency: int = 8) -> None:
        self.concurrency = concurrency
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tracebridge-top-demo", daemon=True)

    def start(self) -> DemoWorkload:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        from tracebridge import demo

        while not self._stop.is_set():
            await asyncio.gather(*(demo.handle_request(7) for _ in range(self.concurrency)))
            self.requests += self.concurrency
