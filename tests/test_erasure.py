"""Export and erasure over real sockets, on SQLite and PostgreSQL.

``GET /api/me/export`` (a real HTTP client), AccountDeleteRequest, the
deleted-user marker in everyone else's history, catch-up, edits and
reports, the held name, and ``chateau-admin user export|erase``. The
streaming export's memory is measured on a ``twistd`` process, and the
erased user's connection on another cluster node is closed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from chateau.names import (
    DELETED_USER, canonical, check_chatname, check_new_chatname, check_new_username,
    check_username,
)
from chateau.store.engine import make_engine
from chateau.store.records import direct_chat, hash_session_key, now_millis
from chateau.store.tables import audit_log, direct_chats, messages, names
from tests.deferreds import inline
from tests.processes import TwistdServer, checkout_env, resident_kib
from tests.test_cluster import two_nodes  # noqa: F401  (a fixture)
from tests.test_durable import http_get, make_group
from tests.wsclient import Client


async def send(client: Client, recipient: str, content: str) -> dict[str, Any]:
    """Send a message; its acknowledgement (pushes before it are passed over)."""
    client.send({"type": "MessageRequest", "recipient": recipient, "content": content})
    while True:
        frame = await client.recv()
        if frame["type"] in ("MessageSendResponse", "ErrorResponse"):
            assert frame["type"] == "MessageSendResponse", frame
            return frame


async def ask(client: Client, message: dict[str, Any], timeout: float = 5.0) -> dict:
    """The reply to *message* (pushes before it are passed over)."""
    message = {"msg_id": "ask", **message}
    client.send(message)
    while True:
        frame = await client.recv(timeout)
        if frame.get("msg_id") == message["msg_id"]:
            return frame


async def expect(client: Client, type: str, timeout: float = 5.0, **fields: Any) -> dict:
    """The next frame of *type* with these fields (others are passed over)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await client.recv(max(0.1, deadline - time.monotonic()))
        if frame.get("type") == type and all(frame.get(k) == v for k, v in fields.items()):
            return frame

ACCOUNT_DELETED = 4005


def test_the_deleted_user_marker_is_no_name() -> None:
    """No username or chatname rule, old or new, accepts the marker."""
    for check in (check_username, check_new_username, check_chatname, check_new_chatname):
        assert check(DELETED_USER) is None, check
    assert canonical(DELETED_USER) == DELETED_USER
    assert direct_chat(DELETED_USER, "bob") == f"@{DELETED_USER}:bob"


