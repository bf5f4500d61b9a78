"""SearchRequest over real WebSockets, on SQLite and PostgreSQL (the ``server`` fixture).

The rules in detail (query syntax, stemming, snippets) are in tests/test_search.py;
here: the wire shapes, statuses, scope as the chat makes it (a group left, a
blocked sender, an edit and a deletion), a restart, and twistd refusing a
language PostgreSQL does not know.
"""

from __future__ import annotations

import subprocess
from typing import Any

from tests.conftest import start_server
from tests.deferreds import inline
from tests.processes import TwistdServer
from tests.test_durable import make_group
from tests.wsclient import Client


async def ask(client: Client, message: dict[str, Any]) -> dict[str, Any]:
    """The reply to *message*, pushes that come before it passed over."""
    msg_id = message.setdefault("msg_id", "ask")
    client.send(message)
    while (reply := await client.recv()).get("msg_id") != msg_id or "status" not in reply:
        pass
    return reply


async def send(client: Client, recipient: str, content: str) -> dict[str, Any]:
    ack = await ask(client, {"type": "MessageRequest", "recipient": recipient,
                             "content": content})
    assert ack["type"] == "MessageSendResponse", ack
    return ack


async def search(client: Client, query: Any, **fields: Any) -> dict[str, Any]:
    return await ask(client, {"type": "SearchRequest", "query": query, "msg_id": "s", **fields})


async def found(client: Client, query: str, **fields: Any) -> list[str]:
    reply = await search(client, query, **fields)
    assert reply["type"] == "SearchResponse" and reply["status"] == 200, reply
    return [r["snippet"] for r in reply["results"]]


