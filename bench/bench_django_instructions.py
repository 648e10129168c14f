"""Django example in-process under cachegrind: CPU instructions per request, traced vs untraced.

Run it from the repository root (needs valgrind: ``apt-get install -y valgrind``)::

    /work/venv/bin/python bench/bench_django_instructions.py           # ~3 minutes on 2 cores
    /work/venv/bin/python bench/bench_django_instructions.py --quick   # ~1.5 minutes

Why: ``bench_django.py`` measures what issue 6's target is about (requests per
second under uvicorn), but on a shared machine its ratios move by 1-3 % between
runs, more than most single changes are worth.  This counts instructions
instead, which do not depend on what else the machine is doing: the same code
gives the same count to within ~0.5 %.  Use it to decide whether a change to
the instrumentation or the drain is worth keeping; confirm with
``bench_django.py``.

What it runs: ``examples/django_app``'s ASGI application called directly on
one event loop (no server, no sockets: Django, asgiref and tracebridge only),
the async view and the sync view alternately, in three variants:

* ``plain``: asgiref as installed;
* ``tracing-off``: ``AsgirefInstrumentor().instrument()``, no tracer provider;
* ``traced``: ``tracebridge.configure`` with a ``BatchSpanProcessor`` that
  discards every span, then instrumented (as ``serve.py --export discard``
  does: the ``traced`` row of ``bench_django.py``), the drain
  thread passing every 1024 records as under load (its 0.2 s tick would be a
  pass every few requests at valgrind's speed).

Each variant runs twice, with ``--requests`` and with a fifth of that, and the
difference is divided by the difference in requests: start-up (imports,
Django's setup) cancels out.  Reported per request: instructions (``Ir``),
first-level instruction and data cache misses (``I1mr``, ``D1mr``) and
last-level misses (``LLmr``) as cachegrind's simulated caches see them, and
an estimate of cycles, ``Ir + 10 * (I1mr + D1mr) + 100 * LLmr``.  The ratio
column is ``plain / variant`` of that estimate, comparable to the rps ratio.
The server adds uvicorn's HTTP work, which tracing does not touch, so the
server's ratios are closer to 1 than these.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django_app"
VARIANTS = ("plain", "tracing-off", "traced")

# The child: Django's ASGI app called directly, `requests` times, in one process.
CHILD = r'''
import asyncio, os, sys
os.chdir(sys.argv[1]); sys.path.insert(0, sys.argv[1])
variant, requests = sys.argv[2], int(sys.argv[3])
import tracebridge
from tracebridge import _telemetry
if variant == "traced":  # as serve.py --export discard does
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from serve import DiscardExporter
    tracebridge.configure(export=[BatchSpanProcessor(DiscardExporter())], service_name="django-example")
    _telemetry._DRAIN_INTERVAL_S = 3600.0
if variant != "plain":
    from tracebridge.instrumentation import AsgirefInstrumentor
    AsgirefInstrumentor().instrument()
from mysite.asgi import application

def scope(path):
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [(b"host", b"bench")],
            "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000)}

async def request(path):
    messages = [{"type": "http.request", "body": b""}]
    finished = asyncio.Event()
    async def receive():
        if messages:
            return messages.pop()
        await finished.wait()
        return {"type": "http.disconnect"}
    statuses = []
    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
    await application(scope(path), receive, send)
    finished.set()
    assert statuses == [200], (path, statuses)

async def main():
    for index in range(requests):
        await request("/users/7/" if index % 2 == 0 else "/health/")

asyncio.run(main())
if variant == "traced":
    tracebridge.flush()
'''

COUNTERS = {"Ir": r"I\s+refs:\s+([\d,]+)", "I1mr": r"I1\s+misses:\s+([\d,]+)", "D1mr": r"D1\s+misses:\s+([\d,]+)",
            "LLmr": r"LL misses:\s+([\d,]+)"}


def cachegrind(variant: str, requests: int) -> dict[str, int]:
    """Run the child under cachegrind; its whole-process counters."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            "valgrind", "--tool=cachegrind", "--cache-sim=yes", f"--cachegrind-out-file={scratch}/out",
            sys.executable, "-c", CHILD, str(EXAMPLE), variant, str(requests),
        ]
        # A fixed hash seed: dict and set layouts (and so the counts) repeat run to run.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{variant} ({requests} requests) failed under valgrind:\n{result.stderr[-3000:]}")
    counts = {}
    for name, pattern in COUNTERS.items():
        match = re.search(pattern, result.stderr)
        if match is None:
            raise SystemExit(f"no {name} in valgrind's summary for {variant}:\n{result.stderr[-2000:]}")
        counts[name] = int(match.group(1).replace(",", ""))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests in the longer run of each variant")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="valgrind processes at once")
    parser.add_argument("--quick", action="store_true", help="--requests 100")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind not found: install it (apt-get install -y valgrind) to count instructions", file=sys.stderr)
        return 2
    long_run = 100 if args.quick else args.requests
    short_run = max(2, long_run // 5)
    print(
        f"Django example in-process under cachegrind: {long_run} - {short_run} requests per variant, "
        f"python {sys.version.split()[0]}"
    )
    jobs = [(variant, count) for variant in VARIANTS for count in (short_run, long_run)]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = dict(zip(jobs, pool.map(lambda job: cachegrind(*job), jobs)))
    per_request = {}
    for variant in VARIANTS:
        short, long = results[(variant, short_run)], results[(variant, long_run)]
        per_request[variant] = {name: (long[name] - short[name]) / (long_run - short_run) for name in COUNTERS}

    def estimate(counts: dict[str, float]) -> float:
        return counts["Ir"] + 10 * (counts["I1mr"] + counts["D1mr"]) + 100 * counts["LLmr"]

    baseline = estimate(per_request["plain"])
    print(f"{'variant':12s} {'Ir/req':>10s} {'I1mr':>8s} {'D1mr':>8s} {'LLmr':>6s} {'est cycles':>11s} {'ratio':>6s}")
    for variant in VARIANTS:
        counts = per_request[variant]
        cycles = estimate(counts)
        print(
            f"{variant:12s} {counts['Ir']:10.0f} {counts['I1mr']:8.0f} {counts['D1mr']:8.0f} {counts['LLmr']:6.0f} "
            f"{cycles:11.0f} {baseline / cycles:6.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