class _Consumer:
    """Takes what a producer writes; the test pauses and resumes it as a transport would."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None
        self.registered = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer, self.registered = producer, True

    def unregisterProducer(self) -> None:
        self.registered = False

    def write(self, data: bytes) -> None:
        self.written.append(data)


def test_the_export_producer_reads_no_page_while_paused() -> None:
    """One page is read at a time, and none while the consumer is paused."""
    from twisted.internet.defer import Deferred

    from chateau.export import ExportProducer, export_chunks
    from chateau.store.erasure import ExportHead
    from chateau.store.records import MessageRecord

    head = ExportHead({"username": "alice"}, {}, [], [], [])
    records = [MessageRecord(n, "team", None, "alice", f"m{n}", "t", False, False)
               for n in range(1, 8)]
    asked: list[tuple[int, Deferred]] = []

    def read_page(after: int, limit: int) -> Deferred:
        page: Deferred = Deferred()
        asked.append((after, page))
        return page

    consumer = _Consumer()
    producer = ExportProducer(consumer, export_chunks(head, "now", page_size=3), read_page)
    done = producer.start()
    assert consumer.registered and len(asked) == 1 and asked[0][0] == 0
    producer.pauseProducing()
    asked[0][1].callback(records[0:3])
    # Paused: the page is not written, and no further page is asked for.
    assert len(asked) == 1 and len(consumer.written) == 1
    producer.resumeProducing()
    assert len(asked) == 2 and asked[1][0] == 3
    asked[1][1].callback(records[3:6])
    asked[2][1].callback(records[6:7])
    results: list[Any] = []
    done.addCallback(results.append)
    assert results == [True] and not consumer.registered
    document = json.loads(b"".join(consumer.written))
    assert [m["id"] for m in document["messages"]] == list(range(1, 8))
    # A consumer that stops (the client went away) stops the export.
    consumer = _Consumer()
    asked.clear()
    producer = ExportProducer(consumer, export_chunks(head, "now", page_size=3), read_page)
    done = producer.start()
    producer.stopProducing()
    asked[0][1].callback(records[0:3])
    results.clear()
    done.addCallback(results.append)
    assert results == [False] and len(asked) == 1


async def export(url: str, key: str | None) -> tuple[int, dict]:
    return await http_get(url + "api/me/export", key)


async def audit_rows(service: Any, action: str) -> list:
    return [e for e in await service.store.audit.entries(limit=50) if e.action == action]


# -- export ------------------------------------------------------------------------

@inline
async def test_export_holds_everything_about_the_user(server):
    alice = await server.client()
    key = (await alice.register("alice"))["session_key"]
    bob = await server.client("bob")
    carol = await server.client("carol")
    await make_group(alice, "team", "bob")
    await bob.expect("GroupMessageInitResponse")
    sent = [(await send(alice, "team", f"group {n}"))["id"] for n in range(3)]
    bobs_in_group = (await send(bob, "team", "not alice's"))["id"]
    to_bob = (await send(alice, "bob", "hi bob"))["id"]
    from_bob = (await send(bob, "alice", "hi alice"))["id"]
    carol_to_bob = (await send(carol, "bob", "not for alice"))["id"]
    assert (await ask(alice, {"type": "ContactRequest", "username": "bob"}))["status"] == 200
    await bob.frames_until_heartbeat()
    assert (await ask(bob, {"type": "ContactAccept", "username": "alice"}))["status"] == 200
    await alice.frames_until_heartbeat()
    assert (await ask(alice, {"type": "BlockRequest", "username": "carol"}))["status"] == 200
    reply = await ask(alice, {"type": "SettingsRequest", "presence": "contacts"})
    assert reply["status"] == 200
    await alice.frames_until_heartbeat()

    code, document = await export(server.http_url, key)
    assert code == 200, document
    assert document["format"] == "chateau-export-1"
    assert document["account"]["username"] == "alice"
    assert document["account"]["auth_method"] == "local"
    assert document["account"]["is_admin"] is False
    assert document["settings"]["presence"] == "contacts"
    assert [c["username"] for c in document["contacts"]] == ["bob"]
    assert document["contacts"][0]["status"] == "accepted"
    assert [b["username"] for b in document["blocks"]] == ["carol"]
    assert [(g["chatname"], g["role"]) for g in document["groups"]] == [("team", "owner")]
    ids = [m["id"] for m in document["messages"]]
    assert ids == sorted(sent + [to_bob, from_bob]), document["messages"]
    assert bobs_in_group not in ids and carol_to_bob not in ids
    by_id = {m["id"]: m for m in document["messages"]}
    assert by_id[to_bob]["user"] == "bob" and by_id[to_bob]["sender"] == "alice"
    assert by_id[from_bob]["user"] == "bob" and by_id[from_bob]["content"] == "hi alice"
    assert by_id[sent[0]]["chatname"] == "team" and by_id[sent[0]]["content"] == "group 0"
    assert "password_hash" not in json.dumps(document)
    (entry,) = await audit_rows(server.service, "export")
    assert (entry.actor, entry.target, entry.address) == ("alice", "alice", "127.0.0.1")


@inline
async def test_export_needs_a_live_session_key(server):
    alice = await server.client()
    key = (await alice.register("alice"))["session_key"]
    for given in (None, "not-a-key", "", "x" * 5000):
        code, body = await export(server.http_url, given)
        assert code == 401 and body["status"] == 401, (given, code, body)
    assert (await export(server.http_url, key))[0] == 200
    assert (await ask(alice, {"type": "LogoutRequest"}))["status"] == 200
    code, body = await export(server.http_url, key)
    assert code == 401 and "session key" in body["detail"]
    # An expired key is no key either.
    store = server.service.store
    await store.sessions.create_session("alice", hash_session_key("expired"), -1)
    assert (await export(server.http_url, "expired"))[0] == 401


def _insert_history(database_url: str, count: int, size: int) -> None:
    """*count* messages between alice and bob (alice writes every other one)."""
    engine = make_engine(database_url)
    chat = direct_chat("alice", "bob")
    now = now_millis()
    try:
        with engine.begin() as connection:
            for start in range(0, count, 5000):
                connection.execute(insert(messages), [
                    {"chat": chat, "recipient": "bob" if n % 2 else "alice",
                     "sender": "alice" if n % 2 else "bob",
                     "content": f"{n:06d} " + "x" * size, "created_at": now,
                     "edited": False, "deleted": False, "origin": None, "event": None}
                    for n in range(start, min(count, start + 5000))
                ])
            present = connection.execute(
                select(direct_chats.c.username).where(direct_chats.c.chat == chat)
            ).scalars().all()
            connection.execute(insert(direct_chats), [
                {"username": name, "chat": chat} for name in ("alice", "bob")
                if name not in present
            ])
    finally:
        engine.dispose()


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


def test_a_large_export_is_streamed(tmp_path, database_url):
    """50,000 messages: the server's memory grows by far less than the document,
    even while the client stops reading (the producer is paused), and the
    document parses with every message."""
    from tests.processes import Peer

    count, size = 50_000, 300
    config = tmp_path / "chateau.ini"
    config.write_text(f"[database]\nurl = {database_url}\n[auth]\nbcrypt_cost = 4\n")
    with TwistdServer(tmp_path / "node", "--config", str(config)) as node:
        alice = Peer(node.url)
        key = alice.sign_in("alice")["session_key"]
        bob = Peer(node.url)
        bob.sign_in("bob")
        bob.close()
        _insert_history(database_url, count, size)
        pid = node.process.pid
        # Warm the server's export path up with a small export (bob's own).
        before = resident_kib(pid)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect(("127.0.0.1", node.port))
        http = HTTPConnection("127.0.0.1", node.port, timeout=60)
        http.sock = sock
        http.request("GET", "/api/me/export", headers={"Authorization": f"Bearer {key}"})
        response = http.getresponse()
        assert response.status == 200
        first = response.read(65536)
        # The client stops reading: the server must stop reading pages too.
        time.sleep(3)
        stalled = resident_kib(pid) - before
        body = first + response.read()
        http.close()
        after_peak = _status_kib(pid, "VmHWM")
        grown = resident_kib(pid) - before
        alice.close()
    document = json.loads(body)
    assert len(document["messages"]) == count
    contents = [m["content"][:6] for m in document["messages"]]
    assert contents == [f"{n:06d}" for n in range(count)]
    size_kib = len(body) // 1024
    print(f"\nexport of {count} messages: document {size_kib} KiB; server RSS grew "
          f"{stalled} KiB while the client waited, {grown} KiB after (peak {after_peak} KiB)")
    # Loose bounds: the whole document (or the records of a whole history)
    # in memory would be several times these.
    assert stalled < size_kib / 2, (stalled, size_kib)
    assert grown < size_kib, (grown, size_kib)


# -- erasure -----------------------------------------------------------------------

async def _history(client, **where: Any) -> list[dict]:
    reply = await ask(client, {"type": "HistoryRequest", "limit": 100, **where})
    assert reply["type"] == "HistoryResponse", reply
    return list(reversed(reply["messages"]))


async def _erase_setup(running):
    """alice (two connections) owns team with bob and dave (offline); they
    write to each other; bob reports one of alice's messages."""
    alice = await running.client("alice", "pw-alice")
    alice_too = await running.client("alice", "pw-alice")
    bob = await running.client("bob")
    dave = await running.client("dave")
    carol = await running.client("carol")
    await make_group(alice, "team", "bob", "dave")
    await bob.expect("GroupMessageInitResponse")
    await dave.expect("GroupMessageInitResponse")
    await dave.close()
    said = {
        "group": (await send(alice, "team", "alice in team"))["id"],
        "bob_group": (await send(bob, "team", "bob in team"))["id"],
        "to_bob": (await send(alice, "bob", "alice to bob"))["id"],
        "from_bob": (await send(bob, "alice", "bob to alice"))["id"],
    }
    reply = await ask(bob, {"type": "ReportRequest", "reason": "rude",
                               "message_id": said["group"]})
    assert reply["type"] == "ReportResponse", reply
    said["report"] = reply["report_id"]
    assert (await ask(alice, {"type": "ContactRequest", "username": "carol"}))["status"] == 200
    assert (await ask(alice, {"type": "BlockRequest", "username": "carol"}))["status"] == 200
    await bob.frames_until_heartbeat()
    await alice_too.frames_until_heartbeat()
    return alice, alice_too, bob, carol, said


