"""Personal safety in-process: blocks, settings and random-chat avoidance.

The rules of chateau/handlers/safety.py driven through the Dispatcher with a
real registry and SQLite store (tests/inprocess.py); the wire on real
sockets, SQLite and PostgreSQL, and two clustered nodes is in
tests/test_safety_sockets.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from chateau.cluster_sync import ClusterSync
from chateau.messages import encode
from chateau.safety import Settings
from tests.inprocess import FakeConnection, InProcessChat


def send(chat: InProcessChat, sender: FakeConnection, recipient: str, content: str) -> dict[str, Any]:
    return chat.request(sender, {"type": "MessageRequest", "recipient": recipient,
                                 "content": content})


def block(chat: InProcessChat, who: FakeConnection, whom: str) -> dict[str, Any]:
    reply = chat.request(who, {"type": "BlockRequest", "username": whom, "msg_id": 1})
    assert reply == {"type": "BlockResponse", "status": 200, "username": whom.lower(),
                     "msg_id": 1}
    return reply


def kinds(pushes: list[dict[str, Any]]) -> list[str]:
    return [push["type"] for push in pushes]


def history(chat: InProcessChat, conn: FakeConnection, **where: Any) -> list[dict[str, Any]]:
    reply = chat.request(conn, {"type": "HistoryRequest", **where})
    assert reply["type"] == "HistoryResponse", reply
    return reply["messages"]


def test_block_refusals_and_the_block_list(chat: InProcessChat) -> None:
    chat.disconnect(chat.sign_in("bob"))
    alice = chat.sign_in("alice")
    reply = chat.request(alice, {"type": "BlockRequest", "username": "Alice"})
    assert (reply["type"], reply["status"]) == ("ErrorResponse", 400)
    reply = chat.request(alice, {"type": "BlockRequest", "username": "nobody"})
    assert (reply["type"], reply["status"]) == ("ErrorResponse", 404)
    reply = chat.request(alice, {"type": "UnblockRequest", "username": "bob"})
    assert (reply["status"], reply["detail"]) == (404, "you do not block 'bob'")
    assert chat.request(alice, {"type": "BlockListRequest"})["blocked"] == []
    block(chat, alice, "BOB")
    block(chat, alice, "bob")  # again: still one block
    listed = chat.request(alice, {"type": "BlockListRequest"})
    assert listed["type"] == "BlockListResponse"
    assert [entry["username"] for entry in listed["blocked"]] == ["bob"]
    assert listed["blocked"][0]["since"].endswith("Z")
    reply = chat.request(alice, {"type": "UnblockRequest", "username": "bob", "msg_id": 2})
    assert reply == {"type": "UnblockResponse", "status": 200, "username": "bob", "msg_id": 2}
    assert chat.request(alice, {"type": "BlockListRequest"})["blocked"] == []


def test_a_blocked_persons_direct_messages_never_reach_the_blocker(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    block(chat, alice, "bob")
    ack = send(chat, bob, "alice", "can you hear me?")
    assert ack["type"] == "MessageSendResponse" and ack["status"] == 200
    assert alice.take() == []
    # The sender's own view of the chat is as usual; the blocker's has none of it.
    assert [m["content"] for m in history(chat, bob, user="alice")] == ["can you hear me?"]
    assert history(chat, alice, user="bob") == []
    # Offline, then back: nothing at catch-up either.
    chat.disconnect(alice)
    send(chat, bob, "alice", "still there?")
    again = chat.sign_in("alice")
    assert [p for p in again.take() if p["type"] == "MessageRecv"] == []
    # Alice's own messages to bob still go (blocking is one way).
    send(chat, again, "bob", "go away")
    assert [p["content"] for p in bob.take() if p["type"] == "MessageRecv"] == ["go away"]
    # Unblocking restores future delivery only.
    chat.request(again, {"type": "UnblockRequest", "username": "bob"})
    send(chat, bob, "alice", "sorry")
    assert [p["content"] for p in again.take() if p["type"] == "MessageRecv"] == ["sorry"]


def test_group_messages_of_a_blocked_member_are_withheld_and_hidden(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    chat.request(alice, {"type": "GroupMessageInitRequest", "chatname": "club",
                         "recipients": ["bob", "carol"]})
    before = send(chat, bob, "club", "before the block")
    block(chat, alice, "bob")
    for conn in (alice, bob, carol):
        conn.take()
    send(chat, bob, "club", "live")
    assert alice.take() == []
    assert [p["content"] for p in carol.take()] == ["live"]
    send(chat, carol, "club", "carol speaks")
    assert [p["content"] for p in alice.take()] == ["carol speaks"]
    chat.disconnect(alice)
    send(chat, bob, "club", "while away")
    send(chat, carol, "club", "carol again")
    alice = chat.sign_in("alice")
    missed = [p for p in alice.take() if p["type"] == "GroupMessageRecv"]
    assert [(p["sender"], p["content"]) for p in missed] == [("carol", "carol again")]
    entries = history(chat, alice, chatname="club")
    hidden = [e for e in entries if e.get("hidden")]
    assert len(hidden) == 3 and before["id"] in {e["id"] for e in hidden}
    assert all(set(e) == {"id", "timestamp", "hidden"} for e in hidden)
    assert [e["content"] for e in entries if not e.get("hidden")] == [
        "carol again", "carol speaks"]
    # Others see everything.
    assert len(history(chat, carol, chatname="club")) == 5


def test_blocking_ends_a_contact_and_drops_requests(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    chat.request(bob, {"type": "ContactRequest", "username": "alice"})
    chat.request(alice, {"type": "ContactAccept", "username": "bob"})
    alice.take(), bob.take()
    block(chat, alice, "bob")
    # Bob sees the contact end as if removed: nothing more.
    assert bob.take() == [{"type": "ContactRemoveRecv", "status": 200, "username": "alice"}]
    book = chat.request(alice, {"type": "ContactListRequest"})
    assert book["contacts"] == [] and book["pending"] == []
    reply = chat.request(bob, {"type": "ContactRequest", "username": "alice"})
    assert (reply["type"], reply["status"], reply["state"]) == ("ContactRequestResponse", 200,
                                                                "pending")
    assert alice.take() == []
    assert chat.request(alice, {"type": "ContactListRequest"})["pending"] == []


def test_a_pending_request_from_the_blocked_person_is_removed(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    chat.request(bob, {"type": "ContactRequest", "username": "alice"})
    block(chat, alice, "bob")
    assert chat.request(alice, {"type": "ContactListRequest"})["pending"] == []


def random_pair(chat: InProcessChat, conn: FakeConnection) -> dict[str, Any]:
    return chat.request(conn, {"type": "RandomMessageRequest", "content": "hi"})


def test_blocking_ends_a_random_chat_and_they_are_never_paired_again(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    pair = random_pair(chat, alice)
    assert pair["client"] == "bob"
    alice.take(), bob.take()
    block(chat, bob, "alice")
    assert alice.take() == [{"type": "RandomChatEndedRecv", "status": 200,
                             "chatname": pair["chatname"], "user": "bob", "reason": "left"}]
    assert kinds(bob.take()) == ["RandomChatEndedRecv"]
    chat.request(bob, {"type": "UnblockRequest", "username": "alice"})
    assert random_pair(chat, alice)["status"] == 404
    assert random_pair(chat, bob)["status"] == 404
    carol = chat.sign_in("carol")
    assert random_pair(chat, alice)["client"] == "carol"
    assert carol.take()


def test_leaving_a_random_chat_keeps_the_two_apart_after_a_restart(
    chat: InProcessChat, tmp_path: Path
) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    pair = random_pair(chat, alice)
    chat.request(bob, {"type": "GroupLeaveRequest", "chatname": pair["chatname"]})
    assert random_pair(chat, alice)["status"] == 404
    chat.disconnect(alice), chat.disconnect(bob)
    later = InProcessChat(chat.config)
    later.start()
    try:
        alice, bob = later.sign_in("alice"), later.sign_in("bob")
        assert random_pair(later, bob)["status"] == 404
    finally:
        later.stop()


def test_keep_apart_holds_at_once_and_reports_hold_at_sign_on(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    chat.registry.keep_apart("alice", "bob")
    assert random_pair(chat, alice)["status"] == 404
    chat.disconnect(alice), chat.disconnect(bob)
    # What a ReportRequest stores: read at the next sign-on, in both directions.
    from chateau.store.tables import reports
    with chat.engine.begin() as connection:
        connection.execute(reports.insert().values(
            reporter="carol", reason="rude", username="dave", created_at=0))
    carol, dave = chat.sign_in("carol"), chat.sign_in("dave")
    assert random_pair(chat, carol)["status"] == 404
    assert random_pair(chat, dave)["status"] == 404


def test_settings_read_change_and_refuse_bad_values(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    defaults = {"type": "SettingsResponse", "status": 200, "direct_messages": "everyone",
                "presence": "everyone", "random_chat": True, "read_receipts": True, "msg_id": 1}
    assert chat.request(alice, {"type": "SettingsRequest", "msg_id": 1}) == defaults
    reply = chat.request(alice, {"type": "SettingsRequest", "presence": "contacts",
                                 "read_receipts": False, "msg_id": 1})
    assert reply == {**defaults, "presence": "contacts", "read_receipts": False}
    assert chat.request(alice, {"type": "SettingsRequest", "msg_id": 1}) == reply
    for bad in ({"presence": "all"}, {"direct_messages": "nobody"}, {"random_chat": "no"},
                {"read_receipts": 1}):
        reply = chat.request(alice, {"type": "SettingsRequest", **bad})
        assert (reply["type"], reply["status"]) == ("ErrorResponse", 400), bad
    # Back to the defaults: no row kept.
    chat.request(alice, {"type": "SettingsRequest", "presence": "everyone",
                         "read_receipts": True})
    assert chat.wait(chat.store.safety.all_settings()) == {}


def test_direct_messages_from_contacts_only(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    chat.request(alice, {"type": "SettingsRequest", "direct_messages": "contacts"})
    chat.request(bob, {"type": "ContactRequest", "username": "alice"})
    chat.request(alice, {"type": "ContactAccept", "username": "bob"})
    assert send(chat, bob, "alice", "hello friend")["type"] == "MessageSendResponse"
    reply = send(chat, carol, "alice", "hello stranger")
    assert (reply["status"], reply["detail"]) == (
        403, "'alice' accepts direct messages from contacts only")
    # Offline: asked of the database.
    chat.disconnect(alice)
    assert send(chat, carol, "alice", "hello?")["status"] == 403
    assert send(chat, bob, "alice", "later")["type"] == "MessageSendResponse"
    # Group messages are not direct messages.
    alice = chat.sign_in("alice")
    chat.request(carol, {"type": "GroupMessageInitRequest", "chatname": "club",
                         "recipients": ["alice"]})
    assert send(chat, carol, "club", "in the group")["type"] == "MessageSendResponse"


def test_presence_settings_in_client_list_members_and_pushes(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    chat.request(alice, {"type": "ContactRequest", "username": "bob"})
    chat.request(bob, {"type": "ContactAccept", "username": "alice"})
    chat.request(alice, {"type": "GroupMessageInitRequest", "chatname": "club",
                         "recipients": ["bob", "carol"]})

    def clients(conn: FakeConnection) -> list[str]:
        return chat.request(conn, {"type": "ClientListRequest"})["clients"]

    def members(conn: FakeConnection) -> dict[str, bool]:
        reply = chat.request(conn, {"type": "GroupMembersRequest", "chatname": "club"})
        return {m["username"]: m["online"] for m in reply["members"]}

    def info(conn: FakeConnection) -> dict[str, bool]:
        reply = chat.request(conn, {"type": "GroupInfoRequest", "chatname": "club"})
        return {m["username"]: m["online"] for m in reply["members"]}

    chat.request(alice, {"type": "SettingsRequest", "presence": "contacts"})
    assert "alice" in clients(bob) and "alice" not in clients(carol)
    assert members(bob)["alice"] and not members(carol)["alice"]
    assert not info(carol)["alice"]
    bob.take()
    chat.request(alice, {"type": "SettingsRequest", "presence": "nobody"})
    assert bob.take() == [{"type": "PresenceRecv", "status": 200, "username": "alice",
                           "online": False}]
    assert "alice" not in clients(bob) and not members(bob)["alice"] and not info(bob)["alice"]
    assert members(alice)["alice"]  # yourself, always
    book = chat.request(bob, {"type": "ContactListRequest"})
    assert book["contacts"] == [{"username": "alice", "online": False}]
    # Signing off and on tells nobody.
    chat.disconnect(alice)
    alice = chat.sign_in("alice")
    assert [p for p in bob.take() if p["type"] == "PresenceRecv"] == []
    chat.request(alice, {"type": "SettingsRequest", "presence": "everyone"})
    assert bob.take() == [{"type": "PresenceRecv", "status": 200, "username": "alice",
                           "online": True}]
    assert "alice" in clients(carol)


def test_opting_out_of_random_chat(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    chat.request(bob, {"type": "SettingsRequest", "random_chat": False})
    assert random_pair(chat, alice)["status"] == 404
    reply = random_pair(chat, bob)
    assert reply["status"] == 403 and "opted out" in reply["detail"]
    chat.request(bob, {"type": "SettingsRequest", "random_chat": True})
    assert random_pair(chat, alice)["client"] == "bob"


def test_settings_and_blocks_hold_after_a_restart(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    chat.disconnect(chat.sign_in("bob"))
    block(chat, alice, "bob")
    chat.request(alice, {"type": "SettingsRequest", "presence": "nobody"})
    chat.disconnect(alice)
    later = InProcessChat(chat.config)
    later.start()
    try:
        assert later.registry.settings("alice").presence == "nobody"
        alice, bob = later.sign_in("alice"), later.sign_in("bob")
        assert "alice" not in later.request(bob, {"type": "ClientListRequest"})["clients"]
        send(later, bob, "alice", "hi")
        assert [p for p in alice.take() if p["type"] == "MessageRecv"] == []
    finally:
        later.stop()


def test_other_nodes_events_apply_blocks_and_settings_here(chat: InProcessChat) -> None:
    """What ClusterSync does with the block, apart and settings events of another node."""
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    sync = ClusterSync(chat.registry, chat.store, chat.delivery, chat.catch_up, chat.backplane)
    sync.event({"t": "block", "node": "n2", "blocker": "alice", "blocked": "bob", "on": True})
    send(chat, bob, "alice", "hi")
    assert alice.take() == []
    # A message forwarded by another node, naming its sender, is passed over too.
    payload = encode({"type": "MessageRecv", "sender": "bob", "content": "via n2"})
    sync.forwarded("n2", ["alice"], payload, None, "bob")
    assert alice.take() == []
    sync.forwarded("n2", ["alice"], payload, None, "carol")
    assert len(alice.take()) == 1
    sync.event({"t": "block", "node": "n2", "blocker": "alice", "blocked": "bob", "on": False})
    send(chat, bob, "alice", "again")
    assert [p["content"] for p in alice.take()] == ["again"]
    assert random_pair(chat, alice)["status"] == 404  # blocked once: kept apart
    sync.event({"t": "settings", "node": "n2", "user": "bob",
                "settings": Settings(presence="nobody").as_wire()})
    assert chat.request(alice, {"type": "ClientListRequest"})["clients"] == []
    carol = chat.sign_in("carol")
    sync.event({"t": "apart", "node": "n2", "first": "carol", "second": "bob"})
    assert random_pair(chat, carol)["client"] == "alice"
    # Someone on another node blocks a user here: the user here is never paired with them.
    dave = chat.sign_in("dave")
    chat.registry.remote_connect("erin", "n2")
    sync.event({"t": "block", "node": "n2", "blocker": "erin", "blocked": "dave", "on": True})
    partners = []
    while (pair := random_pair(chat, dave))["status"] == 200:
        partners.append(pair["client"])
        # Leaving keeps them apart too, so each is chosen once.
        chat.request(dave, {"type": "GroupLeaveRequest", "chatname": pair["chatname"]})
    assert sorted(partners) == ["alice", "bob", "carol"]
