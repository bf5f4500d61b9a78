"""Real ``twistd -n chateau`` subprocesses for tests, on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent


def checkout_env() -> dict[str, str]:
    """Environment in which subprocesses import this checkout, not an installed copy.

    Twisted finds the plugin in any ``twisted/plugins`` folder on the path.
    """
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"twistd exited early:\n{self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"twistd did not listen within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the process and wait; its exit status.

        After a SIGTERM, twistd shuts down cleanly and then exits by the same
        signal, so a clean stop reports -SIGTERM.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def __enter__(self) -> "TwistdServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
