"""Start the watchdog and the flow stream from the environment (``configure()`` calls this).

Reads two switches, importing nothing heavy unless one is set:
``TRACEBRIDGE_DETECT=1`` (:func:`tracebridge.watchdog.watch_from_env`) and
``TRACEBRIDGE_STREAM=HOST:PORT`` (:func:`tracebridge.stream.serve_from_env`).
``tracebridge run`` sets the first unless ``--no-detect``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["start_from_env"]

# Spelled here too so that checking them imports nothing (they are the
# watchdog's ENV_DETECT and the stream's ENV_STREAM; a test keeps them equal).
ENV_DETECT = "TRACEBRIDGE_DETECT"
ENV_STREAM = "TRACEBRIDGE_STREAM"


def start_from_env(environ: Mapping[str, str] | None = None) -> None:
    """Start what the environment asks for; never raises (a bad value is one line on stderr)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_DETECT, "").strip() not in ("", "0"):
        from .watchdog import watch_from_env

        watch_from_env(env)
    if env.get(ENV_STREAM, "").strip() not in ("", "0"):
        from .stream import serve_from_env

        serve_from_env(env)
