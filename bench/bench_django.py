"""Django under uvicorn: requests per second traced (instrumented asgiref) versus untraced, same run.

Run it from the repository root::

    /work/venv/bin/python bench/bench_django.py            # ~3 minutes
    /work/venv/bin/python bench/bench_django.py --quick    # ~15 seconds

What it measures (issue 6 target: traced / untraced >= 0.85): the example
project ``examples/django_app`` served by ``serve.py``, four servers started
side by side, each a single process on a free loopback port:

* ``untraced``: ``--no-trace``, the baseline;
* ``tracing-off``: ``--instrument-only``, asgiref patched but no tracer
  provider (the cost of the patches alone; should be ~1.0);
* ``traced``: ``--export discard --no-request-spans``, asgiref instrumented
  with tracing on, every span built, processed by a ``BatchSpanProcessor`` and
  discarded (all of tracing's cost but the network).  **The target row.**
* ``traced+requests``: ``--export discard``, the same plus OpenTelemetry's ASGI
  middleware making a request span per request (where the hop census goes):
  what a user following the README runs.  Informational: most of the extra is
  the middleware's own.

Each round sends the same number of requests (a mix of the async and the sync
view, ``--concurrency`` keep-alive clients) to every server, in an order that
rotates between rounds, and measures for each server the wall-clock requests
per second *and* the CPU time its process (all threads) spent per request,
read from ``/proc/PID/stat``.  Ratios are medians of per-round ratios to
``untraced``.  The servers are CPU-bound, so ``cpu ratio`` (untraced CPU per
request / variant CPU per request) is the throughput ratio they would reach on
an idle machine; on a shared, noisy machine it is the steadier of the two.

**Repeats.**  A server process's speed depends on things fixed when it starts
(its hash seed, where its memory lands): two processes of the *same* variant
differ by up to ~2 %, which moved a whole run's ratios by that much (the
``tracing-off`` row read anywhere from 0.96 to 0.99).  So the measurement is
repeated ``--repeat`` times (default 3), each with a fresh set of servers, and
the verdict is on the median over the repeats of each repeat's ratio.

Exit status: 0, or 1 with ``--strict`` when the ``traced`` row misses 0.85 on
both ratios.
"""

from __future__ import annotations

