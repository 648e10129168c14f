"""``tracebridge run -- COMMAND ...``: trace any Python program, as ``opentelemetry-instrument`` does.

Two halves, in two processes:

* :func:`exec_traced` runs in the ``tracebridge`` command: it puts the
  ``_bootstrap`` folder (holding a ``sitecustomize`` module) first on
  ``PYTHONPATH``, records the export specs in ``TRACEBRIDGE_EXPORT`` and a
  ``service.name`` in ``OTEL_SERVICE_NAME``, then replaces itself with COMMAND
  (``exec``: signals and the exit status are the program's own).
* :func:`bootstrap` runs in every Python process started that way, before its
  ``__main__``: it calls ``tracebridge.configure()`` and makes sure everything
  buffered is exported when the process ends: normally, through an unhandled
  exception (both run ``atexit``), or by SIGTERM (turned into ``SystemExit`` so
  that ``finally`` blocks and ``atexit`` run too).  Children inherit the
  environment, so they are traced as well: export them to ``jsonl=`` (safe for
  several writers) rather than to one whole-document file each would replace.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

__all__ = ["BOOTSTRAP_DIR", "ENV_RUN", "bootstrap", "command_environment", "exec_traced", "service_name_for"]

ENV_RUN = "TRACEBRIDGE_RUN"
"""Set to ``1`` by ``tracebridge run``; the bootstrap does nothing without it."""

BOOTSTRAP_DIR = Path(__file__).resolve().parent / "_bootstrap"
"""The folder ``tracebridge run`` puts first on ``PYTHONPATH``."""

_FLUSH_TIMEOUT_MS = 10_000
_PYTHON = re.compile(r"^python[0-9.]*$")
_started = False


def service_name_for(command: Sequence[str]) -> str:
    """A ``service.name`` for COMMAND: the script's or module's name, else the program's."""
    program = Path(command[0]).name
    if _PYTHON.match(program):
        arguments = list(command[1:])
        while arguments:
            argument = arguments.pop(0)
            if argument == "-m" and arguments:
                return arguments[0]
            if argument == "-c":
                return program
            if not argument.startswith("-"):
                return Path(argument).stem
    return program


def command_environment(
    command: Sequence[str],
    export: Sequence[str] | None,
    environ: Mapping[str, str],
) -> dict[str, str]:
    """The environment COMMAND runs with under ``tracebridge run``."""
    from .exporters import specs

    env = dict(environ)
    env[ENV_RUN] = "1"
    paths = [str(BOOTSTRAP_DIR), *[part for part in env.get("PYTHONPATH", "").split(os.pathsep) if part]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if export:
        env[specs.ENV_VAR] = ",".join(export)
    if not env.get("OTEL_SERVICE_NAME"):
        env["OTEL_SERVICE_NAME"] = service_name_for(command)
    return env


def exec_traced(command: Sequence[str], export: Sequence[str] | None) -> int:
    """Replace this process with COMMAND, traced.  Returns only if COMMAND cannot start.

    Returns:
        127 when COMMAND is not found, 126 when it cannot be executed (the
        shell's conventions), after one line on stderr.
    """
    env = command_environment(command, export, os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), env)
    except FileNotFoundError:
        print(f"tracebridge run: error: {command[0]}: command not found", file=sys.stderr)
        return 127
    except OSError as exc:
        print(f"tracebridge run: error: {command[0]}: cannot run it ({exc.strerror or exc})", file=sys.stderr)
        return 126
    return 0  # pragma: no cover - exec does not return


def bootstrap() -> None:
    """Turn tracing on in a process started by ``tracebridge run`` (called by its sitecustomize).

    Never raises: a bad ``TRACEBRIDGE_EXPORT`` or a broken exporter is one
    line on stderr, and the program runs untraced.
    """
    global _started
    if _started:
        return
    _started = True
    try:
        from .configure import configure

        provider = configure()
    except Exception as exc:
        print(f"tracebridge run: tracing off: {exc}", file=sys.stderr)
        return
    _instrument_installed_asgiref()
    # Registered after the provider's own at-exit shutdown, so it runs first
    # (atexit is last-in, first-out): build the deferred spans, then export.
    atexit.register(_flush_at_exit, provider)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _instrument_installed_asgiref() -> None:
    """Trace the real asgiref too, so an unchanged Django/Channels app is traced.

    Before the program's code runs (this is sitecustomize time), so even
    functions it decorates with asgiref's sync_to_async at import are traced.
    Skipped quietly when asgiref is not installed; a failure is one line on
    stderr and the program runs with tracebridge's own spans only.
    """
    import importlib.util

    if importlib.util.find_spec("asgiref") is None:
        return
    try:
        from .instrumentation import AsgirefInstrumentor

        AsgirefInstrumentor().instrument()
    except Exception as exc:
        print(f"tracebridge run: asgiref not instrumented: {exc}", file=sys.stderr)


def _flush_at_exit(provider: object) -> None:
    from . import _telemetry

    try:
        _telemetry.flush(_FLUSH_TIMEOUT_MS)
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
    except Exception as exc:  # at exit there is no one left to raise to
        print(f"tracebridge run: flushing the trace at exit failed: {exc}", file=sys.stderr)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # The default action would kill the process without running atexit, and
    # lose every buffered span.  SystemExit unwinds like a normal exit; the
    # status is the shell's "killed by SIGTERM" 143.
    raise SystemExit(128 + signum)
