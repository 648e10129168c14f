"""Export benchmark: spans per second through each exporter, and what OTLP costs the traced app.

Run it from the repository root::

    /work/venv/bin/python bench/bench_export.py            # full run, about a minute
    /work/venv/bin/python bench/bench_export.py --quick    # smoke run, about 15 seconds

Part 1, **throughput**: the spans of a real traced request (a root span, an
``async_to_sync`` hop, two thread-sensitive ``sync_to_async`` hops and their
handoffs: 6 spans) are copied into many traces, then handed to each exporter in
batches of 512 (the batch processor's default), timing ``export`` plus the
final ``force_flush``/``shutdown`` (where the whole-document exporters encode
and write).  OTLP goes to a real receiver on 127.0.0.1 (the test suite's
``tests/exporters/otlp_receiver.py``), gRPC and HTTP/protobuf; the receiver runs in a child process, as a collector would,
and parses every request.  The console exporter renders into a string.

Part 2, **slowdown of the traced application**, same run: the same request
served in a loop with tracing on, exporting through (a) a discarding exporter
and (b) the ``otlp`` spec's processor to the loopback gRPC receiver, both
behind batch processors with the SDK's default settings, alternating variants
each repetition.  Spans are built and exported on background threads
concurrently with the timed loop, so their cost shows up as it would in an
application (GIL contention); a flush runs between repetitions, outside the
timed region.  The figure is the median over repetitions of the per-repetition
ratio ``time with OTLP / time with discarding`` (1.00 = no slowdown).
Tracing off is timed too, for reference.

No span may be lost: the receiver must have every span of part 2, and
``tracebridge.exporters.stats()`` must show no drops; otherwise the exit
status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

import tracebridge
from tracebridge.exporters import ConsoleTraceExporter, JaegerJsonExporter, JsonLinesExporter, PerfettoExporter
from tracebridge.exporters import otlp, stats
from tracebridge.sync import async_to_sync, sync_to_async

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "exporters"))
from otlp_receiver import OtlpReceiver  # noqa: E402

BATCH = 512


# ---------------------------------------------------------------------------
# The collector: a loopback receiver in a child process.


@dataclass
class Collector:
    url: str
    process: subprocess.Popen[str]

    def spans(self) -> int:
        """Spans received so far (asks the child)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())


@contextlib.contextmanager
def collector(protocol: str) -> Iterator[Collector]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", protocol],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        yield Collector(process.stdout.readline().strip(), process)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(30)


