"""Tests for the command line's live parts: the detector flags and ``demo --deadlock``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tracebridge.exporters import specs


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m tracebridge.cli ARGS`` in a fresh interpreter (not a terminal), 60 s at most."""
    environment = {key: value for key, value in os.environ.items() if key != specs.ENV_VAR}
    return subprocess.run(
        [sys.executable, "-m", "tracebridge.cli", *args],
        capture_output=True, text=True, timeout=60, env=environment, stdin=subprocess.DEVNULL,
    )


def test_demo_deadlock_no_tui_prints_report_and_partial_trace() -> None:
    """Tests that `demo --deadlock --no-tui` names the deadlock on stderr and prints the hung request's trace."""
    result = run_cli("demo", "--deadlock", "--no-tui")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tracebridge demo --deadlock: running the `global-sync-thread` hang (deadlock)")
    assert result.stderr.startswith(
        "tracebridge watchdog: DEADLOCK: thread `tracebridge-sync_0`, task `Task-3` (wait_for_prefetch via "
        "async_to_sync) and task `Task-2` (warm_cache) wait for each other in a cycle"
    )
    assert "Queued calls, and where each was made:" in result.stderr
    # The partial trace: the request and every hop in it, though none of them ended.
    assert "└── GET /dashboard" in result.stdout
    for function in ("dashboard_view", "wait_for_prefetch", "load_site_settings"):
        assert f"tracebridge.demo_deadlock.{function}" in result.stdout


def test_demo_deadlock_other_scenario_blocked_loop() -> None:
    """Tests that --scenario picks another hang: a blocked event loop, named with its call."""
    result = run_cli("demo", "--deadlock", "--scenario", "blocked-loop", "--no-tui")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("tracebridge watchdog: BLOCKED LOOP: event loop 0x")
    assert "in slow_async_view: `time.sleep(60)`" in result.stderr


def test_demo_deadlock_without_detector_is_a_usage_error() -> None:
    """Tests that --deadlock with --no-detect is refused with a message saying what to drop."""
    result = run_cli("demo", "--deadlock", "--no-detect", "--no-tui")
    assert result.returncode == 2
    assert result.stderr == "tracebridge demo: error: --deadlock needs the detector; drop --no-detect\n"


def test_demo_stall_threshold_must_be_positive() -> None:
    """Tests that a threshold of zero seconds is rejected at parse time."""
    result = run_cli("demo", "--stall-threshold", "0")
    assert result.returncode == 2
    assert "argument --stall-threshold: '0': must be more than 0 seconds" in result.stderr


def test_demo_with_detector_on_reports_nothing_for_a_healthy_request() -> None:
    """Tests that the plain demo, detector on by default (and off with --no-detect), writes nothing on stderr."""
    for flags in ((), ("--no-detect",), ("--stall-threshold", "0.5", "--loop-threshold", "0.5")):
        result = run_cli("demo", *flags)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert "GET /users/7/dashboard" in result.stdout


BLOCKING_APP = """
import asyncio, time
from tracebridge.sync import sync_to_async

def warm_up():
    pass

async def main():
    await sync_to_async(warm_up)()
    time.sleep(1.5)  # blocks the event loop

asyncio.run(main())
"""


def test_run_detector_on_by_default_reports_blocked_loop_and_no_detect_silences_it(tmp_path: Path) -> None:
    """Tests that `tracebridge run` starts the watchdog in the program (report on stderr) unless --no-detect."""
    app = tmp_path / "app.py"
    app.write_text(BLOCKING_APP)
    flagged = run_cli("run", "--export", f"jsonl={tmp_path / 'trace.jsonl'}", "--loop-threshold", "0.3", "--",
                      sys.executable, str(app))
    assert flagged.returncode == 0, flagged.stderr
    assert flagged.stderr.startswith("tracebridge watchdog: BLOCKED LOOP: event loop 0x")
    assert "in main: `time.sleep(1.5)`" in flagged.stderr
    quiet = run_cli("run", "--export", f"jsonl={tmp_path / 'quiet.jsonl'}", "--no-detect", "--loop-threshold", "0.3",
                    "--", sys.executable, str(app))
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_top_without_token_says_how_to_get_one() -> None:
    """Tests that `tracebridge top ADDRESS` with no token and no token file fails with what to pass."""
    result = run_cli("top", "127.0.0.1:9")
    assert result.returncode == 2
    assert result.stderr == (
        "tracebridge top: error: no token for 127.0.0.1:9: pass --token or --token-file "
        "(the app printed both when it started streaming)\n"
    )
