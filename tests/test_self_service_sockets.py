"""Sessions, password and profile over real sockets: SQLite and PostgreSQL,
two clustered nodes, and a real directory (slapd).

The rules in detail are in tests/test_self_service.py (in-process); here the
wire: two devices of one user, real close codes, /api/users, the audit rows
a real server writes, and a revocation on one node closing a connection on
another.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests import slapd as openldap
from tests.deferreds import inline
from tests.redis import RedisServer
from tests.test_cluster import Cluster
from tests.test_durable import http_get
from tests.test_governance_membership_sockets import ask
from tests.wsclient import Client

SIGNED_OUT = 4001

# The session-scoped fixture: a real OpenLDAP slapd.
slapd = openldap.slapd


async def register(running: Any, username: str, password: str = "secret",
                   **extra: Any) -> tuple[Client, dict[str, Any]]:
    client = await running.client()
    reply = await client.request({"type": "RegisterRequest", "username": username,
                                  "password": password, **extra})
    assert reply["type"] == "RegisterResponse", reply
    return client, reply


async def audit_text(running: Any) -> tuple[list[Any], str]:
    """Every audit row, oldest first, and all of their text in one string."""
    entries = list(reversed(await running.service.store.audit.entries(limit=1000)))
    text = "\n".join(
        f"{e.actor} {e.action} {e.target} {e.reason} {e.address} {e.detail}" for e in entries
    )
    return entries, text


@inline
async def test_two_devices_revoke_and_password_change_over_the_wire(server):
    laptop, first = await register(server, "alice", "pw-old-1", client="Laptop")
    phone, second = await register(server, "alice", "pw-old-1", client="Phone")
    bob, _ = await register(server, "bob")

    listed = await ask(laptop, {"type": "SessionListRequest", "msg_id": 1})
    assert listed["type"] == "SessionListResponse" and listed["msg_id"] == 1
    assert [(s["id"], s["client"], s["current"], s["address"]) for s in listed["sessions"]] == [
        (second["session_id"], "Phone", False, "127.0.0.1"),
        (first["session_id"], "Laptop", True, "127.0.0.1"),
    ]

    # Revoking the phone's session closes it with 4001; its key no longer resumes.
    revoked = await ask(laptop, {"type": "SessionRevokeRequest", "id": second["session_id"]})
    assert revoked == {"type": "SessionRevokeResponse", "status": 200,
                       "id": second["session_id"], "msg_id": "ask"}
    assert await phone.closed(timeout=5) == SIGNED_OUT
    again = await server.client()
    refused = await again.request({"type": "ResumeRequest", "session_key": second["session_key"]})
    assert refused["status"] == 301
    assert (await ask(laptop, {"type": "SessionRevokeRequest",
                               "id": second["session_id"]}))["status"] == 404

    # A password change closes the other device and keeps this one.
    tablet, third = await register(server, "alice", "pw-old-1")
    changed = await ask(laptop, {"type": "PasswordChangeRequest", "old_password": "pw-old-1",
                                 "new_password": "pw-new-2"})
    assert changed == {"type": "PasswordChangeResponse", "status": 200, "msg_id": "ask"}
    assert await tablet.closed(timeout=5) == SIGNED_OUT
    assert (await ask(laptop, {"type": "HeartbeatRequest"}))["status"] == 200
    assert (await ask(bob, {"type": "HeartbeatRequest"}))["status"] == 200
    listed = await ask(laptop, {"type": "SessionListRequest"})
    assert [s["id"] for s in listed["sessions"]] == [first["session_id"]]
    old = await (await server.client()).request({"type": "RegisterRequest", "username": "alice",
                                                 "password": "pw-old-1"})
    assert old["status"] == 301
    await register(server, "alice", "pw-new-2")

    # Every sign-in was audited with its address, and no password or key is in the log.
    entries, text = await audit_text(server)
    sign_ins = [(e.actor, e.action, e.address, e.detail.get("via")) for e in entries
                if e.action.startswith("sign_in")]
    assert sign_ins == [
        ("alice", "sign_in", "127.0.0.1", "register"),
        ("alice", "sign_in", "127.0.0.1", "register"),
        ("bob", "sign_in", "127.0.0.1", "register"),
        ("?", "sign_in_failed", "127.0.0.1", "resume"),
        ("alice", "sign_in", "127.0.0.1", "register"),
        ("alice", "sign_in_failed", "127.0.0.1", "register"),
        ("alice", "sign_in", "127.0.0.1", "register"),
    ]
    assert [e.action for e in entries if not e.action.startswith("sign_in")] == [
        "session_revoke", "password_change", "sessions_revoked"]
    for secret in ("pw-old-1", "pw-new-2", first["session_key"], second["session_key"],
                   third["session_key"]):
        assert secret not in text


@inline
async def test_revoking_the_current_session_answers_then_closes(server):
    laptop, first = await register(server, "alice")
    laptop.send({"type": "SessionRevokeRequest", "id": first["session_id"], "msg_id": 9})
    assert (await laptop.recv()) == {"type": "SessionRevokeResponse", "status": 200,
                                     "id": first["session_id"], "msg_id": 9}
    assert await laptop.closed(timeout=5) == SIGNED_OUT


@inline
async def test_a_wrong_old_password_is_refused_then_throttled(server_factory, config_factory):
    running = await server_factory(config_factory(limits={"signin_free_failures": "2"}))
    laptop, _ = await register(running, "alice", "right")
    wrong = {"type": "PasswordChangeRequest", "old_password": "wrong", "new_password": "new"}
    statuses = [(await ask(laptop, wrong))["status"] for _ in range(4)]
    assert statuses[:3] == [401, 401, 401] and statuses[3] == 429
    reply = await ask(laptop, {**wrong, "old_password": "right"})
    assert reply["status"] == 429 and reply["retry_after"] > 0
    # The connection and everyone else carry on.
    assert (await ask(laptop, {"type": "HeartbeatRequest"}))["status"] == 200


@inline
async def test_profile_is_read_back_and_shown_to_others(server):
    alice, first = await register(server, "alice")
    bob, second = await register(server, "bob")
    reply = await ask(alice, {"type": "ProfileRequest", "display_name": "Alice Liddell",
                              "status_text": "down the rabbit hole"})
    assert reply == {"type": "ProfileResponse", "status": 200, "username": "alice",
                     "display_name": "Alice Liddell", "status_text": "down the rabbit hole",
                     "msg_id": "ask"}
    assert (await ask(alice, {"type": "ProfileRequest"}))["status_text"] == (
        "down the rabbit hole")
    too_long = await ask(alice, {"type": "ProfileRequest", "status_text": "x" * 141})
    assert too_long["status"] == 400
    created = await ask(alice, {"type": "GroupMessageInitRequest", "recipients": ["bob"],
                                "chatname": "tea"})
    assert created["status"] == 200
    info = await ask(bob, {"type": "GroupInfoRequest", "chatname": "tea"})
    assert [(m["username"], m["display_name"], m["status_text"]) for m in info["members"]] == [
        ("alice", "Alice Liddell", "down the rabbit hole"), ("bob", None, None)]
    members = await ask(bob, {"type": "GroupMembersRequest", "chatname": "tea"})
    assert members["members"][0]["display_name"] == "Alice Liddell"
    code, body = await http_get(server.http_url + "api/users/alice", second["session_key"])
    assert code == 200
    assert (body["display_name"], body["status_text"]) == ("Alice Liddell",
                                                           "down the rabbit hole")
    entries, _ = await audit_text(server)
    assert [(e.action, e.detail) for e in entries if e.action == "profile"] == [
        ("profile", {"fields": ["display_name", "status_text"]})]


@inline
async def test_directory_accounts_keep_the_directorys_password_and_name(
        slapd, server_factory, config_factory):
    running = await server_factory(config_factory(
        auth={"methods": "local,ldap"}, ldap=slapd.settings()))
    client = await running.client()
    reply = await client.request({"type": "RegisterRequest", "username": "alice",
                                  "password": "alice-pw", "auth": True, "client": "cli"})
    assert reply["type"] == "RegisterResponse", reply
    changed = await ask(client, {"type": "PasswordChangeRequest", "old_password": "alice-pw",
                                 "new_password": "other"})
    assert (changed["status"], changed["detail"]) == (
        400, "change your password in the campus directory")
    named = await ask(client, {"type": "ProfileRequest", "display_name": "Queen of Hearts"})
    assert (named["status"], named["detail"]) == (
        403, "your display name comes from the campus directory")
    status = await ask(client, {"type": "ProfileRequest", "status_text": "in a meeting"})
    assert (status["display_name"], status["status_text"]) == ("Alice Liddell", "in a meeting")
    refused = await (await running.client()).request({
        "type": "RegisterRequest", "username": "alice", "password": "nope", "auth": True})
    assert refused["status"] == 301
    entries, text = await audit_text(running)
    assert [(e.action, e.detail, e.address) for e in entries if e.action.startswith("sign_in")] == [
        ("sign_in", {"method": "ldap", "via": "register"}, "127.0.0.1"),
        ("sign_in_failed", {"method": "ldap", "via": "register"}, "127.0.0.1")]
    assert "alice-pw" not in text and "nope" not in text


# -- two clustered nodes ----------------------------------------------------------

@pytest.fixture
def pair(tmp_path: Path, postgres: Any, redis: RedisServer) -> Iterator[Cluster]:
    redis.command("FLUSHALL")
    nodes = Cluster(tmp_path, postgres.new_database(), redis.url)
    try:
        nodes.start("n1")
        nodes.start("n2")
        yield nodes
    finally:
        nodes.stop()
        for name, node in nodes.nodes.items():
            assert "Traceback" not in node.output(), f"{name}:\n{node.output()}"


@inline
async def test_a_session_revoked_on_one_node_closes_its_connection_on_the_other(pair):
    laptop = await pair.client("n1", "alice", "pw-1")
    phone = await pair.client("n2", "alice", "pw-1")
    tablet = await pair.client("n2", "alice", "pw-1")
    listed = await ask(laptop, {"type": "SessionListRequest"})
    assert [s["current"] for s in listed["sessions"]].count(True) == 1
    phone_id = (await ask(phone, {"type": "SessionListRequest"}))
    phone_id = next(s["id"] for s in phone_id["sessions"] if s["current"])
    revoked = await ask(laptop, {"type": "SessionRevokeRequest", "id": phone_id})
    assert revoked["status"] == 200
    done = time.monotonic()
    assert await phone.closed(timeout=5) == SIGNED_OUT
    assert time.monotonic() - done < 2.0
    assert (await ask(tablet, {"type": "HeartbeatRequest"}))["status"] == 200
    # A password change on n1 closes the other device on n2; n1's stays.
    changed = await ask(laptop, {"type": "PasswordChangeRequest", "old_password": "pw-1",
                                 "new_password": "pw-2"})
    assert changed["status"] == 200
    assert await tablet.closed(timeout=5) == SIGNED_OUT
    assert (await ask(laptop, {"type": "HeartbeatRequest"}))["status"] == 200
