"""What the flow model, the watchdog and the stream add per hop (issue 5 target: at most 1.10x).

Run it from the repository root::

    /work/venv/bin/python bench/bench_flow.py            # ~1 minute
    /work/venv/bin/python bench/bench_flow.py --quick    # ~15 seconds

Two variants, same process, same provider (an SDK ``TracerProvider`` with a
``BatchSpanProcessor`` and an exporter that discards everything):

* ``traced``: tracing only (``_telemetry.flow`` is None; no watchdog, no stream);
* ``model``: the flow model on (the bridges feed it), no background thread;
* ``live``: the flow model on, the watchdog scanning (default interval), the
  flow stream serving a client that reads every frame (what ``tracebridge
  top ADDRESS`` does).  The background threads are started before and stopped
  after each ``live`` batch, outside the timed region, so ``traced`` batches
  run without them.

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
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import tracebridge
from tracebridge import _telemetry, flow, stream, watchdog
from tracebridge.sync import async_to_sync, sync_to_async

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


class Live:
    """The flow model, watchdog and stream with a reading client: on for a batch, off after."""

    def __init__(self) -> None:
        self.dog: watchdog.Watchdog | None = None
        self.server: stream.FlowStreamServer | None = None
        self.client: stream.FlowStreamClient | None = None
        self.frames = 0

    def on(self) -> None:
        model = flow.enable()
        self.dog = watchdog.Watchdog(model, log=False).start()
        self.server = stream.FlowStreamServer(model).start()
        self.client = stream.FlowStreamClient(self.server.address, self.server.token)
        self.client.connected.wait(10)

    def off(self) -> None:
        assert self.dog and self.server and self.client
        self.frames += self.client.frames
        self.client.close()
        self.server.close()
        self.dog.stop()
        flow.disable()


def timed(op: Callable[[int, asyncio.AbstractEventLoop], None], n: int, loop: asyncio.AbstractEventLoop) -> float:
    """CPU nanoseconds per op, all threads of the process (the background threads' work counts too).

    CPU time, not wall time: a thread hop's wall time is mostly the scheduler's
    wake-up latency, which swings by tens of percent on a shared 2-core VM.
    """
    gc.collect()
    gc.disable()
    try:
        start = time.process_time_ns()
        op(n, loop)
        return (time.process_time_ns() - start) / n
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
    hop = Hop.open(tracer, semconv.SYNC_TO_ASYNC, semconv.DIRECTION_SYNC_TO_ASYNC, _noop, {})
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
    parser.add_argument("--region-ms", type=float, default=None, help="traced time per timed batch")
    args = parser.parse_args(argv)
    reps = args.reps or (8 if args.quick else 30)
    region_ms = args.region_ms or (40.0 if args.quick else 80.0)

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 16))
    tracebridge.set_tracer_provider(provider)
    loop = asyncio.new_event_loop()
    live = Live()
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
                    live.on()
                    time.sleep(0.05)  # let its threads settle: their start-up is not per-hop cost
                    try:
                        result[variant] = timed(op, n, loop)
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
    print(f"\n{reps} repetitions; stream frames read by the client during live batches: {live.frames}")
    print(f"the flow recorder's hooks alone: {hook_cost_ns():,.0f} CPU ns per hop (open + start + close)")
    loop.close()
    provider.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