@inline
async def test_account_delete_refusals(server):
    alice = await server.client("alice", "right")
    reply = await ask(alice, {"type": "AccountDeleteRequest", "password": "wrong"})
    assert reply["type"] == "ErrorResponse" and reply["status"] == 401, reply
    reply = await ask(alice, {"type": "AccountDeleteRequest"})
    assert reply["status"] == 400, reply
    reply = await ask(alice, {"type": "AccountDeleteRequest", "password": 5})
    assert reply["status"] == 400, reply
    stranger = await server.client()
    reply = await ask(stranger, {"type": "AccountDeleteRequest", "password": "right"})
    assert reply["status"] == 301, reply
    # A directory account is told to ask the operator.
    store = server.service.store
    await store.accounts.create_user("dora", None, "ldap")
    await store.sessions.create_session("dora", hash_session_key("dora-key"), 3600)
    dora = await server.client()
    assert (await ask(dora, {"type": "ResumeRequest", "session_key": "dora-key"}))["status"] == 200
    reply = await ask(dora, {"type": "AccountDeleteRequest", "password": "anything"})
    assert reply["status"] == 400 and "server administrator" in reply["detail"], reply
    assert (await ask(alice, {"type": "HeartbeatRequest"}))["status"] == 200
    assert await store.accounts.user_exists("alice") and await store.accounts.user_exists("dora")


