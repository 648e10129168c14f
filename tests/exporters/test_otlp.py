"""Tests for tracebridge.exporters.otlp against a real OTLP receiver on loopback."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402
from otlp_receiver import OtlpReceiver, ReceivedSpan  # noqa: E402

import tracebridge  # noqa: E402
from tracebridge import semconv  # noqa: E402
from tracebridge.exporters import otlp, specs, stats  # noqa: E402
from tracebridge.exporters._delivery import CountingBatchSpanProcessor, ReliableExporter  # noqa: E402
from tracebridge.sync import async_to_sync, sync_to_async  # noqa: E402

PROTOCOLS = ["grpc", "http"]
SPANS_PER_REQUEST = 4  # root, async_to_sync, sync_to_async, handoff
# Short enough that a dead collector costs little, long enough for a loaded CI machine.
TIMEOUT_S = 2.0


@pytest.fixture(params=PROTOCOLS)
def receiver(request: pytest.FixtureRequest) -> Iterator[OtlpReceiver]:
    """A running loopback receiver, gRPC or HTTP."""
    with OtlpReceiver(request.param) as running:
        yield running
    if running.gate is not None:
        running.gate.set()


@pytest.fixture
def installed() -> Iterator[list[TracerProvider]]:
    """Providers configured by the test; uninstalled and shut down afterwards."""
    providers: list[TracerProvider] = []
    try:
        yield providers
    finally:
        tracebridge.set_tracer_provider(None)
        for provider in providers:
            provider.shutdown()


def install(providers: list[TracerProvider], *export: object, service_name: str = "otlp-test") -> TracerProvider:
    provider = tracebridge.configure(export=list(export), service_name=service_name, set_global=False)  # type: ignore[arg-type]
    providers.append(provider)
    return provider


def blocking_lookup() -> str:
    return threading.current_thread().name


async def handler() -> str:
    return await sync_to_async(blocking_lookup)()


def serve_request(provider: TracerProvider, name: str = "request") -> None:
    """One traced request: a root span, an async_to_sync hop, a sync_to_async hop and its handoff."""
    with provider.get_tracer("otlp-test").start_as_current_span(name):
        async_to_sync(handler)()


def by_id(received: list[ReceivedSpan]) -> dict[int, ReceivedSpan]:
    return {int.from_bytes(item.span.span_id, "big"): item for item in received}


# ---------------------------------------------------------------------------
# Endpoint rules.


@pytest.mark.parametrize(
    ("argument", "protocol", "url"),
    [
        ("http://localhost:4317", "grpc", "http://localhost:4317"),
        ("localhost:4317", "grpc", "http://localhost:4317"),
        ("https://collector.example:4317", "grpc", "https://collector.example:4317"),
        ("http://localhost:4318", "http/protobuf", "http://localhost:4318/v1/traces"),
        ("http://localhost:4318/", "http/protobuf", "http://localhost:4318/v1/traces"),
        ("https://tempo.example/otlp/v1/traces", "http/protobuf", "https://tempo.example/otlp/v1/traces"),
        ("http://127.0.0.1:9000", "grpc", "http://127.0.0.1:9000"),
    ],
)
def test_resolve_url_picks_protocol_and_endpoint(
    argument: str, protocol: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests that the URL decides gRPC versus HTTP/protobuf and the HTTP path is completed."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    assert otlp.resolve(argument) == otlp.OtlpEndpoint(protocol, url)  # type: ignore[arg-type]


def test_resolve_no_url_uses_protocol_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that a bare `otlp` leaves the endpoint to the OTLP variables and reads the protocol one."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert otlp.resolve(None) == otlp.OtlpEndpoint("grpc", None)
    assert otlp.resolve(None).describe() == "otlp grpc http://localhost:4317"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert otlp.resolve(None).describe() == "otlp http http://localhost:4318/v1/traces"
    assert otlp.resolve("http://127.0.0.1:9000") == otlp.OtlpEndpoint("http/protobuf", "http://127.0.0.1:9000/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="OTLP protocol 'http/json' .* use 'grpc' or 'http/protobuf'"):
        otlp.resolve(None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("otlp=ftp://collector:4317", "scheme 'ftp' is not http or https"),
        ("otlp=http://:4317", "the URL has no host"),
        ("otlp=http://collector:port", "not a valid URL"),
        ("otlp=http://collector:99999", "not a valid URL"),
        ("otlp=http://collector:4317/v1/x", "gRPC endpoints have no path"),
        ("otlp=http://collector:4318?x=1", "no query or fragment"),
    ],
)
def test_configure_bad_otlp_endpoint_raises_naming_it(spec: str, message: str) -> None:
    """Tests that a bad endpoint is a ValueError that quotes the spec and says what to write."""
    with pytest.raises(ValueError) as info:
        tracebridge.configure(export=spec, set_global=False)
    text = str(info.value)
    assert f"export target {spec!r}" in text
    assert message in text


def test_build_otlp_spec_makes_counting_processor_around_grpc_exporter() -> None:
    """Tests that the `otlp=URL` spec builds the counting batch processor around OTel's gRPC exporter."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    (processor,) = specs.build(["otlp=http://127.0.0.1:4317"])
    try:
        assert isinstance(processor, CountingBatchSpanProcessor)
        exporter = processor.span_exporter
        assert isinstance(exporter, ReliableExporter)
        assert isinstance(exporter.inner, OTLPSpanExporter)
        assert exporter.counters.name == "otlp grpc http://127.0.0.1:4317"
        assert exporter.counters in stats()
    finally:
        processor.shutdown()


