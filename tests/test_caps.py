"""Per-user state has bounds: groups created per hour, live sessions, pending
contact requests and random chats. Real server, real clients, both databases."""

from __future__ import annotations

from tests.deferreds import inline


def group(chatname: str, *recipients: str) -> dict:
    return {"type": "GroupMessageInitRequest", "chatname": chatname, "recipients": list(recipients)}


@inline
async def test_group_churn_is_counted_from_the_database(server_factory, config_factory):
    config = config_factory(limits={"groups_created_per_hour": "3"})
    running = await server_factory(config)
    ann = await running.client("ann")
    await running.client("ben")
    for n in range(3):
        # Leaving keeps ann in no group at all: the creations are what count.
        assert (await ann.request(group(f"club{n}", "ben")))["status"] == 200
        leave = {"type": "GroupLeaveRequest", "chatname": f"club{n}"}
        assert (await ann.request(leave))["status"] == 200
    reply = await ann.request(group("club3", "ben"))
    assert reply["status"] == 429 and 3500 < reply["retry_after"] <= 3600, reply
    assert (await ann.request({"type": "HeartbeatRequest"}))["status"] == 200
    # A restart forgets nothing: the count is in the database.
    await running.close_clients()
    await running.service.stopService()
    again = await server_factory(config)
    ann = await again.client("ann")
    assert (await ann.request(group("club3", "ben")))["status"] == 429
    ben = await again.client("ben")
    assert (await ben.request(group("bens", "ann")))["status"] == 200


@inline
async def test_a_sign_in_past_the_session_cap_revokes_the_oldest(server_factory, config_factory):
    config = config_factory(limits={"max_sessions_per_user": "2"})
    running = await server_factory(config)
    clients, keys = [], []
    for _ in range(3):
        client = await running.client()
        keys.append((await client.register("ann"))["session_key"])
        clients.append(client)
    assert await clients[0].closed(timeout=2) == 4001
    for client in clients[1:]:
        assert (await client.request({"type": "HeartbeatRequest"}))["status"] == 200
    fresh = await running.client()
    reply = await fresh.request({"type": "ResumeRequest", "session_key": keys[0]})
    assert reply["status"] == 301
    reply = await fresh.request({"type": "ResumeRequest", "session_key": keys[2]})
    assert reply["type"] == "ResumeResponse"


@inline
async def test_pending_contact_requests_are_capped_both_ways(server_factory, config_factory):
    config = config_factory(limits={"max_pending_contact_requests": "2"})
    running = await server_factory(config)
    ann = await running.client("ann")
    for name in ("ben", "cat", "dan", "eve"):
        await running.client(name)
    for name in ("ben", "cat"):
        reply = await ann.request({"type": "ContactRequest", "username": name})
        assert reply["status"] == 200, reply
    reply = await ann.request({"type": "ContactRequest", "username": "dan"})
    assert reply["status"] == 413 and "waiting for an answer" in reply["detail"]
    # Asking again for one already pending is no new request.
    assert (await ann.request({"type": "ContactRequest", "username": "ben"}))["status"] == 200
    # The addressee side: eve has two waiting, a third is refused.
    for name in ("ben", "cat"):
        other = await running.client(name)
        assert (await other.request({"type": "ContactRequest", "username": "eve"}))["status"] == 200
    dan = await running.client("dan")
    reply = await dan.request({"type": "ContactRequest", "username": "eve"})
    assert reply["status"] == 413 and "'eve'" in reply["detail"]


@inline
async def test_random_chats_per_user_are_capped(server_factory, config_factory):
    config = config_factory(limits={"max_random_chats_per_user": "2"})
    running = await server_factory(config)
    ann = await running.client("ann")
    await running.client("ben")
    chats = []
    for _ in range(2):
        reply = await ann.request({"type": "RandomMessageRequest", "content": "hi"})
        assert reply["status"] == 200, reply
        chats.append(reply["chatname"])
    reply = await ann.request({"type": "RandomMessageRequest", "content": "hi"})
    assert reply["status"] == 413 and "random chats" in reply["detail"]
    assert (await ann.request({"type": "GroupLeaveRequest", "chatname": chats[0]}))["status"] == 200
    # Having left a random chat with ben, ann is never paired with him again: cat it is.
    await running.client("cat")
    reply = await ann.request({"type": "RandomMessageRequest", "content": "hi"})
    assert reply["status"] == 200 and reply["client"] == "cat", reply
