"""Shared fixtures: an injected in-memory tracer provider and a runner for async tests."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracebridge


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Runs ``async def`` tests in a fresh event loop (no pytest-asyncio needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(pyfuncitem.obj(**kwargs))
    return True


class SpanRecorder:
    """An SDK provider injected into tracebridge, with its finished spans at hand."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def finished(self) -> list[ReadableSpan]:
        """Every span finished so far, deferred ones included, in end order."""
        tracebridge.flush()
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        """The finished spans called ``name``."""
        return [span for span in self.finished() if span.name == name]

    def clear(self) -> None:
        tracebridge.flush()
        self.exporter.clear()


@pytest.fixture
def spans() -> Iterator[SpanRecorder]:
    """Tracing on, into a local provider (no OpenTelemetry globals touched)."""
    recorder = SpanRecorder()
    tracebridge.set_tracer_provider(recorder.provider)
    try:
        yield recorder
    finally:
        tracebridge.flush()
        tracebridge.set_tracer_provider(None)
        recorder.provider.shutdown()
