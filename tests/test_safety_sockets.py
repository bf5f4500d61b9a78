"""Personal safety over real sockets: blocks, settings, random-chat avoidance.

On SQLite and PostgreSQL (the ``server`` fixture), after a restart, and
across two clustered ``twistd`` nodes (a blocker on one, the blocked person
on the other). The rules themselves, in detail, are in tests/test_safety.py.
"""

from __future__ import annotations

from typing import Any

from tests.deferreds import inline
from tests.test_cluster import (  # noqa: F401  (two_nodes is a fixture)
    two_nodes, wait_presence,
)
from tests.test_durable import http_get, make_group
from tests.wsclient import Client
from tests.wsclient import send_message as send


async def block(client: Client, whom: str) -> list[dict[str, Any]]:
    """Block *whom*; the pushes that came before the reply."""
    client.send({"type": "BlockRequest", "username": whom, "msg_id": "b"})
    before = []
    while "msg_id" not in (reply := await client.recv()):
        before.append(reply)
    assert reply == {"type": "BlockResponse", "status": 200, "username": whom, "msg_id": "b"}
    return before


async def pushes(client: Client) -> list[dict[str, Any]]:
    """What arrived unasked, up to now."""
    return await client.frames_until_heartbeat()


def contents(frames: list[dict[str, Any]], kind: str) -> list[str]:
    return [frame["content"] for frame in frames if frame["type"] == kind]


async def history(client: Client, **where: Any) -> list[dict[str, Any]]:
    reply = await client.request({"type": "HistoryRequest", **where})
    assert reply["type"] == "HistoryResponse", reply
    return reply["messages"]