def test_build_otlp_without_extra_raises_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that a missing OTLP extra is an ImportError saying which pip command fixes it."""
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(ImportError, match=r"pip install 'tracebridge\[otlp\]'"):
        specs.build(["otlp=http://127.0.0.1:4317"])


# ---------------------------------------------------------------------------
# Spans arrive whole.


def test_otlp_spans_arrive_whole(receiver: OtlpReceiver, installed: list[TracerProvider]) -> None:
    """Tests that every span reaches the collector with its ids, parent, name, attributes, status and resource."""
    memory = InMemorySpanExporter()
    processor = otlp.build_processor(receiver.url, timeout_s=TIMEOUT_S)
    provider = install(installed, SimpleSpanProcessor(memory), processor, service_name="whole-spans")

    async def failing() -> None:
        await sync_to_async(fail)()

    def fail() -> None:
        raise LookupError("no such user")

    with provider.get_tracer("otlp-test", "1.2").start_as_current_span("request"):
        async_to_sync(handler)()
        with pytest.raises(LookupError):
            async_to_sync(failing)()
    assert tracebridge.flush() is True
    expected: list[ReadableSpan] = list(memory.get_finished_spans())
    received = by_id(receiver.wait_for_spans(len(expected)))
    assert len(received) == len(expected) == 7
    for span in expected:
        got = received[span.context.span_id]
        assert got.span.trace_id == span.context.trace_id.to_bytes(16, "big")
        parent = span.parent.span_id.to_bytes(8, "big") if span.parent else b""
        assert got.span.parent_span_id == parent
        assert got.span.name == span.name
        assert (got.span.start_time_unix_nano, got.span.end_time_unix_nano) == (span.start_time, span.end_time)
        assert got.attributes == dict(span.attributes or {})
        assert got.span.status.code == span.status.status_code.value
        assert [event.name for event in got.span.events] == [event.name for event in span.events]
        assert got.resource == dict(provider.resource.attributes)
        assert got.resource["service.name"] == "whole-spans"
        assert got.scope_name == span.instrumentation_scope.name
    hop = next(span for span in expected if span.name == semconv.SYNC_TO_ASYNC and span.status.status_code is StatusCode.ERROR)
    got = received[hop.context.span_id]
    assert got.attributes[semconv.ERROR_TYPE] == "LookupError"
    assert got.span.events[0].name == semconv.EXCEPTION_EVENT
    assert processor.counters.exported == 7
    assert processor.counters.dropped == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_otlp_spec_honours_otel_environment_variables(
    protocol: str, monkeypatch: pytest.MonkeyPatch, installed: list[TracerProvider]
) -> None:
    """Tests that `otlp` without a URL reads the endpoint, protocol, headers and service name from OTEL_* variables."""
    with OtlpReceiver(protocol) as receiver:  # type: ignore[arg-type]
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc" if protocol == "grpc" else "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", str(TIMEOUT_S))
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        monkeypatch.setenv(specs.ENV_VAR, "otlp")
        provider = tracebridge.configure(set_global=False)
        installed.append(provider)
        serve_request(provider)
        assert tracebridge.flush() is True
        received = receiver.wait_for_spans(SPANS_PER_REQUEST)
        assert len(received) == SPANS_PER_REQUEST
        assert {item.resource["service.name"] for item in received} == {"from-env"}
        assert receiver.metadata[0]["x-tenant"] == "acme"


# ---------------------------------------------------------------------------
# Reliability: the collector down, refusing, hanging, slow, back again.


def otel_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name.startswith("opentelemetry")]


def drop_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "tracebridge.exporters"]


@pytest.mark.parametrize("failure", ["stopped", "refusing"])
def test_otlp_collector_failing_counts_drops_reports_once_and_resumes(
    failure: str, receiver: OtlpReceiver, installed: list[TracerProvider], caplog: pytest.LogCaptureFixture
) -> None:
    """Tests that while the collector is down or refusing drops are counted and reported once, and export resumes."""
    caplog.set_level(logging.DEBUG)
    processor = otlp.build_processor(receiver.url, timeout_s=0.5, cooldown_s=0.0)
    provider = install(installed, processor)
    if failure == "stopped":
        receiver.stop()
    else:
        receiver.refuse = True
    for _ in range(2):
        serve_request(provider)
        assert tracebridge.flush() is False  # it returns at once, and says it could not deliver
    counters = processor.counters
    assert (counters.dropped, counters.failed_exports, counters.exported) == (2 * SPANS_PER_REQUEST, 2, 0)
    assert counters.failing is True
    assert counters.last_error
    reports = drop_reports(caplog)
    assert len(reports) == 1
    assert reports[0].startswith(f"tracebridge: {counters.name}: dropping spans (")
    assert "tracebridge.exporters.stats()" in reports[0]
    assert [record for record in otel_records(caplog) if record.levelno >= logging.WARNING] == []

    if failure == "stopped":
        receiver.start()
    else:
        receiver.refuse = False
    serve_request(provider, "after")
    assert tracebridge.flush() is True
    received = receiver.wait_for_spans(SPANS_PER_REQUEST)
    assert [item.span.name for item in received if not item.span.parent_span_id] == ["after"]
    assert (counters.exported, counters.dropped, counters.failing) == (SPANS_PER_REQUEST, 2 * SPANS_PER_REQUEST, False)
    assert drop_reports(caplog)[1:] == [f"tracebridge: {counters.name}: export works again; 8 spans dropped while it failed"]


def test_otlp_hanging_collector_never_blocks_the_traced_app(
    receiver: OtlpReceiver, installed: list[TracerProvider]
) -> None:
    """Tests that requests run to completion while the collector hangs on an export, which runs on the batch thread."""
    gate = threading.Event()
    receiver.gate = gate
    processor = otlp.build_processor(receiver.url, timeout_s=20, schedule_delay_millis=10)
    exporter = processor.span_exporter
    assert isinstance(exporter, ReliableExporter)
    export_threads: set[str] = set()
    inner_export = exporter.inner.export

    def spying_export(spans: object) -> object:
        export_threads.add(threading.current_thread().name)
        return inner_export(spans)  # type: ignore[arg-type]

    exporter.inner.export = spying_export  # type: ignore[method-assign]
    provider = install(installed, processor)
    try:
        serve_request(provider, "first")
        from tracebridge import _telemetry

        _telemetry.deferred.drain()  # hand the first request's spans to the processor now
        assert receiver.entered.wait(10), "the first export never reached the collector"
        started = time.monotonic()
        for number in range(20):
            serve_request(provider, f"while-hanging-{number}")
        _telemetry.deferred.drain()
        elapsed = time.monotonic() - started
        assert not gate.is_set() and receiver.requests == []  # the collector is still hanging...
        assert elapsed < 10.0  # ...and 20 traced requests finished anyway (they take milliseconds)
        assert export_threads == {"OtelBatchSpanRecordProcessor"}  # the export waiting is the batch thread
    finally:
        gate.set()
    assert tracebridge.flush() is True
    received = receiver.wait_for_spans(21 * SPANS_PER_REQUEST)
    assert len(received) == 21 * SPANS_PER_REQUEST
    assert processor.counters.dropped == 0


def test_otlp_slow_collector_app_finishes_before_export_and_nothing_dropped(
    receiver: OtlpReceiver, installed: list[TracerProvider]
) -> None:
    """Tests that with a slow collector the app does not wait for it and every span still arrives."""
    receiver.delay_s = 0.3
    processor = otlp.build_processor(receiver.url, timeout_s=5, schedule_delay_millis=10, max_export_batch_size=4)
    provider = install(installed, processor)
    from tracebridge import _telemetry

    started = time.monotonic()
    for number in range(6):
        serve_request(provider, f"slow-{number}")
        _telemetry.deferred.drain()
    app_elapsed = time.monotonic() - started
    arrived_by_then = len(receiver.spans())
    assert tracebridge.flush() is True
    exported_elapsed = time.monotonic() - started
    received = receiver.wait_for_spans(6 * SPANS_PER_REQUEST)
    assert len(received) == 6 * SPANS_PER_REQUEST
    assert processor.counters.dropped == 0
    # Six batches of four spans, 0.3 s each: export took >= 1.8 s, the app did not.
    assert exported_elapsed >= 1.8
    assert app_elapsed < 1.5
    assert arrived_by_then < 6 * SPANS_PER_REQUEST


def test_otlp_full_queue_drops_are_counted_and_reported_once(
    receiver: OtlpReceiver, installed: list[TracerProvider], caplog: pytest.LogCaptureFixture
) -> None:
    """Tests that spans ending while the queue is full are dropped, counted and reported once, not blocked on."""
    caplog.set_level(logging.DEBUG)
    gate = threading.Event()
    receiver.gate = gate
    processor = otlp.build_processor(
        receiver.url, timeout_s=20, schedule_delay_millis=60_000, max_queue_size=4, max_export_batch_size=1
    )
    provider = install(installed, processor)
    tracer = provider.get_tracer("otlp-test")
    try:
        tracer.start_span("first").end()  # the worker takes it and hangs in the collector
        assert receiver.entered.wait(10)
        for number in range(10):
            tracer.start_span(f"queued-{number}").end()
        assert processor.counters.dropped == 6
        assert processor.counters.failed_exports == 0
    finally:
        gate.set()
    provider.shutdown()
    received = receiver.wait_for_spans(5)
    assert [item.span.name for item in received] == ["first", "queued-6", "queued-7", "queued-8", "queued-9"]
    reports = drop_reports(caplog)
    assert len(reports) == 2
    assert "export queue full (4 spans)" in reports[0]
    assert reports[1].endswith("export works again; 6 spans dropped while it failed")
    assert [record for record in otel_records(caplog) if record.levelno >= logging.WARNING] == []


def test_otlp_shutdown_flushes_everything_buffered(receiver: OtlpReceiver, installed: list[TracerProvider]) -> None:
    """Tests that provider shutdown sends the spans still waiting for their batch delay."""
    processor = otlp.build_processor(receiver.url, timeout_s=TIMEOUT_S, schedule_delay_millis=60_000)
    provider = install(installed, processor)
    serve_request(provider)
    from tracebridge import _telemetry

    _telemetry.deferred.drain()
    assert receiver.spans() == []
    provider.shutdown()
    assert len(receiver.spans()) == SPANS_PER_REQUEST
    assert processor.counters.exported == SPANS_PER_REQUEST


def test_otlp_shutdown_with_hanging_collector_costs_one_timeout(installed: list[TracerProvider]) -> None:
    """Tests that shutting down with a hanging collector and ten queued batches waits one timeout, not ten."""
    with OtlpReceiver("grpc") as receiver:
        receiver.gate = threading.Event()  # never opened: every export hangs until its deadline
        processor = otlp.build_processor(
            receiver.url, timeout_s=0.5, schedule_delay_millis=60_000, max_export_batch_size=2
        )
        provider = install(installed, processor)
        tracer = provider.get_tracer("otlp-test")
        for number in range(20):
            tracer.start_span(f"span-{number}").end()
        started = time.monotonic()
        provider.shutdown()
        assert time.monotonic() - started < 3.0  # ten batches of 0.5 s each would be 5 s
        assert processor.counters.dropped == 20
        assert processor.counters.exported == 0


def test_otlp_tracing_off_sends_nothing(receiver: OtlpReceiver) -> None:
    """Tests that with no provider installed the bridges record nothing and the collector gets nothing."""
    processor = otlp.build_processor(receiver.url, timeout_s=TIMEOUT_S)
    tracebridge.set_tracer_provider(None)
    assert tracebridge.get_tracer_provider() is None
    assert async_to_sync(handler)() != ""
    assert tracebridge.flush() is True
    processor.shutdown()
    assert receiver.spans() == []
    assert processor.counters.exported == processor.counters.dropped == 0
