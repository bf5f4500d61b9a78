"""Read state over real sockets: on SQLite and PostgreSQL, and across two clustered nodes.

Two devices of one user (the other device's ReadRecv and badges), read
receipts to the other side of a direct chat and to group members,
``read_receipts`` off, a blocked reader, groups above ``[chat]
read_receipts_max_group``, unread_total at sign-in and resume. The rules
in detail, on a task.Clock, are in tests/test_reading.py.
"""

from __future__ import annotations

from typing import Any

from tests.deferreds import inline, sleep
from tests.test_cluster import (  # noqa: F401  (two_nodes is a fixture)
    two_nodes, wait_presence,
)
from tests.test_durable import make_group
from tests.wsclient import Client
from tests.wsclient import send_message as send


async def answer(client: Client, message: dict[str, Any]) -> tuple[dict[str, Any], list[dict]]:
    """The reply to *message*, and the pushes that came before it."""
    client.send({**message, "msg_id": "r"})
    before = []
    while "msg_id" not in (reply := await client.recv()):
        before.append(reply)
    return reply, before


async def receipts(client: Client) -> list[dict[str, Any]]:
    return [frame for frame in await client.frames_until_heartbeat()
            if frame["type"] == "ReadRecv"]


async def listed(client: Client) -> dict[str, dict[str, Any]]:
    reply, _ = await answer(client, {"type": "ConversationsRequest"})
    assert reply["type"] == "ConversationsResponse", reply
    return {c.get("chatname") or c["user"]: c for c in reply["conversations"]}


@inline
async def test_two_devices_and_the_other_side_of_a_direct_chat(server):
    alice = await server.client("alice")
    phone = await server.client("bob")
    ids = [(await send(alice, "bob", f"m{n}"))["id"] for n in range(3)]
    laptop = await server.client()
    reply = await laptop.register("bob")
    assert reply["unread_total"] == 3
    key = reply["session_key"]
    await phone.frames_until_heartbeat(), await alice.frames_until_heartbeat()
    reply, _ = await answer(phone, {"type": "ReadRequest", "user": "alice", "id": ids[1]})
    assert reply == {"type": "ReadResponse", "status": 200, "user": "alice", "id": ids[1],
                     "msg_id": "r"}
    assert await receipts(laptop) == [{"type": "ReadRecv", "status": 200, "user": "alice",
                                       "username": "bob", "id": ids[1]}]
    assert await receipts(alice) == [{"type": "ReadRecv", "status": 200, "user": "bob",
                                      "username": "bob", "id": ids[1]}]
    assert (await listed(laptop))["alice"]["unread"] == 1
    assert (await listed(alice))["bob"]["peer_read"] == ids[1]
    # Within 2 s the other side hears of the newest once the window ends.
    await answer(phone, {"type": "ReadRequest", "user": "alice", "id": ids[2]})
    assert [r["id"] for r in await receipts(laptop)] == [ids[2]]
    assert await receipts(alice) == []
    await sleep(2.2)
    assert [r["id"] for r in await receipts(alice)] == [ids[2]]
    # A resumed session hears its unread total too.
    await send(alice, "bob", "later")
    resumed = await server.client()
    reply = await resumed.request({"type": "ResumeRequest", "session_key": key, "msg_id": 1})
    assert reply["type"] == "ResumeResponse" and reply["unread_total"] == 1, reply


@inline
async def test_group_receipts_blocks_setting_off_and_the_size_limit(server_factory, config_factory):
    server = await server_factory(config_factory(chat={"read_receipts_max_group": "3"}))
    alice = await server.client("alice")
    bob = await server.client("bob")
    carol = await server.client("carol")
    dave = await server.client("dave")
    await make_group(alice, "small", "bob", "carol")
    await make_group(alice, "big", "bob", "carol", "dave")
    await answer(carol, {"type": "BlockRequest", "username": "bob"})
    for client in (alice, bob, carol, dave):
        await client.frames_until_heartbeat()
    small = (await send(alice, "small", "hello"))["id"]
    big = (await send(alice, "big", "hello"))["id"]
    for client in (alice, bob, carol, dave):
        await client.frames_until_heartbeat()
    await answer(bob, {"type": "ReadRequest", "chatname": "small", "id": small})
    assert await receipts(alice) == [{"type": "ReadRecv", "status": 200, "chatname": "small",
                                      "username": "bob", "id": small}]
    assert await receipts(carol) == []  # carol blocks bob
    await answer(bob, {"type": "ReadRequest", "chatname": "big", "id": big})
    assert await receipts(alice) == [] and await receipts(dave) == []  # 4 members > 3
    # read_receipts off: nobody else hears.
    await answer(dave, {"type": "SettingsRequest", "read_receipts": False})
    direct = (await send(alice, "dave", "hi"))["id"]
    await alice.frames_until_heartbeat()
    await answer(dave, {"type": "ReadRequest", "user": "alice", "id": direct})
    assert await receipts(alice) == []
    assert "peer_read" not in (await listed(alice))["dave"]
    assert (await listed(bob))["small"]["unread"] == 0


@inline
async def test_read_receipts_cross_two_clustered_nodes(two_nodes):
    cluster = two_nodes
    alice = await cluster.client("n2", "alice")
    phone = await cluster.client("n1", "bob")
    laptop = await cluster.client("n2", "bob")
    await wait_presence(cluster, alice, "bob")
    sent = (await send(alice, "bob", "hello"))["id"]
    await phone.frames_until_heartbeat(), await laptop.frames_until_heartbeat()
    await alice.frames_until_heartbeat()
    reply, _ = await answer(phone, {"type": "ReadRequest", "user": "alice", "id": sent})
    assert reply["id"] == sent
    assert await laptop.expect("ReadRecv", user="alice", username="bob", id=sent)
    assert await alice.expect("ReadRecv", user="bob", username="bob", id=sent)
    await cluster.close()
