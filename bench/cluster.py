"""Processes for S6 (S1 split across two Chateau nodes): Redis and clustered Chateau.

A private ``redis-server`` per cluster (so clusters share nothing and each
Redis's CPU is its cluster's), Chateau nodes with ``[cluster]`` on, and
:class:`ClusterTarget`, which the load generator sees as one target with one
URL per node.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.processes import STARTED, ServerProcess, free_port, pin_prefix


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


class Redis:
    """``redis-server`` in the foreground on a free loopback port, no persistence,
    pinned to *core*, stopped by its pid."""

    def __init__(self, workdir: Path, core: int | None) -> None:
        self.workdir, self.core = workdir, core
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> "Redis":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [*pin_prefix(self.core), binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        with open(self.log_path, "ab") as log:
            # taskset execs redis-server, so the pid is Redis's own.
            self.process = subprocess.Popen(argv, cwd=self.workdir, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        STARTED.append((self.process.pid, argv))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited early: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def cluster_settings(redis: Redis, node: str) -> dict[str, dict[str, Any]]:
    return {"cluster": {"redis_url": redis.url, "node_name": node, "presence_ttl": 10}}


def health(server: ServerProcess) -> dict[str, Any]:
    url = f"http://127.0.0.1:{server.port}/health"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_joined(nodes: list[ServerProcess], timeout: float = 30.0) -> None:
    """Until every node is linked to Redis and sees all the others."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            states = [health(node).get("cluster") or {} for node in nodes]
            if all(s.get("connected") and len(s.get("nodes", ())) >= len(nodes) - 1
                   for s in states):
                return
        except (OSError, ValueError):
            states = []
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cluster did not form within {timeout:.0f} s: {states}")
        time.sleep(0.2)


class ClusterTarget:
    """Several nodes (and their Redis) that the load generator treats as one target:
    members are split between the nodes' URLs in blocks, the sender on the first."""

    def __init__(self, name: str, nodes: list[tuple[str, ServerProcess]],
                 redis: Redis | None, description: str = "") -> None:
        self.name, self.nodes, self.redis, self.description = name, nodes, redis, description

    def spec(self) -> dict[str, Any]:
        first = self.nodes[0][1]
        return {
            "name": self.name, "kind": "chateau", "url": first.url, "pid": first.pid,
            "options": {
                "nodes": [{"node": node, "url": server.url, "pid": server.pid,
                           "core": server.core} for node, server in self.nodes],
                "redis_pid": self.redis.pid if self.redis is not None else None,
                "description": self.description,
            },
        }
