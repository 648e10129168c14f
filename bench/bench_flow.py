"""What the flow model, the watchdog and the stream add per hop (issue 5 target: at most 1.10x).

Run it from the repository root::

    /work/venv/bin/python bench/bench_flow.py            # ~3.5 minutes
    /work/venv/bin/python bench/bench_flow.py --quick    # ~1 minute

Two variants, same process, same provider (an SDK ``TracerProvider`` with a
``BatchSpanProcessor`` and an exporter that discards everything):

* ``traced``: tracing only (``_telemetry.flow`` is None; no watchdog, no stream);
* ``model``: the flow model on (the bridges feed it), no background thread;
* ``live``: the flow model on, the watchdog scanning (default interval), the
  flow stream serving a client that reads every frame, in another process
  (what ``tracebridge top ADDRESS`` does: decoding frames is the viewer's
  cost, not the app's).  The background threads are started before and
  stopped after each ``live`` batch, outside the timed region, so ``traced``
  batches run without them.  Both work per interval (0.25 s), not per hop, and
  their first round comes one interval after they start, so a ``live`` batch
  starts timing only once the reader has received a frame and the watchdog
  has scanned, and every batch lasts several intervals (``--region-ms`` of
  CPU, default 0.75 s, about 1.5 s of wall time): otherwise the timed region would hold no frame and no scan
  at all (an earlier version timed 80 ms batches and measured neither).  The
  frames and scans that fell inside the timed regions are printed.

Each repetition times the variants back to back (order rotating), and the
table shows per operation (CPU time of the whole process per op: the
background threads' work counts) the median of the per-repetition ratios
``model / traced`` and ``live / traced`` (the target), with the latter's
interquartile range.  Operations: thread-sensitive
``sync_to_async`` (the global sync thread), ``thread_sensitive=False``, a
``sync_to_async`` nested in ``async_to_sync`` (through a CurrentThreadExecutor),
and ``async_to_sync`` from a plain thread (a new loop per call).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import tracebridge
from tracebridge import _telemetry, flow, stream, watchdog
from tracebridge.sync import async_to_sync, sync_to_async

from _common import pin_to_one_cpu  # bench/ is on sys.path: the scripts run from there

TARGET = 1.10


class Discard(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _noop() -> None:
    pass


async def _anoop() -> None:
    pass


def op_s2a_ts(n: int, loop: asyncio.AbstractEventLoop) -> None:
    call = sync_to_async(_noop)

    async def run() -> None:
        for _ in range(n):
            await call()

    loop.run_until_complete(run())


def op_s2a_nts(n: int, loop: asyncio.AbstractEventLoop) -> None:
    call = sync_to_async(_noop, thread_sensitive=False)

    async def run() -> None:
        for _ in range(n):
            await call()

    loop.run_until_complete(run())


def op_nested(n: int, loop: asyncio.AbstractEventLoop) -> None:
    call = sync_to_async(_noop)

    async def run() -> None:
        for _ in range(n):
            await call()

    async_to_sync(run)()


def op_a2s(n: int, loop: asyncio.AbstractEventLoop) -> None:
    call = async_to_sync(_anoop)
    for _ in range(n):
        call()


OPS: dict[str, Callable[[int, asyncio.AbstractEventLoop], None]] = {
    "s2a_ts": op_s2a_ts,
    "s2a_nts": op_s2a_nts,
    "nested": op_nested,
    "a2s": op_a2s,
}


# The viewer, in a child process like `tracebridge top ADDRESS`.  Reads commands on stdin:
# "connect ADDRESS TOKEN" (answers "streaming FRAMES" once the first frame arrived) and
# "count" (answers "FRAMES DROPPED" for the current connection).
READER = """
import sys, time
from tracebridge import stream
client = None
for line in sys.stdin:
    command, *args = line.split()
    if command == "connect":
        if client is not None:
            client.close()
        client = stream.FlowStreamClient(args[0], args[1])
        deadline = time.monotonic() + 10
        while client.frames == 0 and client.alive and time.monotonic() < deadline:
            time.sleep(0.002)
        print("streaming", client.frames, flush=True)
    elif command == "count":
        print(client.frames if client else 0, client.dropped if client else 0, flush=True)