def serve_receiver(protocol: str) -> int:
    """The child: run a receiver, print its URL, answer "count" lines until stdin closes."""
    with OtlpReceiver(protocol) as receiver:  # type: ignore[arg-type]
        print(receiver.url, flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                with receiver.arrived:
                    count = receiver._count()
                print(count, flush=True)
    return 0


class DiscardingExporter(SpanExporter):
    """Counts spans and drops them: the baseline."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


# ---------------------------------------------------------------------------
# The traced request.


def _lookup() -> int:
    return threading.get_ident()


async def _view() -> int:
    await sync_to_async(_lookup)()
    return await sync_to_async(_lookup)()


def serve(provider: TracerProvider | None) -> None:
    """One request; with a provider, under a root span."""
    if provider is None:
        async_to_sync(_view)()
        return
    with provider.get_tracer("bench").start_as_current_span("request"):
        async_to_sync(_view)()


def request_spans() -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracebridge.set_tracer_provider(provider)
    serve(provider)
    tracebridge.flush()
    tracebridge.set_tracer_provider(None)
    return list(memory.get_finished_spans())


def replicate(template: Sequence[ReadableSpan], count: int) -> list[ReadableSpan]:
    """``count`` spans: copies of the template request, each copy its own trace."""
    out: list[ReadableSpan] = []
    copy = 0
    while len(out) < count:
        copy += 1
        trace_id = (0xB0 << 120) | copy
        for span in template:
            context = SpanContext(trace_id, span.context.span_id, False, TraceFlags(1))
            parent = SpanContext(trace_id, span.parent.span_id, False, TraceFlags(1)) if span.parent else None
            out.append(ReadableSpan(
                span.name, context, parent, span.resource, span.attributes, span.events, span.links,
                span.kind, None, span.status, span.start_time, span.end_time, span.instrumentation_scope,
            ))
    return out[:count]


# ---------------------------------------------------------------------------
# Part 1: throughput.


def throughput(name: str, make: Callable[[], SpanExporter], spans: list[ReadableSpan]) -> float:
    exporter = make()
    gc.collect()
    started = time.perf_counter()
    for start in range(0, len(spans), BATCH):
        result = exporter.export(spans[start : start + BATCH])
        if result is not SpanExportResult.SUCCESS:
            raise SystemExit(f"{name}: export failed")
    exporter.force_flush()
    exporter.shutdown()
    elapsed = time.perf_counter() - started
    return len(spans) / elapsed


# ---------------------------------------------------------------------------
# Part 2: the application's slowdown.


def timed_requests(provider: TracerProvider | None, requests: int) -> float:
    if provider is not None:
        tracebridge.set_tracer_provider(provider)
    else:
        tracebridge.set_tracer_provider(None)
    started = time.perf_counter()
    for _ in range(requests):
        serve(provider)
    elapsed = time.perf_counter() - started
    tracebridge.flush()  # outside the timed region: the next repetition starts clean
    tracebridge.set_tracer_provider(None)
    return elapsed / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer spans and repetitions")
    parser.add_argument("--serve", choices=["grpc", "http"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve_receiver(args.serve)
    total_spans = 12_000 if args.quick else 60_000
    reps = 5 if args.quick else 15
    requests = 300 if args.quick else 1000

    template = request_spans()
    spans = replicate(template, total_spans)
    print(f"Python {sys.version.split()[0]}; {len(template)} spans per request; {total_spans} spans per exporter\n")

    with tempfile.TemporaryDirectory() as folder, collector("grpc") as grpc_receiver, \
            collector("http") as http_receiver:
        workdir = Path(folder)
        exporters: list[tuple[str, Callable[[], SpanExporter]]] = [
            ("discard (baseline)", DiscardingExporter),
            ("console", lambda: ConsoleTraceExporter(stream=io.StringIO(), grace=None)),
            ("jsonl", lambda: JsonLinesExporter(workdir / "t.jsonl")),
            ("jaeger-json", lambda: JaegerJsonExporter(workdir / "t.json")),
            ("perfetto", lambda: PerfettoExporter(workdir / "t.perfetto.json")),
            ("otlp grpc (loopback)", lambda: otlp.build_exporter(otlp.resolve(grpc_receiver.url), timeout_s=30)),
            ("otlp http (loopback)", lambda: otlp.build_exporter(otlp.resolve(http_receiver.url), timeout_s=30)),
        ]
        print(f"{'exporter':<24}{'spans/s':>12}")
        for name, make in exporters:
            rate = throughput(name, make, spans)
            print(f"{name:<24}{rate:>12,.0f}")
        received = grpc_receiver.spans(), http_receiver.spans()
        if received != (total_spans, total_spans):
            print(f"LOST SPANS in part 1: receivers got {received}, expected {total_spans} each")
            return 1

        # Part 2.
        before = grpc_receiver.spans()
        discard = DiscardingExporter()
        baseline = TracerProvider()
        baseline.add_span_processor(BatchSpanProcessor(discard))
        processor = otlp.build_processor(grpc_receiver.url, timeout_s=30)
        with_otlp = TracerProvider()
        with_otlp.add_span_processor(processor)
        variants: list[tuple[str, TracerProvider | None]] = [
            ("off", None), ("discard", baseline), ("otlp", with_otlp),
        ]
        timings: dict[str, list[float]] = {name: [] for name, _ in variants}
        ratios: list[float] = []
        timed_requests(with_otlp, 50)  # warm-up: threads, loops, the gRPC channel
        timed_requests(baseline, 50)
        for rep in range(reps):
            order = variants[rep % 3 :] + variants[: rep % 3]
            per_rep = {}
            for name, provider in order:
                per_rep[name] = timed_requests(provider, requests)
                timings[name].append(per_rep[name])
            ratios.append(per_rep["otlp"] / per_rep["discard"])
        baseline.shutdown()
        with_otlp.shutdown()
        expected = (reps * requests + 50) * len(template)
        got = grpc_receiver.spans() - before

    print(f"\ntraced app, {reps} repetitions x {requests} requests ({len(template)} spans each), median us/request:")
    for name, values in timings.items():
        print(f"  {name:<10}{statistics.median(values) * 1e6:>10.1f}")
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    print(
        f"slowdown otlp/discard: median {statistics.median(ratios):.3f} "
        f"(IQR {quartiles[0]:.3f}-{quartiles[2]:.3f}, min {min(ratios):.3f}, max {max(ratios):.3f})"
    )
    dropped = sum(counters.dropped for counters in stats())
    print(f"spans at the receiver: {got} of {expected}; dropped (tracebridge.exporters.stats()): {dropped}")
    return 0 if got == expected == discard.count and dropped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
