"""Where tracebridge's spans go: exporters and the export spec registry.

Every exporter is an OpenTelemetry ``SpanExporter``.  The strings that name
them (``console``, ``otlp[=URL]``, ``jsonl=PATH``, ``jaeger-json=PATH``,
``perfetto=PATH``) are parsed by :mod:`tracebridge.exporters.specs`, shared by
``tracebridge.configure()``, the ``TRACEBRIDGE_EXPORT`` environment variable
and the command line.

* :mod:`.console`: a trace as a tree on the terminal.
* :mod:`.otlp`: OTLP over gRPC or HTTP to Jaeger or any collector (``otlp`` extra).
* :mod:`.jsonl`: OTLP/JSON lines, appended; :func:`read_spans` loads them back.
* :mod:`.jaeger_json`: a file for the Jaeger UI's "upload JSON".
* :mod:`.perfetto`: a Perfetto / chrome://tracing timeline with a track per thread.
* :func:`read_trace_file`: any of the readable formats, detected from the content.

:func:`stats` counts, per exporter, the spans delivered and dropped.
"""

from __future__ import annotations

from . import specs as specs
from ._delivery import ExporterStats as ExporterStats
from ._delivery import stats as stats
from ._files import TraceFileError as TraceFileError
from ._files import TraceFileWarning as TraceFileWarning
from .console import ConsoleTraceExporter as ConsoleTraceExporter
from .console import render_trace as render_trace
from .jaeger_json import JaegerJsonExporter as JaegerJsonExporter
from .jsonl import JsonLinesExporter as JsonLinesExporter
from .jsonl import read_spans as read_spans
from .perfetto import PerfettoExporter as PerfettoExporter
from .readers import read_trace_file as read_trace_file

__all__ = [
    "ConsoleTraceExporter",
    "ExporterStats",
    "JaegerJsonExporter",
    "JsonLinesExporter",
    "PerfettoExporter",
    "TraceFileError",
    "TraceFileWarning",
    "read_spans",
    "read_trace_file",
    "render_trace",
    "specs",
    "stats",
]