@inline
async def test_search_finds_group_and_direct_messages_newest_first(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await make_group(alice, "club", "bob")
    first = await send(alice, "club", "Picnic on Sunday @bob")
    second = await send(bob, "alice", "bring the picnic blanket")
    await send(alice, "club", "nothing to see")
    reply = await search(alice, "  picnic  ")
    assert reply == {
        "type": "SearchResponse", "status": 200, "query": "picnic", "more": False, "msg_id": "s",
        "results": [
            {"id": second["id"], "user": "bob", "sender": "bob",
             "timestamp": second["timestamp"], "snippet": "bring the picnic blanket",
             "highlights": [[10, 16]]},
            {"id": first["id"], "chatname": "club", "sender": "alice",
             "timestamp": first["timestamp"], "snippet": "Picnic on Sunday @bob",
             "highlights": [[0, 6]], "mentions": ["bob"]},
        ],
    }
    assert await found(bob, "picnic", user="alice") == ["bring the picnic blanket"]
    assert await found(bob, "picnic", chatname="CLUB") == ["Picnic on Sunday @bob"]
    page = await search(bob, "picnic", limit=1)
    assert page["more"] and len(page["results"]) == 1
    rest = await search(bob, "picnic", limit=1, before=page["results"][0]["id"])
    assert [r["id"] for r in rest["results"]] == [first["id"]] and not rest["more"]


@inline
async def test_a_group_left_and_a_blocked_sender_are_not_searched(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    carol = await server.client("carol")
    await make_group(alice, "club", "bob", "carol")
    await send(alice, "club", "treasure map by alice")
    await send(carol, "club", "treasure chest by carol")
    assert await found(bob, "treasure") == ["treasure chest by carol", "treasure map by alice"]
    blocked = await ask(bob, {"type": "BlockRequest", "username": "carol"})
    assert blocked["status"] == 200
    assert await found(bob, "treasure") == ["treasure map by alice"]
    left = await ask(bob, {"type": "GroupLeaveRequest", "chatname": "club"})
    assert left["status"] == 200, left
    assert await found(bob, "treasure") == []
    refused = await search(bob, "treasure", chatname="club")
    assert refused["type"] == "ErrorResponse" and refused["status"] == 403, refused


@inline
async def test_edits_and_deletions_are_searched_as_they_are_now(server):
    alice = await server.client("alice")
    await server.client("bob")
    sent = await send(alice, "bob", "the password is swordfish")
    assert await found(alice, "swordfish") == ["the password is swordfish"]
    edited = await ask(alice, {"type": "MessageEditRequest", "id": sent["id"],
                                  "content": "the password is changed"})
    assert edited["status"] == 200, edited
    assert await found(alice, "swordfish") == []
    assert await found(alice, "changed") == ["the password is changed"]
    deleted = await ask(alice, {"type": "MessageDeleteRequest", "id": sent["id"]})
    assert deleted["status"] == 200, deleted
    assert await found(alice, "password") == []


@inline
async def test_bad_requests_get_clear_statuses_and_the_connection_keeps_working(server):
    alice = await server.client("alice")
    await server.client("bob")
    await make_group(alice, "club", "bob")
    await server.client("dave")
    await make_group(await server.client("eve"), "private", "dave")
    cases = [
        ({"query": ""}, 400, "'query'"),
        ({"query": "   "}, 400, "'query'"),
        ({"query": "x" * 257}, 400, "'query'"),
        ({"query": "x", "chatname": "club", "user": "bob"}, 400, "at most one"),
        ({"query": "x", "limit": 0}, 400, "'limit'"),
        ({"query": "x", "limit": 51}, 400, "'limit'"),
        ({"query": "x", "before": 0}, 400, "'before'"),
        ({"query": 5}, 400, "query"),
        ({"query": "x", "chatname": "nowhere"}, 404, "no such group"),
        ({"query": "x", "chatname": "private"}, 403, "not a member"),
        ({"query": "x", "user": "nobody"}, 404, "no such user"),
    ]
    for fields, status, detail in cases:
        reply = await ask(alice, {"type": "SearchRequest", "msg_id": 7, **fields})
        assert reply["type"] == "ErrorResponse" and reply["status"] == status, (fields, reply)
        assert detail in reply["detail"] and reply["msg_id"] == 7, (fields, reply)
    await send(alice, "club", 'NEAR( "quoted" - * \\ \' 🎉 text')
    for query in ['"', "-", "*", "NEAR(", "'", "\\", "🎉", "x" * 256, "\x00", "a OR", "(("]:
        reply = await search(alice, query)
        assert reply["type"] == "SearchResponse", (query, reply)
    assert await found(alice, "NEAR(") == ['NEAR( "quoted" - * \\ \' 🎉 text']
    assert await found(alice, '"quoted"') == ['NEAR( "quoted" - * \\ \' 🎉 text']


@inline
async def test_an_ephemeral_server_answers_501(server_factory, config_factory):
    running = await server_factory(config_factory(chat={"store_messages": "false"}))
    alice = await running.client("alice")
    reply = await search(alice, "anything")
    assert reply["status"] == 501 and "store_messages = false" in reply["detail"], reply


@inline
async def test_english_stemming_after_a_restart_with_the_language_changed(
    server_factory, config_factory
):
    running = await start_server(config_factory())  # stopped here, not by the factory
    alice = await running.client("alice")
    await running.client("bob")
    await send(alice, "bob", "our meetings ran late")
    assert await found(alice, "meeting") == []
    await running.close_clients()
    await running.service.stopService()
    running = await server_factory(config_factory(search={"language": "english"}))
    alice = await running.client("alice")
    assert await found(alice, "meeting") == ["our meetings ran late"]


def test_twistd_refuses_a_language_postgresql_does_not_know(tmp_path, postgres):
    url = postgres.new_database()
    config = tmp_path / "chateau.ini"
    config.write_text(f"[database]\nurl = {url}\n[search]\nlanguage = klingon\n")
    server = TwistdServer(tmp_path, "--config", str(config))
    try:
        try:
            server.start(timeout=30)
        except RuntimeError:
            pass
        assert server.process is None or server.process.wait(20) != 0
    except subprocess.TimeoutExpired:
        raise AssertionError(server.output()) from None
    finally:
        server.stop()
    output = server.output()
    assert "[search] language = klingon" in output and "pg_ts_config" in output, output
