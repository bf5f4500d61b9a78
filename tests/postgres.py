"""A private PostgreSQL server for the tests, on a free loopback port.

initdb refuses to run as root, so as root the cluster belongs to the
``postgres`` system user (the Debian package creates it). The server is
stopped by its pid when the test session ends and its directory removed.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.processes import end_process, free_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PostgresServer:
    def __init__(self) -> None:
        initdb, postgres = _bin("initdb"), _bin("postgres")
        if initdb is None or postgres is None:
            raise RuntimeError(
                "PostgreSQL is not installed (apt-get install postgresql); "
                "scripts/test installs it"
            )
        self.initdb, self.postgres = initdb, postgres
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chateau-pg-"))
        self.data = self.root / "data"
        self.process: subprocess.Popen | None = None
        self._as_root = os.geteuid() == 0
        self._databases = 0

    def _user(self) -> dict:
        """Run as the postgres user when we are root (the pid is then the server's own)."""
        return {"user": "postgres", "group": "postgres"} if self._as_root else {}

    def start(self) -> "PostgresServer":
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            [self.initdb, "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, cwd=self.root, **self._user(),
        )
        return self.launch()

    def launch(self) -> "PostgresServer":
        """Start the server process on the existing data directory."""
        self.process = subprocess.Popen(
            [self.postgres, "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={self.root}",
             "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.root,
            **self._user(),
        )
        deadline = time.monotonic() + 30
        import psycopg

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
        """A fresh empty database; its SQLAlchemy URL."""
        import psycopg

        self._databases += 1
        name = f"chateau_{os.getpid()}_{self._databases}"
        with psycopg.connect(self.admin_dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def halt(self) -> None:
        """Stop the server process but keep its data, to :meth:`launch` it again."""
        if self.process is not None:
            # SIGINT is PostgreSQL's "fast shutdown".
            end_process(self.process, signal.SIGINT, 30)
        self.process = None

    def stop(self) -> None:
        """Stop the server for good: SIGQUIT, PostgreSQL's "immediate shutdown", since
        its data is deleted next (a fast shutdown's checkpoint, after a whole run's
        databases, took seconds)."""
        if self.process is not None:
            end_process(self.process, signal.SIGQUIT, 30)
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)
