"""Tests for tracebridge.configure(): one-call tracing setup."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracebridge
from tracebridge.exporters import specs
from tracebridge.exporters.console import ConsoleTraceExporter


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[TracerProvider]]:
    """No env-var configuration leaks in; tracebridge's provider is reset after each test."""
    for name in (specs.ENV_VAR, "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    made: list[TracerProvider] = []
    yield made
    tracebridge.set_tracer_provider(None)
    for provider in made:
        provider.shutdown()


def processors(provider: TracerProvider) -> list[SpanProcessor]:
    return list(provider._active_span_processor._span_processors)


def test_configure_injected_provider_is_used_as_is(clean: list[TracerProvider]) -> None:
    """Tests that a given provider becomes tracebridge's without exporters added or the global touched."""
    provider = TracerProvider()
    clean.append(provider)
    global_before = otel_trace._TRACER_PROVIDER
    assert tracebridge.configure(tracer_provider=provider, set_global=False) is provider
    assert tracebridge.get_tracer_provider() is provider
    assert processors(provider) == []
    assert otel_trace._TRACER_PROVIDER is global_before


def test_configure_injected_provider_records_tracebridge_spans(clean: list[TracerProvider]) -> None:
    """Tests that after configure() tracebridge's own spans reach the injected provider."""
    local_module = pytest.importorskip("tracebridge.local")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clean.append(provider)
    tracebridge.configure(tracer_provider=provider, set_global=False)
    state = local_module.Local()
    state.user_id = 7
    tracebridge.flush()
    assert [span.name for span in exporter.get_finished_spans()] == [tracebridge.semconv.LOCAL_ACCESS]


def test_configure_console_builds_provider_with_console_exporter(clean: list[TracerProvider]) -> None:
    """Tests that export='console' builds an SDK provider named 'tracebridge' printing to the console."""
    provider = tracebridge.configure(export="console", set_global=False)
    clean.append(provider)
    assert tracebridge.get_tracer_provider() is provider
    (processor,) = processors(provider)
    assert isinstance(processor, specs.FlushingBatchSpanProcessor)
    assert isinstance(processor.span_exporter, ConsoleTraceExporter)
    assert provider.resource.attributes[SERVICE_NAME] == "tracebridge"


def test_configure_default_is_console(clean: list[TracerProvider]) -> None:
    """Tests that with no export= and no TRACEBRIDGE_EXPORT the console exporter is used."""
    provider = tracebridge.configure(set_global=False)
    clean.append(provider)
    (processor,) = processors(provider)
    assert isinstance(processor.span_exporter, ConsoleTraceExporter)  # type: ignore[attr-defined]


def test_configure_env_var_used_when_export_not_given(
    clean: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests that TRACEBRIDGE_EXPORT's comma-separated specs are used when export= is not given."""
    monkeypatch.setenv(specs.ENV_VAR, "console, console")
    provider = tracebridge.configure(set_global=False)
    clean.append(provider)
    assert len(processors(provider)) == 2


def test_configure_explicit_export_overrides_env_var(
    clean: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests that export= wins over TRACEBRIDGE_EXPORT, and export=() adds no exporter."""
    monkeypatch.setenv(specs.ENV_VAR, "console")
    provider = tracebridge.configure(export=(), set_global=False)
    clean.append(provider)
    assert processors(provider) == []


def test_configure_bad_env_var_raises_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that an invalid TRACEBRIDGE_EXPORT raises ValueError naming the variable and the valid specs."""
    monkeypatch.setenv(specs.ENV_VAR, "console,otel")
    with pytest.raises(ValueError) as info:
        tracebridge.configure(set_global=False)
    assert str(info.value) == (
        f"TRACEBRIDGE_EXPORT='console,otel': unknown export target 'otel'; valid targets are: {specs.usage()}"
    )
    assert tracebridge.get_tracer_provider() is None


def test_configure_invalid_spec_raises_and_changes_nothing() -> None:
    """Tests that an invalid export spec raises ValueError listing valid ones, and tracing stays off."""
    with pytest.raises(ValueError, match=r"unknown export target 'nope'; valid targets are: .*console"):
        tracebridge.configure(export=["console", "nope"], set_global=False)
    assert tracebridge.get_tracer_provider() is None


def test_configure_exporter_and_processor_instances(clean: list[TracerProvider]) -> None:
    """Tests that exporter instances are batched and processor instances are added as given."""
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(InMemorySpanExporter())
    provider = tracebridge.configure(export=[exporter, processor], set_global=False)
    clean.append(provider)
    batched, given = processors(provider)
    assert batched.span_exporter is exporter  # type: ignore[attr-defined]
    assert given is processor


def test_configure_service_name_argument_then_env_then_default(
    clean: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests service.name precedence: argument, then OTEL_SERVICE_NAME, then 'tracebridge'."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    named = tracebridge.configure(export=(), service_name="shop", set_global=False)
    from_env = tracebridge.configure(export=(), set_global=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
    from_attributes = tracebridge.configure(export=(), set_global=False)
    clean.extend([named, from_env, from_attributes])
    assert [p.resource.attributes[SERVICE_NAME] for p in (named, from_env, from_attributes)] == [
        "shop", "from-env", "from-attributes"]


def test_configure_service_name_with_provider_raises() -> None:
    """Tests that service_name cannot be combined with a provider the user built."""
    with pytest.raises(ValueError, match="cannot rename a tracer_provider you built"):
        tracebridge.configure(tracer_provider=TracerProvider(), service_name="x", set_global=False)


def test_configure_set_global_installs_otel_global() -> None:
    """Tests (in a fresh interpreter) that set_global=True makes the provider OpenTelemetry's global."""
    code = textwrap.dedent("""
        from opentelemetry import trace
        import tracebridge
        provider = tracebridge.configure(export=())
        assert trace.get_tracer_provider() is provider
        assert tracebridge.get_tracer_provider() is provider
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")
