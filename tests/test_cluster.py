"""Scale-out: real ``twistd`` nodes sharing one PostgreSQL and one Redis.

Every node is a separate process started with ``[cluster] redis_url``; the
clients are the Autobahn test clients of the other suites, each connected to
the node a test names. Nothing here is mocked: presence, routing, fences and
healing all go through the real Redis server the fixtures start.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet.threads import deferToThread

from tests.deferreds import inline, sleep
from tests.processes import TwistdServer
from tests.redis import RedisServer
from tests.timing import collector_paused
from tests.wsclient import Client, connect
from tests.wsclient import send_message as send

PRESENCE_TTL = 3.0


class Cluster:
    """Named nodes over one database and one Redis."""

    def __init__(
        self, root: Path, database_url: str, redis_url: str, cluster_extra: str = ""
    ) -> None:
        self.root = root
        self.database_url = database_url
        self.redis_url = redis_url
        # More [cluster] lines (the TLS files), for every node.
        self.cluster_extra = cluster_extra
        self.nodes: dict[str, TwistdServer] = {}
        self.clients: list[Client] = []

    def config(self, name: str) -> Path:
        path = self.root / f"{name}.ini"
        path.write_text(
            "[database]\n"
            f"url = {self.database_url}\n"
            "[auth]\nbcrypt_cost = 4\n"
            "[chat]\naccount_check_interval = 1\n"
            "[limits]\nmessage_rate = 1000\nmessage_burst = 1000\n"
            "signups_per_hour_per_address = 100000\nsignins_per_minute_per_address = 100000\n"
            "[cluster]\n"
            f"redis_url = {self.redis_url}\n"
            f"node_name = {name}\n"
            f"presence_ttl = {PRESENCE_TTL}\n"
            "fence_timeout = 2\n"
            f"{self.cluster_extra}"
        )
        return path

    def start(self, name: str) -> TwistdServer:
        previous = self.nodes.get(name)
        node = TwistdServer(
            self.root / name, "--config", str(self.config(name)),
            port=previous.port if previous else None,
        )
        self.nodes[name] = node.start()
        return node

    def url(self, name: str) -> str:
        return self.nodes[name].url

    async def client(self, node: str, username: str, password: str = "secret") -> Client:
        client = await connect(self.url(node))
        self.clients.append(client)
        reply = await client.register(username, password)
        assert reply["status"] == 200, reply
        return client

    def health(self, node: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.nodes[node].port}/health",
                                    timeout=5) as response:
            return json.loads(response.read())

    async def close(self) -> None:
        for client in self.clients:
            if client.protocol.state != client.protocol.STATE_CLOSED:
                client.drop()
        self.clients.clear()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


@contextmanager
def started(
    tmp_path: Path, postgres: Any, redis: RedisServer, *names: str
) -> Iterator[Cluster]:
    """Nodes *names* of one cluster on a fresh database and an emptied Redis;
    stopped afterwards, and none may have logged a traceback."""
    redis.command("FLUSHALL")
    group = Cluster(tmp_path, postgres.new_database(), redis.url)
    try:
        for name in names:
            group.start(name)
        yield group
    finally:
        group.stop()
        for name, node in group.nodes.items():
            assert "Traceback" not in node.output(), f"{name}:\n{node.output()}"


@pytest.fixture
def cluster(tmp_path: Path, postgres: Any, redis: RedisServer) -> Iterator[Cluster]:
    with started(tmp_path, postgres, redis, "n1", "n2", "n3") as group:
        yield group


@pytest.fixture
def two_nodes(tmp_path: Path, postgres: Any, redis: RedisServer) -> Iterator[Cluster]:
    """Two nodes: n1 and n2."""
    with started(tmp_path, postgres, redis, "n1", "n2") as group:
        yield group


@pytest.fixture
def cluster_with_own_redis(tmp_path: Path, postgres: Any) -> Iterator[tuple[Cluster, RedisServer]]:
    """Two nodes over a Redis server of their own, which the test may stop."""
    own_redis = RedisServer().start()
    group = Cluster(tmp_path, postgres.new_database(), own_redis.url)
    try:
        group.start("n1")
        group.start("n2")
        yield group, own_redis
    finally:
        group.stop()
        own_redis.stop()
        for name, node in group.nodes.items():
            assert "Traceback" not in node.output(), f"{name}:\n{node.output()}"


async def until(check: Any, timeout: float = 10.0, every: float = 0.1) -> Any:
    """Poll an async *check* until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await sleep(every)


