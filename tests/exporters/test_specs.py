"""Tests for tracebridge.exporters.specs: the export spec grammar and registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracebridge.exporters import specs
from tracebridge.exporters.console import ConsoleTraceExporter


class FlushCountingExporter(SpanExporter):
    """Counts force_flush calls, to see whether a processor forwards them."""

    def __init__(self) -> None:
        self.flushes = 0
        self.exported: list[ReadableSpan] = []

    def export(self, spans: object) -> SpanExportResult:
        self.exported.extend(spans)  # type: ignore[arg-type]
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.flushes += 1
        return True


@pytest.fixture
def with_target() -> Iterator[FlushCountingExporter]:
    """A temporary ``counting=NAME`` target (optional argument) that returns one shared exporter."""
    exporter = FlushCountingExporter()
    specs.register("counting", lambda argument: exporter, argument="optional", metavar="NAME")
    try:
        yield exporter
    finally:
        specs._targets.pop("counting")


def test_parse_console_returns_target_without_argument() -> None:
    """Tests that 'console' parses to the console target with no argument."""
    target, argument = specs.parse(" console ")
    assert (target.name, argument) == ("console", None)


def test_parse_unknown_name_raises_listing_valid_specs() -> None:
    """Tests that an unknown spec raises ValueError naming it and listing the valid ones."""
    with pytest.raises(ValueError) as info:
        specs.parse("jaeger=localhost")
    assert str(info.value) == f"unknown export target 'jaeger=localhost'; valid targets are: {specs.usage()}"
    assert "console" in specs.usage().split(", ")


def test_parse_argument_to_console_raises() -> None:
    """Tests that an argument to a target that takes none is refused with the right spelling."""
    with pytest.raises(ValueError, match="export target 'console' takes no argument: write console, not 'console=x'"):
        specs.parse("console=x")


def test_parse_optional_argument_kept_after_first_equals(with_target: FlushCountingExporter) -> None:
    """Tests that the argument is everything after the first '=' and may be omitted when optional."""
    assert specs.parse("counting=a=b")[1] == "a=b"
    assert specs.parse("counting")[1] is None
    with pytest.raises(ValueError, match=r"has an empty argument: write counting\[=NAME\]"):
        specs.parse("counting=")


def test_parse_required_argument_missing_raises() -> None:
    """Tests that a target that needs an argument says how to write it."""
    specs.register("needs", lambda argument: InMemorySpanExporter(), argument="required", metavar="PATH")
    try:
        with pytest.raises(ValueError, match="export target 'needs' needs an argument: write needs=PATH"):
            specs.parse("needs")
    finally:
        specs._targets.pop("needs")


def test_from_env_splits_commas_and_ignores_blanks() -> None:
    """Tests that TRACEBRIDGE_EXPORT values are comma-separated with blanks ignored."""
    assert specs.from_env(" console, ,jsonl=a.jsonl ") == ["console", "jsonl=a.jsonl"]
    assert specs.from_env("") == []


def test_build_bad_spec_builds_nothing(with_target: FlushCountingExporter) -> None:
    """Tests that one bad spec fails the whole build before any factory runs."""
    calls: list[str | None] = []
    specs.register("spy", lambda argument: calls.append(argument) or InMemorySpanExporter(), argument="optional")
    try:
        with pytest.raises(ValueError, match="unknown export target 'nope'"):
            specs.build(["spy", "nope"])
    finally:
        specs._targets.pop("spy")
    assert calls == []


def test_build_mixed_items_keeps_order_and_kinds(with_target: FlushCountingExporter) -> None:
    """Tests that specs and exporters become flushing batch processors and processors stay as given."""
    processor = SimpleSpanProcessor(InMemorySpanExporter())
    exporter = InMemorySpanExporter()
    built = specs.build(["counting", exporter, processor])
    try:
        flushing = specs.FlushingBatchSpanProcessor
        assert [type(p) for p in built] == [flushing, flushing, SimpleSpanProcessor]
        assert built[0].span_exporter is with_target
        assert built[1].span_exporter is exporter
        assert built[2] is processor
    finally:
        for made in built:
            made.shutdown()


def test_build_junk_item_raises_type_error() -> None:
    """Tests that an item that is no spec, exporter or processor is refused."""
    message = "expected an export spec string, a SpanExporter or a SpanProcessor, not int: 3"
    with pytest.raises(TypeError, match=message):
        specs.build([3])  # type: ignore[list-item]


def test_build_console_is_flushing_processor_with_console_exporter() -> None:
    """Tests that 'console' builds a flushing batch processor around a ConsoleTraceExporter."""
    (processor,) = specs.build(["console"])
    try:
        assert isinstance(processor, specs.FlushingBatchSpanProcessor)
        assert isinstance(processor.span_exporter, ConsoleTraceExporter)
    finally:
        processor.shutdown()


def test_flushing_processor_force_flush_reaches_exporter(with_target: FlushCountingExporter) -> None:
    """Tests that force_flush on the processor also flushes its exporter (the SDK's does not)."""
    (processor,) = specs.build(["counting"])
    assert processor.force_flush() is True
    assert with_target.flushes == 1
    processor.shutdown()
    assert processor.force_flush() is False
    assert with_target.flushes == 1
