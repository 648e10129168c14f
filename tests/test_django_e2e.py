"""End to end: the example Django project under uvicorn, traced through the instrumented asgiref.

``examples/django_app/serve.py`` is started twice on 127.0.0.1 (a free port, in a
subprocess): traced (spans to a JSON-lines file) and untraced.  The same real
HTTP requests go to both.  The responses must be identical, and the trace of
each request must show what Django really did: the request span (OpenTelemetry's
ASGI middleware) as the root, every thread hop Django made with its executor
rule and thread, the Local accesses it made, and the hop census on the root.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tracebridge import semconv

pytest.importorskip("django")
pytest.importorskip("uvicorn")
pytest.importorskip("opentelemetry.instrumentation.asgi")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django_app"
PATHS = ["/users/7/", "/health/", "/users/8/", "/health/", "/missing/"]
HOPS = (semconv.SYNC_TO_ASYNC, semconv.ASYNC_TO_SYNC)
PREFIX = "django.core.handlers"
MIDDLEWARE = "mysite.middleware.SyncOnlyMiddleware"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Run:
    responses: list[Response]
    spans: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""


def serve(tmp: Path, *args: str) -> Run:
    """Start serve.py, send PATHS in order, stop it with SIGINT; the responses and spans."""
    process = subprocess.Popen(
        [sys.executable, "serve.py", "--port", "0", *args],
        cwd=EXAMPLE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
            if not selector.select(timeout=30):
                raise AssertionError("serve.py did not start listening within 30 s")
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("listening on http://127.0.0.1:"), line + process.stderr.read()  # type: ignore[union-attr]
        port = int(line.rsplit(":", 1)[1])
        responses = [get(port, path) for path in PATHS]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    assert process.returncode == 0, stderr
    return Run(responses, stderr=stderr)


def get(port: int, path: str) -> Response:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        # date and server are uvicorn's, per response; everything Django set is compared.
        headers = {k.lower(): v for k, v in reply.getheaders() if k.lower() not in ("date", "server")}
        return Response(reply.status, headers, reply.read())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, Run]]:
    tmp = tmp_path_factory.mktemp("django")
    spans_file = tmp / "spans.jsonl"
    traced = serve(tmp, "--spans-file", str(spans_file))
    traced.spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    untraced = serve(tmp, "--no-trace")
    yield traced, untraced


@dataclass
class RequestTrace:
    root: dict[str, Any]
    spans: list[dict[str, Any]]

    def named(self, *names: str) -> list[dict[str, Any]]:
        return sorted((s for s in self.spans if s["name"] in names), key=lambda s: s["start_ns"])

    def children(self, span: dict[str, Any]) -> list[dict[str, Any]]:
        return sorted((s for s in self.spans if s["parent_id"] == span["span_id"]), key=lambda s: s["start_ns"])

    def hop(self, function: str) -> dict[str, Any]:
        (found,) = [s for s in self.named(*HOPS) if s["attributes"][semconv.CODE_FUNCTION_NAME] == function]
        return found


def request_traces(spans: list[dict[str, Any]]) -> list[RequestTrace]:
    """One trace per request, in request order."""
    roots = sorted((s for s in spans if s["parent_id"] is None and s["kind"] == "SERVER"), key=lambda s: s["start_ns"])
    return [RequestTrace(root, [s for s in spans if s["trace_id"] == root["trace_id"]]) for root in roots]


def facts(span: dict[str, Any]) -> tuple[str, str, str]:
    attributes = span["attributes"]
    route = attributes.get(semconv.EXECUTOR_KIND) or attributes[semconv.LOOP_ROUTE]
    return span["name"], attributes[semconv.CODE_FUNCTION_NAME], route


def test_django_responses_identical_with_and_without_tracing(runs: tuple[Run, Run]) -> None:
    """Tests that the example answers every request exactly the same traced and untraced."""
    traced, untraced = runs
    assert traced.responses == untraced.responses
    assert [r.status for r in traced.responses] == [200, 200, 200, 200, 404]
    assert traced.responses[0].body == b'{"user": {"id": 7, "name": "user-7"}, "language": "en-us"}'
    assert traced.responses[0].headers["x-sync-middleware"] == "seen"


def test_django_one_trace_per_request_rooted_at_the_request_span(runs: tuple[Run, Run]) -> None:
    """Tests that each request is one trace whose only root is its server span."""
    traced, _ = runs
    traces = request_traces(traced.spans)
    assert [t.root["attributes"]["http.target"] for t in traces] == PATHS
    for trace in traces:
        ids = {s["span_id"] for s in trace.spans}
        assert [s for s in trace.spans if s["parent_id"] not in ids] == [trace.root]
    assert sum(len(t.spans) for t in traces) == len(traced.spans)  # nothing outside a request


def test_django_async_view_hops_with_executors_and_threads(runs: tuple[Run, Run]) -> None:
    """Tests that the async view's trace shows each hop Django made, its executor rule and its thread."""
    traced, _ = runs
    trace = request_traces(traced.spans)[0]
    assert [facts(s) for s in trace.named(*HOPS)] == [
        (semconv.SYNC_TO_ASYNC, "django.dispatch.dispatcher.Signal.asend.<locals>.sync_send",
         semconv.EXECUTOR_THREAD_SENSITIVE_CONTEXT),
        (semconv.SYNC_TO_ASYNC, MIDDLEWARE, semconv.EXECUTOR_THREAD_SENSITIVE_CONTEXT),
        (semconv.ASYNC_TO_SYNC, f"{PREFIX}.base.BaseHandler._get_response_async", semconv.LOOP_ROUTE_PARENT_LOOP),
        (semconv.SYNC_TO_ASYNC, "mysite.views.load_user", semconv.EXECUTOR_OUTER_CURRENT_THREAD),
        (semconv.SYNC_TO_ASYNC, "django.http.response.HttpResponseBase.close",
         semconv.EXECUTOR_THREAD_SENSITIVE_CONTEXT),
    ]
    middleware = trace.hop(MIDDLEWARE)
    back = trace.hop(f"{PREFIX}.base.BaseHandler._get_response_async")
    view_call = trace.hop("mysite.views.load_user")
    loop_thread = middleware["attributes"][semconv.CALLER_THREAD_ID]
    request_thread = middleware["attributes"][semconv.THREAD_ID]
    # The middleware ran on the request's ThreadSensitiveContext thread, the
    # rest of the chain back on the loop, and the view's database call on the
    # middleware's thread again, through its CurrentThreadExecutor.
    assert request_thread != loop_thread
    assert back["parent_id"] == middleware["span_id"]
    assert back["attributes"][semconv.THREAD_ID] == loop_thread
    assert back["attributes"][semconv.CALLER_THREAD_ID] == request_thread
    assert view_call["parent_id"] == back["span_id"]
    assert view_call["attributes"][semconv.THREAD_ID] == request_thread
    for hop in trace.named(semconv.SYNC_TO_ASYNC):
        assert hop["attributes"][semconv.THREAD_ID] == request_thread
    (handoff,) = [s for s in trace.children(view_call) if s["name"] == semconv.HANDOFF]
    assert handoff["attributes"][semconv.EXECUTOR_KIND] == semconv.HANDOFF_EXECUTOR_CURRENT_THREAD
    assert handoff["attributes"][semconv.EXECUTOR_ID] == view_call["attributes"][semconv.EXECUTOR_ID]
    assert handoff["attributes"][semconv.QUEUED_THREAD_ID] == loop_thread


