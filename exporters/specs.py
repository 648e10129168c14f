"""Export specs: the strings that say where spans go.

One grammar serves ``tracebridge.configure(export=...)``, the
``TRACEBRIDGE_EXPORT`` environment variable and ``tracebridge <cmd> --export``::

    NAME            e.g. console
    NAME=ARGUMENT   e.g. jsonl=trace.jsonl   (everything after the first "=")

Each NAME is a :class:`Target` in a small registry.  A target's factory gets the
argument (or None) and returns a ``SpanExporter`` (which :func:`build` wraps in a
:class:`FlushingBatchSpanProcessor`) or a ready ``SpanProcessor`` (when it needs
its own batch settings).  A new exporter slots in with one :func:`register` call
at the bottom of this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

__all__ = [
    "ENV_VAR",
    "FlushingBatchSpanProcessor",
    "Target",
    "build",
    "from_env",
    "parse",
    "register",
    "targets",
    "usage",
]

ENV_VAR = "TRACEBRIDGE_EXPORT"
"""Comma-separated specs used when ``configure()`` is not given ``export=``."""

Argument = Literal["none", "optional", "required"]
Factory = Callable[[str | None], SpanExporter | SpanProcessor]

# The console exporter prints a trace once its root span has arrived: the
# SDK's default 5 s batch delay would make the demo (and a developer watching
# their terminal) wait that long for every request.
_CONSOLE_SCHEDULE_DELAY_MS = 200


@dataclass(frozen=True)
class Target:
    """One place spans can go, as named in a spec."""

    name: str
    """The part of the spec before ``=``."""

    factory: Factory
    """Called with the argument (None when the spec has none)."""

    argument: Argument = "none"
    """Whether the spec takes ``=ARGUMENT``."""

    metavar: str = "ARG"
    """What the argument is, for usage strings (``PATH``, ``URL``)."""

    help: str = ""
    """One line for ``--help`` and the README."""

    def usage(self) -> str:
        """The spec as a user would write it: ``console``, ``otlp[=URL]``, ``jsonl=PATH``."""
        if self.argument == "required":
            return f"{self.name}={self.metavar}"
        if self.argument == "optional":
            return f"{self.name}[={self.metavar}]"
        return self.name


_targets: dict[str, Target] = {}


def register(
    name: str,
    factory: Factory,
    *,
    argument: Argument = "none",
    metavar: str = "ARG",
    help: str = "",
) -> Target:
    """Make ``name`` a valid spec.  Registering a name again replaces it."""
    target = Target(name, factory, argument, metavar, help)
    _targets[name] = target
    return target


def targets() -> list[Target]:
    """Every registered target, sorted by name."""
    return [_targets[name] for name in sorted(_targets)]


def usage() -> str:
    """All valid specs in one line: ``console, jsonl=PATH, otlp[=URL]``."""
    return ", ".join(target.usage() for target in targets())


def parse(spec: str) -> tuple[Target, str | None]:
    """Split ``spec`` into its target and argument, checking both.

    Raises:
        ValueError: the name is not registered, or the argument is missing or
            not allowed.  The message names the spec and lists the valid ones.
    """
    name, sep, argument = spec.strip().partition("=")
    name = name.strip()
    target = _targets.get(name)
    if target is None:
        raise ValueError(f"unknown export target {spec!r}; valid targets are: {usage()}")
    if not sep:
        if target.argument == "required":
            raise ValueError(
                f"export target {name!r} needs an argument: write {target.usage()}"
            )
        return target, None
    if target.argument == "none":
        raise ValueError(f"export target {name!r} takes no argument: write {name}, not {spec!r}")
    if not argument:
        raise ValueError(f"export target {spec!r} has an empty argument: write {target.usage()}")
    return target, argument


def from_env(value: str) -> list[str]:
    """The specs in a ``TRACEBRIDGE_EXPORT`` value: comma-separated, blanks ignored."""
    return [part.strip() for part in value.split(",") if part.strip()]


class FlushingBatchSpanProcessor(BatchSpanProcessor):
    """A ``BatchSpanProcessor`` whose ``force_flush`` also flushes its exporter.

    The SDK's processors export everything queued on ``force_flush`` but never
    call the exporter's own ``force_flush``.  Exporters that hold spans back
    (the console exporter waits for a trace's late leaves) rely on it, so that
    ``tracebridge.flush()`` writes everything out.
    """

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        exported = super().force_flush(timeout_millis)
        if not exported:
            return False  # shut down
        exporter: SpanExporter = self.span_exporter
        return exporter.force_flush(timeout_millis if timeout_millis is not None else 30_000)


def build(items: Iterable[str | SpanExporter | SpanProcessor]) -> list[SpanProcessor]:
    """One span processor per item, in order.

    Args:
        items: specs (built by their target's factory), ``SpanExporter``
            instances (wrapped in a :class:`FlushingBatchSpanProcessor`) and
            ``SpanProcessor`` instances (used as they are).

    Every item is checked before any factory runs, so a typo in the third spec
    does not leave the first two half-built (files opened, threads started).

    Raises:
        ValueError: a spec is not valid (see :func:`parse`).
        TypeError: an item is none of the three kinds.
    """
    checked: list[tuple[Target, str | None] | SpanExporter | SpanProcessor] = []
    for item in items:
        if isinstance(item, str):
            checked.append(parse(item))
        elif isinstance(item, (SpanExporter, SpanProcessor)):
            checked.append(item)
        else:
            raise TypeError(
                f"expected an export spec string, a SpanExporter or a SpanProcessor, "
                f"not {type(item).__name__}: {item!r}"
            )
    processors: list[SpanProcessor] = []
    for entry in checked:
        made = entry[0].factory(entry[1]) if isinstance(entry, tuple) else entry
        if isinstance(made, SpanExporter):
            made = FlushingBatchSpanProcessor(made)
        processors.append(made)
    return processors


# ---------------------------------------------------------------------------
# The targets.  New exporters register here, one call each.


def _console(_argument: str | None) -> SpanProcessor:
    from .console import ConsoleTraceExporter

    return FlushingBatchSpanProcessor(ConsoleTraceExporter(), schedule_delay_millis=_CONSOLE_SCHEDULE_DELAY_MS)


register(
    "console",
    _console,
    help="print each trace as a tree on stdout when its request finishes",
)


def _otlp(argument: str | None) -> SpanProcessor:
    from .otlp import build_processor

    return build_processor(argument)


register(
    "otlp",
    _otlp,
    argument="optional",
    metavar="URL",
    help=(
        "send to an OTLP collector such as Jaeger: gRPC (default localhost:4317), "
        "HTTP/protobuf for port 4318 or a /v1/traces path; OTEL_EXPORTER_OTLP_* honoured"
    ),
)


def _file_processor(exporter: SpanExporter) -> SpanProcessor:
    from ._delivery import CountingBatchSpanProcessor

    return CountingBatchSpanProcessor(exporter, exporter.counters)  # type: ignore[attr-defined]


def _jsonl(argument: str | None) -> SpanProcessor:
    from .jsonl import JsonLinesExporter

    assert argument is not None
    return _file_processor(JsonLinesExporter(argument))


register(
    "jsonl",
    _jsonl,
    argument="required",
    metavar="PATH",
    help="append each batch of spans to PATH as one OTLP/JSON line (read back with `tracebridge show`)",
)


def _jaeger_json(argument: str | None) -> SpanProcessor:
    from .jaeger_json import JaegerJsonExporter

    assert argument is not None
    return _file_processor(JaegerJsonExporter(argument))


register(
    "jaeger-json",
    _jaeger_json,
    argument="required",
    metavar="PATH",
    help="write PATH for the Jaeger UI's 'upload JSON' (rewritten atomically at each flush and at exit)",
)


def _perfetto(argument: str | None) -> SpanProcessor:
    from .perfetto import PerfettoExporter

    assert argument is not None
    return _file_processor(PerfettoExporter(argument))


register(
    "perfetto",
    _perfetto,
    argument="required",
    metavar="PATH",
    help="write PATH as a Perfetto / chrome://tracing timeline: a track per thread, arrows per hop",
)
