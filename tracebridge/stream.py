"""Stream the live flow model to another process (``tracebridge top ADDRESS``).

Opt in with one call at start-up::

    from tracebridge import stream
    stream.serve()                      # 127.0.0.1, a free port

or with the environment (read by ``tracebridge.configure()``, so also under
``tracebridge run``): ``TRACEBRIDGE_STREAM=127.0.0.1:0`` (or ``1``).

It prints one line on stderr with the address and the file holding the token,
e.g. ``tracebridge: streaming the flow model on 127.0.0.1:41023 (token in
/tmp/tracebridge-1000/stream-41023.json); watch it with: tracebridge top 127.0.0.1:41023``.

**Safe by construction.**  It binds loopback only (anything else is a
``ValueError``); a client must send the token first (compared in constant
time) or is dropped.  The token file is readable by its owner only.

**Never in the app's way.**  One daemon thread does everything: accepts,
reads, builds snapshots from the flow model (atomic copies, no application
locks) and writes with non-blocking sockets.  Each client has a bounded send
buffer; a frame that does not fit is dropped and counted (the next frame says
how many).  Because it needs no application thread, it keeps streaming when the
application deadlocks, which is when you need it.

Protocol: JSON lines.  Client → server: ``{"token": "..."}``, then optionally
``{"select": [thread idents]}`` (whose stacks to include).  Server → client:
``{"type": "hello", "pid": ..., "version": ...}``, then every ``interval``
``{"type": "snapshot", "dropped": N, "snapshot": {...}}`` (see
:func:`tracebridge.flow.to_json`), or ``{"type": "error", "message": ...}``.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import os
import secrets
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import flow
from .flow import FlowModel, FlowSnapshot

__all__ = [
    "ENV_INFO",
    "ENV_STREAM",
    "FlowStreamClient",
    "FlowStreamServer",
    "find_info",
    "info_path",
    "read_info",
    "serve",
    "serve_from_env",
    "wait_for_info",
]

ENV_STREAM = "TRACEBRIDGE_STREAM"
"""``HOST:PORT`` (loopback; port 0 picks a free one) or ``1`` for ``127.0.0.1:0``: stream from start-up."""

ENV_INFO = "TRACEBRIDGE_STREAM_INFO"
"""Where to write the address/token file (default: :func:`info_path` of the port)."""

_HANDSHAKE_TIMEOUT_S = 5.0
_MAX_BUFFER = 4 << 20  # bytes queued to one client before frames are dropped
_MAX_LINE = 64 << 10  # longest client line accepted
_SOCKET_BUFFER = 256 << 10  # kernel send buffer per client
# Finished hops per frame at most; the rest are counted as skipped (the TUI's
# status line shows it, and its hops/s comes from the sequence number, not the
# feed).  200 a frame is 800 a second, more than a person reads in a scrolling
# feed, and keeps the app's streaming thread near 0.6 us per hop at full speed
# (500 cost twice that: the encoding is per hop).
_FEED_LIMIT = 200


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r}: write the address as HOST:PORT, e.g. 127.0.0.1:0")
    return host.strip("[]") or "127.0.0.1", int(port)


def info_dir() -> Path:
    """The per-user folder for token files (0700)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "tracebridge" if runtime and os.path.isdir(runtime) else (
        Path(tempfile.gettempdir()) / f"tracebridge-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    )
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base


def info_path(port: int) -> Path:
    """The default token file of the stream on ``port``."""
    return info_dir() / f"stream-{port}.json"


def _write_private(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(partial, path)  # readers never see half a file


def read_info(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``{"address", "token", "pid"}`` a stream wrote to ``path`` (None if absent or torn)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "address" in data and "token" in data else None


def find_info(address: str) -> dict[str, Any] | None:
    """The token file of the stream at ``address``, from the default place."""
    try:
        _, port = parse_address(address)
    except ValueError:
        return None
    return read_info(info_path(port))


def wait_for_info(
    path: str | os.PathLike[str], *, timeout: float, process: subprocess.Popen[Any] | None = None
) -> dict[str, Any] | None:
    """Poll for a token file another process is about to write (None on timeout or if it died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_info(path)
        if info is not None:
            return info
        if process is not None and process.poll() is not None:
            return None
        time.sleep(0.02)
    return None


class _Client:
    __slots__ = ("sock", "inbox", "outbox", "authed", "since", "side_since", "select", "dropped", "opened")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.authed = False
        self.since = 0
        self.side_since = 0
        self.select: tuple[int, ...] = ()
        self.dropped = 0
        self.opened = time.monotonic()


class FlowStreamServer:
    """The streaming thread (see the module docstring).  Make one with :func:`serve`."""

    def __init__(
        self,
        model: FlowModel,
        address: str = "127.0.0.1:0",
        *,
        token: str | None = None,
        interval: float = 0.25,
        max_buffer: int = _MAX_BUFFER,
        handshake_timeout: float = _HANDSHAKE_TIMEOUT_S,
    ) -> None:
        host, port = parse_address(address)
        if not _loopback(host):
            raise ValueError(
                f"the flow stream binds loopback only (127.0.0.1, ::1, localhost), not {host!r}: "
                "watch a remote app through an SSH tunnel to its loopback port"
            )
        self.model = model
        self.token = token or secrets.token_urlsafe(24)
        self.interval = interval
        self.max_buffer = max_buffer
        self.handshake_timeout = handshake_timeout
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(8)
        self._listener.setblocking(False)
        bound = self._listener.getsockname()
        self.host = host
        self.port = int(bound[1])
        self.address = f"[{host}]:{self.port}" if family == socket.AF_INET6 else f"{host}:{self.port}"
        self.frames_sent = 0
        self.frames_dropped = 0
        self.info_file: Path | None = None
        self._clients: dict[socket.socket, _Client] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tracebridge-flow-stream", daemon=True)

    def start(self) -> FlowStreamServer:
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop streaming, disconnect everyone and remove the token file."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self.info_file is not None:
            with contextlib.suppress(OSError):
                self.info_file.unlink()

    @property
    def clients(self) -> int:
        return sum(1 for client in list(self._clients.values()) if client.authed)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        next_frame = time.monotonic()
        try:
            while not self._stop.is_set():
                timeout = max(0.0, next_frame - time.monotonic())
                for key, events in self._selector.select(timeout=min(timeout, 0.1)):
                    sock = key.fileobj
                    if sock is self._listener:
                        self._accept()
                        continue
                    client = self._clients.get(sock)  # type: ignore[call-overload]
                    if client is None:
                        continue
                    if events & selectors.EVENT_READ:
                        self._read(client)
                    if events & selectors.EVENT_WRITE and client.sock in self._clients:
                        self._write(client)
                now = time.monotonic()
                for client in list(self._clients.values()):
                    if not client.authed and now - client.opened > self.handshake_timeout:
                        self._drop(client)
                if now >= next_frame:
                    next_frame = now + self.interval
                    self._broadcast()
        except Exception:  # pragma: no cover - never let the stream thread die noisily
            from . import _telemetry

            _telemetry.tracing_failed("flow stream")
        finally:
            for client in list(self._clients.values()):
                self._drop(client)
            self._selector.close()
            self._listener.close()

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        # Bounded in the kernel too: a reader that stalls fills this, then our
        # own max_buffer, and frames start being dropped (and counted).
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
        client = _Client(sock)
        self._clients[sock] = client
        self._selector.register(sock, selectors.EVENT_READ)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.inbox += data
        if len(client.inbox) > _MAX_LINE and b"\n" not in client.inbox:
            self._drop(client)
            return
        while b"\n" in client.inbox:
            line, _, rest = bytes(client.inbox).partition(b"\n")
            client.inbox = bytearray(rest)
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                self._refuse(client, "expected one JSON object per line")
                return
            if not client.authed:
                offered = str(message.get("token", ""))
                if not hmac.compare_digest(offered.encode(), self.token.encode()):
                    self._refuse(client, "wrong token: use the one the app printed (or its token file)")
                    return
                client.authed = True
                self._send(client, {"type": "hello", "pid": os.getpid(), "address": self.address}, force=True)
            elif "select" in message:
                select = message["select"]
                if isinstance(select, list):
                    client.select = tuple(int(ident) for ident in select[:16] if isinstance(ident, int))

    def _refuse(self, client: _Client, message: str) -> None:
        with contextlib.suppress(OSError):
            client.sock.send((json.dumps({"type": "error", "message": message}) + "\n").encode())
        self._drop(client)

    def _drop(self, client: _Client) -> None:
        self._clients.pop(client.sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(client.sock)
        with contextlib.suppress(OSError):
            client.sock.close()

    def _broadcast(self) -> None:
        for client in list(self._clients.values()):
            if not client.authed:
                continue
            if len(client.outbox) > self.max_buffer:
                client.dropped += 1  # a slow reader: skip this frame, say so in the next one
                self.frames_dropped += 1
                continue
            snapshot = self.model.snapshot(
                since=client.since, side_since=client.side_since, limit=_FEED_LIMIT, stacks_for=client.select
            )
            client.since = snapshot.finished_seq
            client.side_since = snapshot.side_seq
            payload = '{"type":"snapshot","dropped":%d,"snapshot":%s}\n' % (client.dropped, flow.to_json(snapshot))
            client.outbox += payload.encode()
            self.frames_sent += 1
            self._write(client)

    def _send(self, client: _Client, message: dict[str, Any], *, force: bool = False) -> None:
        if force or len(client.outbox) <= self.max_buffer:
            client.outbox += (json.dumps(message) + "\n").encode()
            self._write(client)

    def _write(self, client: _Client) -> None:
        if client.outbox:
            try:
                sent = client.sock.send(client.outbox)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(client)
                return
            del client.outbox[:sent]
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbox else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(client.sock, want)


_server: FlowStreamServer | None = None
_server_lock = threading.Lock()


def serve(
    address: str = "127.0.0.1:0",
    *,
    token: str | None = None,
    info_file: str | os.PathLike[str] | None = None,
    interval: float = 0.25,
    detect: bool = True,
    announce: bool = True,
) -> FlowStreamServer:
    """Start streaming the flow model on ``address`` (loopback only); returns the running server.

    Args:
        address: ``HOST:PORT``; port 0 picks a free one.
        token: the secret clients must send (default: a random one).
        info_file: where to write ``{"address", "token", "pid"}`` (0600); default :func:`info_path`.
        interval: seconds between frames.
        detect: also start the watchdog (if none runs) so reports reach the viewer.
        announce: print the address and token file on stderr.

    Raises:
        ValueError: ``address`` is not loopback, or not ``HOST:PORT``.
        OSError: the port is taken.
    """
    global _server
    model = flow.enable()
    if detect:
        from . import watchdog

        if watchdog.current() is None:
            watchdog.watch(on_report=_print_report, log=False)
    with _server_lock:
        server = FlowStreamServer(model, address, token=token, interval=interval)  # may raise: keep the old one
        if _server is not None:
            _server.close()
        path = Path(info_file) if info_file is not None else info_path(server.port)
        _write_private(path, {"address": server.address, "token": server.token, "pid": os.getpid()})
        server.info_file = path
        _server = server.start()
    if announce:
        print(
            f"tracebridge: streaming the flow model on {server.address} (token in {path}); "
            f"watch it with: tracebridge top {server.address}",
            file=sys.stderr,
            flush=True,
        )
    return server


def _print_report(report: Any) -> None:
    print(report.text, file=sys.stderr, flush=True)


def serve_from_env(environ: Mapping[str, str] | None = None) -> FlowStreamServer | None:
    """Start streaming if ``TRACEBRIDGE_STREAM`` asks for it (``configure()`` calls this); never raises."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_STREAM, "").strip()
    if not value or value == "0":
        return None
    address = "127.0.0.1:0" if value == "1" else value
    try:
        return serve(address, info_file=env.get(ENV_INFO) or None)
    except (ValueError, OSError) as exc:
        print(f"tracebridge: {ENV_STREAM}={value!r}: not streaming: {exc}", file=sys.stderr)
        return None


class FlowStreamClient:
    """Connects to a :class:`FlowStreamServer` and keeps the newest snapshot (a thread reads the socket).

    :meth:`poll` returns the newest snapshot since the last poll with the
    finished hops, Local accesses and timeout expiries of every frame received
    meanwhile, so a slow viewer loses no feed entry the server sent.
    """

    def __init__(self, address: str, token: str, *, timeout: float = 5.0) -> None:
        host, port = parse_address(address)
        self.address = address
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.sendall((json.dumps({"token": token}) + "\n").encode())
        self.pid: int | None = None
        self.error: str | None = None
        self.dropped = 0
        self.frames = 0
        self._lock = threading.Lock()
        self._latest: FlowSnapshot | None = None
        self._feed: deque[Any] = deque(maxlen=5000)
        self._locals: deque[Any] = deque(maxlen=2000)
        self._timeouts: deque[Any] = deque(maxlen=500)
        self._skipped = 0
        self._closed = False
        self.connected = threading.Event()
        self._reader = threading.Thread(target=self._read, name="tracebridge-top-reader", daemon=True)
        self._reader.start()

    def select(self, idents: Iterable[int]) -> None:
        """Ask for these threads' stacks in the next frames."""
        with contextlib.suppress(OSError):
            self.sock.sendall((json.dumps({"select": list(idents)}) + "\n").encode())

    @property
    def alive(self) -> bool:
        return not self._closed

    def poll(self) -> FlowSnapshot | None:
        """The newest snapshot not yet polled (None if none came), feeds merged."""
        with self._lock:
            latest = self._latest
            if latest is None:
                return None
            self._latest = None
            finished, self._feed = tuple(self._feed), deque(maxlen=self._feed.maxlen)
            locals_, self._locals = tuple(self._locals), deque(maxlen=self._locals.maxlen)
            timeouts, self._timeouts = tuple(self._timeouts), deque(maxlen=self._timeouts.maxlen)
            skipped, self._skipped = self._skipped, 0
        import dataclasses

        return dataclasses.replace(latest, finished=finished, locals=locals_, timeouts=timeouts, skipped=skipped)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def _read(self) -> None:
        buffer = b""
        self.sock.settimeout(None)
        try:
            while not self._closed:
                data = self.sock.recv(1 << 20)
                if not data:
                    break
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._handle(json.loads(line))
        except (OSError, ValueError) as exc:
            if not self._closed:
                self.error = self.error or f"connection lost: {exc}"
        finally:
            self._closed = True
            if self.error is None:
                self.error = "the app closed the stream"
            with contextlib.suppress(OSError):
                self.sock.close()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "hello":
            self.pid = message.get("pid")
            self.connected.set()
        elif kind == "error":
            self.error = str(message.get("message"))
            self.connected.set()
        elif kind == "snapshot":
            snapshot = flow._decode(FlowSnapshot, message["snapshot"])
            with self._lock:
                self.frames += 1
                self.dropped = int(message.get("dropped", 0))
                self._latest = snapshot
                self._feed.extend(snapshot.finished)
                self._locals.extend(snapshot.locals)
                self._timeouts.extend(snapshot.timeouts)
                self._skipped += snapshot.skipped