def test_django_requests_get_their_own_context_thread(runs: tuple[Run, Run]) -> None:
    """Tests that each request's thread-sensitive work ran on a thread of its own ThreadSensitiveContext."""
    traced, _ = runs
    names = [t.hop(MIDDLEWARE)["attributes"][semconv.THREAD_NAME] for t in request_traces(traced.spans)]
    assert len(set(names)) == len(PATHS)


def test_django_sync_view_and_not_found_hops(runs: tuple[Run, Run]) -> None:
    """Tests that Django's own hops for a sync view and for a 404 are traced with their executors."""
    traced, _ = runs
    traces = request_traces(traced.spans)
    health = traces[1]
    assert facts(health.hop("mysite.views.health"))[2] == semconv.EXECUTOR_OUTER_CURRENT_THREAD
    # A 404: Django builds and logs the error response off the request thread
    # (thread_sensitive=False), on the loop's default executor.
    missing = traces[4]
    for function in (f"{PREFIX}.exception.response_for_exception", "django.utils.log.log_response"):
        hop = missing.hop(function)
        assert facts(hop)[2] == semconv.EXECUTOR_LOOP_DEFAULT
        assert hop["attributes"][semconv.THREAD_SENSITIVE] is False
        assert hop["attributes"][semconv.EXECUTOR_ID] == hop["attributes"][semconv.LOOP_ID]


def test_django_local_accesses_traced(runs: tuple[Run, Run]) -> None:
    """Tests that the Local accesses Django made are spans under the hop that made them, names only."""
    traced, _ = runs
    trace = request_traces(traced.spans)[0]
    view_call = trace.hop("mysite.views.load_user")
    request_thread = view_call["attributes"][semconv.THREAD_ID]
    # django.db.connection: the thread-critical Local of database connections.
    db = [s["attributes"] for s in trace.children(view_call) if s["name"] == semconv.LOCAL_ACCESS]
    assert {(a[semconv.LOCAL_ATTRIBUTE], a[semconv.LOCAL_OPERATION], a[semconv.LOCAL_THREAD_CRITICAL]) for a in db} == {
        ("default", semconv.LOCAL_OP_GET, True),
        ("default", semconv.LOCAL_OP_SET, True),
    }
    assert {a[semconv.THREAD_ID] for a in db} == {request_thread}
    # set_script_prefix, on the loop thread, directly under the request span.
    prefix = next(
        s["attributes"] for s in trace.children(trace.root)
        if s["name"] == semconv.LOCAL_ACCESS and s["attributes"][semconv.LOCAL_OPERATION] == semconv.LOCAL_OP_SET
    )
    assert prefix[semconv.LOCAL_ATTRIBUTE] == "value"
    assert prefix[semconv.THREAD_ID] == trace.hop(MIDDLEWARE)["attributes"][semconv.CALLER_THREAD_ID]
    # asgiref's own bookkeeping Local (AsyncToSync.executors) is never a span.
    locals_ = [s for s in traced.spans if s["name"] == semconv.LOCAL_ACCESS]
    assert locals_ and all(s["attributes"][semconv.LOCAL_ATTRIBUTE] != "current" for s in locals_)


