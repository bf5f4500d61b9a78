"""Server processes for the benchmark: Chateau, the two reference servers, PostgreSQL.

Each is started on a free loopback port, pinned to the server core, and
stopped by its own pid; :class:`ProcessGroup` makes sure nothing outlives
the run, whatever happens.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Every process started, as (pid, argv): the run's report lists them, so a
# test can check that none outlived it.
STARTED: list[tuple[int, list[str]]] = []
# twistd as a module of this interpreter (``python -m twisted`` is ``twist``).
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def checkout_env() -> dict[str, str]:
    """Import this checkout (and find its twistd plugin) before any installed copy."""
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }


def pin_prefix(core: int | None) -> list[str]:
    """``taskset -c CORE`` when pinning is possible, else nothing."""
    if core is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(core)]


class ServerProcess:
    """One server listening on ``127.0.0.1:port``; output goes to a log file."""

    def __init__(self, name: str, kind: str, argv: list[str], workdir: Path, port: int,
                 core: int | None = None, ready_timeout: float = 60.0) -> None:
        self.name, self.kind, self.argv = name, kind, argv
        self.workdir, self.port, self.core = workdir, port, core
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}.log"
        self.options: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def launch(self) -> "ServerProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=checkout_env(),
            )
        STARTED.append((self.process.pid, self.argv))
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
                continue
            self.pin()
            return
        raise RuntimeError(f"{self.name} did not listen within {self.ready_timeout}s")

    def pin(self) -> None:
        """Move every thread to the server core once listening.

        Servers start on any core (several starting at once on one core would
        take seconds); threads made later inherit the pinned affinity.
        """
        if self.core is None or not hasattr(os, "sched_setaffinity"):
            return
        for _ in range(2):  # a second pass catches a thread born during the first
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                try:
                    os.sched_setaffinity(int(tid), {self.core})
                except OSError:
                    pass  # the thread ended meanwhile

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def spec(self) -> dict[str, Any]:
        """How the load generator sees this server."""
        return {"name": self.name, "kind": self.kind, "url": self.url, "pid": self.pid,
                "options": self.options}


def chateau(name: str, workdir: Path, db_url: str, settings: dict[str, dict[str, Any]],
            core: int | None) -> ServerProcess:
    """``twistd -n chateau`` with an INI file built from *settings*."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"{name}.ini"
    lines = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    port = free_port()
    argv = [*TWISTD, "-n", "--pidfile=", "chateau",
            "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
            "--db", db_url, "--config", str(config)]
    return ServerProcess(name, "chateau", argv, workdir, port, core)


def bare(kind: str, name: str, workdir: Path, core: int | None,
         bcrypt_cost: int = 0) -> ServerProcess:
    """A reference server: *kind* is ``autobahn`` or ``websockets``."""
    port = free_port()
    module = {"autobahn": "bench.bare_autobahn", "websockets": "bench.bare_websockets"}[kind]
    argv = [sys.executable, "-m", module, "--port", str(port), "--bcrypt-cost", str(bcrypt_cost)]
    return ServerProcess(name, kind, argv, workdir, port, core)


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def postgres_available() -> bool:
    return _pg_bin("initdb") is not None and _pg_bin("postgres") is not None


class Postgres:
    """A private PostgreSQL cluster on a free loopback port, pinned like the servers.

    initdb refuses root, so as root the cluster belongs to the ``postgres``
    user; the postmaster's pid is then still our child's pid.
    """

    def __init__(self, core: int | None) -> None:
        initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
        if initdb is None or postgres is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.initdb, self.postgres, self.core = initdb, postgres, core
        self.root = Path(tempfile.mkdtemp(prefix="chateau-bench-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.process: subprocess.Popen[bytes] | None = None
        self.databases = 0

    def _user(self) -> dict[str, Any]:
        return {"user": "postgres", "group": "postgres"} if self.as_root else {}

    def start(self) -> "Postgres":
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            [self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
             "-E", "UTF8"],
            check=True, capture_output=True, cwd=self.root, **self._user(),
        )
        # Durable commits (fsync on), as in production; only the port and socket are private.
        self.process = subprocess.Popen(
            [*pin_prefix(self.core), self.postgres, "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
             "-c", "max_connections=100"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.root, **self._user(),
        )
        STARTED.append((self.process.pid, list(map(str, self.process.args))))
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.admin_dsn(), connect_timeout=1).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("PostgreSQL did not start")
                time.sleep(0.1)

    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def new_database(self) -> str:
        import psycopg

        self.databases += 1
        name = f"chateau_bench_{self.databases}"
        with psycopg.connect(self.admin_dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)


class ProcessGroup:
    """Every server of one step: started together, always stopped by pid."""

    def __init__(self) -> None:
        self.servers: list[ServerProcess] = []

    def add(self, server: ServerProcess) -> ServerProcess:
        self.servers.append(server)
        return server

    def launch(self) -> None:
        """Start every server not started yet, without waiting for it."""
        for server in self.servers:
            if server.process is None:
                server.launch()

    def start(self) -> None:
        """Start the rest and wait until every server listens."""
        self.launch()
        for server in self.servers:
            server.wait_ready()

    def stop(self) -> None:
        for server in self.servers:
            if server.process is not None and server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        for server in self.servers:
            server.stop()

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
