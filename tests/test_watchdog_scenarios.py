"""Real hangs, each in a child process with a hard timeout: the watchdog names every participant.

Each scenario of :mod:`tracebridge.demo_deadlock` really hangs (the same code
hangs under asgiref).  The child runs it with the watchdog on and prints the
first report as JSON; these tests check the kind, the cycle in order, the
threads, tasks and functions named, the stacks and the call sites, and that a
deadlock is reported within 2 s of forming.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

MODULE = "tracebridge.demo_deadlock."
HARD_TIMEOUT_S = 45


def run_scenario(name: str, *extra: str) -> dict[str, Any]:
    """Run one scenario in a child; return its report summary (fails the test on a hang or no report)."""
    command = [
        sys.executable, "-c", "import sys; from tracebridge.demo_deadlock import main; sys.exit(main())",
        name, "--json", "--stall-threshold", "0.5", "--loop-threshold", "0.5", "--timeout", "30", *extra,
    ]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TRACEBRIDGE_", "OTEL_"))}
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=HARD_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scenario {name} did not exit within {HARD_TIMEOUT_S} s: {exc.stderr!r}")
    assert result.returncode == 0, result.stderr
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert reports, result.stderr
    assert reports[0]["text"] in result.stderr  # printed for people, too
    return reports[0]


def test_watchdog_global_sync_thread_deadlock_names_cycle() -> None:
    """Tests that a task queued on the global sync thread behind the view waiting for it is reported as a cycle."""
    report = run_scenario("global-sync-thread")
    assert report["kind"] == "deadlock"
    assert report["cycle"] == [
        "thread `tracebridge-sync_0`",
        "async_to_sync(`tracebridge.demo_deadlock.wait_for_prefetch`)",
        "task `Task-3` (wait_for_prefetch via async_to_sync)",
        "task `Task-2` (warm_cache)",
        "sync_to_async(`tracebridge.demo_deadlock.load_site_settings`)",
    ]
    assert report["threads"] == ["tracebridge-sync_0", "MainThread"]
    assert report["tasks"] == ["Task-3", "Task-2"]
    assert report["functions"] == [MODULE + "wait_for_prefetch", MODULE + "load_site_settings"]
    assert report["title"] == (
        "DEADLOCK: thread `tracebridge-sync_0`, task `Task-3` (wait_for_prefetch via async_to_sync) and "
        "task `Task-2` (warm_cache) wait for each other in a cycle; none of them can ever move again."
    )
    assert "on the global sync thread executor, whose only thread, `tracebridge-sync_0`, is busy" in report["lines"][4]
    assert report["sites"][0].startswith(
        f"sync_to_async(`{MODULE}load_site_settings`): made by task `Task-2` (warm_cache) at demo_deadlock.py:"
    )
    assert "in warm_cache: `return await sync_to_async(load_site_settings)()`" in report["sites"][0]
    assert "return async_to_sync(wait_for_prefetch)(prefetch)" in report["text"]  # the blocked thread's stack
    assert 0 < report["latency_s"] <= 2.0


def test_watchdog_current_thread_executor_deadlock_names_cycle() -> None:
    """Tests that work queued on an outer CurrentThreadExecutor its thread no longer serves is reported as a cycle."""
    report = run_scenario("current-thread-executor")
    assert report["kind"] == "deadlock"
    assert report["cycle"] == [
        "thread `MainThread`",
        "async_to_sync(`tracebridge.demo_deadlock.wait_for_early`)",
        "task `Task-3` (wait_for_early via async_to_sync)",
        "task `Task-2` (early_work)",
        "sync_to_async(`tracebridge.demo_deadlock.compute_totals`)",
    ]
    assert report["threads"][0] == "MainThread"
    assert report["threads"][1].startswith("tracebridge-loop")  # the loop async_to_sync made
    assert "on the CurrentThreadExecutor of thread `MainThread`, whose only thread, `MainThread`, is busy" in (
        report["lines"][4]
    )
    assert "return async_to_sync(wait_for_early)(task)" in report["text"]
    assert "A task that outlived its sync frame's context" in report["text"]
    assert 0 < report["latency_s"] <= 2.0


def test_watchdog_thread_sensitive_context_deadlock_names_cycle() -> None:
    """Tests that a request task queued on its ThreadSensitiveContext thread, which waits for it, is a cycle."""
    report = run_scenario("thread-sensitive-context")
    assert report["kind"] == "deadlock"
    assert report["cycle"] == [
        "thread `tracebridge-context_0`",
        "async_to_sync(`tracebridge.demo_deadlock.wait_for_audit`)",
        "task `Task-3` (wait_for_audit via async_to_sync)",
        "task `Task-2` (write_audit_log)",
        "sync_to_async(`tracebridge.demo_deadlock.save_audit_entry`)",
    ]
    assert "on the ThreadSensitiveContext's single-thread executor" in report["lines"][4]
    assert report["functions"] == [MODULE + "wait_for_audit", MODULE + "save_audit_entry"]
    assert 0 < report["latency_s"] <= 2.0


def test_watchdog_blocker_stall_names_head_of_line() -> None:
    """Tests that asgiref's xfail blocker (event.set queued behind event.wait) is a stall naming both calls."""
    report = run_scenario("blocker")
    assert report["kind"] == "stall"
    assert report["title"].startswith(
        "STALL: sync_to_async(`threading.Event.set`) has waited "
    )
    assert report["title"].endswith(" to start on the global sync thread executor (stall threshold 0.5 s).")
    assert report["lines"][0] == "1. task `Task-2` (blocker_main.<locals>.trigger) awaits sync_to_async(`threading.Event.set`);"
    assert report["lines"][2].startswith(
        "3. thread `tracebridge-sync_0` is running sync_to_async(`threading.Event.wait`) for "
    )
    assert "for task `Task-1` (blocker_main), stuck in threading.py:" in report["lines"][2]
    assert report["threads"] == ["tracebridge-sync_0"]
    assert report["functions"] == ["threading.Event.set", "threading.Event.wait"]
    assert "Head-of-line blocking" in report["text"]


def test_watchdog_context_executor_stall_names_blocking_call() -> None:
    """Tests that ThreadSensitiveContext(executor=) code waiting for a later queued call is a stall naming both."""
    report = run_scenario("context-executor")
    assert report["kind"] == "stall"
    assert f"sync_to_async(`{MODULE}restock`) has waited" in report["title"]
    assert "on the ThreadSensitiveContext's single-thread executor" in report["title"]
    last = report["lines"][-1]
    assert last.startswith(f"3. thread `orders-db_0` is running sync_to_async(`{MODULE}wait_for_stock`) for ")
    assert "called from demo_deadlock.py:" in last and "in wait_for_stock: `ready.wait()`" in last
    assert report["threads"] == ["orders-db_0"]


def test_watchdog_blocked_loop_names_the_sync_call() -> None:
    """Tests that time.sleep inside a coroutine is reported as a blocked loop with the call and its stack."""
    report = run_scenario("blocked-loop")
    assert report["kind"] == "blocked_loop"
    assert report["title"].startswith("BLOCKED LOOP: event loop 0x")
    assert " on thread `MainThread` has not run a callback for " in report["title"]
    assert report["title"].endswith("in slow_async_view: `time.sleep(60)`.")
    assert report["threads"] == ["MainThread"]
    assert "time.sleep(60)" in report["text"]
