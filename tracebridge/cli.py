"""The ``tracebridge`` command.

Each subcommand is one ``_add_<name>(subparsers)`` function below that defines
its arguments and sets ``handler``, a function from the parsed arguments to an
exit status.  Only ``demo`` exists in this release; ``run`` (trace a program),
``show`` (render a saved trace with ``exporters.console.render_trace``),
``convert`` (between trace file formats) and ``top`` (the live dashboard) are
meant to be added the same way.  Commands that do not exist yet are not listed,
so ``--help`` shows only what works.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

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
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.main(export=args.export)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracebridge",
        description="asgiref-compatible sync/async bridging with OpenTelemetry traces of every thread hop.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_demo(subparsers)
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
