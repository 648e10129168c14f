"""Where tracebridge's spans go: exporters and the export spec registry.

Every exporter is an OpenTelemetry ``SpanExporter``.  The strings that name
them (``console``; later ``otlp[=URL]``, ``jsonl=PATH`` ...) are parsed by
:mod:`tracebridge.exporters.specs`, shared by ``tracebridge.configure()``, the
``TRACEBRIDGE_EXPORT`` environment variable and the command line.
"""

from __future__ import annotations

from . import specs as specs
from .console import ConsoleTraceExporter as ConsoleTraceExporter
from .console import render_trace as render_trace

__all__ = [
    "ConsoleTraceExporter",
    "render_trace",
    "specs",
]