@inline
async def test_a_blocked_persons_direct_messages_never_reach_the_blocker(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await block(alice, "bob")
    ack = await send(bob, "alice", "live")
    assert ack["status"] == 200
    await alice.nothing()
    await alice.close()
    await send(bob, "alice", "while away")
    alice = await server.client("alice")
    assert contents(await pushes(alice), "MessageRecv") == []
    assert await history(alice, user="bob") == []
    assert [m["content"] for m in await history(bob, user="alice")] == ["while away", "live"]
    unblocked = await alice.request({"type": "UnblockRequest", "username": "bob"})
    assert unblocked["type"] == "UnblockResponse"
    await send(bob, "alice", "after")
    assert contents(await pushes(alice), "MessageRecv") == ["after"]
    listed = await alice.request({"type": "BlockListRequest"})
    assert listed["blocked"] == []


@inline
async def test_a_blocked_members_group_messages_are_withheld_and_hidden(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    carol = await server.client("carol")
    await make_group(alice, "club", "bob", "carol")
    await block(alice, "bob")
    await pushes(bob), await pushes(carol)
    await send(bob, "club", "live")
    assert contents(await pushes(carol), "GroupMessageRecv") == ["live"]
    await send(carol, "club", "carol live")
    assert contents(await pushes(alice), "GroupMessageRecv") == ["carol live"]
    await alice.close()
    await pushes(bob)
    await send(bob, "club", "while away")
    alice = await server.client("alice")
    assert contents(await pushes(alice), "GroupMessageRecv") == []
    entries = await history(alice, chatname="club")
    assert [set(e) for e in entries] == [
        {"id", "timestamp", "hidden"}, {"id", "sender", "content", "timestamp", "edited",
                                        "deleted"}, {"id", "timestamp", "hidden"}]
    await pushes(carol)
    assert [e.get("content") for e in await history(carol, chatname="club")] == [
        "while away", "carol live", "live"]


@inline
async def test_blocking_ends_the_contact_and_drops_the_blocked_persons_requests(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await bob.request({"type": "ContactRequest", "username": "alice"})
    await alice.expect("ContactRequestRecv")
    await alice.request({"type": "ContactAccept", "username": "bob"})
    await pushes(bob)
    await block(alice, "bob")
    assert await pushes(bob) == [{"type": "ContactRemoveRecv", "status": 200,
                                  "username": "alice"}]
    reply = await bob.request({"type": "ContactRequest", "username": "alice"})
    assert (reply["status"], reply["state"]) == (200, "pending")
    await alice.nothing()
    book = await alice.request({"type": "ContactListRequest"})
    assert book["contacts"] == [] and book["pending"] == []


@inline
async def test_blocking_ends_a_random_chat_and_the_two_are_never_paired_again(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    pair = await alice.request({"type": "RandomMessageRequest", "content": "hi"})
    assert pair["client"] == "bob"
    await pushes(bob)
    assert await block(bob, "alice") == [{"type": "RandomChatEndedRecv", "status": 200,
                                          "chatname": pair["chatname"], "user": "bob",
                                          "reason": "blocked"}]
    assert await pushes(alice) == [{"type": "RandomChatEndedRecv", "status": 200,
                                    "chatname": pair["chatname"], "user": "bob",
                                    "reason": "left"}]
    again = await alice.request({"type": "RandomMessageRequest", "content": "hi?"})
    assert again["status"] == 404
    # Leaving keeps two apart as well (and bob, opting out, is never paired).
    opted = await bob.request({"type": "SettingsRequest", "random_chat": False})
    assert opted["random_chat"] is False
    carol = await server.client("carol")
    pair = await carol.request({"type": "RandomMessageRequest", "content": "hello"})
    assert pair["client"] == "alice"
    await pushes(alice)
    left = await alice.request({"type": "GroupLeaveRequest", "chatname": pair["chatname"]})
    assert left["status"] == 200
    assert [f["type"] for f in await pushes(carol)] == ["RandomChatEndedRecv"]
    last = await carol.request({"type": "RandomMessageRequest", "content": "x"})
    assert last["status"] == 404, last


@inline
async def test_settings_presence_and_direct_messages_from_contacts_only(server):
    alice = await server.client()
    alice_key = (await alice.register("alice"))["session_key"]
    bob = await server.client()
    bob_key = (await bob.register("bob"))["session_key"]
    carol = await server.client()
    carol_key = (await carol.register("carol"))["session_key"]
    await bob.request({"type": "ContactRequest", "username": "alice"})
    await alice.expect("ContactRequestRecv")
    assert (await alice.request({"type": "ContactAccept", "username": "bob"}))["status"] == 200
    await bob.expect("ContactAcceptRecv")
    reply = await alice.request({"type": "SettingsRequest", "presence": "contacts",
                                 "direct_messages": "contacts", "msg_id": 7})
    assert reply == {"type": "SettingsResponse", "status": 200, "direct_messages": "contacts",
                     "presence": "contacts", "random_chat": True, "read_receipts": True,
                     "msg_id": 7}
    assert "alice" in (await bob.request({"type": "ClientListRequest"}))["clients"]
    assert "alice" not in (await carol.request({"type": "ClientListRequest"}))["clients"]
    url = server.http_url + "api/users/alice"
    assert (await http_get(url, bob_key))[1]["online"] is True
    assert (await http_get(url, carol_key))[1]["online"] is False
    assert (await http_get(url, alice_key))[1]["online"] is True
    refused = await carol.request({"type": "MessageRequest", "recipient": "alice",
                                   "content": "hi"})
    assert (refused["status"], refused["detail"]) == (
        403, "'alice' accepts direct messages from contacts only")
    await send(bob, "alice", "from a contact")
    assert contents(await pushes(alice), "MessageRecv") == ["from a contact"]
    hidden = await alice.request({"type": "SettingsRequest", "presence": "nobody"})
    assert hidden["presence"] == "nobody"
    # Her contact sees her go, as if she had signed out.
    assert await pushes(bob) == [{"type": "PresenceRecv", "status": 200, "username": "alice",
                                  "online": False}]
    assert "alice" not in (await bob.request({"type": "ClientListRequest"}))["clients"]
    assert (await http_get(url, bob_key))[1]["online"] is False
    bad = await alice.request({"type": "SettingsRequest", "presence": "friends"})
    assert (bad["type"], bad["status"]) == ("ErrorResponse", 400)


@inline
async def test_blocks_and_settings_hold_after_a_restart(server_factory, config_factory):
    config = config_factory()
    running = await server_factory(config)
    alice = await running.client("alice")
    bob = await running.client("bob")
    await block(alice, "bob")
    await alice.request({"type": "SettingsRequest", "presence": "nobody", "random_chat": False})
    await running.close_clients()
    await running.service.stopService()
    again = await server_factory(config)
    alice = await again.client("alice")
    bob = await again.client("bob")
    assert (await bob.request({"type": "ClientListRequest"}))["clients"] == []
    await send(bob, "alice", "hello?")
    assert contents(await pushes(alice), "MessageRecv") == []
    settings = await alice.request({"type": "SettingsRequest"})
    assert (settings["presence"], settings["random_chat"]) == ("nobody", False)
    blocked = (await alice.request({"type": "BlockListRequest"}))["blocked"]
    assert [entry["username"] for entry in blocked] == ["bob"]


# -- two clustered nodes -----------------------------------------------------------



@inline
async def test_a_block_on_one_node_holds_on_the_other(two_nodes):
    cluster = two_nodes
    bob = await cluster.client("n1", "bob")
    alice = await cluster.client("n2", "alice")
    carol = await cluster.client("n1", "carol")
    await wait_presence(cluster, bob, "alice", "carol")
    await make_group(carol, "club", "alice", "bob")
    await alice.expect("GroupMessageInitResponse")
    await bob.expect("GroupMessageInitResponse")
    await block(alice, "bob")
    await send(bob, "alice", "direct")
    await send(bob, "club", "in the group")
    assert contents(await pushes(carol), "GroupMessageRecv") == ["in the group"]
    await send(carol, "club", "carol")
    assert contents(await pushes(bob), "GroupMessageRecv") == ["carol"]
    # Node 1 forwards in the order sent: had bob's messages reached alice, they would be first.
    first = await alice.recv()
    assert (first["type"], first["sender"]) == ("GroupMessageRecv", "carol"), first
    await alice.nothing()
    # A second connection of alice on node 1: the block holds there too.
    alice_too = await cluster.client("n1", "alice")
    await pushes(alice_too)
    await send(bob, "club", "again")
    assert contents(await pushes(carol), "GroupMessageRecv") == ["again"]
    await send(carol, "club", "carol again")
    assert contents(await pushes(alice_too), "GroupMessageRecv") == ["carol again"]
    first = await alice.recv()
    assert (first["sender"], first["content"]) == ("carol", "carol again"), first
    # Settings changed on node 2 hold on node 1.
    await alice.request({"type": "SettingsRequest", "presence": "nobody"})
    await alice_too.close()

    async def hidden() -> bool:
        reply = await carol.request({"type": "ClientListRequest"})
        return "alice" not in reply["clients"]

    from tests.test_cluster import until
    assert await until(hidden), "alice's presence setting never reached node 1"
    await cluster.close()
