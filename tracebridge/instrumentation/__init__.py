"""Trace code that imports the real asgiref — Django, Channels — without changing it.

Usage::

    from tracebridge.instrumentation import AsgirefInstrumentor

    AsgirefInstrumentor().instrument()    # after configuring tracing, before serving

or, with no code at all, ``opentelemetry-instrument uvicorn mysite.asgi:application``:
tracebridge registers this class under the ``opentelemetry_instrumentor``
entry point ``asgiref``, so OpenTelemetry's auto-instrumentation picks it up.

Once instrumented, the installed asgiref 3.x makes the same spans, from the
same vocabulary (:mod:`tracebridge.semconv`), as tracebridge's own
implementation: one per ``sync_to_async``/``async_to_sync`` hop (executor rule,
loop route, caller and executing threads, queue wait and run time), one per
``CurrentThreadExecutor`` or single-thread-pool handoff, one per ``Local``
get/set/delete (names, never values) and one per ``timeout`` expiry.  So the
exporters, the flow model and the TUI read either the same way.  See
``_asgiref.py`` for where each patch sits and why.

**Objects made before instrumenting are traced too**: the patches replace
methods on asgiref's classes, not the module-level functions, so a function
decorated with ``sync_to_async`` at import time, or a ``Local`` made then, is
traced from the next call on.  The one exception is a bound method captured
before instrumenting (``functools.partial(obj.__call__)`` held somewhere, or a
method already read through ``SyncToAsync.__get__`` and kept): it keeps calling
the original.  Django and Channels read these afresh on every call.

**Per-request hop census**: unless ``instrument(census=False)``, a
:class:`HopCensus` is added to the SDK provider tracebridge records into, so
each request's root span says how many hops it caused and where.

``uninstrument()`` puts back the very function objects that were there before.
For asgiref 3.13.0 (recognised by the source of the methods replaced, and only
when they are asgiref's own, not another tool's wrappers) ``sync_to_async``
and the ``Local`` access methods are tracebridge's implementation of asgiref's
rules with the recording written in (``_asgiref_s2a.py``, ``_asgiref_local.py``):
with tracing off they run less code than asgiref's own.  Any other asgiref
3.x gets wrappers: tracing off, one plain Python call and one ``get_tracer()``
per bridge call, and one Python call per ``Local`` access.
"""

from __future__ import annotations

import importlib
import logging
import threading
import weakref
from collections.abc import Collection
from types import ModuleType
from typing import Any

from .. import _telemetry
from . import _asgiref
from .census import HopCensus

__all__ = ["AsgirefInstrumentor", "HopCensus", "SUPPORTED"]

logger = logging.getLogger("tracebridge")

SUPPORTED = "asgiref >= 3.0, < 4"
"""The asgiref versions the instrumentation accepts (requirement syntax)."""

_MODULES = ("asgiref.sync", "asgiref.local", "asgiref.current_thread_executor", "asgiref.timeout")

try:  # the optional `instrument` extra
    from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined,unused-ignore]
        BaseInstrumentor as _Base,
    )
except ImportError:  # pragma: no cover - exercised in a subprocess test

    class _Base:  # type: ignore[no-redef]
        """The contract of OpenTelemetry's BaseInstrumentor, for when it is not installed.

        One instance per class; ``instrument()`` twice or ``uninstrument()``
        without ``instrument()`` logs a warning and does nothing.
        """

        _instance: Any = None
        _is_instrumented_by_opentelemetry = False

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            if cls._instance is None:
                cls._instance = object.__new__(cls)
            return cls._instance

        @property
        def is_instrumented_by_opentelemetry(self) -> bool:
            return self._is_instrumented_by_opentelemetry

        def instrument(self, **kwargs: Any) -> Any:
            if self._is_instrumented_by_opentelemetry:
                logger.warning("Attempting to instrument while already instrumented")
                return None
            kwargs.pop("skip_dep_check", None)
            kwargs.pop("raise_exception_on_conflict", None)
            result = self._instrument(**kwargs)  # type: ignore[attr-defined]
            self._is_instrumented_by_opentelemetry = True
            return result

        def uninstrument(self, **kwargs: Any) -> Any:
            if self._is_instrumented_by_opentelemetry:
                result = self._uninstrument(**kwargs)  # type: ignore[attr-defined]
                self._is_instrumented_by_opentelemetry = False
                return result
            logger.warning("Attempting to uninstrument while already uninstrumented")
            return None


