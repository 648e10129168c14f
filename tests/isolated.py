"""Run a snippet in a fresh interpreter that imports this same tracebridge: for tests that could hang."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import tracebridge


def run_isolated(code: str, timeout: float = 20) -> str:
    """Runs ``code`` in a fresh interpreter importing this same tracebridge; fails if it hangs or errors."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(tracebridge.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run(
            [sys.executable, "-P", "-c", textwrap.dedent(code)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"subprocess did not finish within {timeout} s (deadlock, blocked exit or blocked loop)")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