async def online_seen_by(client: Client) -> list[str]:
    reply = await client.request({"type": "ClientListRequest"})
    return reply["clients"]


async def received(client: Client, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    return [await client.recv(timeout) for _ in range(count)]


async def wait_presence(cluster: Cluster, watcher: Client, *names: str) -> None:
    async def check() -> bool:
        return set(names) <= set(await online_seen_by(watcher))

    assert await until(check), f"{names} never showed as online"


# -- presence and routing ------------------------------------------------------

@inline
async def test_presence_and_client_list_span_every_node(cluster):
    alice = await cluster.client("n1", "alice")
    bob = await cluster.client("n2", "bob")
    carol = await cluster.client("n3", "carol")
    await wait_presence(cluster, alice, "bob", "carol")
    await wait_presence(cluster, bob, "alice", "carol")
    await wait_presence(cluster, carol, "alice", "bob")
    await bob.close()

    async def bob_gone() -> bool:
        return "bob" not in await online_seen_by(alice) and "bob" not in await online_seen_by(carol)

    assert await until(bob_gone, timeout=5), "a clean sign-off is seen at once, not after the TTL"
    health = cluster.health("n1")
    assert health["status"] == "ok"
    assert health["cluster"]["connected"] is True and health["cluster"]["node"] == "n1"
    assert set(health["cluster"]["nodes"]) >= {"n2", "n3"}
    await cluster.close()


@inline
async def test_direct_and_group_messages_arrive_once_in_order_across_nodes(cluster):
    alice = await cluster.client("n1", "alice")
    bob = await cluster.client("n2", "bob")
    carol = await cluster.client("n3", "carol")
    bob_phone = await cluster.client("n3", "bob")  # the same user on a third node
    await wait_presence(cluster, alice, "bob", "carol")
    # Pipelined direct messages, n1 -> n2 and n3.
    for number in range(40):
        alice.send({"type": "MessageRequest", "recipient": "bob", "content": f"dm {number}",
                    "msg_id": number})
    acks = await received(alice, 40)
    assert [a["msg_id"] for a in acks] == list(range(40))
    assert all(a["type"] == "MessageSendResponse" for a in acks)
    for device in (bob, bob_phone):
        frames = await received(device, 40)
        assert [f["content"] for f in frames] == [f"dm {n}" for n in range(40)]
        assert [f["id"] for f in frames] == [a["id"] for a in acks]
        assert all(f["sender"] == "alice" for f in frames)
        # bob's second device may have signed on before n1 heard of it: what
        # n1 sent until then is pushed to it from the database (marked
        # offline), the rest live; either way once and in order.
        if device is bob:
            assert not any(f.get("offline") for f in frames)
        await device.nothing(0.3)
    # A group with members on all three nodes, made on n2.
    reply = await bob.request({"type": "GroupMessageInitRequest", "chatname": "spread",
                               "recipients": ["alice", "carol"]})
    assert reply["status"] == 200, reply
    for member in (alice, carol, bob_phone):
        notice = await member.recv()
        assert notice["status"] == 201 and notice["chatname"] == "spread"
    # Each member sends from its own node; everyone else gets every message
    # exactly once and each sender's in order.
    for number in range(15):
        for sender in (alice, carol):
            sender.send({"type": "MessageRequest", "recipient": "spread",
                         "content": f"{number}", "msg_id": number})
    for sender in (alice, carol):
        acks = [f for f in await received(sender, 15 + 15) if f["type"] == "MessageSendResponse"]
        assert len(acks) == 15
    await sleep(0.5)
    for member, expect_from in ((bob, ("alice", "carol")), (bob_phone, ("alice", "carol"))):
        frames = []
        while True:
            try:
                frames.append(await member.recv(1.0))
            except Exception:
                break
        for sender in expect_from:
            mine = [int(f["content"]) for f in frames if f.get("sender") == sender]
            assert mine == list(range(15)), (sender, mine)
    # carol's node learnt the group from n2: carol may ask about it.
    members = await carol.request({"type": "GroupMembersRequest", "chatname": "spread"})
    assert {m["username"] for m in members["members"]} == {"alice", "bob", "carol"}
    assert all(m["online"] for m in members["members"])
    await cluster.close()


@inline
async def test_random_pairs_span_nodes(cluster):
    alice = await cluster.client("n1", "alice")
    bob = await cluster.client("n2", "bob")
    await wait_presence(cluster, alice, "bob")
    reply = await alice.request({"type": "RandomMessageRequest", "content": "hi stranger"})
    assert reply["status"] == 200 and reply["client"] == "bob", reply
    chatname = reply["chatname"]
    first = await bob.recv()
    assert first["content"] == "hi stranger" and first["chatname"] == chatname
    # bob's node knows the pair: he answers in it.
    ack = await send(bob, chatname, "hello back")
    assert ack["status"] == 200
    answer = await alice.recv()
    assert answer["content"] == "hello back" and answer["chatname"] == chatname
    # bob leaving the pair ends it for alice, on the other node.
    reply = await bob.request({"type": "GroupLeaveRequest", "chatname": chatname})
    assert reply["status"] == 200
    ended = await alice.recv()
    assert ended["type"] == "RandomChatEndedRecv" and ended["reason"] == "left", ended
    # Having left, bob is never paired with alice again, on any node.
    reply = await bob.request({"type": "RandomMessageRequest", "content": "again"})
    assert reply["status"] == 404, reply
    # A new pair ends when the partner disconnects.
    carol = await cluster.client("n3", "carol")
    await wait_presence(cluster, carol, "alice", "bob")
    reply = await carol.request({"type": "RandomMessageRequest", "content": "hi there"})
    assert reply["status"] == 200 and reply["client"] in ("alice", "bob"), reply
    partner = alice if reply["client"] == "alice" else bob
    await partner.recv()
    await partner.close()
    ended = await carol.recv()
    assert ended["type"] == "RandomChatEndedRecv" and ended["reason"] == "disconnected", ended
    await cluster.close()


@inline
async def test_contacts_and_their_presence_across_nodes(cluster):
    alice = await cluster.client("n1", "alice")
    bob = await cluster.client("n2", "bob")
    await wait_presence(cluster, alice, "bob")
    reply = await alice.request({"type": "ContactRequest", "username": "bob"})
    assert reply["status"] == 200, reply
    assert (await bob.recv())["type"] == "ContactRequestRecv"
    reply = await bob.request({"type": "ContactAccept", "username": "alice"})
    assert reply["online"] is True
    accepted = await alice.recv()
    assert accepted["type"] == "ContactAcceptRecv" and accepted["online"] is True
    await bob.close()
    gone = await alice.expect("PresenceRecv", username="bob")
    assert gone["online"] is False
    bob = await cluster.client("n3", "bob")
    back = await alice.expect("PresenceRecv", username="bob")
    assert back["online"] is True
    listing = await bob.request({"type": "ContactListRequest"})
    assert listing["contacts"] == [{"username": "alice", "online": True}]
    await cluster.close()


@inline
async def test_names_that_look_alike_are_refused_on_every_node(cluster):
    alice = await cluster.client("n1", "\uff21lice")  # full-width Ａ: signs in as alice
    bob = await cluster.client("n2", "bob")
    await wait_presence(cluster, alice, "bob")
    for node, name in (("n2", "\u0430lice"), ("n3", "\u0430l\u0456ce")):  # Cyrillic а, і
        client = await connect(cluster.url(node))
        cluster.clients.append(client)
        reply = await client.request({"type": "RegisterRequest", "username": name, "password": "pw"})
        assert reply["status"] == 409 and "'alice'" in reply["detail"], reply
    reply = await bob.request(
        {"type": "GroupMessageInitRequest", "recipients": ["alice"], "chatname": "b\u03bfb"})
    assert reply["status"] == 409 and "'bob'" in reply["detail"], reply
    await cluster.close()


@inline
async def test_offline_delivery_spans_origins_once(cluster):
    bob = await cluster.client("n2", "bob")
    await bob.close()
    alice = await cluster.client("n1", "alice")
    carol = await cluster.client("n3", "carol")
    ids = []
    for number in range(5):
        ids.append((await send(alice, "bob", f"a{number}"))["id"])
        ids.append((await send(carol, "bob", f"c{number}"))["id"])
    bob = await cluster.client("n2", "bob")
    pushed = await received(bob, 10)
    assert [f["id"] for f in pushed] == sorted(ids)
    assert all(f["offline"] for f in pushed)
    # Live from now on, from both other nodes, and nothing twice.
    await send(alice, "bob", "live a")
    await send(carol, "bob", "live c")
    live = await received(bob, 2)
    assert sorted(f["content"] for f in live) == ["live a", "live c"]
    assert not any(f.get("offline") for f in live)
    await bob.nothing(0.5)
    await bob.close()
    await sleep(0.3)
    # A later sign-on, on yet another node, replays nothing already had.
    bob = await cluster.client("n1", "bob")
    await bob.nothing(1.0)
    await send(carol, "bob", "after")
    assert (await bob.recv())["content"] == "after"
    await cluster.close()


# -- failures ------------------------------------------------------------------

@inline
async def test_a_killed_node_leaves_no_ghosts(cluster):
    alice = await cluster.client("n1", "alice")
    bob = await cluster.client("n2", "bob")
    await wait_presence(cluster, alice, "bob")
    await alice.request({"type": "ContactRequest", "username": "bob"})
    await bob.recv()
    await bob.request({"type": "ContactAccept", "username": "alice"})
    await alice.recv()
    killed_at = time.monotonic()
    assert cluster.nodes["n2"].stop(signal.SIGKILL) == -signal.SIGKILL
    gone = await alice.expect("PresenceRecv", timeout=PRESENCE_TTL * 3, username="bob")
    healed_in = time.monotonic() - killed_at
    assert gone["online"] is False
    assert healed_in < PRESENCE_TTL * 2 + 1, healed_in
    assert "bob" not in await online_seen_by(alice)
    # A message to bob is now kept for him, and reaches him on another node.
    ack = await send(alice, "bob", "while you were away")
    bob = await cluster.client("n3", "bob")
    assert (await alice.expect("PresenceRecv", username="bob"))["online"] is True
    pushed = await bob.recv()
    assert pushed["id"] == ack["id"] and pushed["offline"] is True
    # The restarted node rejoins under the same name.
    cluster.start("n2")
    dave = await cluster.client("n2", "dave")
    await wait_presence(cluster, alice, "bob", "dave")
    await send(dave, "alice", "from the new n2")
    assert (await alice.expect("MessageRecv"))["content"] == "from the new n2"
    await cluster.close()


@inline
async def test_redis_outage_keeps_nodes_serving_and_they_rejoin(cluster_with_own_redis):
    group, own_redis = cluster_with_own_redis
    alice = await group.client("n1", "alice")
    dave = await group.client("n1", "dave")
    bob = await group.client("n2", "bob")
    erin = await group.client("n2", "erin")
    await erin.close()
    await wait_presence(group, alice, "bob", "dave")
    own_redis.halt()
    await sleep(0.5)
    # Across nodes: a clear 503, nothing stored or half-delivered.
    refused = await alice.request({"type": "MessageRequest", "recipient": "bob",
                                   "content": "lost?"})
    assert refused["type"] == "ErrorResponse" and refused["status"] == 503, refused
    assert "another Chateau node" in refused["detail"]
    assert group.health("n1")["cluster"]["connected"] is False
    # Within a node: business as usual, sign-ins included.
    await send(alice, "dave", "still here")
    assert (await dave.recv())["content"] == "still here"
    frank = await group.client("n1", "frank")
    await send(frank, "dave", "new here")
    assert (await dave.recv())["content"] == "new here"
    # erin signs on at n2 meanwhile; n1 cannot know, and keeps alice's
    # message for her as for someone offline.
    erin = await group.client("n2", "erin")
    await sleep(1.0)  # her sign-on push is over: only the rejoin can bring it
    kept = await send(alice, "erin", "kept for you")
    await erin.nothing(0.3)
    own_redis.start()

    async def rejoined() -> bool:
        return group.health("n1")["cluster"]["connected"] and \
            group.health("n2")["cluster"]["connected"]

    assert await until(rejoined, timeout=15)
    # What erin missed arrives once the nodes are back in touch.
    pushed = await erin.recv(timeout=10)
    assert pushed["id"] == kept["id"] and pushed["offline"] is True
    await wait_presence(group, alice, "bob", "erin")
    ack = await send(alice, "bob", "are you there?")
    got = await bob.expect("MessageRecv")
    assert got["id"] == ack["id"]
    await erin.nothing(0.3)
    await group.close()


@inline
async def test_a_hung_redis_never_blocks_a_node(cluster_with_own_redis):
    """Redis stopped dead (SIGSTOP: connections open, no replies): the node
    keeps answering its own users at once, refuses cross-node sends with 503
    once its commands time out, and recovers when Redis resumes."""
    group, own_redis = cluster_with_own_redis
    alice = await group.client("n1", "alice")
    dave = await group.client("n1", "dave")
    bob = await group.client("n2", "bob")
    await wait_presence(group, alice, "bob", "dave")
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        slowest = 0.0
        with collector_paused():
            deadline = time.monotonic() + PRESENCE_TTL * 1.5
            while time.monotonic() < deadline:
                started = time.monotonic()
                reply = await alice.request({"type": "HeartbeatRequest", "payload": "x"})
                assert reply["type"] == "HeartbeatResponse"
                await send(alice, "dave", "local")
                assert (await dave.recv())["content"] == "local"
                slowest = max(slowest, time.monotonic() - started)
                await sleep(0.1)
        assert slowest < 0.25, f"a local round trip took {slowest:.3f} s"

        accepted: list[int] = []

        async def refused() -> bool:
            reply = await alice.request({"type": "MessageRequest", "recipient": "bob",
                                         "content": "hung?"})
            if reply["type"] == "MessageSendResponse":
                # Before the node noticed: committed, so it must still arrive.
                accepted.append(reply["id"])
                return False
            return reply["type"] == "ErrorResponse" and reply["status"] == 503

        assert await until(refused, timeout=PRESENCE_TTL * 2)
    finally:
        own_redis.process.send_signal(signal.SIGCONT)

    async def back() -> bool:
        return group.health("n1")["cluster"]["connected"]

    assert await until(back, timeout=15)
    ack = await send(alice, "bob", "resumed")
    wanted = {*accepted, ack["id"]}
    seen: list[int] = []
    while not wanted <= set(seen):
        frame = await bob.recv(timeout=10)
        assert frame["type"] == "MessageRecv", frame
        seen.append(frame["id"])
    await bob.nothing(0.5)
    # What was acknowledged while Redis hung arrived (live late, or pushed
    # once the nodes were back in touch), each exactly once; refused
    # sends were not stored.
    assert sorted(seen) == sorted(wanted), (seen, wanted)
    await group.close()


@inline
async def test_a_password_reset_closes_the_users_connections_on_every_node(cluster, tmp_path):
    """chateau-admin talks to the database only; every node closes its own
    connections of that user within a second, with 4001."""
    from tests.test_revocation import SIGNED_OUT, run_admin

    on_n1 = await cluster.client("n1", "alice", "old")
    on_n2 = await cluster.client("n2", "alice", "old")
    bob = await cluster.client("n3", "bob")
    config = cluster.config("admin")
    result = await deferToThread(run_admin, config, "user", "passwd", "alice", password="new")
    assert result.returncode == 0, result.stderr
    done = time.monotonic()
    assert await on_n2.closed(timeout=5) == SIGNED_OUT
    assert await on_n1.closed(timeout=5) == SIGNED_OUT
    assert time.monotonic() - done < 1.0
    assert (await bob.request({"type": "HeartbeatRequest"}))["status"] == 200
    result = await deferToThread(run_admin, config, "user", "disable", "bob")
    assert result.returncode == 0, result.stderr
    done = time.monotonic()
    assert await bob.closed(timeout=5) == SIGNED_OUT
    assert time.monotonic() - done < 1.0


@inline
async def test_a_ban_and_an_announcement_on_one_node_hold_on_every_node(cluster):
    """A server admin on n1 bans a user connected to n2 (closed there with
    4003) and announces to users on every node."""
    from tests.test_revocation import run_admin

    root = await cluster.client("n1", "root")
    result = await deferToThread(run_admin, cluster.config("admin"), "user", "admin", "root")
    assert result.returncode == 0, result.stderr
    eve = await cluster.client("n2", "eve")
    bob = await cluster.client("n2", "bob")
    carol = await cluster.client("n3", "carol")
    reply = await root.request({"type": "UserBanRequest", "username": "eve", "reason": "abuse"})
    assert reply["type"] == "UserBanResponse" and reply["until"] is None, reply
    done = time.monotonic()
    assert await eve.closed(timeout=5) == 4003
    assert eve.close_reason == "banned"
    assert time.monotonic() - done < 1.5
    again = await connect(cluster.url("n3"))
    cluster.clients.append(again)
    refused = await again.request({"type": "RegisterRequest", "username": "eve",
                                   "password": "secret"})
    assert refused["status"] == 403 and refused["detail"] == "banned until unbanned: abuse"

    root.send({"type": "AnnounceRequest", "content": "all nodes", "msg_id": 1})
    own = await root.expect("AnnouncementRecv", content="all nodes")
    await root.expect("AnnounceResponse", status=201, id=own["id"])
    for user in (bob, carol):
        await user.expect("AnnouncementRecv", id=own["id"], content="all nodes", by="root",
                          timeout=3)
    await bob.nothing(1.0)
