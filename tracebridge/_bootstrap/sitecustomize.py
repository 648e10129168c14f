"""Started by ``tracebridge run``: turn tracing on before the program's own code runs.

``tracebridge run`` puts this folder first on ``PYTHONPATH``, so every Python
process it starts (and every Python child those start, since the environment is
inherited) imports this module at start-up.  It configures tracing from
``TRACEBRIDGE_EXPORT`` and arranges a flush at exit, then hands over to any
other ``sitecustomize`` further down the path.  It never stops the program: a
failure is one line on stderr.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def _start_tracing() -> None:
    try:
        from tracebridge._run import bootstrap
    except ImportError as exc:  # run under a Python without tracebridge installed
        print(f"tracebridge run: tracing off in {sys.executable}: {exc}", file=sys.stderr)
        return
    bootstrap()


def _chain() -> None:
    """Import the ``sitecustomize`` this one shadows, if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_tracebridge_chained_sitecustomize", candidate)
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            return


if os.environ.get("TRACEBRIDGE_RUN"):
    _start_tracing()
_chain()
