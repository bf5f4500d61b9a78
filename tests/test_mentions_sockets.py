"""Mentions over real WebSockets: on SQLite and PostgreSQL, and across two clustered nodes.

The parser and the rules in detail are in tests/test_mentions.py (in-process).
"""

from __future__ import annotations

from typing import Any

from tests.deferreds import inline, sleep
from tests.test_cluster import Cluster, two_nodes, wait_presence  # noqa: F401 (a fixture)
from tests.test_governance_membership_sockets import ask, drain, make_group, send
from tests.wsclient import Client

REFUSAL = "only the group's admins may mention @all"


async def next_of(client: Client, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next frame of *kind*, passing over others."""
    while True:
        frame = await client.recv(timeout)
        if frame.get("type") == kind:
            return frame


# -- one server, SQLite and PostgreSQL ---------------------------------------------

@inline
async def test_mentions_reach_every_member_history_catch_up_and_edits(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    carol = await server.client("carol")
    root = await server.client("root")
    assert await server.service.store.accounts.set_admin("root", True)
    await make_group(alice, "club", "bob", "carol", "root")
    for member in (bob, carol, root):
        await member.expect("GroupMessageInitResponse", status=201)

    # A plain member's @all: 403, nothing stored, nobody told.
    refused = await send(bob, "club", "@ALL look")
    assert refused["type"] == "ErrorResponse" and refused["status"] == 403, refused
    assert refused["detail"] == REFUSAL
    assert await drain(carol) == []
    page = await ask(carol, {"type": "HistoryRequest", "chatname": "club"})
    assert page["messages"] == []

    # A member's @name: every member gets the same list; the sender's answer has it.
    sent = await send(bob, "club", "@Carol and @Alice, mail me at bob@example.org")
    assert sent["type"] == "MessageSendResponse" and sent["mentions"] == ["alice", "carol"]
    for member in (alice, carol, root):
        push = await member.expect("GroupMessageRecv", id=sent["id"])
        assert push["mentions"] == ["alice", "carol"]

    # The owner's and a server admin's @all.
    for who in (alice, root):
        sent_all = await send(who, "club", "@all meeting at five")
        assert sent_all["mentions"] == ["@all"], sent_all
        push = await bob.expect("GroupMessageRecv", id=sent_all["id"])
        assert push["mentions"] == ["@all"]
    plain = await send(alice, "club", "no one in particular")
    assert "mentions" not in plain
    assert "mentions" not in (await bob.expect("GroupMessageRecv", id=plain["id"]))

    # History reads the stored list.
    page = await ask(carol, {"type": "HistoryRequest", "chatname": "club"})
    assert [m.get("mentions") for m in reversed(page["messages"])] == [
        ["alice", "carol"], ["@all"], ["@all"], None]

    # carol, offline, is pushed what she missed with its mentions.
    await carol.close()
    missed = await send(bob, "club", "@carol are you there?")
    carol = await server.client("carol")
    push = await next_of(carol, "GroupMessageRecv")
    assert push["id"] == missed["id"] and push["offline"] is True
    assert push["mentions"] == ["carol"]

    # An edit recomputes them; @all in a plain member's edit is refused.
    edit = await ask(bob, {"type": "MessageEditRequest", "id": missed["id"],
                           "content": "@root and @alice, are you?"})
    assert edit["status"] == 200, edit
    edited = await next_of(carol, "MessageEdited")
    assert edited["id"] == missed["id"] and edited["mentions"] == ["alice", "root"]
    refused = await ask(bob, {"type": "MessageEditRequest", "id": missed["id"],
                              "content": "@all!"})
    assert refused["status"] == 403 and refused["detail"] == REFUSAL
    page = await ask(carol, {"type": "HistoryRequest", "chatname": "club", "limit": 1})
    assert page["messages"][0]["mentions"] == ["alice", "root"]
    assert page["messages"][0]["content"] == "@root and @alice, are you?"


@inline
async def test_direct_messages_carry_no_mentions(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    sent = await ask(alice, {"type": "GroupMessageRequest", "recipient": "bob",
                             "content": "@bob @all hi"})
    assert sent["type"] == "MessageSendResponse" and "mentions" not in sent
    push = await bob.expect("MessageRecv")
    assert "mentions" not in push


# -- two clustered nodes ----------------------------------------------------------

@inline
async def test_mentions_and_the_at_all_rule_hold_on_the_other_node(two_nodes: Cluster):
    alice = await two_nodes.client("n1", "alice")
    bob = await two_nodes.client("n2", "bob")
    carol = await two_nodes.client("n2", "carol")
    await wait_presence(two_nodes, alice, "bob", "carol")
    await make_group(alice, "club", "bob", "carol")
    for member in (bob, carol):
        await member.expect("GroupMessageInitResponse", status=201)

    # Sent on n1: the members on n2 get the mentions.
    sent = await send(alice, "club", "@all: @bob chairs")
    assert sent["mentions"] == ["@all", "bob"], sent
    for member in (bob, carol):
        push = await next_of(member, "GroupMessageRecv")
        assert push["id"] == sent["id"] and push["mentions"] == ["@all", "bob"]

    # n2 knows carol is a plain member: her @all is refused there.
    refused = await send(carol, "club", "@all hello")
    assert refused["status"] == 403 and refused["detail"] == REFUSAL
    # Made an admin on n1, she may on n2 once n2 has heard of it.
    role = await ask(alice, {"type": "GroupRoleRequest", "chatname": "club", "user": "carol",
                             "role": "admin"})
    assert role["status"] == 200, role
    for _ in range(50):
        reply = await send(carol, "club", "@all hello")
        if reply["status"] == 200:
            break
        await sleep(0.1)
    assert reply["mentions"] == ["@all"], reply
    push = await next_of(alice, "GroupMessageRecv")
    assert push["sender"] == "carol" and push["mentions"] == ["@all"]

    # An edit on n2 reaches n1 with the recomputed mentions.
    edit = await ask(carol, {"type": "MessageEditRequest", "id": reply["id"],
                             "content": "hello @Alice"})
    assert edit["status"] == 200, edit
    edited = await next_of(alice, "MessageEdited")
    assert edited["id"] == reply["id"] and edited["mentions"] == ["alice"]
    await two_nodes.close()
