"""A private Redis server for the tests, on a free loopback port.

``redis-server`` runs in the foreground as a child process with persistence
off (no RDB snapshots, no AOF) in its own temporary directory, and is stopped
by its pid. Readiness and :meth:`RedisServer.command` speak RESP over a raw
socket, so the tests need no Redis client library of their own.

Without ``redis-server`` the tests that use it are skipped, except under CI
where they fail (scripts/test installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.processes import free_port


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class RedisError(RuntimeError):
    """The server did not start, or a reply could not be read."""


def _encode(args: tuple[object, ...]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _reply_end(buffer: bytes, start: int = 0) -> int | None:
    """Index just past the one complete RESP reply at *start*; None if incomplete."""
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind, header = buffer[start:start + 1], buffer[start + 1:line_end]
    after = line_end + 2
    if kind in (b"+", b"-", b":", b",", b"#", b"_", b"("):
        return after
    if kind in (b"$", b"!", b"="):  # bulk string, bulk error, verbatim string
        length = int(header)
        if length < 0:
            return after
        end = after + length + 2
        return end if len(buffer) >= end else None
    if kind in (b"*", b"~", b">", b"%", b"|"):  # array, set, push, map, attributes
        count = int(header)
        if kind in (b"%", b"|"):
            count *= 2
        position = after
        for _ in range(max(count, 0)):
            found = _reply_end(buffer, position)
            if found is None:
                return None
            position = found
        return position
    raise RedisError(f"unexpected RESP reply: {buffer[start:start + 80]!r}")


class RedisServer:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            reason = (
                "redis-server is not installed (apt-get install redis-server); "
                "scripts/test installs it"
            )
            if _in_ci():
                raise RedisError(reason)
            pytest.skip(reason)
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chateau-redis-"))
        self.log_path = self.root / "redis.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> "RedisServer":
        """Start the server (again, after :meth:`halt`, on the same port)."""
        if self.process is not None and self.process.poll() is None:
            return self
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.root),
             "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.root,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                output = self.output()
                self.halt()
                raise RedisError(f"redis-server exited early:\n{output}")
            if self.ping():
                return self
            if time.monotonic() > deadline:
                self.halt()
                raise RedisError(
                    f"redis-server did not answer PING within {timeout}s:\n{self.output()}"
                )
            time.sleep(0.05)

    def ping(self) -> bool:
        """Whether the server answers an inline PING with +PONG."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    reply += chunk
                return reply.startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: object, timeout: float = 5.0) -> bytes:
        """Send one command; its raw RESP reply, e.g. ``b"+OK\\r\\n"`` or ``b"$1\\r\\nx\\r\\n"``."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(_encode(args))
            reply = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RedisError(f"connection closed mid-reply: {reply!r}")
                reply += chunk
                end = _reply_end(reply)
                if end is not None:
                    return reply[:end]

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def halt(self, timeout: float = 10.0) -> None:
        """Stop the server process but keep its port and directory, to :meth:`start` it again."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server for good and remove its directory."""
        self.halt(timeout)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
