"""The cluster link as a trust boundary: a password, TLS, and what Redis says treated as data.

Real ``twistd`` nodes and real ``redis-server`` instances of the tests' own
(tests/redis.py): one that wants an ACL user's password over TLS only, and
the plain one into whose channels the tests publish garbage.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.deferreds import inline, sleep
from tests.processes import TwistdServer, free_port
from tests.redis import RedisServer
from tests.slapd import make_ca
from tests.test_cluster import PRESENCE_TTL, Cluster, until, wait_presence
from tests.wsclient import send_message as send

PASSWORD = "Redis-pa55 w0rd/with:odd@chars"


def fetch(node: TwistdServer, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}{path}", timeout=5) as response:
        return response.read().decode()


def rejected(node: TwistdServer) -> dict[str, float]:
    """chateau_cluster_events_rejected_total by reason, from /metrics."""
    counts = {}
    for line in fetch(node, "/metrics").splitlines():
        if line.startswith("chateau_cluster_events_rejected_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            counts[reason] = float(line.rsplit(" ", 1)[1])
    return counts


def start_failing(cluster: Cluster, name: str) -> str:
    """Start a node that must stop by itself, with a failing status; its output."""
    node = TwistdServer(cluster.root / name, "--config", str(cluster.config(name)))
    # Status 1, so that a service manager sees that start-up failed.
    with pytest.raises(RuntimeError, match="twistd exited early with status 1:"):
        node.start(timeout=30)
    return node.output()


@pytest.fixture
def secure_redis() -> Iterator[RedisServer]:
    server = RedisServer(password=PASSWORD, username="chateau", tls=True).start()
    try:
        yield server
    finally:
        server.stop()


@inline
async def test_nodes_join_through_a_password_protected_tls_redis(
    tmp_path: Path, postgres: Any, secure_redis: RedisServer
):
    group = Cluster(tmp_path, postgres.new_database(), secure_redis.url,
                    f"redis_ca_file = {secure_redis.ca_file}\n")
    try:
        group.start("n1")
        group.start("n2")
        alice = await group.client("n1", "alice")
        bob = await group.client("n2", "bob")
        await wait_presence(group, alice, "bob")
        ack = await send(alice, "bob", "over TLS")
        got = await bob.expect("MessageRecv", sender="alice")
        assert got["id"] == ack["id"] and got["content"] == "over TLS"
        await group.close()
        for node in group.nodes.values():
            health, metrics = fetch(node, "/health"), fetch(node, "/metrics")
            assert json.loads(health)["cluster"]["connected"] is True
            assert "chateau_cluster_connected 1.0" in metrics
            for text in (health, metrics):
                assert "pa55" not in text
    finally:
        group.stop()
    for node in group.nodes.values():
        output = node.output()
        assert f"rediss://chateau@127.0.0.1:{secure_redis.port}/0" in output
        assert "pa55" not in output and "Traceback" not in output
        # The ACL user's commands (docs/cluster.md) are all a node needs.
        assert "NOPERM" not in output and "could not say goodbye" not in output
        assert "heartbeat failed" not in output


def test_a_wrong_password_stops_the_node_at_start_up(
    tmp_path: Path, postgres: Any, secure_redis: RedisServer
):
    wrong = "not-the-Pa55word"
    group = Cluster(tmp_path, postgres.new_database(), secure_redis.url_with(wrong),
                    f"redis_ca_file = {secure_redis.ca_file}\n")
    output = start_failing(group, "n1")
    assert "refused this node" in output and "WRONGPASS" in output, output
    assert "Chateau could not start" in output
    assert wrong not in output and "Pa55" not in output
    assert "Traceback" not in output


def test_an_untrusted_certificate_stops_the_node_at_start_up(
    tmp_path: Path, postgres: Any, secure_redis: RedisServer
):
    other_ca = make_ca(tmp_path, "other")
    group = Cluster(tmp_path, postgres.new_database(), secure_redis.url,
                    f"redis_ca_file = {other_ca}\n")
    output = start_failing(group, "n1")
    assert "refused this node: TLS" in output and "certificate verify failed" in output, output
    assert "pa55" not in output and "Traceback" not in output
    # Redis never saw the password: it was never sent.
    assert "WRONGPASS" not in output


def test_a_certificate_for_another_host_stops_the_node_at_start_up(
    tmp_path: Path, postgres: Any
):
    with RedisServer(password=PASSWORD, tls=True, tls_names="DNS:redis.example") as redis:
        group = Cluster(tmp_path, postgres.new_database(), redis.url,
                        f"redis_ca_file = {redis.ca_file}\n")
        output = start_failing(group, "n1")
    assert "refused this node: TLS: the certificate does not name this host" in output, output
    assert "pa55" not in output and "Traceback" not in output


@inline
async def test_a_redis_that_checks_client_certificates(tmp_path: Path, postgres: Any):
    with RedisServer(password=PASSWORD, tls=True, client_certificates=True) as redis:
        database = postgres.new_database()
        (tmp_path / "with").mkdir()
        (tmp_path / "without").mkdir()
        group = Cluster(tmp_path / "with", database, redis.url,
                        f"redis_ca_file = {redis.ca_file}\n"
                        f"redis_cert_file = {redis.client_cert_file}\n"
                        f"redis_key_file = {redis.client_key_file}\n")
        try:
            group.start("n1")
            assert await until(lambda: _connected(group, "n1"))
        finally:
            group.stop()
        # Without this node's certificate, Redis ends the handshake.
        bare = Cluster(tmp_path / "without", database, redis.url,
                       f"redis_ca_file = {redis.ca_file}\n")
        output = start_failing(bare, "n2")
    assert "refused this node: TLS" in output, output
    assert "pa55" not in output and "Traceback" not in output


async def _connected(group: Cluster, name: str) -> bool:
    return group.health(name)["cluster"]["connected"]


@inline
async def test_an_unreachable_redis_at_start_up_leaves_the_node_serving(
    tmp_path: Path, postgres: Any
):
    group = Cluster(tmp_path, postgres.new_database(),
                    f"redis://:{PASSWORD.replace(' ', '%20').replace('/', '%2F')}"
                    f"@127.0.0.1:{free_port()}/0")
    try:
        group.start("n1")
        alice = await group.client("n1", "alice")
        dave = await group.client("n1", "dave")
        await send(alice, "dave", "alone")
        assert (await dave.expect("MessageRecv"))["content"] == "alone"
        assert group.health("n1")["cluster"]["connected"] is False
        await group.close()
    finally:
        group.stop()
    output = group.nodes["n1"].output()
    assert "is out of reach" in output and "serving this node's users only" in output
    assert "pa55" not in output and "Traceback" not in output


@inline
async def test_a_hung_redis_at_start_up_delays_the_node_by_presence_ttl_at_most(
    tmp_path: Path, postgres: Any
):
    """Redis stopped dead (SIGSTOP): no answer is not a refusal; the node starts alone."""
    with RedisServer(password=PASSWORD) as redis:
        redis.process.send_signal(signal.SIGSTOP)
        try:
            group = Cluster(tmp_path, postgres.new_database(), redis.url)
            started = time.monotonic()
            group.start("n1")
            assert time.monotonic() - started < PRESENCE_TTL + 5
            alice = await group.client("n1", "alice")
            assert group.health("n1")["cluster"]["connected"] is False
        finally:
            redis.process.send_signal(signal.SIGCONT)
        try:
            assert await until(lambda: _connected(group, "n1"), timeout=15)
            await group.close()
        finally:
            group.stop()
    output = group.nodes["n1"].output()
    assert "no answer from Redis at redis://127.0.0.1" in output, output
    assert "joined the cluster as n1" in output
    assert "refused" not in output and "pa55" not in output and "Traceback" not in output
    del alice


# -- what comes from Redis is data ---------------------------------------------

GARBAGE: list[bytes] = [
    b"not json at all",
    b"\xff\xfe\x00 not utf-8",
    b"[1, 2, 3]",
    b'"a string"',
    b"{}",
    b'{"t": "nonsense", "node": "n9"}',
    b'{"t": 42, "node": "n9"}',
    b'{"t": "join", "node": "n9"}',
    b'{"t": "join", "node": "n9", "user": 17}',
    b'{"t": "join", "node": "n9", "user": "' + b"x" * 500 + b'"}',
    b'{"t": "join", "node": "bad node name!", "user": "mallory"}',
    b'{"t": "hello", "node": "n9", "users": "mallory"}',
    b'{"t": "hello", "node": "n9", "users": [1, 2]}',
    b'{"t": "pair", "node": "n9", "chatname": "~x", "members": ["a"]}',
    b'{"t": "group", "node": "n9", "chatname": "g", "creator": "a", "members": null}',
    b'{"t": "contacts", "node": "n9", "first": "a", "second": "b", "linked": "yes"}',
    b'{"t": "fence", "node": "n9", "token": "abc", "last": "12"}',
    b'{"t": "fence", "node": "n9", "token": "abc", "last": true}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"t": "join", "node": "n9", "user": "' + b"a" * (5 * 1024 * 1024) + b'"}',
    b"M",
    b"Mno newline",
    b'M{"o": "n1", "u": ["bob"], "i": 1}\nnot json',
    b'M{"o": "n1", "u": "bob", "i": 1}\n{"type": "MessageRecv"}',
    b'M{"o": "n1", "u": [], "i": 1}\n{"type": "MessageRecv"}',
    b'M{"o": "n1", "u": ["bob"], "i": "1"}\n{"type": "MessageRecv"}',
    b'M{"o": "n1", "u": ["bob"], "i": 1}\n' + b'{"x": "' + b"y" * (300 * 1024) + b'"}',
    b'M{"o": "n1", "u": ["bob"], "i": 1}\n\xff\xff',
]


@inline
async def test_garbage_published_to_redis_is_dropped_and_counted(tmp_path: Path, postgres: Any):
    own_redis = RedisServer().start()
    group = Cluster(tmp_path, postgres.new_database(), own_redis.url)
    try:
        group.start("n1")
        group.start("n2")
        alice = await group.client("n1", "alice")
        bob = await group.client("n2", "bob")
        await wait_presence(group, alice, "bob")
        before = sum(rejected(group.nodes["n2"]).values())
        for channel in ("chateau:0:events", "chateau:0:node:n2"):
            for junk in GARBAGE:
                own_redis.command("PUBLISH", channel, junk)
        # Junk in the sets the heartbeat reads, too.
        own_redis.command("SADD", "chateau:nodes", b"\xff\xfe", "bad node!")
        own_redis.command("SADD", "chateau:node:n1:users", b"\xff", "y" * 300)

        async def counted() -> bool:
            return sum(rejected(group.nodes["n2"]).values()) - before >= 2 * len(GARBAGE)

        assert await until(counted, timeout=10), rejected(group.nodes["n2"])
        counts = rejected(group.nodes["n2"])
        assert {"json", "encoding", "shape", "kind", "field", "size"} <= {
            reason for reason, count in counts.items() if count
        }, counts
        # Nobody heard of the junk, and the nodes keep working both ways.
        await bob.nothing(0.3)
        ack = await send(alice, "bob", "still works")
        assert (await bob.expect("MessageRecv"))["id"] == ack["id"]
        ack = await send(bob, "alice", "and back")
        assert (await alice.expect("MessageRecv"))["id"] == ack["id"]
        await sleep(1.5)  # a heartbeat over the junk in the sets
        assert group.health("n2")["cluster"]["connected"] is True
        online = (await alice.request({"type": "ClientListRequest"}))["clients"]
        assert "bob" in online and "mallory" not in online and "y" * 300 not in online
        await group.close()
    finally:
        group.stop()
        own_redis.stop()
    output = group.nodes["n2"].output()
    assert "dropped a malformed cluster message on chateau:0:events: json" in output
    assert "(kind join, field user," in output
    assert "Traceback" not in output
    # The log names fields; it never dumps what came in.
    assert "y" * 100 not in output and "a" * 100 not in output
