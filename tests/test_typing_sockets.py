"""Typing over real WebSockets: on SQLite and PostgreSQL, and across two nodes.

The rules, on a task.Clock, are in tests/test_typing.py; here the wire: a
group, a direct chat, a random chat, refusals that leave the connection
working, and a typer on one clustered node told to a member on the other,
with the expiry the typer's node runs.
"""

from __future__ import annotations

import time
from typing import Any

from tests.deferreds import inline
from tests.test_cluster import (  # noqa: F401  (two_nodes is a fixture)
    two_nodes, wait_presence,
)
from tests.test_durable import make_group
from tests.test_safety_sockets import block, pushes
from tests.wsclient import Client
from tests.wsclient import send_message as send


async def typing(client: Client, value: bool, **where: Any) -> dict[str, Any]:
    return await client.request({"type": "TypingRequest", "typing": value, "msg_id": "t",
                                 **where})


async def say(client: Client, value: bool, **where: Any) -> None:
    reply = await typing(client, value, **where)
    assert reply == {"type": "TypingResponse", "status": 200, "msg_id": "t"}, reply


def typing_recv(username: str, value: bool, **where: str) -> dict[str, Any]:
    return {"type": "TypingRecv", "status": 200, **where, "username": username, "typing": value}


@inline
async def test_typing_in_a_group_reaches_the_others_not_the_typers_other_devices(server):
    alice = await server.client("alice")
    phone = await server.client("alice")
    bob = await server.client("bob")
    carol = await server.client("carol")
    await make_group(alice, "club", "bob", "carol")
    await pushes(bob), await pushes(carol), await pushes(phone)
    await say(alice, True, chatname="club")
    assert await pushes(bob) == [typing_recv("alice", True, chatname="club")]
    assert await pushes(carol) == [typing_recv("alice", True, chatname="club")]
    await say(alice, True, chatname="club")  # a renewal within 2 s: answered, not told
    await say(alice, False, chatname="club")  # told when the 2 s are over
    assert await bob.recv(timeout=5) == typing_recv("alice", False, chatname="club")
    assert await pushes(phone) == [] and await pushes(alice) == []


@inline
async def test_direct_typing_and_its_refusals(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await say(alice, True, user="Bob")
    assert await pushes(bob) == [typing_recv("alice", True, user="alice")]
    # The message ends the typing: no false follows it.
    await send(alice, "bob", "hello")
    assert [frame["type"] for frame in await pushes(bob)] == ["MessageRecv"]
    missing = await typing(alice, True, user="nobody")
    assert missing["type"] == "ErrorResponse" and missing["status"] == 404
    assert missing["detail"] == "no such user: 'nobody'"
    settings = await bob.request({"type": "SettingsRequest", "direct_messages": "contacts"})
    assert settings["status"] == 200, settings
    refused = await typing(alice, True, user="bob")
    assert refused == {"type": "ErrorResponse", "status": 403, "msg_id": "t",
                       "detail": "'bob' accepts direct messages from contacts only"}
    await block(bob, "alice")
    await bob.request({"type": "SettingsRequest", "direct_messages": "everyone"})
    await say(alice, True, user="bob")  # 200: the block is not revealed
    assert await pushes(bob) == []


@inline
async def test_typing_in_a_random_chat(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    paired = await alice.request({"type": "RandomMessageRequest", "content": "hi"})
    assert paired["status"] == 200, paired
    chatname = paired["chatname"]
    await pushes(bob)
    await say(alice, True, chatname=chatname)
    assert await pushes(bob) == [typing_recv("alice", True, chatname=chatname)]
    carol = await server.client("carol")
    outsider = await typing(carol, True, chatname=chatname)
    assert outsider["status"] == 403 and "random chat" in outsider["detail"]


@inline
async def test_bad_typing_requests_get_an_error_and_the_connection_goes_on(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await make_group(alice, "club", "bob")
    await pushes(bob)
    cases = [
        ({"chatname": "club", "user": "bob", "typing": True},
         "TypingRequest: give exactly one of 'chatname' or 'user'"),
        ({"typing": True}, "TypingRequest: give exactly one of 'chatname' or 'user'"),
        ({"chatname": "club"}, "TypingRequest: missing field 'typing'"),
        ({"chatname": "club", "typing": 1}, "TypingRequest: field 'typing' must be true or false"),
        ({"chatname": ["club"], "typing": True},
         "TypingRequest: field 'chatname' must be a string"),
    ]
    for fields, detail in cases:
        reply = await alice.request({"type": "TypingRequest", "msg_id": 7, **fields})
        assert reply == {"type": "ErrorResponse", "status": 400, "detail": detail, "msg_id": 7}
    unknown = await typing(alice, True, chatname="nowhere")
    assert unknown["status"] == 404 and "no such group" in unknown["detail"]
    dave = await server.client("dave")
    outsider = await typing(dave, True, chatname="club")
    assert outsider["status"] == 403 and "not a member" in outsider["detail"]
    await say(alice, True, chatname="club")
    assert await pushes(bob) == [typing_recv("alice", True, chatname="club")]


@inline
async def test_typing_crosses_nodes_and_expires_on_the_typers_node(two_nodes):
    alice = await two_nodes.client("n1", "alice")
    bob = await two_nodes.client("n2", "bob")
    carol = await two_nodes.client("n2", "carol")
    await wait_presence(two_nodes, alice, "bob", "carol")
    await make_group(alice, "club", "bob", "carol")
    await block(carol, "alice")  # on n2: n2 passes carol over
    await pushes(bob), await pushes(carol)
    await say(alice, True, chatname="club")
    assert await bob.recv(timeout=5) == typing_recv("alice", True, chatname="club")
    started = time.monotonic()
    assert await bob.recv(timeout=10) == typing_recv("alice", False, chatname="club")
    assert time.monotonic() - started > 4  # six seconds after the true, less the trip
    assert await pushes(carol) == []
    # Direct, and the typer's last connection closing ends it at once.
    await say(alice, True, user="bob")
    assert await bob.recv(timeout=5) == typing_recv("alice", True, user="alice")
    await alice.close()
    assert await bob.recv(timeout=5) == typing_recv("alice", False, user="alice")
    await two_nodes.close()
