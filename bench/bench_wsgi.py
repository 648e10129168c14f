"""Paired benchmark: a WsgiToAsgi request round trip, tracebridge against asgiref 3.13, same run.

Run it from the repository root::

    /work/venv/bin/python bench/bench_wsgi.py              # full run, ~15 seconds
    /work/venv/bin/python bench/bench_wsgi.py --quick      # smoke run, ~3 seconds
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

How to read it: absolute times on these machines are noisy, and on a 2-core
VM thread wake-ups are bimodal (the same batch takes ~180 or ~600 us a
request, for asgiref and tracebridge alike, depending on scheduling), so
three things are done:

* **Interleaving.**  A repetition runs every variant for ``--chunk``
  requests (default 20), in turn, in an order that rotates every round, until
  each variant has had ~``--region-ms`` of asgiref time; a variant's sample is
  the sum over its chunks.  The variants of one repetition thus share the
  scheduler's slow and fast episodes.  ``--chunk 0`` times one batch per
  variant instead (the old method).
* **CPU time next to wall time.**  ``cpu`` is ``time.process_time`` (CPU of
  every thread of the process: the loop thread, the sync thread and any of
  tracing's background work that ran meanwhile) per request; ``cpu-req`` is
  the same minus the CPU of the deferred-span drain thread and the span
  processor's exporter thread (measured with per-thread CPU clocks), i.e. the
  request path alone.  Tracing's cost is CPU, and CPU does not count the time
  a thread waits to be woken.
* **Paired ratios.**  For each metric: the median over repetitions of the
  per-repetition ratio ``variant / asgiref`` with its interquartile range, and
  ``best/best`` (fastest repetition over asgiref's fastest).  The verdicts
  against the targets (untraced <= 1.05, traced <= 1.10) are on ``cpu-req``
  (the deferred spans are built off the request path, as in bench_core.py);
  wall and cpu verdicts are shown in brackets.

Fairness rules (as in bench_core.py): a warm-up sizes the work to about
``--region-ms`` of asgiref time; each timed chunk is preceded by ``--warm``
(default 2) untimed requests of the same variant, so no variant pays for the
cold caches the other implementation left; ``time.perf_counter_ns`` and
``time.process_time_ns`` around each chunk; the garbage collector is off
inside timed regions; ``tracebridge.flush()`` and ``provider.force_flush()``
run after every repetition (``--flush chunk``: after every traced chunk; and
before any chunk whose records could reach the drain thread's early-wake count,
``_telemetry._WAKE_AT``) *outside* the timed region (the deferred hop/handoff/WSGI spans are built
there).  The cost of that flush per request is reported separately: it is
real work, done by a background thread in production.  Traced chunks that the
drain thread (which wakes every 0.2 s) ran into anyway are counted; their
drain work shows in ``cpu`` but not in ``cpu-req``.

Exit status: 1 if a traced batch lost a WSGI span (or the deferred buffer
dropped records), or, with ``--strict``, if a target is missed; else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
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

import tracebridge
import tracebridge.wsgi
from tracebridge import _telemetry, semconv

from _common import counting_provider, pin_to_one_cpu  # bench/ is on sys.path: the scripts run from there

perf_ns = time.perf_counter_ns
cpu_ns = time.process_time_ns  # CPU of every thread of this process

# Threads whose CPU is tracing's background work (built off the hot path).
BACKGROUND_THREAD_PREFIXES = ("tracebridge-deferred-spans", "OtelBatch")

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
# Deferred-buffer entries one traced request can add (WSGI span, sync_to_async
# hop, three send hops; a handoff rides with its hop), with room to spare.
_RECORDS_PER_REQUEST_AT_MOST = 8


async def receive() -> dict[str, Any]:
    return REQUEST


async def send(message: dict[str, Any]) -> None:
    return None


def run_batch_on(loop: asyncio.AbstractEventLoop, app: Any, n: int) -> tuple[int, int]:
    """Run ``n`` requests; returns (wall ns, CPU ns of the whole process, every thread)."""

    async def batch() -> tuple[int, int]:
        cpu_start = cpu_ns()
        start = perf_ns()
        for _ in range(n):
            await app(SCOPE, receive, send)
        return perf_ns() - start, cpu_ns() - cpu_start

    return loop.run_until_complete(batch())


def _background_threads() -> list[threading.Thread]:
    """Threads that do tracing's deferred work: the drain thread and the span processor's exporter."""
    return [t for t in threading.enumerate() if t.name.startswith(BACKGROUND_THREAD_PREFIXES)]


def _thread_cpu_ns(threads: Sequence[threading.Thread]) -> int:
    total = 0
    for thread in threads:
        try:
            total += time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))  # type: ignore[arg-type]
        except (OSError, TypeError):  # the thread ended meanwhile
            pass
    return total


# ---------------------------------------------------------------------------
# The harness.


class Sample:
    """One timed batch: wall ns, CPU ns of the whole process, CPU ns of the background threads."""

    __slots__ = ("wall", "cpu", "background", "overlapped")

    def __init__(self, wall: int, cpu: int, background: int, overlapped: bool) -> None:
        self.wall = wall
        self.cpu = cpu
        self.background = background
        self.overlapped = overlapped


METRICS: dict[str, Callable[[Sample], int]] = {
    # Wall time of the batch: what a client waits for, scheduler wake-ups included.
    "wall": lambda s: s.wall,
    # CPU time of every thread of the process during the batch (loop, sync
    # thread, and whatever background work of tracing ran meanwhile).
    "cpu": lambda s: s.cpu,
    # The same without the drain and exporter threads: the request path's own CPU.
    "cpu-req": lambda s: s.cpu - s.background,
}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.provider, self.exporter = counting_provider()
        self.loop = asyncio.new_event_loop()
        self.apps = {
            "asgiref": asgiref.wsgi.WsgiToAsgi(wsgi_app),
            "tracebridge": tracebridge.wsgi.WsgiToAsgi(wsgi_app),
        }
        self.variants = ["asgiref", "tb-off", "tb-on"] + (["tb-on-hops"] if args.breakdown else [])
        self.samples: dict[str, list[Sample]] = {v: [] for v in self.variants}
        self.flush_ns: list[int] = []
        self.flush_cpu_ns: list[int] = []
        self.n = 0
        self.traced: Counter[str] = Counter()  # traced requests per variant (warm-ups included)
        self._flushed_requests = 0
        self._exported_before: Counter[str] = Counter()
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

    def run_batch(self, variant: str, n: int, flush: bool = True) -> Sample:
        traced = variant.startswith("tb-on")
        self._set_tracing(traced, wsgi_span=variant != "tb-on-hops")
        app = self.apps["asgiref" if variant == "asgiref" else "tracebridge"]
        exported_before = _telemetry.stats.deferred_exported
        background = _background_threads()
        gc.disable()
        try:
            # Untimed warm-up requests of this variant: the previous chunk ran
            # another variant's code, and a cold start would otherwise be
            # charged to whichever variant runs after the other implementation.
            if self.args.warm:
                run_batch_on(self.loop, app, self.args.warm)
            background_start = _thread_cpu_ns(background)
            wall, cpu = run_batch_on(self.loop, app, n)
            background_cpu = _thread_cpu_ns(background) - background_start
        finally:
            gc.enable()
        overlapped = False
        if traced:
            self.traced[variant] += n + self.args.warm
            if _telemetry.stats.deferred_exported != exported_before:
                overlapped = True
                self.drain_overlaps += 1
            self._set_tracing(False)
        if flush:
            self.flush()
        # Let the exporter's and the drain's threads go idle before the next
        # variant's batch, so no variant pays for another's background work.
        if self.args.settle_ms:
            time.sleep(self.args.settle_ms / 1000)
        return Sample(wall, cpu, max(background_cpu, 0), overlapped)

    def flush(self) -> None:
        """Outside the timed region: build the deferred spans, export everything, count them."""
        if sum(self.traced.values()) == self._flushed_requests:
            return  # nothing traced since the last flush
        flush_start = perf_ns()
        flush_cpu_start = cpu_ns()
        tracebridge.flush()
        self.provider.force_flush()
        self.flush_ns.append(perf_ns() - flush_start)
        self.flush_cpu_ns.append(cpu_ns() - flush_cpu_start)
        self._flushed_requests = sum(self.traced.values())

    def calibrate(self) -> None:
        n = 20
        for _ in range(3):
            for variant in self.variants:
                self.run_batch(variant, n)
        per_request = min(self.run_batch("asgiref", n).wall / n for _ in range(3))
        self.n = max(20, int(self.args.region_ms * 1e6 / per_request))
        # Stay well inside the deferred buffer (a few records per request).
        self.n = min(self.n, _telemetry.deferred.capacity // 64)
        self.flush_ns.clear()
        self.flush_cpu_ns.clear()
        self._exported_before = self.exporter.snapshot()
        self.traced = Counter()
        self._flushed_requests = 0
        self.drain_overlaps = 0
        gc.collect()

    def measure(self) -> None:
        # One repetition = ``rounds`` rounds; each round runs every variant for
        # ``chunk`` requests, in an order that rotates between rounds.  A
        # variant's sample is the sum over the repetition's rounds.  Why: on
        # this VM a thread wake-up episode (slow or fast) lasts longer than a
        # few requests but less than a whole batch, so a variant timed as one
        # batch may land wholly in a slow episode and its partner in a fast
        # one; interleaved, the variants of a repetition share the episodes.
        # Deferred spans are flushed once per repetition (--flush rep, the
        # default), so records pile up across chunks as they do between two
        # runs of the drain thread in production -- and earlier if the next
        # chunk could reach the count at which the drain thread wakes by itself.
        k = len(self.variants)
        chunk = self.args.chunk if self.args.chunk > 0 else self.n
        rounds = max(1, round(self.n / chunk))
        self.n = rounds * chunk  # requests per variant per repetition
        per_chunk = self.args.flush == "chunk"
        turn = 0
        for _ in range(self.args.reps):
            totals = {v: Sample(0, 0, 0, False) for v in self.variants}
            for _ in range(rounds):
                order = self.variants[turn % k :] + self.variants[: turn % k]
                turn += 1
                for variant in order:
                    if len(_telemetry.deferred) + chunk * _RECORDS_PER_REQUEST_AT_MOST >= _telemetry._WAKE_AT:
                        # The drain thread would wake inside the timed chunk
                        # (a burst of _WAKE_AT records): flush now, outside it.
                        self.flush()
                    sample = self.run_batch(variant, chunk, flush=per_chunk)
                    total = totals[variant]
                    total.wall += sample.wall
                    total.cpu += sample.cpu
                    total.background += sample.background
                    total.overlapped |= sample.overlapped
            self.flush()
            for variant in self.variants:
                self.samples[variant].append(totals[variant])
            gc.collect()
        self.flush()
        self.exported = self.exporter.snapshot()
        self.exported.subtract(self._exported_before)
        self.exported = +self.exported

    # ------------------------------------------------------------------

    def _ratios(self, variant: str, metric: str, skip_overlapped: bool = False) -> list[float]:
        value = METRICS[metric]
        return sorted(
            value(s) / value(a)
            for s, a in zip(self.samples[variant], self.samples["asgiref"])
            if value(a) > 0 and not (skip_overlapped and s.overlapped)
        )

    def report(self, started: float) -> int:
        out = print
        out("tracebridge WSGI benchmark: WsgiToAsgi request round trip, paired ratios against asgiref, same run")
        out(
            f"python {platform.python_version()}, asgiref {version('asgiref')}, tracebridge {tracebridge.__version__}, "
            f"opentelemetry-sdk {version('opentelemetry-sdk')}, {os.cpu_count()} CPUs; {self.args.reps} repetitions "
            f"x {self.n} requests per variant (~{self.args.region_ms:g} ms of asgiref time), "
            + (
                f"interleaved: the variants take turns every {self.args.chunk} requests, in a rotating order"
                if 0 < self.args.chunk < self.n
                else "one batch per variant, rotating variant order"
            )
            + "; gc off in timed regions"
        )
        out(
            "Per timed chunk: wall = perf_counter; cpu = process_time (CPU of every thread: loop, sync thread and any "
            "tracing background work); cpu-req = cpu minus the drain and exporter threads' CPU (the request path)."
        )
        out(
            "ratio = median of the per-repetition paired ratios variant/asgiref [IQR]; best/best = fastest "
            "repetition over asgiref's fastest.  Verdicts on cpu-req (wall on this VM is bimodal: thread wake-ups; "
            "cpu also holds whatever drain work happened to overlap)."
        )
        out("")
        header = (
            f"{'variant':<11} {'metric':<8} {'us/req med':>10} {'us/req best':>11} {'ratio':>7} {'IQR':>11} "
            f"{'best/best':>9} {'target':>8}  verdict"
        )
        out(header)
        out("-" * len(header))
        failed = False
        targets = {"tb-off": TARGET_OFF, "tb-on": TARGET_ON}
        for variant in self.variants:
            for metric, value in METRICS.items():
                values = [value(s) for s in self.samples[variant]]
                per_request = statistics.median(values) / self.n / 1000
                best = min(values) / self.n / 1000
                name = variant if metric == "wall" else ""
                if variant == "asgiref":
                    out(f"{name:<11} {metric:<8} {per_request:>10.1f} {best:>11.1f} {'1.000':>7} {'':>11} {'1.000':>9}")
                    continue
                ratios = self._ratios(variant, metric)
                median = statistics.median(ratios)
                q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (median, median, median)
                best_asgiref = min(value(s) for s in self.samples["asgiref"])
                best_ratio = min(values) / best_asgiref if best_asgiref > 0 else float("nan")
                target = targets.get(variant)
                verdict = ""
                if target is not None:
                    verdict = "PASS" if median <= target else "FAIL"
                    if metric == "cpu-req":
                        failed |= verdict == "FAIL"
                    else:
                        verdict = f"({verdict})"
                target_text = "" if target is None else f"<= {target:.2f}"
                out(
                    f"{name:<11} {metric:<8} {per_request:>10.1f} {best:>11.1f} {median:>7.3f} "
                    f"{f'{q1:.2f}-{q3:.2f}':>11} {best_ratio:>9.3f} {target_text:>8}  {verdict}"
                )
        out("(verdict: the cpu-req row's median paired ratio; wall and cpu verdicts in brackets, for information)")
        asgiref_walls = [s.wall for s in self.samples["asgiref"]]
        spread = statistics.median(asgiref_walls) / min(asgiref_walls)
        if spread > 1.25:
            out(
                f"NOTE: asgiref's median batch took {spread:.2f}x its best (thread wake-ups were slow in some "
                "batches): trust the cpu rows and best/best over the wall medians"
            )
        out("")
        requests = max(sum(self.traced.values()), 1)
        flush_us = sum(self.flush_ns) / requests / 1000 if self.flush_ns else 0.0
        flush_cpu_us = sum(self.flush_cpu_ns) / requests / 1000 if self.flush_cpu_ns else 0.0
        per_name = ", ".join(f"{name} {count / requests:g}" for name, count in sorted(self.exported.items()))
        out(
            f"spans exported per traced request: {sum(self.exported.values()) / requests:.2f} ({per_name})"
            + (" [tb-on and tb-on-hops requests together]" if "tb-on-hops" in self.traced else "")
        )
        out(f"flush of the deferred spans (outside the timed region, once per {self.args.flush}): "
            f"{flush_us:.1f} us/req wall, {flush_cpu_us:.1f} us/req cpu (building and exporting them; a background "
            "thread's work in production)")
        out(f"traced batches the drain thread overlapped (its work lands in 'cpu', not 'cpu-req'): "
            f"{self.drain_overlaps}")
        clean = self._ratios("tb-on", "cpu", skip_overlapped=True)  # cpu, drain overlaps left out
        if clean and len(clean) < self.args.reps:
            out(f"tb-on cpu ratio without the overlapped repetitions: {statistics.median(clean):.3f} "
                f"({len(clean)} reps)")
        out(f"elapsed {time.monotonic() - started:.0f} s")
        lost = self.exported[semconv.WSGI_CALL] != self.traced["tb-on"] or _telemetry.stats.deferred_dropped
        if lost:
            out(f"ERROR: {self.traced['tb-on']} traced requests but {self.exported[semconv.WSGI_CALL]} WSGI spans "
                f"exported; deferred records dropped: {_telemetry.stats.deferred_dropped}")
            return 1
        return 1 if (failed and self.args.strict) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=41, help="timed repetitions (default 41)")
    parser.add_argument("--region-ms", type=float, default=40.0, help="asgiref time per timed batch (default 40)")
    parser.add_argument(
        "--chunk", type=int, default=20,
        help="requests per variant per round: the variants take turns every CHUNK requests (default 20; "
        "0: one batch per variant and repetition)",
    )
    parser.add_argument(
        "--warm", type=int, default=2, help="untimed requests of the same variant before each timed chunk (default 2)"
    )
    parser.add_argument(
        "--flush", choices=("rep", "chunk"), default="rep",
        help="flush the deferred spans after every repetition (default) or after every traced chunk",
    )
    parser.add_argument("--settle-ms", type=float, default=0.0, help="idle time after each batch (default 0)")
    parser.add_argument("--quick", action="store_true", help="7 repetitions of ~30 ms batches")
    parser.add_argument("--breakdown", action="store_true", help="add a traced variant without the WSGI span")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = parser.parse_args(argv)
    print(pin_to_one_cpu(not args.no_pin))
    if args.quick:
        args.reps, args.region_ms = 7, 30.0
    started = time.monotonic()
    bench = Bench(args)
    bench.calibrate()
    bench.measure()
    return bench.report(started)


if __name__ == "__main__":
    sys.exit(main())