@inline
async def test_wrong_passwords_are_throttled(server):
    alice = await server.client("alice", "right")
    statuses = []
    for _ in range(12):
        reply = await ask(alice, {"type": "AccountDeleteRequest", "password": "wrong"})
        statuses.append(reply["status"])
    assert statuses[0] == 401 and 429 in statuses, statuses
    assert await server.service.store.accounts.user_exists("alice")


@inline
async def test_account_delete_erases_and_others_keep_their_history(server):
    running = server
    alice, alice_too, bob, carol, said = await _erase_setup(running)
    reply = await ask(alice, {"type": "AccountDeleteRequest", "password": "pw-alice",
                                 "msg_id": 7})
    assert reply == {"type": "AccountDeleteResponse", "status": 200, "msg_id": 7}
    assert await alice.closed() == ACCOUNT_DELETED
    assert await alice_too.closed() == ACCOUNT_DELETED
    await expect(bob, "GroupEventRecv", chatname="team", event="left", user=DELETED_USER)

    # The group works on, with bob as its owner.
    info = await ask(bob, {"type": "GroupInfoRequest", "chatname": "team"})
    assert {m["username"]: m["role"] for m in info["members"]} == {"bob": "owner",
                                                                   "dave": "member"}
    assert (await send(bob, "team", "still here"))["status"] in (200, 201)
    group = await _history(bob, chatname="team")
    erased = next(m for m in group if m["id"] == said["group"])
    assert erased["sender"] == DELETED_USER and erased["content"] is None and erased["deleted"]
    assert any(m["content"] == "bob in team" for m in group)
    assert all(m.get("event", {}).get("by") != "alice" for m in group)
    assert not any("alice" in (m["content"] or "") for m in group), group

    # bob's direct conversation is under the marker, his own words intact.
    direct = await _history(bob, user=DELETED_USER)
    assert [m["id"] for m in direct] == [said["to_bob"], said["from_bob"]]
    assert direct[0]["sender"] == DELETED_USER and direct[0]["content"] is None
    assert direct[1]["sender"] == "bob" and direct[1]["content"] == "bob to alice"
    reply = await ask(bob, {"type": "HistoryRequest", "user": "alice", "limit": 10})
    assert reply["status"] == 404, reply
    reply = await ask(bob, {"type": "MessageEditRequest", "id": said["from_bob"],
                               "content": "edited"})
    assert reply["status"] == 200, reply

    # The offline member catches up without the erased words.
    dave = await running.client()
    await dave.register("dave")
    frames = await dave.frames_until_heartbeat()
    assert not any(f.get("sender") == "alice" for f in frames), frames
    assert not any("alice in team" == f.get("content") for f in frames)

    # Reports naming the erased message still resolve.
    store = running.service.store
    await store.accounts.set_admin("carol", True)
    listing = await ask(carol, {"type": "ReportListRequest"})
    assert [r["report_id"] for r in listing["reports"]] == [said["report"]], listing
    reply = await ask(carol, {"type": "ReportResolveRequest", "report_id": said["report"],
                                 "action": "delete_message", "note": ""})
    assert reply["status"] == 200, reply

    # The name is held: nobody registers it, nor signs in with the old key.
    again = await running.client()
    reply = await ask(again, {"type": "RegisterRequest", "username": "alice",
                                 "password": "pw-alice"})
    assert reply["status"] == 301 and "reserved until" in reply["detail"], reply
    assert not await store.accounts.user_exists("alice")
    (entry,) = await audit_rows(running.service, "erase")
    assert (entry.actor, entry.target) == ("alice", "alice")
    assert entry.detail["mode"] == "erase" and entry.detail["messages"] == 2
    assert "alice in team" not in json.dumps(entry.detail)
    # carol's contact request and alice's block are gone with the account.
    assert (await ask(carol, {"type": "ContactListRequest"}))["pending"] == []