class AsgirefInstrumentor(_Base):  # type: ignore[misc]
    """An OpenTelemetry instrumentor that makes the installed asgiref trace like tracebridge.

    ``instrument(**kwargs)`` accepts:

    * ``tracer_provider``: record into this provider (passed to
      :func:`tracebridge.set_tracer_provider`); default: the global one.
    * ``census`` (default True): add a :class:`HopCensus` to the SDK provider,
      if one is set by now (else add ``HopCensus()`` to yours yourself).

    Instrumenting twice, or uninstrumenting when not instrumented, logs a
    warning and changes nothing.  When asgiref is missing, or not 3.x, or lacks
    some patch point, a warning says what is not traced and nothing crashes.
    """

    _lock = threading.Lock()
    _patches: list[_asgiref.Patch] = []
    _censuses: weakref.WeakKeyDictionary[Any, HopCensus] = weakref.WeakKeyDictionary()

    def instrumentation_dependencies(self) -> Collection[str]:
        """The asgiref versions this instrumentor patches."""
        return (SUPPORTED,)

    def _instrument(self, **kwargs: Any) -> None:
        provider = kwargs.get("tracer_provider")
        if provider is not None:
            _telemetry.set_tracer_provider(provider)
        with self._lock:
            if self._patches:
                return  # already in place (e.g. _instrument called directly)
            modules = _import_asgiref()
            if modules is None:
                return
            patches, missing = _asgiref.install(modules)
            type(self)._patches = patches
        if missing:
            logger.warning(
                "tracebridge: asgiref %s lacks %s; these are not traced (tracebridge supports %s)",
                _version(),
                ", ".join(f"{p.owner}.{p.name}" for p in missing),
                SUPPORTED,
            )
        if kwargs.get("census", True):
            self._add_census(provider)

    def _uninstrument(self, **kwargs: Any) -> None:
        with self._lock:
            foreign = _asgiref.uninstall(self._patches)
            type(self)._patches = []
        for patch in foreign:
            logger.warning(
                "tracebridge: %s.%s was replaced again after tracebridge patched it; left as it is now",
                patch.owner.__qualname__,
                patch.name,
            )
        for census in list(self._censuses.values()):
            census.disable()

    def _add_census(self, provider: Any) -> None:
        provider = provider if provider is not None else _telemetry.get_tracer_provider()
        add = getattr(provider, "add_span_processor", None)
        if add is None:
            logger.info(
                "tracebridge: no SDK TracerProvider yet, so no per-request hop census; "
                "add tracebridge.instrumentation.HopCensus() to your provider"
            )
            return
        census = self._censuses.get(provider)
        if census is not None:
            census.enable()
            return
        census = HopCensus()
        add(census)
        self._censuses[provider] = census


def _import_asgiref() -> dict[str, ModuleType] | None:
    try:
        modules = {name: importlib.import_module(name) for name in _MODULES}
    except ImportError as exc:
        logger.warning(
            "tracebridge: cannot instrument asgiref (%s); nothing is patched. Install asgiref 3.x, or use "
            "tracebridge's own modules (tracebridge.sync, ...) instead",
            exc,
        )
        return None
    version = _version()
    if not version.startswith("3."):
        logger.warning(
            "tracebridge: asgiref %s is not supported (tracebridge supports %s); nothing is patched",
            version,
            SUPPORTED,
        )
        return None
    return modules


def _version() -> str:
    try:
        import asgiref

        return str(getattr(asgiref, "__version__", "unknown"))
    except ImportError:
        return "missing"
