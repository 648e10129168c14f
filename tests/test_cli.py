"""Tests for the tracebridge command line and its built-in demo."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import tracebridge
from tracebridge import cli
from tracebridge.exporters import specs

pytest.importorskip("tracebridge.sync")
pytest.importorskip("tracebridge.local")
pytest.importorskip("tracebridge.timeout")

GUIDE = re.compile(r"^((?:│   |    )*)(?:├── |└── )")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m tracebridge.cli ARGS`` in a fresh interpreter, output captured, 60 s at most."""
    environment = {key: value for key, value in os.environ.items() if key != specs.ENV_VAR}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tracebridge.cli", *args],
        capture_output=True, text=True, timeout=60, env=environment,
    )


def tree_lines(output: str) -> list[tuple[int, str]]:
    """(depth, text) of each tree line; depth 1 is a child of the trace line."""
    lines = []
    for line in output.splitlines():
        match = GUIDE.match(line)
        if match:
            lines.append((len(match.group(1)) // 4 + 1, line[match.end():]))
    return lines


def find(lines: list[tuple[int, str]], prefix: str, depth: int) -> int:
    """Index of the one line at ``depth`` that starts with ``prefix``."""
    found = [i for i, (d, text) in enumerate(lines) if d == depth and text.startswith(prefix)]
    assert len(found) == 1, (prefix, depth, lines)
    return found[0]


def parent_of(lines: list[tuple[int, str]], index: int) -> int:
    depth = lines[index][0]
    return max(i for i in range(index) if lines[i][0] == depth - 1)


def test_demo_prints_nested_hops_as_a_tree() -> None:
    """Tests that `tracebridge demo` prints one trace whose tree nests every hop of the story."""
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    header = result.stdout.splitlines()[0]
    assert re.fullmatch(r"trace [0-9a-f]{32}  \d+ spans  [0-9.]+ms  threads: MainThread, .+", header)
    lines = tree_lines(result.stdout)
    root = find(lines, "GET /users/7/dashboard", 1)
    view = find(lines, "sync_to_async  tracebridge.demo.dashboard_view  MainThread → ", 2)
    back = find(lines, "async_to_sync  tracebridge.demo.fetch_avatar  ", 3)
    pooled = find(lines, "sync_to_async  tracebridge.demo.resize_avatar  MainThread → ", 4)
    inner = find(lines, "sync_to_async  tracebridge.demo.record_avatar_view  MainThread → ", 4)
    handoff = find(lines, "handoff  MainThread → ", 5)
    settings = find(lines, "sync_to_async  tracebridge.demo.load_site_settings  MainThread → ", 2)
    failed = find(lines, "sync_to_async  tracebridge.demo.charge_subscription  MainThread → ", 2)
    expiry = find(lines, "timeout expired  on MainThread  limit 20.0ms  elapsed ", 2)
    query = find(lines, "SELECT auth_user  ", 3)
    missing = find(lines, "local get  language  missing  on ", 3)
    critical = find(lines, "local get  default  found  thread_critical  on ", 5)
    children = (view, back, pooled, inner, handoff, settings, failed, expiry, query, missing, critical)
    parents = (root, view, back, back, inner, root, root, root, view, view, inner)
    assert [parent_of(lines, child) for child in children] == list(parents)

    view_line, inner_line = lines[view][1], lines[inner][1]
    # The view ran on the request's ThreadSensitiveContext thread, and the nested
    # thread-sensitive call came back to that same thread.
    timings = r"  wait [0-9.]+ms  run [0-9.]+ms$"
    request_thread = re.search(r"MainThread → (\S+)  thread_sensitive_context" + timings, view_line)
    assert request_thread is not None, view_line
    back_to_it = rf"MainThread → {re.escape(request_thread.group(1))}  outer_current_thread_executor" + timings
    assert re.search(back_to_it, inner_line), inner_line
    assert "  loop_default  " in lines[pooled][1]
    assert "  global_sync_thread  " in lines[settings][1]
    assert "  parent_loop  " in lines[back][1]
    assert lines[failed][1].endswith("  ✗ tracebridge.demo.PaymentDeclined: card of user 7 declined")
    assert lines[handoff][1].startswith(f"handoff  MainThread → {request_thread.group(1)}  current_thread_executor  ")


def test_demo_honours_env_var_and_export_option() -> None:
    """Tests that the demo reads TRACEBRIDGE_EXPORT, and that --export overrides it."""
    from_env = run_cli("demo", env={specs.ENV_VAR: "console"})
    assert from_env.returncode == 0, from_env.stderr
    assert from_env.stdout.startswith("trace ")
    bad_env = run_cli("demo", env={specs.ENV_VAR: "nope"})
    assert bad_env.returncode != 0
    assert "TRACEBRIDGE_EXPORT='nope': unknown export target 'nope'" in bad_env.stderr
    overridden = run_cli("demo", "--export", "console", env={specs.ENV_VAR: "nope"})
    assert overridden.returncode == 0, overridden.stderr
    assert overridden.stdout.startswith("trace ")


def test_demo_bad_export_spec_exits_2_with_valid_list(capsys: pytest.CaptureFixture[str]) -> None:
    """Tests that an unknown --export spec is a usage error listing the valid specs."""
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--export", "zipkin"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --export: unknown export target 'zipkin'; valid targets are: {specs.usage()}" in err
    assert tracebridge.get_tracer_provider() is None


def test_main_no_command_prints_help_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Tests that `tracebridge` with no command prints usage listing demo and exits 2."""
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tracebridge")
    assert "demo" in err


def test_main_version_prints_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """Tests that --version prints the package version."""
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"tracebridge {tracebridge.__version__}\n"


def test_demo_request_untraced_behaves_the_same() -> None:
    """Tests that the demo request gives the same page with tracing off, queueing no spans."""
    from tracebridge import _telemetry, demo

    assert tracebridge.get_tracer_provider() is None
    _telemetry.deferred.drain()
    page = demo.run_request()
    assert len(_telemetry.deferred) == 0
    assert page == {
        "request": "req-7f3a",
        "language": "en",
        "user": {"id": 7, "name": "Ada"},
        "avatar": 128,
        "settings": {"maintenance": False},
        "banner": "Your payment was declined.",
        "recommendations": [],
    }


def test_demo_server_traces_real_http_requests_through_uvicorn() -> None:
    """Tests that `tracebridge demo --server` serves real requests with uvicorn and prints one trace per request."""
    result = run_cli("demo", "--server")
    assert result.returncode == 0, result.stderr
    assert "GET /hello -> 200" in result.stdout
    assert "POST /echo -> 200 (2048 bytes)" in result.stdout
    assert "GET /fail -> 500" in result.stdout
    lines = tree_lines(result.stdout)
    wsgi_calls = [i for i, (depth, text) in enumerate(lines) if depth == 1 and text.startswith("wsgi ")]
    assert len(wsgi_calls) == 3
    for index in wsgi_calls:
        # The WSGI call's only child is the hop into the sync thread, from uvicorn's loop thread.
        hop = index + 1
        assert lines[hop][0] == 2
        assert lines[hop][1].startswith("sync_to_async  tracebridge.wsgi.WsgiToAsgiInstance.run_wsgi_app")
        assert "uvicorn-loop → tracebridge-sync_0" in lines[hop][1]
    hello = find(lines, "wsgi  tracebridge.demo_server.wsgi_app  GET /hello", 1)
    sends = [i for i, (depth, text) in enumerate(lines) if depth == 3 and text.startswith("async_to_sync")]
    assert any(parent_of(lines, parent_of(lines, i)) == hello for i in sends)
    fail = find(lines, "wsgi  tracebridge.demo_server.wsgi_app  GET /fail", 1)
    assert "✗ RuntimeError: the WSGI app failed on purpose" in lines[fail][1]