@inline
async def test_anonymised_erasure_keeps_the_words(server_factory, config_factory):
    running = await server_factory(config_factory(chat={"erase_messages": "anonymise"}))
    alice, alice_too, bob, carol, said = await _erase_setup(running)
    reply = await ask(alice, {"type": "AccountDeleteRequest", "password": "pw-alice"})
    assert reply["status"] == 200
    assert await alice.closed() == ACCOUNT_DELETED
    group = await _history(bob, chatname="team")
    kept = next(m for m in group if m["id"] == said["group"])
    assert kept["sender"] == DELETED_USER and kept["content"] == "alice in team"
    direct = await _history(bob, user=DELETED_USER)
    assert [(m["sender"], m["content"]) for m in direct] == [
        (DELETED_USER, "alice to bob"), ("bob", "bob to alice")]
    dave = await running.client()
    await dave.register("dave")
    frames = await dave.frames_until_heartbeat()
    pushed = [f for f in frames if f.get("content") == "alice in team"]
    assert pushed and pushed[0]["sender"] == DELETED_USER, frames
    store = running.service.store
    await store.accounts.set_admin("carol", True)
    reply = await ask(carol, {"type": "ReportResolveRequest", "report_id": said["report"],
                                 "action": "delete_message", "note": ""})
    assert reply["status"] == 200, reply
    (entry,) = await audit_rows(running.service, "erase")
    assert entry.detail["mode"] == "anonymise"