import argparse
import http.client
import os
import selectors
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django_app"
PATHS = ("/users/7/", "/health/")
TARGET = 0.85
VARIANTS = {
    "untraced": ("--no-trace",),
    "tracing-off": ("--instrument-only",),
    "traced": ("--export", "discard", "--no-request-spans"),
    "traced+requests": ("--export", "discard"),
}
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Server:
    """serve.py in a subprocess on a free loopback port."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "serve.py", "--port", "0", *args],
            cwd=EXAMPLE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
            if not selector.select(timeout=60):
                self.stop()
                raise SystemExit("serve.py did not start within 60 s")
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        self.port = int(line.rsplit(":", 1)[1])

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (None off Linux)."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / _TICK

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def load(port: int, requests: int, concurrency: int) -> float:
    """Send ``requests`` GETs over ``concurrency`` keep-alive connections; the wall-clock seconds it took."""
    failures: list[str] = []

    def client(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for n in range(count):
                connection.request("GET", PATHS[n % len(PATHS)])
                reply = connection.getresponse()
                reply.read()
                if reply.status != 200:
                    failures.append(f"{reply.status} for {PATHS[n % len(PATHS)]}")
                    return
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(requests // concurrency,)) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"requests failed: {failures[:3]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=800, help="requests per server per round")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="fresh servers per repeat; verdict on the median repeat")
    parser.add_argument("--quick", action="store_true", help="1 repeat of 3 rounds of 400 requests")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 when `traced` misses {TARGET}")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.rounds, args.requests = 1, 3, 400
    requests = args.requests // args.concurrency * args.concurrency

    print(
        f"Django example under uvicorn: {args.repeat} repeat(s) x {args.rounds} rounds x {requests} requests "
        f"per server, {args.concurrency} keep-alive clients, python {sys.version.split()[0]}"
    )
    print(f"{'variant':<16} {'req/s':>7} {'rps ratio':>10} {'cpu us/req':>11} {'cpu ratio':>10}  target")
    results: dict[str, list[Ratios]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeat):
        for name, ratios in measure(args.rounds, requests, args.concurrency).items():
            results[name].append(ratios)
            if args.repeat > 1:
                print(f"{name:<16} {ratios.line()}  (repeat {repeat + 1})", flush=True)
    if args.repeat > 1:
        print("median over the repeats:")
    verdict = 0
    for name, runs in results.items():
        median = Ratios.median(runs)
        line = f"{name:<16} {median.line()}"
        if name == "traced":
            met = median.rps_ratio >= TARGET or (median.cpu_ratio is not None and median.cpu_ratio >= TARGET)
            line += f"  >= {TARGET} {'PASS' if met else 'FAIL'}"
            verdict = 0 if met else 1
        print(line)
    return verdict if args.strict else 0


class Ratios:
    """One variant's result in one repeat: medians of its per-round figures and paired ratios."""

    def __init__(self, rps: float, rps_ratio: float, cpu_us: float | None, cpu_ratio: float | None) -> None:
        self.rps, self.rps_ratio, self.cpu_us, self.cpu_ratio = rps, rps_ratio, cpu_us, cpu_ratio

    def line(self) -> str:
        cpu = (
            f" {self.cpu_us:>11.0f} {self.cpu_ratio:>10.3f}"
            if self.cpu_us is not None and self.cpu_ratio is not None
            else f" {'-':>11} {'-':>10}"
        )
        return f"{self.rps:>7.0f} {self.rps_ratio:>10.3f}{cpu}"

    @staticmethod
    def median(runs: list[Ratios]) -> Ratios:
        cpus = [r.cpu_us for r in runs if r.cpu_us is not None]
        cpu_ratios = [r.cpu_ratio for r in runs if r.cpu_ratio is not None]
        return Ratios(
            statistics.median(r.rps for r in runs),
            statistics.median(r.rps_ratio for r in runs),
            statistics.median(cpus) if len(cpus) == len(runs) else None,
            statistics.median(cpu_ratios) if len(cpu_ratios) == len(runs) else None,
        )


def measure(rounds: int, requests: int, concurrency: int) -> dict[str, Ratios]:
    """One repeat: fresh servers, ``rounds`` rotating rounds, each variant's ratios to ``untraced``."""
    servers = {name: Server(*flags) for name, flags in VARIANTS.items()}
    rps: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for server in servers.values():  # warm-up: first-request setup, lazy imports
            load(server.port, 100, concurrency)
        names = list(servers)
        for round_ in range(rounds):
            for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                server = servers[name]
                cpu_before = server.cpu_seconds()
                elapsed = load(server.port, requests, concurrency)
                cpu_after = server.cpu_seconds()
                rps[name].append(requests / elapsed)
                if cpu_before is not None and cpu_after is not None:
                    cpu[name].append((cpu_after - cpu_before) / requests * 1e6)
    finally:
        for server in servers.values():
            server.stop()

    results = {}
    for name in servers:
        rps_ratio = statistics.median(a / b for a, b in zip(rps[name], rps["untraced"], strict=True))
        cpu_us = cpu_ratio = None
        if cpu[name] and len(cpu[name]) == len(cpu["untraced"]):
            cpu_us = statistics.median(cpu[name])
            cpu_ratio = statistics.median(b / a for a, b in zip(cpu[name], cpu["untraced"], strict=True))
        results[name] = Ratios(statistics.median(rps[name]), rps_ratio, cpu_us, cpu_ratio)
    return results


if __name__ == "__main__":
    sys.exit(main())
