"""Real ``twistd -n chateau`` subprocesses for tests, on free loopback ports,
and a blocking client that talks to them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

import websocket  # websocket-client: deliberately not Autobahn

ROOT = Path(__file__).resolve().parent.parent


def checkout_env(**extra: str) -> dict[str, str]:
    """Environment in which subprocesses import this checkout, not an installed copy.

    Twisted finds the plugin in any ``twisted/plugins`` folder on the path. A
    ``CHATEAU_PASSWORD`` of the caller's is dropped (a child gets one only
    in *extra*), so no command reads a password the test did not give it.
    """
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("CHATEAU_PASSWORD", None)
    env.update(extra)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_ready(
    process: subprocess.Popen, ready: Callable[[], bool], timeout: float, waiting_for: str
) -> str | None:
    """Poll *ready* until it holds (None), or say why not: the process ended, or time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            return f"exited early with status {process.returncode}"
        if ready():
            return None
        if time.monotonic() > deadline:
            return f"did not {waiting_for} within {timeout}s"
        time.sleep(0.05)


def listening(port: int) -> Callable[[], bool]:
    """Whether something accepts connections on 127.0.0.1:*port*."""

    def check() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    return check


def end_process(
    process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int:
    """Signal *process* unless it has ended, wait *timeout* s, then kill; its status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def resident_kib(pid: int) -> int:
    """A process's resident memory (``VmRSS``), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class TwistdServer:
    """``twistd -n chateau`` in *workdir*; stopped by pid, never left running."""

    def __init__(
        self, workdir: Path, *args: str, port: int | None = None,
        listen: str = "tcp:{port}:interface=127.0.0.1", scheme: str = "ws",
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.args = args
        self.listen = listen.format(port=self.port)
        self.scheme = scheme
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "twistd.out"

    @property
    def url(self) -> str:
        host = "localhost" if self.scheme == "wss" else "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}/ws"

    def start(self, timeout: float = 20.0) -> "TwistdServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            ["twistd", "-n", "--pidfile=", "chateau",
             "--listen", self.listen, *self.args],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            env=checkout_env(),
        )
        log.close()
        problem = wait_ready(self.process, listening(self.port), timeout, "listen")
        if problem is None:
            return self
        output = self.output()
        if problem.startswith("did not"):
            self.stop()
        raise RuntimeError(f"twistd {problem}:\n{output}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the process and wait; its exit status.

        After a SIGTERM, twistd shuts down cleanly and then exits by the same
        signal, so a clean stop reports -SIGTERM.
        """
        if self.process is None:
            return None
        code = end_process(self.process, sig, timeout)
        self.process = None
        return code

    def __enter__(self) -> "TwistdServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Peer:
    """A blocking websocket-client connection to a server in another process.

    Deliberately not Autobahn: what a third-party client sees. Frames pushed
    while :meth:`history` pages are kept in :attr:`pushed`.
    """

    def __init__(self, url: str, timeout: float = 15.0) -> None:
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.pushed: list[dict] = []

    def send(self, **message: object) -> None:
        self.ws.send(json.dumps(message))

    def recv(self) -> dict:
        return json.loads(self.ws.recv())

    def request(self, **message: object) -> dict:
        self.send(**message)
        return self.recv()

    def sign_in(self, username: str, password: str = "pw") -> dict:
        reply = self.request(type="RegisterRequest", username=username, password=password)
        assert reply["type"] == "RegisterResponse", reply
        return reply

    def history(self, **where: object) -> list[dict]:
        """Every message of a chat, oldest first, paging back 100 at a time."""
        found: list[dict] = []
        before = None
        while True:
            self.send(type="HistoryRequest", limit=100, before=before, **where)
            page = self.recv()
            while page["type"] != "HistoryResponse":
                self.pushed.append(page)
                page = self.recv()
            found.extend(page["messages"])
            if not page["more"]:
                return list(reversed(found))
            before = page["messages"][-1]["id"]

    def close(self) -> None:
        self.ws.close()
