"""Tests for streaming the flow model to another process: loopback only, token, bounded buffers, hangs."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SpanRecorder

from tracebridge import _live_env, flow, stream, watchdog
from tracebridge.flow import FlowModel
from tracebridge.stream import FlowStreamClient, FlowStreamServer
from tracebridge.sync import sync_to_async

WAIT_S = 10.0


@pytest.fixture
def model(spans: SpanRecorder) -> Iterator[FlowModel]:
    flow.disable()
    model = flow.enable()
    try:
        yield model
    finally:
        flow.disable()


def wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.parametrize("address", ["0.0.0.0:0", "192.168.1.10:0", "example.com:0"])
def test_stream_server_non_loopback_address_is_refused(model: FlowModel, address: str) -> None:
    """Tests that the stream refuses to bind anything but loopback, saying what to do instead."""
    with pytest.raises(ValueError, match="binds loopback only .* SSH tunnel"):
        FlowStreamServer(model, address)


def test_stream_serve_writes_private_token_file_and_client_is_greeted(model: FlowModel, tmp_path: Path) -> None:
    """Tests that serve() writes address+token to a 0600 file and a client with the token gets the hello."""
    info_file = tmp_path / "info.json"
    server = stream.serve(info_file=info_file, detect=False, announce=False)
    try:
        assert stat.S_IMODE(info_file.stat().st_mode) == 0o600
        info = json.loads(info_file.read_text())
        assert info == {"address": server.address, "token": server.token, "pid": os.getpid()}
        assert server.address.startswith("127.0.0.1:") and server.port > 0
        client = FlowStreamClient(info["address"], info["token"])
        try:
            assert client.connected.wait(WAIT_S)
            assert (client.pid, client.error) == (os.getpid(), None)
        finally:
            client.close()
    finally:
        server.close()
    assert not info_file.exists()  # closing removes the token file


def test_stream_wrong_token_is_refused(model: FlowModel) -> None:
    """Tests that a client with the wrong token gets an error line and is disconnected."""
    server = FlowStreamServer(model).start()
    try:
        client = FlowStreamClient(server.address, "not-the-token")
        assert client.connected.wait(WAIT_S)
        assert client.error == "wrong token: use the one the app printed (or its token file)"
        wait_until(lambda: not client.alive, "the server to hang up")
        assert server.clients == 0
    finally:
        server.close()


def test_stream_silent_client_is_dropped_after_handshake_timeout(model: FlowModel) -> None:
    """Tests that a connection that never sends the token is closed."""
    server = FlowStreamServer(model, handshake_timeout=0.2).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:
            assert sock.recv(100) == b""  # closed by the server, nothing sent
    finally:
        server.close()


async def test_stream_client_poll_merges_every_frame_since_last_poll(model: FlowModel) -> None:
    """Tests that finished hops of all frames received between two polls reach the viewer."""
    server = FlowStreamServer(model, interval=0.01).start()
    client = FlowStreamClient(server.address, server.token)
    loop = asyncio.get_running_loop()
    try:
        assert await loop.run_in_executor(None, client.connected.wait, WAIT_S)
        await loop.run_in_executor(None, wait_until, lambda: client.frames > 0, "a first frame")
        client.poll()
        for _ in range(30):
            await sync_to_async(threading.get_ident)()
            await asyncio.sleep(0.003)  # spread the hops over several frames
        frames = client.frames
        await loop.run_in_executor(None, wait_until, lambda: client.frames >= frames + 2, "two more frames")
        snapshot = client.poll()
    finally:
        client.close()
        server.close()
    assert snapshot is not None
    assert [hop.seq for hop in snapshot.finished] == list(range(1, 31))
    assert snapshot.finished_seq == 30 and snapshot.skipped == 0


def test_stream_slow_reader_drops_frames_and_counts_them(model: FlowModel) -> None:
    """Tests that a client that does not read makes the server drop (and count) frames, never block."""
    server = FlowStreamServer(model, interval=0.005, max_buffer=2000).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
            sock.settimeout(WAIT_S)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(json.dumps({"token": server.token}).encode() + b"\n")
            wait_until(lambda: server.frames_dropped >= 3, "dropped frames")
            sent_before = server.frames_sent
            # The app is unaffected meanwhile: hops run at full speed.
            asyncio.run(_hops(50))
            sock.settimeout(WAIT_S)
            reader = sock.makefile("rb")
            dropped = 0
            while dropped == 0:
                message = json.loads(reader.readline())
                dropped = message.get("dropped", 0) if message["type"] == "snapshot" else 0
            assert dropped >= 3
        assert server.frames_sent >= sent_before
    finally:
        server.close()


async def _hops(count: int) -> None:
    for _ in range(count):
        await sync_to_async(threading.get_ident)()


def test_stream_keeps_streaming_while_the_app_is_deadlocked(tmp_path: Path) -> None:
    """Tests that a deadlocked app (child process) still streams, and the stream carries the watchdog's report."""
    info_file = tmp_path / "stream.json"
    app = subprocess.Popen(
        [
            sys.executable, "-c", "import sys; from tracebridge.demo_deadlock import main; sys.exit(main())",
            "global-sync-thread", "--stream", "127.0.0.1:0", "--stream-info", str(info_file),
            "--linger", "60", "--timeout", "60",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        info = stream.wait_for_info(info_file, timeout=30, process=app)
        assert info is not None
        client = FlowStreamClient(info["address"], info["token"])
        try:
            reports = []

            def has_report() -> bool:
                snapshot = client.poll()
                if snapshot is not None:
                    reports.extend(snapshot.reports)
                return bool(reports)

            wait_until(has_report, "the deadlock report over the stream")
            frames = client.frames
            wait_until(lambda: client.frames >= frames + 2, "frames after the deadlock")  # still streaming
        finally:
            client.close()
        assert reports[0].kind == "deadlock"
        assert reports[0].title.startswith("DEADLOCK: thread `tracebridge-sync_0`")
        assert app.poll() is None  # the app is still hung
    finally:
        app.kill()
        app.wait(timeout=10)


def test_stream_from_env_bad_address_says_why_and_does_not_stream(
    model: FlowModel, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tests that TRACEBRIDGE_STREAM with a public address prints one line and starts nothing."""
    assert stream.serve_from_env({stream.ENV_STREAM: "0.0.0.0:9999"}) is None
    assert stream.serve_from_env({stream.ENV_STREAM: "0"}) is None
    err = capsys.readouterr().err
    assert err.startswith("tracebridge: TRACEBRIDGE_STREAM='0.0.0.0:9999': not streaming: the flow stream binds loopback only")


def test_live_env_switches_match_their_modules() -> None:
    """Tests that the environment switches configure() checks are the watchdog's and the stream's."""
    assert (_live_env.ENV_DETECT, _live_env.ENV_STREAM) == (watchdog.ENV_DETECT, stream.ENV_STREAM)
