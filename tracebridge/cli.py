"""The ``tracebridge`` command.

Each subcommand is one ``_add_<name>(subparsers)`` function below that defines
its arguments and sets ``handler``, a function from the parsed arguments to an
exit status.  ``demo`` runs the built-in traced request, ``show`` renders a
saved trace with ``exporters.console.render_trace``, ``convert`` turns one
trace file format into another, ``run`` traces any Python program; ``top`` (the
live dashboard) is meant to be added the same way.  Commands that do not exist yet
are not listed, so ``--help`` shows only what works.  A user error (a missing
or foreign file) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence

from . import __version__

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _export_spec(value: str) -> str:
    # argparse `type=`: reject a bad spec at parse time, with the registry's message.
    from .exporters import specs

    try:
        specs.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _add_export_option(parser: argparse.ArgumentParser) -> None:
    from .exporters import specs

    parser.add_argument(
        "--export",
        action="append",
        type=_export_spec,
        metavar="SPEC",
        help=(
            f"where spans go; repeat for several. Valid: {specs.usage()}. "
            f"Default: ${specs.ENV_VAR} (comma-separated), else console."
        ),
    )


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a built-in traced request and print its trace",
        description=(
            "Serve one fake 'GET /users/7/dashboard' request that hops between async "
            "and sync code (nested sync_to_async/async_to_sync, thread-sensitive and "
            "not, a ThreadSensitiveContext), uses Local state, hits a timeout and "
            "catches a failing call; then print or export its trace."
        ),
    )
    _add_export_option(parser)
    from . import _cli_live  # the watchdog's flags and --deadlock (issue 5)

    _cli_live.add_deadlock_options(parser)
    _cli_live.add_detector_options(parser)
    parser.add_argument(
        "--server",
        action="store_true",
        help=(
            "instead: serve a WSGI app through WsgiToAsgi with a real uvicorn on 127.0.0.1, "
            "send it real HTTP requests and print their traces (needs uvicorn)"
        ),
    )
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from . import _cli_live

    if args.deadlock:
        return _cli_live.run_deadlock_demo(args)
    watchdog = _cli_live.start_detector(args)  # on by default: reports go to stderr
    try:
        if getattr(args, "server", False):
            from . import demo_server

            return demo_server.main(export=args.export)
        from . import demo

        return demo.main(export=args.export)
    finally:
        if watchdog is not None:
            watchdog.stop()


def _add_run(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a Python program with tracing on: tracebridge run [--export SPEC] -- python app.py",
        description=(
            "Run COMMAND (python app.py, python -m pkg, uvicorn app:app ...) with tracing configured "
            "before its code runs, in it and in the Python processes it starts, and everything flushed "
            "at exit (also on SIGTERM or an unhandled exception). service.name defaults to the "
            "script's or module's name (OTEL_SERVICE_NAME wins)."
        ),
    )
    _add_export_option(parser)
    from . import _cli_live  # the watchdog's flags (issue 5)

    _cli_live.add_detector_options(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...", help="the program to run")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ._run import exec_traced

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        return _fail("run", "no command given: write tracebridge run [--export SPEC ...] -- python app.py")
    from . import _cli_live

    os.environ.update(_cli_live.detector_environment(args))  # the traced program starts the watchdog
    return exec_traced(command, args.export)


def _add_show(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "show",
        help="print a saved trace (OTLP JSON lines or Jaeger JSON) as a tree",
        description=(
            "Render the traces saved in FILE (written by --export jsonl=... or jaeger-json=..., "
            "or any OTLP/JSON or Jaeger JSON file) as trees, the way the console exporter prints them."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the trace file")
    parser.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    from .exporters import TraceFileError, read_trace_file, render_trace
    from .exporters.console import _Unwrapped
    from rich.console import Console

    with _reported_warnings("show"):
        try:
            spans = read_trace_file(args.file)
        except TraceFileError as exc:
            return _fail("show", str(exc))
    console = Console()
    group = render_trace(spans)
    if console.is_terminal:
        console.print(group)
    else:
        console.print(_Unwrapped(group), crop=False)  # one line per span, greppable
    return 0


def _add_convert(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .exporters.readers import FORMATS

    parser = subparsers.add_parser(
        "convert",
        help="convert a saved trace to Perfetto, Jaeger JSON or OTLP JSON lines",
        description=(
            "Read FILE (OTLP JSON lines or Jaeger JSON) and write it as a Perfetto timeline, "
            "Jaeger UI JSON or OTLP JSON lines. The output is written atomically and never "
            "replaces a file that is not a trace of the same format."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the trace file to read")
    parser.add_argument("--to", required=True, choices=list(FORMATS), help="the output format")
    parser.add_argument(
        "-o", "--output", metavar="OUT",
        help="where to write ('-' for stdout); default: FILE with the format's suffix, e.g. trace.perfetto.json",
    )
    parser.set_defaults(handler=_convert)


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .exporters import TraceFileError, read_trace_file
    from .exporters.readers import FORMATS, encode_trace, write_trace_file

    with _reported_warnings("convert"):
        try:
            spans = read_trace_file(args.file)
        except TraceFileError as exc:
            return _fail("convert", str(exc))
    if args.output == "-":
        sys.stdout.write(encode_trace(spans, args.to).decode("ascii"))
        return 0
    source = Path(args.file)
    if args.output is None:
        stem = source.name
        for suffix in (*FORMATS.values(), ".json"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        output = source.with_name(stem + FORMATS[args.to])
    else:
        output = Path(args.output)
    if output.resolve() == source.resolve():
        return _fail("convert", f"{output}: the output would replace the input; choose another with -o")
    try:
        written = write_trace_file(spans, args.to, output)
    except (ValueError, OSError) as exc:
        return _fail("convert", str(exc))
    print(f"wrote {len(spans)} spans to {written}")
    return 0


def _fail(command: str, message: str) -> int:
    """Report a user error on one line of stderr; exit status 2, like argparse's."""
    print(f"tracebridge {command}: error: {message}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def _reported_warnings(command: str) -> Iterator[None]:
    """Print warnings raised while reading a file (a skipped torn line) as one line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                print(f"tracebridge {command}: warning: {warning.message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracebridge",
        description="asgiref-compatible sync/async bridging with OpenTelemetry traces of every thread hop.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_demo(subparsers)
    _add_run(subparsers)
    _add_show(subparsers)
    _add_convert(subparsers)
    from . import _cli_live

    _cli_live.add_top(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``tracebridge ARGS...``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return handler(args)


if __name__ == "__main__":  # pragma: no cover - `python -m tracebridge.cli`
    sys.exit(main())
