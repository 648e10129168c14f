"""Paired benchmark: a WsgiToAsgi request round trip, tracebridge against asgiref 3.13, same run.

Run it from the repository root::

    /work/venv/bin/python bench/bench_wsgi.py              # full run, about a minute
    /work/venv/bin/python bench/bench_wsgi.py --quick      # smoke run, ~15 seconds
    /work/venv/bin/python bench/bench_wsgi.py --breakdown  # also: traced without the WSGI span

What it measures (issue 3, "Targets"): one request through ``WsgiToAsgi``,
driven in-process on one long-lived event loop with a fake ``receive`` (one
``http.request`` message) and a fake ``send`` (discards): buffer the body, hop
into the sync thread, run a small WSGI app (200, ``Content-Length``, one
chunk), send start + chunk + terminator back through ``AsyncToSync``.  Three
variants: ``asgiref`` (never traced), ``tb-off`` (tracebridge, tracing off) and
``tb-on`` (tracebridge with an SDK ``TracerProvider`` + ``BatchSpanProcessor``
+ an exporter that only counts spans).  ``--breakdown`` adds ``tb-on-hops``:
traced, but with the WSGI span switched off, so the WSGI span's own share and
the bridge hops' share can be told apart.

How to read it: absolute times on these machines are noisy.  Each repetition
times every variant back to back, in an order that rotates between
repetitions; the report gives the median over repetitions of the
*per-repetition* ratios ``variant / asgiref`` with the interquartile range,
next to the targets (untraced <= 1.05, traced <= 1.10).

Fairness rules (as in bench_core.py): a warm-up sizes the batch to about
``--region-ms`` of asgiref time; ``time.perf_counter_ns`` around each batch;
the garbage collector is off inside timed regions; ``tracebridge.flush()`` and
``provider.force_flush()`` run after every traced batch *outside* the timed
region (deferred Local/handoff spans are built there).  The cost of that flush
per request is reported separately ("flush us/req"): it is real work, done by
a background thread in production.

Exit status: 1 if a traced batch lost a WSGI span (or the deferred buffer
dropped records), or, with ``--strict``, if a target is missed; else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import asgiref.wsgi
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import tracebridge
import tracebridge.wsgi
from tracebridge import _telemetry, semconv

from _common import CountingExporter  # bench/ is on sys.path: the scripts run from there

perf_ns = time.perf_counter_ns

TARGET_OFF = 1.05
TARGET_ON = 1.10


# ---------------------------------------------------------------------------
# The request.

BODY = b"Hello, world!"


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/hello",
    "raw_path": b"/hello",
    "query_string": b"page=1",
    "root_path": "",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"bench"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip"),
        (b"connection", b"keep-alive"),
    ],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}
SENDS_PER_REQUEST = 3  # start, the chunk, the terminator


async def receive() -> dict[str, Any]:
    return REQUEST


async def send(message: dict[str, Any]) -> None:
    return None


def run_batch_on(loop: asyncio.AbstractEventLoop, app: Any, n: int) -> int:
    async def batch() -> int:
        start = perf_ns()
        for _ in range(n):
            await app(SCOPE, receive, send)
        return perf_ns() - start

    return loop.run_until_complete(batch())


# ---------------------------------------------------------------------------
# The harness.


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        if otel_trace._TRACER_PROVIDER is not None:  # type: ignore[attr-defined]
            raise SystemExit("a global TracerProvider is set; the tracing-off variant needs none")
        self.exporter = CountingExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(
            BatchSpanProcessor(self.exporter, max_queue_size=2**20, max_export_batch_size=512)
        )
        self.loop = asyncio.new_event_loop()
        self.apps = {
            "asgiref": asgiref.wsgi.WsgiToAsgi(wsgi_app),
            "tracebridge": tracebridge.wsgi.WsgiToAsgi(wsgi_app),
        }
        self.variants = ["asgiref", "tb-off", "tb-on"] + (["tb-on-hops"] if args.breakdown else [])
        self.times: dict[str, list[int]] = {v: [] for v in self.variants}
        self.flush_ns: list[int] = []
        self.n = 0
        self.traced_requests = 0
        self.exported: Counter[str] = Counter()
        self.drain_overlaps = 0
        self._open_wsgi_span = tracebridge.wsgi._WsgiTrace.__dict__["open"]

    def _set_tracing(self, on: bool, wsgi_span: bool = True) -> None:
        tracebridge.set_tracer_provider(self.provider if on else None)
        if (_telemetry.get_tracer() is not None) != on:
            raise SystemExit(f"could not switch tracing {'on' if on else 'off'}")
        # --breakdown only: a traced run without the WSGI span (hops alone).
        tracebridge.wsgi._WsgiTrace.open = (  # type: ignore[method-assign]
            self._open_wsgi_span if wsgi_span else classmethod(lambda cls, *args: None)
        )

    def run_batch(self, variant: str, n: int) -> int:
        traced = variant.startswith("tb-on")
        self._set_tracing(traced, wsgi_span=variant != "tb-on-hops")
        app = self.apps["asgiref" if variant == "asgiref" else "tracebridge"]
        before = self.exporter.snapshot()
        exported_before = _telemetry.stats.deferred_exported
        gc.disable()
        try:
            elapsed = run_batch_on(self.loop, app, n)
        finally:
            gc.enable()
        if traced:
            if _telemetry.stats.deferred_exported != exported_before:
                self.drain_overlaps += 1
            # Outside the timed region: build deferred spans, export everything.
            flush_start = perf_ns()
            tracebridge.flush()
            self.provider.force_flush()
            if variant == "tb-on":
                self.flush_ns.append(perf_ns() - flush_start)
                got = self.exporter.snapshot()
                got.subtract(before)
                self.exported.update(+got)
                self.traced_requests += n
            self._set_tracing(False)
        # Let the exporter's and the drain's threads go idle before the next
        # variant's batch, so no variant pays for another's background work.
        if self.args.settle_ms:
            time.sleep(self.args.settle_ms / 1000)
        return elapsed

    def calibrate(self) -> None:
        n = 20
        for _ in range(3):
            for variant in self.variants:
                self.run_batch(variant, n)
        per_request = min(self.run_batch("asgiref", n) / n for _ in range(3))
        self.n = max(20, int(self.args.region_ms * 1e6 / per_request))
        # Stay well inside the deferred buffer (a few Local/handoff records per request).
        self.n = min(self.n, _telemetry.deferred.capacity // 64)
        self.flush_ns.clear()
        self.exported.clear()
        self.traced_requests = 0
        self.drain_overlaps = 0
        gc.collect()

    def measure(self) -> None:
        k = len(self.variants)
        for rep in range(self.args.reps):
            order = self.variants[rep % k :] + self.variants[: rep % k]
            for variant in order:
                self.times[variant].append(self.run_batch(variant, self.n))
            gc.collect()

    def report(self, started: float) -> int:
        out = print
        out("tracebridge WSGI benchmark: WsgiToAsgi request round trip, paired ratios against asgiref, same run")
        out(
            f"python {platform.python_version()}, asgiref {version('asgiref')}, tracebridge {tracebridge.__version__}, "
            f"opentelemetry-sdk {version('opentelemetry-sdk')}; {self.args.reps} repetitions x {self.n} requests "
            f"per batch (~{self.args.region_ms:g} ms of asgiref time), rotating variant order, gc off in timed regions"
        )
        out("")
        asgiref_times = self.times["asgiref"]
        header = (
            f"{'variant':<12} {'us/req (median)':>16} {'us/req (best)':>14} {'ratio vs asgiref':>17} {'IQR':>13} "
            f"{'best/best':>10} {'target':>8}  verdict"
        )
        out(header)
        out("-" * len(header))
        failed = False
        best_asgiref = min(asgiref_times)
        for variant in self.variants:
            times = self.times[variant]
            per_request = statistics.median(times) / self.n / 1000
            best = min(times) / self.n / 1000
            if variant == "asgiref":
                out(f"{variant:<12} {per_request:>16.1f} {best:>14.1f} {'1.000':>17} {'':>13} {'1.000':>10}")
                continue
            ratios = sorted(t / a for t, a in zip(times, asgiref_times))
            median = statistics.median(ratios)
            q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (median, median, median)
            best_ratio = min(times) / best_asgiref
            target = {"tb-off": TARGET_OFF, "tb-on": TARGET_ON}.get(variant)
            verdict = "" if target is None else ("PASS" if median <= target else "FAIL")
            failed |= verdict == "FAIL"
            target_text = "" if target is None else f"<= {target:.2f}"
            out(
                f"{variant:<12} {per_request:>16.1f} {best:>14.1f} {median:>17.3f} {f'{q1:.2f}-{q3:.2f}':>13} "
                f"{best_ratio:>10.3f} {target_text:>8}  {verdict}"
            )
        out("(verdict: median of the per-repetition paired ratios; best/best: fastest batch vs fastest batch)")
        spread = statistics.median(asgiref_times) / best_asgiref
        if spread > 1.25:
            out(
                f"WARNING: the machine was busy (asgiref's median batch is {spread:.2f}x its best): the ratios "
                "above are unreliable; rerun on an idle machine (best/best is the steadier estimate)"
            )
        out("")
        requests = max(self.traced_requests, 1)
        flush_us = sum(self.flush_ns) / requests / 1000 if self.flush_ns else 0.0
        out(
            f"tb-on spans per request: {sum(self.exported.values()) / requests:.1f} "
            f"({', '.join(f'{name} {count / requests:g}' for name, count in sorted(self.exported.items()))})"
        )
        out(f"tb-on flush after each batch (outside the timed region): {flush_us:.1f} us/req; "
            f"timed batches the drain thread overlapped: {self.drain_overlaps}")
        out(f"elapsed {time.monotonic() - started:.0f} s")
        lost = self.exported[semconv.WSGI_CALL] != self.traced_requests or _telemetry.stats.deferred_dropped
        if lost:
            out(f"ERROR: {self.traced_requests} traced requests but {self.exported[semconv.WSGI_CALL]} WSGI spans "
                f"exported; deferred records dropped: {_telemetry.stats.deferred_dropped}")
            return 1
        return 1 if (failed and self.args.strict) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=41, help="timed repetitions (default 41)")
    parser.add_argument("--region-ms", type=float, default=40.0, help="asgiref time per timed batch (default 40)")
    parser.add_argument("--settle-ms", type=float, default=0.0, help="idle time after each batch (default 0)")
    parser.add_argument("--quick", action="store_true", help="7 repetitions of ~30 ms batches")
    parser.add_argument("--breakdown", action="store_true", help="add a traced variant without the WSGI span")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.region_ms = 7, 30.0
    started = time.monotonic()
    bench = Bench(args)
    bench.calibrate()
    bench.measure()
    return bench.report(started)


if __name__ == "__main__":
    sys.exit(main())
