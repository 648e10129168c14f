"""``tracebridge top`` in a real terminal (tmux) against a live, deadlocked app streaming its flow model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")
TMUX = shutil.which("tmux")
# CI installs tmux (.ci/run): there a missing tmux is a failure, not a skip.
pytestmark = pytest.mark.skipif(TMUX is None and os.environ.get("CI") != "true", reason="tmux is not installed")

from tracebridge import stream  # noqa: E402


def test_top_in_tmux_shows_live_app_and_its_deadlock(tmp_path: Path) -> None:
    """Tests that `tracebridge top ADDRESS` in tmux shows the app's threads and the red deadlock report."""
    info_file = tmp_path / "stream.json"
    app = subprocess.Popen(
        [
            sys.executable, "-c", "import sys; from tracebridge.demo_deadlock import main; sys.exit(main())",
            "global-sync-thread", "--stream", "127.0.0.1:0", "--stream-info", str(info_file),
            "--linger", "120", "--timeout", "120",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = f"tracebridge-test-{os.getpid()}"
    tmux = [TMUX, "-L", server]  # a private tmux server: never the user's sessions
    try:
        info = stream.wait_for_info(info_file, timeout=30, process=app)
        assert info is not None, "the app did not start streaming"
        # Some environments leave COLUMNS/LINES=80/24 in the pane; Textual would believe them.
        command = f"env -u COLUMNS -u LINES {sys.executable} -m tracebridge.cli top {info['address']} --token-file {info_file}"
        subprocess.run([*tmux, "new-session", "-d", "-s", "top", "-x", "200", "-y", "60", command], check=True, timeout=10)
        screen = ""
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            screen = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "top"], capture_output=True, text=True, timeout=10
            ).stdout
            if "DEADLOCK" in screen and "in async_to_sync" in screen:
                break
            time.sleep(0.3)
        assert "DEADLOCK: thread `tracebridge-sync_0`" in screen, screen
        assert "tracebridge top" in screen and f"{info['address']} (pid {app.pid})" in screen
        for panel in ("Threads", "Loops", "Executors", "In flight", "Finished", "Locals", "Timeouts"):
            assert panel in screen, (panel, screen)
        assert "tracebridge-sync_0" in screen and "in async_to_sync" in screen
        assert "tracebridge.demo_deadlock.load_site_settings" in screen  # queued in flight, never started
        subprocess.run([*tmux, "send-keys", "-t", "top", "q"], check=True, timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            alive = subprocess.run([*tmux, "has-session", "-t", "top"], capture_output=True, timeout=10)
            if alive.returncode != 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("tracebridge top did not quit on q")
        assert app.poll() is None  # the deadlocked app is still there, still hung
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10)
        app.kill()
        app.wait(timeout=10)
