"""Group membership over real sockets: on SQLite and PostgreSQL, and across two nodes.

The rules in detail are in tests/test_governance_membership.py (in-process);
here the wire shapes, both databases, and a cluster of two real ``twistd``
nodes sharing PostgreSQL and Redis (as tests/test_cluster.py runs them):
a member added on one node is told and may send on the other, a member
removed or banned on one node is told and may no longer send on the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.deferreds import inline, sleep
from tests.redis import RedisServer
from tests.test_cluster import Cluster, wait_presence
from tests.wsclient import Client


async def make_group(creator: Client, chatname: str, *members: str) -> None:
    reply = await creator.request({"type": "GroupMessageInitRequest",
                                   "recipients": list(members), "chatname": chatname})
    assert reply["status"] == 200, reply


async def ask(client: Client, message: dict[str, Any]) -> dict[str, Any]:
    """The reply to *message*, passing over the pushes that arrive before it."""
    msg_id = message.get("msg_id", "ask")
    client.send({**message, "msg_id": msg_id})
    while True:
        frame = await client.recv()
        if frame.get("msg_id") == msg_id:
            return frame


async def send(client: Client, chatname: str, content: str = "hi") -> dict[str, Any]:
    return await ask(client, {"type": "GroupMessageRequest", "recipient": chatname,
                              "content": content, "msg_id": "send"})


async def drain(client: Client) -> list[dict[str, Any]]:
    """Every frame owed to *client* so far (see Client.frames_until_heartbeat)."""
    return await client.frames_until_heartbeat()


# -- one server, SQLite and PostgreSQL ---------------------------------------------

@inline
async def test_add_remove_ban_unban_mute_invite_join_and_leave_over_the_wire(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    carol = await server.client("carol")
    await make_group(alice, "club", "bob")
    await bob.expect("GroupMessageInitResponse", status=201)

    added = await ask(alice, {"type": "GroupAddRequest", "chatname": "club",
                                 "users": ["carol"], "msg_id": 1})
    assert added == {"type": "GroupAddResponse", "status": 200, "chatname": "club",
                     "added": ["carol"], "already": [], "msg_id": 1}
    await carol.expect("GroupMessageInitResponse", status=201, chatname="club",
                       members=["alice", "bob", "carol"])
    await bob.expect("GroupEventRecv", event="added", user="carol", by="alice")
    assert (await send(carol, "club"))["type"] == "MessageSendResponse"
    await bob.expect("GroupMessageRecv", sender="carol")

    muted = await ask(alice, {"type": "GroupMuteRequest", "chatname": "club",
                                 "user": "carol", "minutes": 5})
    assert muted["status"] == 200 and muted["muted_until"].endswith("Z")
    refused = await send(carol, "club")
    assert refused["status"] == 403
    assert refused["detail"] == f"you are muted in 'club' until {muted['muted_until']}"
    await ask(alice, {"type": "GroupMuteRequest", "chatname": "club", "user": "carol",
                         "minutes": 0})
    assert (await send(carol, "club"))["status"] == 200

    removed = await ask(alice, {"type": "GroupRemoveRequest", "chatname": "club",
                                   "user": "carol", "ban": True, "reason": "spam"})
    assert removed == {"type": "GroupRemoveResponse", "status": 200, "chatname": "club",
                       "user": "carol", "banned": True, "msg_id": "ask"}
    told = [f for f in await drain(carol) if f["type"] == "GroupRemovedRecv"]
    assert told == [{"type": "GroupRemovedRecv", "status": 200, "chatname": "club",
                     "by": "alice", "reason": "spam", "banned": True}]
    assert (await send(carol, "club"))["status"] == 403
    history = await ask(carol, {"type": "HistoryRequest", "chatname": "club"})
    assert history["status"] == 403
    again = await ask(alice, {"type": "GroupAddRequest", "chatname": "club",
                                 "users": ["carol"]})
    assert (again["status"], again["detail"]) == (409, "'carol' is banned from 'club'")
    info = await ask(alice, {"type": "GroupInfoRequest", "chatname": "club"})
    assert [(b["username"], b["reason"]) for b in info["bans"]] == [("carol", "spam")]

    invite = await ask(alice, {"type": "GroupInviteRequest", "chatname": "club",
                                  "max_uses": 2})
    assert invite["status"] == 201 and invite["max_uses"] == 2
    banned_join = await ask(carol, {"type": "GroupJoinRequest", "code": invite["code"]})
    assert banned_join["status"] == 403
    unban = await ask(alice, {"type": "GroupUnbanRequest", "chatname": "club",
                                 "user": "carol"})
    assert unban["status"] == 200
    joined = await ask(carol, {"type": "GroupJoinRequest", "code": invite["code"]})
    assert joined == {"type": "GroupJoinResponse", "status": 200, "chatname": "club",
                      "msg_id": "ask"}
    frames = await drain(bob)
    assert [(f["event"], f["user"]) for f in frames if f["type"] == "GroupEventRecv"] == [
        ("muted", "carol"), ("unmuted", "carol"), ("banned", "carol"), ("unbanned", "carol"),
        ("joined", "carol")]

    # Added while offline: told at the next sign-in, marked offline.
    dave = await server.client("dave")
    await dave.close()
    assert (await ask(alice, {"type": "GroupAddRequest", "chatname": "club",
                              "users": ["dave"]}))["added"] == ["dave"]
    dave = await server.client("dave")
    notices = [f for f in await drain(dave) if f["type"] == "GroupMessageInitResponse"]
    assert [(n["status"], n["chatname"], n.get("offline")) for n in notices] == [
        (201, "club", True)]
    await bob.expect("GroupEventRecv", event="added", user="dave")

    # Removed while offline: told at the next sign-in too, once.
    await dave.close()
    removed = await ask(alice, {"type": "GroupRemoveRequest", "chatname": "club",
                                "user": "dave", "reason": "inactive"})
    assert removed["status"] == 200
    await bob.expect("GroupEventRecv", event="removed", user="dave", reason="inactive")
    dave = await server.client("dave")
    told = [f for f in await drain(dave) if f["type"] == "GroupRemovedRecv"]
    assert [(t["chatname"], t["by"], t["reason"], t["banned"], t.get("offline"))
            for t in told] == [("club", "alice", "inactive", False, True)]
    await dave.close()
    dave = await server.client("dave")
    assert not [f for f in await drain(dave) if f["type"] == "GroupRemovedRecv"]
    await dave.close()

    left = await ask(carol, {"type": "GroupLeaveRequest", "chatname": "club"})
    assert left["status"] == 200
    await bob.expect("GroupMemberLeftRecv", user="carol")
    await bob.expect("GroupEventRecv", event="left", user="carol", by="carol")
    page = await ask(bob, {"type": "HistoryRequest", "chatname": "club"})
    assert page["messages"][0]["content"] == "carol left"
    assert page["messages"][0]["event"] == {"event": "left", "user": "carol", "by": "carol"}


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


async def until_status(client: Client, chatname: str, status: int) -> dict[str, Any]:
    """Send until the answer has *status* (the other node hears of changes shortly)."""
    for _ in range(50):
        reply = await send(client, chatname)
        if reply["status"] == status:
            return reply
        await sleep(0.1)
    raise AssertionError(f"{chatname}: never {status}: {reply}")


async def until_event(client: Client, event: str, user: str) -> dict[str, Any]:
    """The next GroupEventRecv *event* about *user* (pushes from another node come via Redis)."""
    while True:
        frame = await client.recv(timeout=10)
        if frame.get("type") == "GroupEventRecv" and (frame["event"], frame["user"]) == (
                event, user):
            return frame


@inline
async def test_add_mute_remove_and_ban_hold_on_the_other_node(pair):
    alice = await pair.client("n1", "alice")
    bob = await pair.client("n2", "bob")
    carol = await pair.client("n2", "carol")
    await wait_presence(pair, alice, "bob", "carol")
    await make_group(alice, "club", "carol")
    await carol.expect("GroupMessageInitResponse", status=201)

    # Added on n1: bob, on n2, is told and may send at once.
    added = await ask(alice, {"type": "GroupAddRequest", "chatname": "club",
                                 "users": ["bob"]})
    assert added["added"] == ["bob"], added
    await bob.expect("GroupMessageInitResponse", status=201, chatname="club")
    assert (await send(bob, "club", "hello"))["status"] == 200
    await alice.expect("GroupMessageRecv", content="hello")

    # Muted on n1: refused on n2; lifted: sends again.
    await ask(alice, {"type": "GroupMuteRequest", "chatname": "club", "user": "bob",
                         "minutes": 5})
    refused = await until_status(bob, "club", 403)
    assert refused["detail"].startswith("you are muted in 'club' until ")
    await ask(alice, {"type": "GroupMuteRequest", "chatname": "club", "user": "bob",
                         "minutes": 0})
    await until_status(bob, "club", 200)

    # Removed with a ban on n1: told on n2, and n2 refuses his sends at once.
    removed = await ask(alice, {"type": "GroupRemoveRequest", "chatname": "club",
                                   "user": "bob", "ban": True})
    assert removed["status"] == 200, removed
    while (frame := await bob.recv(timeout=10))["type"] != "GroupRemovedRecv":
        pass
    assert frame == {"type": "GroupRemovedRecv", "status": 200, "chatname": "club",
                     "by": "alice", "reason": "", "banned": True}
    assert (await send(bob, "club"))["status"] == 403
    assert (await ask(bob, {"type": "HistoryRequest", "chatname": "club"}))["status"] == 403
    # carol, on n2, heard of it as an event.
    await until_event(carol, "banned", "bob")
    # The ban holds on n2 too: no invite code brings him back.
    invite = await ask(alice, {"type": "GroupInviteRequest", "chatname": "club"})
    assert (await ask(bob, {"type": "GroupJoinRequest", "code": invite["code"]}))[
        "status"] == 403
    # Unbanned, he joins on n2 with the code made on n1; alice on n1 hears it.
    await ask(alice, {"type": "GroupUnbanRequest", "chatname": "club", "user": "bob"})
    joined = await ask(bob, {"type": "GroupJoinRequest", "code": invite["code"]})
    assert joined["status"] == 200, joined
    await until_event(alice, "joined", "bob")
    assert (await send(bob, "club", "back"))["status"] == 200
    await pair.close()