"""


class Reader:
    """The child process reading the stream."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", READER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def ask(self, command: str) -> list[str]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the stream reader process exited (status {self.process.wait(5)})")
        return answer.split()

    def close(self) -> None:
        assert self.process.stdin
        self.process.stdin.close()
        self.process.wait(10)


class Live:
    """The flow model, watchdog and stream with a reading client: on for a batch, off after."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.dog: watchdog.Watchdog | None = None
        self.server: stream.FlowStreamServer | None = None
        # Totals over the timed regions of all live batches.
        self.batches = 0
        self.seconds = 0.0
        self.frames_sent = 0
        self.frames_read = 0
        self.frames_dropped = 0
        self.scans = 0
        self.ops = 0
        self.stream_cpu_ns = 0
        self.watchdog_cpu_ns = 0
        self._mark: tuple[float, int, int, int, int] = (0.0, 0, 0, 0, 0)

    def _thread_cpu_ns(self) -> tuple[int, int]:
        """CPU time so far of the stream thread and the watchdog thread (exact, whatever else the machine runs)."""
        assert self.dog and self.server
        return _cpu_ns(self.server._thread), _cpu_ns(self.dog._thread)

    def on(self) -> None:
        """Start everything and wait until both background threads are in their steady rhythm."""
        model = flow.enable()
        self.dog = watchdog.Watchdog(model, log=False).start()
        self.server = stream.FlowStreamServer(model).start()
        streaming = self.reader.ask(f"connect {self.server.address} {self.server.token}")
        if streaming[0] != "streaming" or int(streaming[1]) < 1:
            raise RuntimeError(f"the stream reader got no frame: {streaming}")
        deadline = time.monotonic() + 5
        while self.dog.scans < 1 and time.monotonic() < deadline:
            time.sleep(0.005)

    def start_region(self) -> None:
        assert self.dog and self.server
        self._mark = (time.monotonic(), self.server.frames_sent, self.dog.scans, *self._thread_cpu_ns())

    def end_region(self, ops: int) -> None:
        assert self.dog and self.server
        stream_cpu, watchdog_cpu = self._thread_cpu_ns()
        started, frames, scans, stream_cpu0, watchdog_cpu0 = self._mark
        self.batches += 1
        self.ops += ops
        self.seconds += time.monotonic() - started
        self.frames_sent += self.server.frames_sent - frames
        self.scans += self.dog.scans - scans
        self.stream_cpu_ns += stream_cpu - stream_cpu0
        self.watchdog_cpu_ns += watchdog_cpu - watchdog_cpu0

    def summary(self) -> str:
        seconds = max(self.seconds, 1e-9)
        ops = max(self.ops, 1)
        return "\n".join([
            f"in the {self.batches} timed live batches ({self.seconds:.1f} s, {self.ops:,} ops): "
            f"{self.frames_sent} stream frames sent ({self.frames_sent / seconds:.1f}/s), "
            f"{self.scans} watchdog scans ({self.scans / seconds:.1f}/s); the reader process read "
            f"{self.frames_read} frames in all live batches, {self.frames_dropped} dropped",
            f"their threads' own CPU: stream {self.stream_cpu_ns / 1e6:,.0f} ms "
            f"({self.stream_cpu_ns / max(self.frames_sent, 1) / 1e3:,.0f} us per frame, "
            f"{self.stream_cpu_ns / ops:,.0f} ns per op), watchdog {self.watchdog_cpu_ns / 1e6:,.0f} ms "
            f"({self.watchdog_cpu_ns / max(self.scans, 1) / 1e3:,.0f} us per scan, {self.watchdog_cpu_ns / ops:,.0f} ns per op)",
        ])

    def off(self) -> None:
        assert self.dog and self.server
        read, dropped = (int(value) for value in self.reader.ask("count"))
        self.frames_read += read
        self.frames_dropped += dropped
        self.server.close()
        self.dog.stop()
        flow.disable()


def _cpu_ns(thread: threading.Thread | None) -> int:
    if thread is None or thread.ident is None or not thread.is_alive():
        return 0
    try:
        return time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))
    except (AttributeError, OSError):  # not Linux/BSD: the totals above still count
        return 0


def timed(
    op: Callable[[int, asyncio.AbstractEventLoop], None],
    n: int,
    loop: asyncio.AbstractEventLoop,
    live: Live | None = None,
) -> float:
    """CPU nanoseconds per op, all threads of the process (the background threads' work counts too).

    CPU time, not wall time: a thread hop's wall time is mostly the scheduler's
    wake-up latency, which swings by tens of percent on a shared 2-core VM.
    """
    gc.collect()
    gc.disable()
    try:
        if live is not None:
            live.start_region()
        start = time.process_time_ns()
        op(n, loop)
        elapsed = time.process_time_ns() - start
        if live is not None:
            live.end_region(n)
        return elapsed / n
    finally:
        gc.enable()
        tracebridge.flush()


def hook_cost_ns(rounds: int = 200_000) -> float:
    """The flow recorder's own cost per hop (open + start + close), measured in a tight loop."""
    from tracebridge import semconv
    from tracebridge._flow_recorder import FlowRecorder
    from tracebridge._hop import Hop

    tracer = _telemetry.get_tracer()
    assert tracer is not None
    hop = Hop.open(tracer, semconv.SYNC_TO_ASYNC, _noop)
    assert hop is not None
    recorder = FlowRecorder()
    started = time.process_time_ns()
    for _ in range(rounds):
        recorder.hop_opened(hop, None)
        recorder.hop_started(hop)
        recorder.hop_closed(hop, None, 0)
    return (time.process_time_ns() - started) / rounds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--region-ms", type=float, default=None, help="CPU time of the traced variant per timed batch")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = parser.parse_args(argv)
    print(pin_to_one_cpu(not args.no_pin))
    reps = args.reps or (4 if args.quick else 8)
    # Several stream/watchdog intervals (0.25 s) per batch, so each holds their per-interval work.
    region_ms = args.region_ms or (500.0 if args.quick else 750.0)

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 16))
    tracebridge.set_tracer_provider(provider)
    loop = asyncio.new_event_loop()
    live = Live(Reader())
    live.on()  # attach the flow model's span processor once, like an app that turns it on
    live.off()

    sizes = {}
    for name, op in OPS.items():
        op(50, loop)  # warm up
        per_op = timed(op, 200, loop)
        sizes[name] = max(20, int(region_ms * 1e6 / per_op))

    variants = ("traced", "model", "live")
    ratios: dict[str, dict[str, list[float]]] = {name: {"model": [], "live": []} for name in OPS}
    base_ns: dict[str, list[float]] = {name: [] for name in OPS}
    for rep in range(reps):
        for name, op in OPS.items():
            n = sizes[name]
            order = variants[rep % 3 :] + variants[: rep % 3]  # rotate who goes first
            result: dict[str, float] = {}
            for variant in order:
                if variant == "live":
                    live.on()  # returns once a frame was read and a scan done: start-up is not per-hop cost
                    try:
                        result[variant] = timed(op, n, loop, live)
                    finally:
                        live.off()
                elif variant == "model":
                    flow.enable()
                    try:
                        result[variant] = timed(op, n, loop)
                    finally:
                        flow.disable()
                else:
                    assert _telemetry.flow is None
                    result[variant] = timed(op, n, loop)
            for variant in ("model", "live"):
                ratios[name][variant].append(result[variant] / result["traced"])
            base_ns[name].append(result["traced"])

    print(f"{'op':10} {'traced cpu ns/op':>16} {'model/traced':>13} {'live/traced':>12} {'live IQR':>15}  target {TARGET:.2f}")
    failed = False
    for name in OPS:
        live_values = sorted(ratios[name]["live"])
        quartiles = statistics.quantiles(live_values, n=4) if len(live_values) >= 4 else [live_values[0], 0, live_values[-1]]
        median = statistics.median(live_values)
        ok = median <= TARGET
        failed |= not ok
        print(
            f"{name:10} {statistics.median(base_ns[name]):16,.0f} {statistics.median(ratios[name]['model']):13.3f} "
            f"{median:12.3f} [{quartiles[0]:.3f}-{quartiles[2]:.3f}]  {'PASS' if ok else 'FAIL'}"
        )
    print(f"\n{reps} repetitions of {region_ms:g} ms CPU per batch; {live.summary()}")
    print(f"the flow recorder's hooks alone: {hook_cost_ns():,.0f} CPU ns per hop (open + start + close)")
    live.reader.close()
    loop.close()
    provider.shutdown()
    if live.frames_sent == 0 or live.scans == 0:
        print("the live batches held no stream frame or no watchdog scan: the live numbers do not measure them")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
