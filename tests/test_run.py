"""Tests for `tracebridge run`: tracing any Python program, its children, and flushing at every exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tracebridge._run import service_name_for
from tracebridge.exporters import read_trace_file, specs

pytest.importorskip("tracebridge.sync")

APP = textwrap.dedent(
    """
    import sys, time
    from tracebridge.sync import async_to_sync, sync_to_async

    async def handler():
        return await sync_to_async(len)("abc")

    assert async_to_sync(handler)() == 3
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "spawn":
        import subprocess
        subprocess.run([sys.executable, __file__], check=True)
    elif mode == "raise":
        raise RuntimeError("boom")
    elif mode == "wait":
        print("ready", flush=True)
        time.sleep(30)
    """
)


def traced(tmp_path: Path, *command: str, **options: object) -> subprocess.Popen[str]:
    environment = {key: value for key, value in os.environ.items()
                   if key not in (specs.ENV_VAR, "OTEL_SERVICE_NAME", "PYTHONPATH")}
    return subprocess.Popen(
        [sys.executable, "-m", "tracebridge", "run", "--export", f"jsonl={tmp_path / 'trace.jsonl'}", "--", *command],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options,  # type: ignore[call-overload]
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def roots(path: Path) -> list[str]:
    return [span.name for span in read_trace_file(path) if span.parent is None]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    script = tmp_path / "shop_app.py"
    script.write_text(APP)
    return script


def test_run_python_script_is_traced_with_its_name_as_service(app: Path, tmp_path: Path) -> None:
    """Tests that `run -- python app.py` traces the script's hops, service.name = the script's name."""
    status, out, err = finish(traced(tmp_path, sys.executable, str(app)))
    assert (status, out, err) == (0, "", "")
    spans = read_trace_file(tmp_path / "trace.jsonl")
    assert sorted(span.name for span in spans) == [
        "tracebridge.async_to_sync", "tracebridge.handoff", "tracebridge.sync_to_async"
    ]
    assert {span.resource.attributes["service.name"] for span in spans} == {"shop_app"}


def test_run_python_module_and_child_processes_are_traced(app: Path, tmp_path: Path) -> None:
    """Tests that `run -- python -m mod` is traced, and so is the Python child it starts."""
    status, _, err = finish(traced(tmp_path, sys.executable, "-m", "shop_app", "spawn"))
    assert (status, err) == (0, "")
    assert roots(tmp_path / "trace.jsonl") == ["tracebridge.async_to_sync"] * 2  # parent and child


def test_run_traces_a_program_that_uses_the_real_asgiref(tmp_path: Path) -> None:
    """Tests that `run` instruments the installed asgiref, so unchanged asgiref code is traced."""
    script = tmp_path / "legacy_app.py"
    script.write_text(APP.replace("from tracebridge.sync import", "from asgiref.sync import"))
    status, out, err = finish(traced(tmp_path, sys.executable, str(script)))
    assert (status, out, err) == (0, "", "")
    spans = read_trace_file(tmp_path / "trace.jsonl")
    assert sorted(span.name for span in spans) == [
        "tracebridge.async_to_sync", "tracebridge.handoff", "tracebridge.sync_to_async"
    ]
    (hop,) = [span for span in spans if span.name == "tracebridge.sync_to_async"]
    assert hop.attributes["code.function.name"] == "builtins.len"


def test_run_unhandled_exception_still_flushes(app: Path, tmp_path: Path) -> None:
    """Tests that a program dying of an exception exits 1 with its traceback, its spans written."""
    status, _, err = finish(traced(tmp_path, sys.executable, str(app), "raise"))
    assert status == 1
    assert err.rstrip().endswith("RuntimeError: boom")
    assert roots(tmp_path / "trace.jsonl") == ["tracebridge.async_to_sync"]


def test_run_sigterm_flushes_then_exits_143(app: Path, tmp_path: Path) -> None:
    """Tests that SIGTERM ends the program through SystemExit, so its buffered spans are written."""
    process = traced(tmp_path, sys.executable, str(app), "wait")
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    status, _, err = finish(process)
    assert (status, err) == (143, "")
    assert roots(tmp_path / "trace.jsonl") == ["tracebridge.async_to_sync"]


def test_run_missing_command_exits_127_with_one_line(tmp_path: Path) -> None:
    """Tests that a command that does not exist is one line on stderr and the shell's 127."""
    status, out, err = finish(traced(tmp_path, "no-such-program-here"))
    assert (status, out) == (127, "")
    assert err == "tracebridge run: error: no-such-program-here: command not found\n"


def test_run_without_command_exits_2() -> None:
    """Tests that `tracebridge run` with nothing to run says how to call it."""
    from tracebridge import cli

    assert cli.main(["run"]) == 2


@pytest.mark.parametrize(
    ("command", "name"),
    [
        (["python", "app.py"], "app"),
        (["python3.11", "-u", "src/serve.py", "--port", "1"], "serve"),
        (["/usr/bin/python3", "-m", "pkg.main"], "pkg.main"),
        (["python", "-c", "print(1)"], "python"),
        (["uvicorn", "app:app"], "uvicorn"),
    ],
)
def test_service_name_for_command(command: list[str], name: str) -> None:
    """Tests that service.name comes from the script, the module, or the program."""
    assert service_name_for(command) == name
