"""Group settings, renames and the directory over real sockets: SQLite and
PostgreSQL (the ``server`` fixture), a restart, and two clustered nodes."""

from __future__ import annotations

from typing import Any

from tests.deferreds import inline
from tests.test_cluster import (  # noqa: F401  (two_nodes is a fixture)
    two_nodes, until, wait_presence,
)
from tests.wsclient import send_message as send


async def make_group(creator, chatname: str, *members: str) -> None:
    reply = await creator.request({"type": "GroupMessageInitRequest",
                                   "recipients": list(members), "chatname": chatname})
    assert reply["status"] == 200, reply


def without_stamp(frame: dict[str, Any]) -> dict[str, Any]:
    assert frame.pop("id") > 0 and frame.pop("timestamp")
    return frame


@inline
async def test_update_topic_settings_and_the_directory_over_the_wire(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    carol = await server.client("carol")
    await make_group(alice, "chess", "bob")
    await bob.expect("GroupMessageInitResponse", chatname="chess")
    reply = await alice.request({"type": "GroupUpdateRequest", "chatname": "Chess",
                                 "topic": "Blitz on Tuesdays", "visibility": "public",
                                 "join": "open", "msg_id": 1})
    assert reply == {"type": "GroupUpdateResponse", "status": 200, "chatname": "chess",
                     "topic": "Blitz on Tuesdays", "msg_id": 1,
                     "settings": {"join": "open", "visibility": "public",
                                  "who_can_add": "admins", "who_can_send": "everyone",
                                  "retention_days": None}}
    topic = without_stamp(await bob.expect("GroupEventRecv", event="topic"))
    assert topic == {"type": "GroupEventRecv", "status": 200, "chatname": "chess",
                     "event": "topic", "user": "alice", "by": "alice",
                     "topic": "Blitz on Tuesdays"}
    settings = await bob.expect("GroupEventRecv", event="settings")
    assert settings["settings"] == {"join": "open", "visibility": "public"}
    # Members may not; outsiders may not; bad values are 400.
    refused = await bob.request({"type": "GroupUpdateRequest", "chatname": "chess", "topic": "x"})
    assert refused["status"] == 403 and "only admins and owners" in refused["detail"], refused
    refused = await carol.request({"type": "GroupUpdateRequest", "chatname": "chess",
                                   "topic": "x"})
    assert refused["status"] == 403 and "not a member" in refused["detail"], refused
    bad = await alice.request({"type": "GroupUpdateRequest", "chatname": "chess",
                               "who_can_send": "nobody"})
    assert bad["status"] == 400 and "'everyone', 'admins'" in bad["detail"], bad
    # Anyone signed in finds the public group.
    found = await carol.request({"type": "GroupDirectoryRequest", "query": "BLITZ"})
    assert found == {"type": "GroupDirectoryResponse", "status": 200, "msg_id": None,
                     "groups": [{"chatname": "chess", "topic": "Blitz on Tuesdays",
                                 "members": 2, "join": "open"}]}
    assert (await carol.request({"type": "GroupDirectoryRequest", "limit": 500}))["status"] == 400
    await bob.nothing(0.1)


@inline
async def test_a_rename_moves_history_and_membership_and_survives_a_restart(
    server_factory, config_factory,
):
    config = config_factory()
    running = await server_factory(config)
    alice = await running.client("alice")
    bob = await running.client("bob")
    await make_group(alice, "club", "bob")
    await bob.expect("GroupMessageInitResponse", chatname="club")
    first = await send(bob, "club", "before the rename")
    await alice.expect("GroupMessageRecv", chatname="club", status=201)
    reply = await alice.request({"type": "GroupUpdateRequest", "chatname": "club",
                                 "name": "Book Club"})
    assert reply["status"] == 200 and reply["chatname"] == "book club", reply
    renamed = without_stamp(await bob.expect("GroupEventRecv", event="renamed"))
    assert renamed == {"type": "GroupEventRecv", "status": 200, "chatname": "book club",
                       "event": "renamed", "user": "alice", "by": "alice",
                       "old_name": "club", "new_name": "book club"}
    old = await bob.request({"type": "MessageRequest", "recipient": "club", "content": "x"})
    assert old["status"] == 404, old
    await send(bob, "book club", "after the rename")
    await alice.expect("GroupMessageRecv", chatname="book club", status=200)
    # A name that is taken, by a user or a look-alike, is 409.
    for name in ("bob", "b\u03bfb"):
        taken = await alice.request({"type": "GroupUpdateRequest", "chatname": "book club",
                                     "name": name})
        assert taken["status"] == 409, taken
    await running.close_clients()
    await running.service.stopService()

    again = await server_factory(config)
    bob = await again.client("bob")
    page = await bob.request({"type": "HistoryRequest", "chatname": "book club"})
    assert [m["content"] for m in reversed(page["messages"])] == [
        "before the rename", "alice renamed the group from club to book club",
        "after the rename"]
    assert page["messages"][-1]["id"] == first["id"]
    members = await bob.request({"type": "GroupMembersRequest", "chatname": "book club"})
    assert [m["username"] for m in members["members"]] == ["alice", "bob"]
    info = await bob.request({"type": "GroupInfoRequest", "chatname": "book club"})
    assert [(m["username"], m["role"]) for m in info["members"]] == [
        ("alice", "owner"), ("bob", "member")]
    for request in ({"type": "HistoryRequest", "chatname": "club"},
                    {"type": "GroupInfoRequest", "chatname": "club"},
                    {"type": "MessageRequest", "recipient": "club", "content": "x"}):
        assert (await bob.request(request))["status"] == 404, request
    alice = await again.client("alice")
    await send(bob, "book club", "after the restart")
    recv = await alice.expect("GroupMessageRecv", chatname="book club")
    assert recv["status"] == 200  # the group had started: no 201 after the restart




@inline
async def test_a_rename_on_one_node_holds_on_the_other(two_nodes):
    cluster = two_nodes
    alice = await cluster.client("n1", "alice")
    bob = await cluster.client("n2", "bob")
    carol = await cluster.client("n2", "carol")
    await wait_presence(cluster, alice, "bob", "carol")
    await make_group(alice, "club", "bob", "carol")
    await bob.expect("GroupMessageInitResponse", chatname="club")
    await carol.expect("GroupMessageInitResponse", chatname="club")
    await send(bob, "club", "hello from n2")
    for member in (alice, carol):
        await member.expect("GroupMessageRecv", chatname="club", content="hello from n2")
    reply = await alice.request({"type": "GroupUpdateRequest", "chatname": "club",
                                 "name": "lounge", "topic": "quiet"})
    assert reply["status"] == 200 and reply["chatname"] == "lounge", reply
    for member in (bob, carol):
        renamed = await member.expect("GroupEventRecv", event="renamed", chatname="lounge")
        assert (renamed["old_name"], renamed["new_name"]) == ("club", "lounge")
        await member.expect("GroupEventRecv", event="topic", chatname="lounge", topic="quiet")

    async def moved() -> bool:
        info = await carol.request({"type": "GroupInfoRequest", "chatname": "lounge"})
        return info["status"] == 200

    assert await until(moved), "n2 never heard of the rename"
    for request in ({"type": "MessageRequest", "recipient": "club", "content": "x"},
                    {"type": "HistoryRequest", "chatname": "club"},
                    {"type": "GroupInfoRequest", "chatname": "club"}):
        assert (await carol.request(request))["status"] == 404, request
    # Members on n2 send under the new name; alice on n1 gets it.
    await send(carol, "lounge", "hello again")
    got = await alice.expect("GroupMessageRecv", chatname="lounge", content="hello again")
    assert got["sender"] == "carol"
    await bob.expect("GroupMessageRecv", chatname="lounge", content="hello again")
    page = await bob.request({"type": "HistoryRequest", "chatname": "lounge"})
    assert "hello from n2" in [m["content"] for m in page["messages"]]
    # The group's retention, set on n1, is the group's on n2 (the database holds it).
    reply = await alice.request({"type": "GroupUpdateRequest", "chatname": "lounge",
                                 "retention_days": 7})
    assert reply["status"] == 200 and reply["settings"]["retention_days"] == 7, reply
    for member in (bob, carol):
        event = await member.expect("GroupEventRecv", event="settings", chatname="lounge")
        assert event["settings"] == {"retention_days": 7}
    info = await carol.request({"type": "GroupInfoRequest", "chatname": "lounge"})
    assert info["settings"]["retention_days"] == 7
    await cluster.close()
