"""The watchdog on a healthy app at full speed: it must report nothing (issue 5, "zero false reports").

Run it from the repository root::

    /work/venv/bin/python bench/bench_watchdog.py               # 60 s, default thresholds
    /work/venv/bin/python bench/bench_watchdog.py --seconds 10  # a quick look

What runs, all in this process, for ``--seconds``:

* the demo's request (``tracebridge.demo.handle_request``: a ThreadSensitiveContext,
  nested sync_to_async/async_to_sync, Local state, a timeout that expires, a
  failing call), ``--concurrency`` at a time, back to back, on one loop;
* a hammer on a second loop: tasks doing nothing but thread-sensitive and
  non-thread-sensitive ``sync_to_async`` calls, as fast as they go (the global
  sync thread's queue is never empty: long queue waits, no stall);
* a sync thread hammering ``async_to_sync`` (a new loop per call);
* the watchdog with the default thresholds (``tracebridge demo``'s), the flow
  stream on loopback and a client reading every frame (what ``tracebridge top``
  does).

It prints hops per second, watchdog scans and stream frames, and every report
(there should be none).  Exit status 1 if any report was made.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import Sequence

from tracebridge import flow, stream, watchdog
from tracebridge.configure import configure
from tracebridge.sync import async_to_sync, sync_to_async


def _noop() -> None:
    pass


async def _anoop() -> None:
    await asyncio.sleep(0)


async def _hammer(stop: threading.Event, workers: int) -> None:
    async def worker(index: int) -> None:
        call = sync_to_async(_noop, thread_sensitive=index % 2 == 0)
        while not stop.is_set():
            await call()

    await asyncio.gather(*(worker(index) for index in range(workers)))


async def _demo(stop: threading.Event, concurrency: int) -> None:
    from tracebridge import demo

    while not stop.is_set():
        await asyncio.gather(*(demo.handle_request(7) for _ in range(concurrency)))


def _a2s(stop: threading.Event) -> None:
    call = async_to_sync(_anoop)
    while not stop.is_set():
        call()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=16, help="demo requests at a time")
    parser.add_argument("--hammer", type=int, default=16, help="tasks hammering sync_to_async")
    parser.add_argument("--stall-threshold", type=float, default=watchdog.DEFAULT_STALL_THRESHOLD_S)
    parser.add_argument("--loop-threshold", type=float, default=watchdog.DEFAULT_LOOP_THRESHOLD_S)
    args = parser.parse_args(argv)

    configure(export=(), service_name="bench-watchdog", set_global=False)
    reports: list[watchdog.Report] = []
    dog = watchdog.watch(
        stall_threshold=args.stall_threshold, loop_threshold=args.loop_threshold, on_report=reports.append, log=False
    )
    server = stream.serve(detect=False, announce=False)
    client = stream.FlowStreamClient(server.address, server.token)
    client.connected.wait(10)
    stop = threading.Event()

    def drain_client() -> None:
        while not stop.is_set():
            client.poll()
            time.sleep(0.05)

    threads = [
        threading.Thread(target=asyncio.run, args=(_demo(stop, args.concurrency),), name="bench-demo"),
        threading.Thread(target=asyncio.run, args=(_hammer(stop, args.hammer),), name="bench-hammer"),
        threading.Thread(target=_a2s, args=(stop,), name="bench-a2s"),
        threading.Thread(target=drain_client, name="bench-viewer"),
    ]
    model = flow.get_model()
    assert model is not None
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        while time.monotonic() - started < args.seconds:
            time.sleep(min(5.0, args.seconds))
            elapsed = time.monotonic() - started
            done = model.snapshot(limit=0).finished_seq
            print(
                f"{elapsed:5.1f} s  {done / elapsed:9,.0f} hops/s  scans {dog.scans}  frames {client.frames}  "
                f"reports {len(reports)}",
                flush=True,
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        elapsed = time.monotonic() - started
        dog.stop()
        client.close()
        server.close()
    done = model.snapshot(limit=0).finished_seq
    print(
        f"\n{elapsed:.1f} s, {done:,} hops ({done / elapsed:,.0f}/s), {dog.scans} watchdog scans, "
        f"{server.frames_sent} stream frames ({server.frames_dropped} dropped): {len(reports)} report(s)"
    )
    for report in reports:
        print("\n" + report.text)
    return 1 if reports else 0


if __name__ == "__main__":
    sys.exit(main())
