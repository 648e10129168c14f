"""Tests for `tracebridge show` and `tracebridge convert`, and the demo's file exports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracebridge import cli
from tracebridge.exporters import read_trace_file, specs

pytest.importorskip("tracebridge.sync")
pytest.importorskip("tracebridge.local")
pytest.importorskip("tracebridge.timeout")

NUMBERS = re.compile(r"\b[0-9a-f]{32}\b|\b[0-9a-f]{16}\b|\d+(?:\.\d+)?m?s\b")


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo's trace exported once to JSONL, Jaeger JSON and Perfetto files."""
    folder = tmp_path_factory.mktemp("demo")
    environment = {key: value for key, value in os.environ.items() if key != specs.ENV_VAR}
    result = subprocess.run(
        [sys.executable, "-m", "tracebridge", "demo", "--export", "jsonl=demo.jsonl",
         "--export", "jaeger-json=demo.jaeger.json", "--export", "perfetto=demo.perfetto.json"],
        cwd=folder, capture_output=True, text=True, timeout=60, env=environment,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    yield folder


def run(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_demo_export_writes_all_three_files(demo_files: Path) -> None:
    """Tests that the demo's spans land whole in JSONL and Jaeger JSON, and a Perfetto timeline is written."""
    from_jsonl = read_trace_file(demo_files / "demo.jsonl")
    from_jaeger = read_trace_file(demo_files / "demo.jaeger.json")
    assert len(from_jsonl) == len(from_jaeger) >= 15
    assert {span.context.span_id for span in from_jsonl} == {span.context.span_id for span in from_jaeger}
    assert {span.resource.attributes["service.name"] for span in from_jsonl} == {"tracebridge-demo"}
    timeline = json.loads((demo_files / "demo.perfetto.json").read_text())
    names = {e["args"]["name"] for e in timeline["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert "MainThread" in names and any(name.startswith("tracebridge-context") for name in names)
    assert any(e["ph"] == "s" for e in timeline["traceEvents"])


def test_show_jsonl_and_jaeger_print_the_same_tree(demo_files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tests that `show` renders both saved formats as the console tree, identical but for timings."""
    status, from_jsonl, err = run("show", str(demo_files / "demo.jsonl"), capsys=capsys)
    assert (status, err) == (0, "")
    lines = from_jsonl.splitlines()
    assert lines[0].startswith("trace ")
    assert lines[1].startswith("└── GET /users/7/dashboard")
    assert any("sync_to_async  tracebridge.demo.dashboard_view  MainThread → tracebridge-context_0" in line
               for line in lines)
    status, from_jaeger, err = run("show", str(demo_files / "demo.jaeger.json"), capsys=capsys)
    assert (status, err) == (0, "")
    assert NUMBERS.sub("#", from_jaeger) == NUMBERS.sub("#", from_jsonl)


@pytest.mark.parametrize(("to", "suffix"), [("perfetto", ".perfetto.json"), ("jaeger", ".jaeger.json"),
                                            ("otlp-json", ".jsonl")])
def test_convert_default_output_next_to_input(
    to: str, suffix: str, demo_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tests that `convert --to X` writes FILE's stem plus the format's suffix, and it reads back."""
    source = tmp_path / "trace.jaeger.json"
    source.write_bytes((demo_files / "demo.jaeger.json").read_bytes())
    if to == "jaeger":
        source = source.rename(tmp_path / "trace.jsonl")
        source.write_bytes((demo_files / "demo.jsonl").read_bytes())
    status, out, err = run("convert", str(source), "--to", to, capsys=capsys)
    expected = tmp_path / f"trace{suffix}"
    count = len(read_trace_file(source))
    assert (status, out, err) == (0, f"wrote {count} spans to {expected}\n", "")
    if to != "perfetto":
        assert len(read_trace_file(expected)) == count
    else:
        assert "traceEvents" in json.loads(expected.read_text())


def test_convert_to_stdout(demo_files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tests that `-o -` writes the converted document to stdout."""
    status, out, err = run("convert", str(demo_files / "demo.jsonl"), "--to", "jaeger", "-o", "-", capsys=capsys)
    assert (status, err) == (0, "")
    assert len(json.loads(out)["data"]) == 1


def one_line_error(err: str, command: str, path: Path, message: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tracebridge {command}: error: {path}: ")
    assert message in lines[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [', "truncated OTLP JSON lines or Jaeger JSON file"),
        (b'{"data": [{"traceID": "1", "spans": [', "truncated OTLP JSON lines or Jaeger JSON file"),
        (b"<html></html>", "not a trace file tracebridge can read"),
        (b'{"traceEvents": []}', "a Perfetto timeline cannot be read back"),
    ],
)
@pytest.mark.parametrize("command", ["show", "convert"])
def test_bad_input_file_exits_2_with_one_line(
    command: str, content: bytes | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tests that a missing, empty, truncated, foreign or Perfetto file is one line on stderr and exit 2."""
    path = tmp_path / "trace.json"
    if content is not None:
        path.write_bytes(content)
    extra = ["--to", "perfetto"] if command == "convert" else []
    status, out, err = run(command, str(path), *extra, capsys=capsys)
    assert (status, out) == (2, "")
    one_line_error(err, command, path, message)
    assert sorted(os.listdir(tmp_path)) == ([] if content is None else ["trace.json"])


def test_show_torn_last_line_warns_and_renders_the_rest(
    demo_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tests that a JSONL file whose last line was cut short still shows, with one warning line."""
    path = tmp_path / "torn.jsonl"
    whole = (demo_files / "demo.jsonl").read_bytes()
    path.write_bytes(whole + whole[:80])
    status, out, err = run("show", str(path), capsys=capsys)
    assert status == 0
    assert err == f"tracebridge show: warning: {path}: skipped a truncated last line (80 bytes; was the writer killed?)\n"
    assert out.splitlines()[1].startswith("└── GET /users/7/dashboard")


def test_convert_refuses_to_overwrite_foreign_output(
    demo_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tests that convert never replaces a file that is not a trace of the target format, nor its input."""
    target = tmp_path / "notes.json"
    target.write_text('{"mine": true}')
    status, out, err = run("convert", str(demo_files / "demo.jsonl"), "--to", "perfetto", "-o", str(target),
                           capsys=capsys)
    assert (status, out) == (2, "")
    assert err.startswith(f"tracebridge convert: error: refusing to overwrite {target}")
    assert target.read_text() == '{"mine": true}'
    source = demo_files / "demo.jsonl"
    status, out, err = run("convert", str(source), "--to", "otlp-json", "-o", str(source), capsys=capsys)
    assert status == 2
    assert err == f"tracebridge convert: error: {source}: the output would replace the input; choose another with -o\n"


def test_help_lists_show_and_convert(capsys: pytest.CaptureFixture[str]) -> None:
    """Tests that --help lists the new commands and the export specs."""
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "show" in out and "convert" in out
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    demo_help = "".join(capsys.readouterr().out.split())  # argparse wraps at hyphens
    for usage in ("jaeger-json=PATH", "jsonl=PATH", "otlp[=URL]", "perfetto=PATH"):
        assert usage in demo_help
