"""The live parts of the command line: the detector's flags, ``demo --deadlock`` and ``top``.

Kept apart from :mod:`tracebridge.cli` so that module stays a list of small
commands; ``cli`` calls :func:`add_detector_options` / :func:`start_detector`
for every command that runs traced code (``demo`` now, ``run`` when it exists),
and :func:`add_deadlock_options` / :func:`run_deadlock_demo` / :func:`add_top`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .watchdog import Report, Watchdog

__all__ = [
    "add_deadlock_options",
    "add_detector_options",
    "add_top",
    "detector_environment",
    "run_deadlock_demo",
    "start_detector",
]

# How long `demo --deadlock` lets the child run before giving up (it normally
# reports within a couple of seconds).
_CHILD_TIMEOUT_S = 60.0


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{value!r}: must be more than 0 seconds")
    return seconds


def add_detector_options(parser: argparse.ArgumentParser) -> None:
    """``--no-detect``, ``--stall-threshold``, ``--loop-threshold`` (the watchdog is on by default)."""
    from .watchdog import DEFAULT_LOOP_THRESHOLD_S, DEFAULT_STALL_THRESHOLD_S

    group = parser.add_argument_group(
        "deadlock and stall detection",
        "A watchdog thread reports deadlocks (wait-for cycles), stalls and blocked event loops on stderr "
        "while the code runs, and exports the hung spans as a partial trace.",
    )
    group.add_argument("--no-detect", action="store_true", help="turn the watchdog off")
    group.add_argument(
        "--stall-threshold", type=_seconds, default=DEFAULT_STALL_THRESHOLD_S, metavar="SECONDS",
        help=f"report bridge calls queued longer than this without starting (default {DEFAULT_STALL_THRESHOLD_S:g})",
    )
    group.add_argument(
        "--loop-threshold", type=_seconds, default=DEFAULT_LOOP_THRESHOLD_S, metavar="SECONDS",
        help=f"report an event loop stuck in one sync call longer than this (default {DEFAULT_LOOP_THRESHOLD_S:g})",
    )


def start_detector(args: argparse.Namespace) -> Watchdog | None:
    """Start the watchdog the options ask for (None with ``--no-detect``); reports go to stderr."""
    if getattr(args, "no_detect", False):
        return None
    from . import watchdog

    def to_stderr(report: Report) -> None:
        print(report.text, file=sys.stderr, flush=True)

    return watchdog.watch(
        stall_threshold=args.stall_threshold,
        loop_threshold=args.loop_threshold,
        on_report=to_stderr,
        log=False,  # printed by to_stderr; logging's last-resort handler would print it twice
    )


def detector_environment(args: argparse.Namespace) -> dict[str, str]:
    """The environment that makes a program started by ``tracebridge run`` start the watchdog (or not)."""
    from .watchdog import ENV_DETECT, ENV_LOOP_THRESHOLD, ENV_STALL_THRESHOLD

    if getattr(args, "no_detect", False):
        return {ENV_DETECT: "0"}
    return {
        ENV_DETECT: "1",
        ENV_STALL_THRESHOLD: repr(args.stall_threshold),
        ENV_LOOP_THRESHOLD: repr(args.loop_threshold),
    }


def add_deadlock_options(parser: argparse.ArgumentParser) -> None:
    """``--deadlock [--scenario NAME] [--no-tui]`` for ``tracebridge demo``."""
    from .demo_deadlock import SCENARIOS

    group = parser.add_argument_group("deadlock demo")
    group.add_argument(
        "--deadlock", action="store_true",
        help="instead: reproduce a classic asgiref deadlock in a child process and show tracebridge naming it",
    )
    group.add_argument(
        "--scenario", choices=sorted(SCENARIOS), default="global-sync-thread",
        help="with --deadlock: which hang to reproduce (default: global-sync-thread)",
    )
    group.add_argument(
        "--no-tui", action="store_true",
        help="with --deadlock: print the report (and the partial trace) instead of showing the live TUI",
    )


def run_deadlock_demo(args: argparse.Namespace) -> int:
    """``tracebridge demo --deadlock``: the hang runs in a child; its report is printed (or shown live)."""
    from .demo_deadlock import SCENARIOS

    if getattr(args, "no_detect", False):
        print("tracebridge demo: error: --deadlock needs the detector; drop --no-detect", file=sys.stderr)
        return 2
    kind, _scenario = SCENARIOS[args.scenario]
    if not args.no_tui and sys.stdout.isatty():
        return _deadlock_tui(args)
    print(
        f"tracebridge demo --deadlock: running the `{args.scenario}` hang ({kind}) in a child process; "
        "the watchdog's report follows on stderr, then the partial trace of the hung request.",
        flush=True,
    )
    command = [*_child_command(args), "--export", *(args.export or ["console"])]
    try:
        completed = subprocess.run(command, timeout=_CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"tracebridge demo: error: no report within {_CHILD_TIMEOUT_S:g} s", file=sys.stderr)
        return 1
    return completed.returncode


def _child_command(args: argparse.Namespace) -> list[str]:
    # `-c` rather than `-m`: the scenario's functions keep their module name
    # (tracebridge.demo_deadlock.dashboard_view, not __main__.dashboard_view).
    return [
        sys.executable, "-c", "import sys; from tracebridge.demo_deadlock import main; sys.exit(main())",
        args.scenario,
        "--stall-threshold", str(min(args.stall_threshold, 2.0)),
        "--loop-threshold", str(min(args.loop_threshold, 1.0)),
    ]


def _deadlock_tui(args: argparse.Namespace) -> int:
    """The child streams its flow model; the TUI connects and shows the report live."""
    import tempfile

    from . import stream

    with tempfile.TemporaryDirectory(prefix="tracebridge-demo-") as directory:
        info_file = os.path.join(directory, "stream.json")
        command = [
            *_child_command(args), "--stream", "127.0.0.1:0", "--stream-info", info_file,
            "--linger", "3600", "--timeout", "3600",
        ]
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            info = stream.wait_for_info(info_file, timeout=20.0, process=child)
            if info is None:
                print("tracebridge demo: error: the deadlock child did not start streaming", file=sys.stderr)
                return 1
            from .dashboards.app import run_top

            return int(run_top(address=info["address"], token=info["token"], title=f"demo --deadlock ({args.scenario})"))
        finally:
            child.kill()
            child.wait(timeout=10)


def add_top(subparsers: Any) -> None:
    """``tracebridge top [ADDRESS]``."""
    parser = subparsers.add_parser(
        "top",
        help="live view of threads, loops, executors and bridge calls (and deadlock reports)",
        description=(
            "Show, live, what every thread, event loop and executor is doing, the bridge calls in flight "
            "and just finished, Local accesses, timeout expiries, and the watchdog's deadlock/stall reports. "
            "With ADDRESS, connect to an app streaming its flow model (tracebridge.stream.serve() or "
            "TRACEBRIDGE_STREAM=127.0.0.1:0); without, run the built-in demo workload in this process."
        ),
    )
    parser.add_argument("address", nargs="?", metavar="ADDRESS", help="HOST:PORT the app printed")
    parser.add_argument("--token", metavar="TOKEN", help="the app's stream token (default: read its token file)")
    parser.add_argument("--token-file", metavar="FILE", help="the file the app wrote its address and token to")
    add_detector_options(parser)
    parser.set_defaults(handler=_top)


def _top(args: argparse.Namespace) -> int:
    from . import stream

    try:
        from .dashboards.app import run_top
    except ImportError as exc:  # textual missing
        print(f"tracebridge top: error: {exc}; install it with: pip install 'tracebridge[tui]'", file=sys.stderr)
        return 2
    if args.address is None:
        return int(run_top(demo=True, detect=not args.no_detect, stall_threshold=args.stall_threshold,
                           loop_threshold=args.loop_threshold))
    token = args.token
    if token is None:
        info = stream.read_info(args.token_file) if args.token_file else stream.find_info(args.address)
        if info is None:
            print(
                f"tracebridge top: error: no token for {args.address}: pass --token or --token-file "
                "(the app printed both when it started streaming)",
                file=sys.stderr,
            )
            return 2
        token = info["token"]
    return int(run_top(address=args.address, token=token))
