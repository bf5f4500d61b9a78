"""A real HAProxy and a real nginx in front of a real ``twistd`` node.

Clients come from two loopback addresses, 127.0.0.2 and 127.0.0.3, through
the shipped proxy configurations: the node must see and limit each one
apart, and must not believe an X-Forwarded-For header a client forged.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import websocket

from tests import rawhttp
from tests.processes import TwistdServer
from tests.proxies import HAProxy, Nginx

A, B = "127.0.0.2", "127.0.0.3"
LIMITS = """
[auth]
bcrypt_cost = 4
[limits]
max_connections_per_address = 2
signin_free_failures = 1
"""


class Deployment:
    def __init__(self, node: TwistdServer, proxy: HAProxy | Nginx) -> None:
        self.node = node
        self.proxy = proxy
        self.opened: list[websocket.WebSocket] = []

    def connect(self, source: str, header: list[str] | None = None) -> websocket.WebSocket:
        """A WebSocket through the proxy from *source*; raises on a refused handshake."""
        sock = rawhttp.open_socket("127.0.0.1", self.proxy.port, source)
        try:
            ws = websocket.create_connection(
                f"ws://127.0.0.1:{self.proxy.port}/ws", socket=sock, header=header or [],
                timeout=10,
            )
        except BaseException:
            sock.close()
            raise
        self.opened.append(ws)
        return ws

    def refused_status(self, source: str, header: list[str] | None = None) -> int:
        try:
            self.connect(source, header)
        except websocket.WebSocketBadStatusException as error:
            return error.status_code
        raise AssertionError(f"a handshake from {source} was let in")

    def close(self) -> None:
        for ws in self.opened:
            ws.close()


def sign_in(ws: websocket.WebSocket, password: str) -> dict:
    ws.send(json.dumps({"type": "RegisterRequest", "username": "alice", "password": password}))
    return json.loads(ws.recv())


def wait_until_served(port: int, timeout: float = 20.0) -> None:
    """Until the proxy passes GET /health to the node (HAProxy's first check)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if rawhttp.get("127.0.0.1", port, source="127.0.0.9").status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the proxy did not pass /health to the node")
        time.sleep(0.2)


@contextmanager
def deploy(tmp_path: Path, kind: str) -> Iterator[Deployment]:
    """A node behind *kind* ("haproxy" or "nginx"), both stopped by pid afterwards."""
    config = tmp_path / "node.ini"
    if kind == "haproxy":
        config.write_text(LIMITS)
        node = TwistdServer(tmp_path, "--config", str(config),
                            listen="haproxy:tcp:{port}:interface=127.0.0.1")
    else:
        config.write_text(LIMITS + "[server]\ntrusted_proxies = 127.0.0.1\n")
        node = TwistdServer(tmp_path, "--config", str(config))
    proxy = HAProxy(node.port) if kind == "haproxy" else Nginx(node.port)
    with node, proxy:
        wait_until_served(proxy.port)
        deployment = Deployment(node, proxy)
        try:
            yield deployment
        finally:
            deployment.close()


@pytest.fixture(params=["haproxy", "nginx"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    with deploy(tmp_path, request.param) as running:
        yield running


def test_clients_behind_the_proxy_are_limited_apart(deployment):
    # B creates the account; A, from another address, guesses its password.
    b_first = deployment.connect(B)
    assert sign_in(b_first, "right")["type"] == "RegisterResponse"
    a_first = deployment.connect(A)
    replies = [sign_in(a_first, "wrong") for _ in range(6)]
    assert replies[0]["status"] == 301, replies  # wrong password
    throttled = [reply for reply in replies if reply.get("status") == 429]
    assert throttled and throttled[0]["retry_after"] > 0, replies
    # A's failures do not touch B: B signs in again at once.
    b_second = deployment.connect(B)
    assert sign_in(b_second, "right")["type"] == "RegisterResponse"
    # Connections are counted per client: A may open its second, not a third;
    # B is at its two, and a forged X-Forwarded-For does not make it anyone else.
    deployment.connect(A)
    assert deployment.refused_status(A) == 429
    assert deployment.refused_status(B, ["X-Forwarded-For: 198.51.100.7"]) == 429
    assert deployment.refused_status(B, ["Forwarded: for=198.51.100.8"]) == 429
    # The node's log names the real client.
    time.sleep(0.2)
    log = deployment.node.output()
    assert f"sign-in refused for alice (local) from {A}" in log, log[-3000:]
    assert "from 127.0.0.1" not in log


def test_a_forged_header_sent_straight_to_the_node_is_ignored(tmp_path):
    """Only the proxy is trusted: from anyone else X-Forwarded-For means nothing."""
    with deploy(tmp_path, "nginx") as deployment:
        node_port = deployment.node.port
        opened = []
        try:
            for forged in ("198.51.100.1", "198.51.100.2"):
                response = rawhttp.handshake("127.0.0.1", node_port, source=A,
                                             headers=f"X-Forwarded-For: {forged}\r\n")
                assert response.status == 101, response
                opened.append(response.sock)
            refused = rawhttp.handshake("127.0.0.1", node_port, source=A,
                                        headers="X-Forwarded-For: 198.51.100.3\r\n")
            assert refused.status == 429, refused
        finally:
            for sock in opened:
                sock.close()