# -- chateau-admin user export | erase -------------------------------------------

def run_admin(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chateau.admin", "--config", str(config), *args],
        capture_output=True, text=True, timeout=60, env=checkout_env(), stdin=subprocess.DEVNULL,
    )


@inline
async def test_admin_export_and_erase(tmp_path, database_url, server_factory, config_factory):
    from twisted.internet.threads import deferToThread

    running = await server_factory(config_factory(chat={"revocation_check_interval": "0.1"}))
    alice = await running.client()
    key = (await alice.register("alice"))["session_key"]
    bob = await running.client("bob")
    await make_group(alice, "team", "bob")
    await bob.expect("GroupMessageInitResponse")
    await send(alice, "team", "hello team")
    await send(alice, "bob", "hello bob")
    config = tmp_path / "admin.ini"
    config.write_text(f"[database]\nurl = {database_url}\n[ldap]\nrename_hold_days = 30\n")

    result = await deferToThread(run_admin, config, "user", "export", "Alice")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    code, served = await export(running.http_url, key)
    assert code == 200
    for part in ("account", "settings", "contacts", "blocks", "groups", "messages"):
        assert document[part] == served[part], part
    assert [m["content"] for m in document["messages"]] == ["hello team", "hello bob"]
    assert (await deferToThread(run_admin, config, "user", "export", "ghost")).returncode == 1

    refused = await deferToThread(run_admin, config, "user", "erase", "alice")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    result = await deferToThread(run_admin, config, "user", "erase", "alice", "--yes")
    assert result.returncode == 0, result.stderr
    assert "erased 'alice'" in result.stdout and "close code 4005" in result.stdout
    assert await alice.closed() == ACCOUNT_DELETED
    await expect(bob, "GroupEventRecv", chatname="team", event="left", user=DELETED_USER)
    info = await ask(bob, {"type": "GroupInfoRequest", "chatname": "team"})
    assert [(m["username"], m["role"]) for m in info["members"]] == [("bob", "owner")]
    audit = [e for e in await running.service.store.audit.entries(limit=20)]
    actions = [(e.action, e.actor.startswith("cli:"), e.target) for e in audit]
    assert actions[0] == ("erase", True, "alice")
    assert ("export", True, "alice") in actions and ("export", False, "alice") in actions
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            held = connection.execute(
                select(names.c.kind, names.c.held_until).where(names.c.name == "alice")
            ).one()
            rows = connection.execute(select(audit_log.c.detail)).scalars().all()
    finally:
        engine.dispose()
    assert held.kind == "held"
    assert abs(held.held_until - now_millis() - 30 * 86_400_000) < 600_000
    assert not any("hello" in row for row in rows)
    assert (await deferToThread(run_admin, config, "user", "erase", "alice", "--yes")
            ).returncode == 1


# -- a cluster -----------------------------------------------------------------------



@inline
async def test_an_erased_account_is_closed_on_every_node(two_nodes):
    cluster = two_nodes
    alice = await cluster.client("n1", "alice", "pw")
    alice_elsewhere = await cluster.client("n2", "alice", "pw")
    bob = await cluster.client("n2", "bob")
    await make_group(alice, "team", "bob")
    await bob.expect("GroupMessageInitResponse")
    reply = await ask(alice, {"type": "AccountDeleteRequest", "password": "pw"})
    assert reply["status"] == 200, reply
    started = time.monotonic()
    assert await alice_elsewhere.closed(timeout=10) == ACCOUNT_DELETED
    assert time.monotonic() - started < 5
    await expect(bob, "GroupEventRecv", chatname="team", event="left", user=DELETED_USER,
                 timeout=10)
    info = await ask(bob, {"type": "GroupInfoRequest", "chatname": "team"})
    assert [(m["username"], m["role"]) for m in info["members"]] == [("bob", "owner")]
    assert (await send(bob, "team", "on my own"))["status"] in (200, 201)
    await cluster.close()