def test_django_hop_census_on_each_request_span(runs: tuple[Run, Run]) -> None:
    """Tests that each request span says how many hops the request caused and where."""
    traced, _ = runs
    traces = request_traces(traced.spans)
    for trace in traces:
        census = trace.root["attributes"]
        # Django closes the response after sending it, when OpenTelemetry has
        # already ended the request span: hops after that are not counted.
        during = [s for s in trace.named(*HOPS) if s["start_ns"] < trace.root["end_ns"]]
        assert census[semconv.CENSUS_HOPS] == len(during) > 0
        assert census[semconv.CENSUS_SYNC_TO_ASYNC] == sum(s["name"] == semconv.SYNC_TO_ASYNC for s in during)
        assert census[semconv.CENSUS_ASYNC_TO_SYNC] == sum(s["name"] == semconv.ASYNC_TO_SYNC for s in during)
        assert f"sync_to_async {MIDDLEWARE}: 1" in census[semconv.CENSUS_BY_FUNCTION]
        assert census[semconv.CENSUS_THREADS] == sorted(
            {s["attributes"][semconv.THREAD_NAME] for s in during}
        )
        assert census[semconv.CENSUS_QUEUE_WAIT_MS] > 0
    view = traces[0].root["attributes"]
    assert view[semconv.CENSUS_HOPS] == 4
    assert view[semconv.CENSUS_BY_FUNCTION] == [
        f"async_to_sync {PREFIX}.base.BaseHandler._get_response_async: 1",
        "sync_to_async django.dispatch.dispatcher.Signal.asend.<locals>.sync_send: 1",
        f"sync_to_async {MIDDLEWARE}: 1",
        "sync_to_async mysite.views.load_user: 1",
    ]
    assert view[semconv.CENSUS_BY_EXECUTOR] == [
        "thread_sensitive_context: 2",
        "outer_current_thread_executor: 1",
        "parent_loop: 1",
    ]
    # The same URL costs the same hops every time.
    hop_counts = [t.root["attributes"][semconv.CENSUS_HOPS] for t in traces]
    assert hop_counts[0] == hop_counts[2] and hop_counts[1] == hop_counts[3]


def test_django_opentelemetry_instrument_uses_the_entry_point(tmp_path: Path) -> None:
    """Tests that `opentelemetry-instrument uvicorn mysite.asgi:application` traces the unchanged app's hops."""
    pytest.importorskip("opentelemetry.distro")
    command = Path(sys.executable).with_name("opentelemetry-instrument")
    if not command.exists():
        pytest.skip("opentelemetry-instrument is not installed next to this Python")
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [str(command), sys.executable, "-m", "uvicorn", "mysite.asgi:application", "--port", "0", "--lifespan", "off",
         "--no-access-log"],
        cwd=EXAMPLE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    # stderr read line by line on a thread: select() on the pipe says nothing
    # about lines the buffered reader already holds (two log lines arriving in
    # one read left "Uvicorn running" unseen until the timeout).
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()  # type: ignore[union-attr]
    try:
        port = None
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                break
            seen.append(line)
            if "Uvicorn running on http://" in line:
                port = int(line.split("http://", 1)[1].split(":", 1)[1].split()[0])
        assert port is not None, f"uvicorn did not report its port; its stderr: {''.join(seen)!r}"
        response = get(port, "/users/7/")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            stdout, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, _ = process.communicate()
    assert response.status == 200
    decoder = json.JSONDecoder()
    spans, text = [], stdout.strip()
    while text:
        span, end = decoder.raw_decode(text)
        spans.append(span)
        text = text[end:].strip()
    functions = sorted(
        s["attributes"][semconv.CODE_FUNCTION_NAME] for s in spans if s["name"] in HOPS
    )
    assert functions == sorted([
        "django.dispatch.dispatcher.Signal.asend.<locals>.sync_send",
        MIDDLEWARE,
        f"{PREFIX}.base.BaseHandler._get_response_async",
        "mysite.views.load_user",
        "django.http.response.HttpResponseBase.close",
    ])
