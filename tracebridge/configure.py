"""One call to turn tracing on: ``tracebridge.configure()``.

tracebridge records into whatever OpenTelemetry ``TracerProvider`` is installed,
so an application that already sets one up needs none of this.  ``configure``
is for everyone else: it builds an SDK provider, attaches exporters named by
export specs (see :mod:`tracebridge.exporters.specs`) and installs it.

The SDK and the exporters are imported when ``configure`` is called, not when
``tracebridge`` is imported: bridging code that never traces pays nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import _telemetry

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    ExportItem = str | SpanExporter | SpanProcessor

__all__ = ["DEFAULT_EXPORT", "DEFAULT_SERVICE_NAME", "configure"]

DEFAULT_EXPORT: tuple[str, ...] = ("console",)
"""What ``configure()`` exports to when neither ``export=`` nor ``TRACEBRIDGE_EXPORT`` says."""

DEFAULT_SERVICE_NAME = "tracebridge"
"""``service.name`` when neither ``service_name=`` nor the OpenTelemetry env vars give one."""


def configure(
    *,
    export: str | ExportItem | Iterable[ExportItem] | None = None,
    service_name: str | None = None,
    tracer_provider: TracerProvider | None = None,
    set_global: bool = True,
) -> TracerProvider:
    """Set up tracing for tracebridge in one call; call it once, at start-up.

    Which exporters, in order of precedence:

    1. ``export=``, when given: one spec (``"console"``), or a list of specs,
       ``SpanExporter`` instances (each wrapped in a ``BatchSpanProcessor`` whose
       flush also flushes the exporter) and ``SpanProcessor`` instances (added as
       they are).  ``export=()`` adds none.
    2. Otherwise, when ``tracer_provider=`` is given: none (your provider is
       already set up; the environment variable is not read).
    3. Otherwise the ``TRACEBRIDGE_EXPORT`` environment variable, when set and
       not blank: comma-separated specs, e.g. ``console,jsonl=trace.jsonl``.
    4. Otherwise :data:`DEFAULT_EXPORT`: ``console``.

    Args:
        export: where spans go, as above.
        service_name: the ``service.name`` resource attribute of a provider
            built here.  Defaults to ``OTEL_SERVICE_NAME`` (or a ``service.name``
            in ``OTEL_RESOURCE_ATTRIBUTES``), else ``"tracebridge"``.
        tracer_provider: an SDK provider to use instead of building one.
        set_global: also make the provider OpenTelemetry's global one, so other
            instrumentation and ``opentelemetry.trace.get_tracer()`` use it.  The
            global can be set once per process; OpenTelemetry logs a warning and
            keeps the old one if it was already set (tracebridge still records
            into the new provider).

    Returns:
        The provider tracebridge now records into.

    Raises:
        ValueError: an export spec (argument or ``TRACEBRIDGE_EXPORT``) is not
            valid (the message lists the valid ones), or ``service_name`` was given
            together with ``tracer_provider`` (set the Resource on your provider).
        TypeError: an ``export`` item is neither a spec, an exporter nor a processor.
    """
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.trace import TracerProvider

    from .exporters import specs

    if tracer_provider is not None and service_name is not None:
        raise ValueError(
            "configure(service_name=...) cannot rename a tracer_provider you built: "
            "create it with Resource.create({'service.name': ...}) instead"
        )

    env_value = ""
    items: list[ExportItem]
    if export is not None:
        items = _items(export)
    elif tracer_provider is not None:
        items = []
    else:
        env_value = os.environ.get(specs.ENV_VAR, "")
        items = [*(specs.from_env(env_value) or DEFAULT_EXPORT)]
    try:
        processors = specs.build(items)
    except ValueError as exc:
        if env_value.strip():
            raise ValueError(f"{specs.ENV_VAR}={env_value!r}: {exc}") from None
        raise

    provider = tracer_provider if tracer_provider is not None else TracerProvider(resource=_resource(service_name))
    for processor in processors:
        provider.add_span_processor(processor)

    _telemetry.set_tracer_provider(provider)
    if set_global:
        otel_trace.set_tracer_provider(provider)
    # TRACEBRIDGE_DETECT / TRACEBRIDGE_STREAM: the watchdog and the live stream (issue 5).
    from ._live_env import start_from_env

    start_from_env()
    return provider


def _items(export: ExportItem | Iterable[ExportItem]) -> list[ExportItem]:
    if isinstance(export, str):
        return [export]
    if isinstance(export, Iterable):
        return list(export)
    return [export]  # a single exporter or processor


def _resource(service_name: str | None) -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    # Resource.create() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES and
    # lets our explicit attributes win; without either it says "unknown_service".
    resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource
