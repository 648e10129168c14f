"""Stacks for reports: a thread's (from ``sys._current_frames()``) or a suspended task's.

Read from another thread (the watchdog's), never touching ``f_locals``:
reading the locals of a running frame from outside is not safe.  tracebridge's
own bridge frames and the stdlib's asyncio/threading/executor plumbing are left
out (they are the same in every report), except the innermost frames, which
say what the thread is blocked in (``threading.py ... wait``).
"""

from __future__ import annotations

import asyncio
import linecache
import os
import sysconfig
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any

__all__ = ["call_site", "format_frame_stack", "format_task_stack", "innermost_call", "site_of", "thread_name"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Files of ours that are user-level code (kept in stacks).
_OURS_KEPT = ("demo.py", "demo_deadlock.py")
_STDLIB_DIR = sysconfig.get_paths()["stdlib"]
_PLUMBING = tuple(
    os.path.join(_STDLIB_DIR, name)
    for name in ("asyncio" + os.sep, "concurrent" + os.sep, "threading.py", "selectors.py", "contextvars.py")
)
_MAX_FRAMES = 40
_KEEP_INNER = 2  # innermost frames always shown, plumbing or not


def _is_plumbing(filename: str) -> bool:
    if filename.startswith(_PACKAGE_DIR):
        return not filename.endswith(_OURS_KEPT)
    return filename.startswith(_PLUMBING)


def _frames_outer_first(frame: FrameType | None) -> list[tuple[str, int, str]]:
    frames: list[tuple[str, int, str]] = []
    while frame is not None and len(frames) < 200:
        code = frame.f_code
        frames.append((code.co_filename, frame.f_lineno or 0, code.co_name))
        frame = frame.f_back
    frames.reverse()
    return frames


def _format(frames: list[tuple[str, int, str]]) -> list[str]:
    keep = [
        entry for index, entry in enumerate(frames) if index >= len(frames) - _KEEP_INNER or not _is_plumbing(entry[0])
    ][-_MAX_FRAMES:]
    lines = []
    for filename, lineno, name in keep:
        source = linecache.getline(filename, lineno).strip()
        lines.append(f'File "{filename}", line {lineno}, in {name}' + (f"\n    {source}" if source else ""))
    return lines


def format_frame_stack(frame: FrameType | None) -> list[str]:
    """A thread's current stack, outermost first, one entry per frame (``File ..., line N, in f`` + source)."""
    return _format(_frames_outer_first(frame))


def format_task_stack(task: asyncio.Task[Any]) -> list[str]:
    """A suspended task's coroutine stack, outermost first (empty if it is running or done)."""
    try:
        frames = task.get_stack()
    except Exception:
        return []
    entries = [(f.f_code.co_filename, f.f_lineno or 0, f.f_code.co_name) for f in frames]
    return _format(entries)


def call_site(task: asyncio.Task[Any]) -> str:
    """Where a suspended task is: its innermost non-tracebridge frame, as ``file:line in f: `source```."""
    try:
        frames = task.get_stack()
    except Exception:
        return ""
    return _site(f for f in reversed(frames))


def innermost_call(frame: FrameType | None) -> str:
    """The innermost user-level frame of a thread's stack, as ``file:line in f: `source```."""

    def walk() -> Iterable[FrameType]:
        current = frame
        while current is not None:
            yield current
            current = current.f_back

    return _site(walk())


def site_of(frame: FrameType) -> str:
    """One frame as ``file:line in f: `source```."""
    filename = frame.f_code.co_filename
    lineno = frame.f_lineno or 0
    source = linecache.getline(filename, lineno).split("  #", 1)[0].strip()
    text = f"{os.path.basename(filename)}:{lineno} in {frame.f_code.co_name}"
    return text + (f": `{source}`" if source else "")


def _site(frames: Iterable[FrameType]) -> str:
    for f in frames:
        filename = f.f_code.co_filename
        if _is_plumbing(filename):
            continue
        return site_of(f)
    return ""


def thread_name(ident: int) -> str:
    """The name of the live thread ``ident`` (or ``thread <ident>``)."""
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread.name
    return f"thread {ident}"
