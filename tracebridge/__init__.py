"""tracebridge: asgiref-compatible sync/async bridging that traces its own thread hops.

Import the components from their asgiref-named modules (``tracebridge.sync``,
``tracebridge.local``, ...); this package root holds only the tracing switches.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._telemetry import TelemetryStats, flush, get_tracer_provider, set_tracer_provider
from ._telemetry import stats as _stats
from .configure import configure as configure


def stats() -> TelemetryStats:
    """Counters of swallowed tracing errors and dropped/exported deferred spans."""
    return _stats


__all__ = [
    "TelemetryStats",
    "__version__",
    "configure",
    "flush",
    "get_tracer_provider",
    "set_tracer_provider",
    "stats",
]
