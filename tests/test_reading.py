"""Read state in-process: ReadRequest, ReadRecv pacing, unread counts, ConversationsRequest.

The rules, on a task.Clock (the 2 s pacing of receipts to others) with a
real SQLite store; tests/test_reading_sockets.py drives the wire on both
databases and across two clustered nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import update

from chateau.store.engine import in_transaction
from chateau.store.records import direct_chat
from chateau.store.tables import messages
from tests.inprocess import FakeConnection, InProcessChat, make_test_config


def send(chat: InProcessChat, sender: FakeConnection, recipient: str, content: str) -> int:
    ack = chat.request(sender, {"type": "MessageRequest", "recipient": recipient,
                                "content": content})
    assert ack["type"] == "MessageSendResponse", ack
    return int(ack["id"])


def make_group(chat: InProcessChat, creator: FakeConnection, chatname: str, *members: str) -> None:
    reply = chat.request(creator, {"type": "GroupMessageInitRequest",
                                   "recipients": list(members), "chatname": chatname})
    assert reply["status"] == 200, reply


def read(chat: InProcessChat, conn: FakeConnection, **fields: Any) -> dict[str, Any]:
    return chat.request(conn, {"type": "ReadRequest", "msg_id": 1, **fields})


def receipts(conn: FakeConnection) -> list[dict[str, Any]]:
    return [push for push in conn.take() if push["type"] == "ReadRecv"]


def conversations(chat: InProcessChat, conn: FakeConnection, **fields: Any) -> dict[str, Any]:
    reply = chat.request(conn, {"type": "ConversationsRequest", "msg_id": 2, **fields})
    assert reply["type"] == "ConversationsResponse", reply
    return reply


def set_mentions(chat: InProcessChat, message_id: int, value: str | None) -> None:
    """What the sending side writes (messages.mentions), written here directly."""
    in_transaction(chat.engine, lambda c: c.execute(
        update(messages).where(messages.c.id == message_id).values(mentions=value)))


def test_read_refusals(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    chat.sign_in("bob")
    make_group(chat, alice, "team", "bob")
    chat.sign_in("carol")
    assert read(chat, alice, id=1)["status"] == 400
    reply = read(chat, alice, id=1, chatname="team", user="bob")
    assert reply["status"] == 400
    assert reply["detail"] == "ReadRequest: give exactly one of 'chatname' or 'user'"
    assert read(chat, alice, id=0, user="bob")["status"] == 400
    assert read(chat, alice, id=1, user="nobody")["status"] == 404
    assert read(chat, alice, id=1, chatname="nogroup")["status"] == 404
    carol = chat.sign_in("carol")
    assert read(chat, carol, id=1, chatname="team")["status"] == 403


def test_the_marker_moves_up_only_and_never_past_the_newest(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    first = send(chat, alice, "bob", "one")
    second = send(chat, alice, "bob", "two")
    reply = read(chat, bob, user="alice", id=second + 50)
    assert reply == {"type": "ReadResponse", "status": 200, "user": "alice", "id": second,
                     "msg_id": 1}
    assert read(chat, bob, user="alice", id=first)["id"] == second
    assert chat.wait(chat.store.reading.unread("bob", direct_chat("alice", "bob"))) == (0, 0)


def test_other_devices_hear_at_once_others_paced_to_one_per_two_seconds(
    chat: InProcessChat,
) -> None:
    alice = chat.sign_in("alice")
    bob_phone = chat.sign_in("bob")
    bob_laptop = chat.sign_in("bob")
    ids = [send(chat, alice, "bob", f"m{n}") for n in range(4)]
    alice.take(), bob_phone.take(), bob_laptop.take()
    read(chat, bob_phone, user="alice", id=ids[0])
    assert receipts(bob_laptop) == [
        {"type": "ReadRecv", "status": 200, "user": "alice", "username": "bob", "id": ids[0]}]
    assert receipts(bob_phone) == []  # not the connection that read
    assert receipts(alice) == [
        {"type": "ReadRecv", "status": 200, "user": "bob", "username": "bob", "id": ids[0]}]
    read(chat, bob_phone, user="alice", id=ids[1])
    read(chat, bob_phone, user="alice", id=ids[2])
    assert [p["id"] for p in receipts(bob_laptop)] == [ids[1], ids[2]]
    assert receipts(alice) == []  # inside the window
    chat.clock.advance(2)
    assert [p["id"] for p in receipts(alice)] == [ids[2]]  # the newest wins
    read(chat, bob_phone, user="alice", id=ids[2])  # did not move: nothing
    assert receipts(bob_laptop) == [] and receipts(alice) == []
    chat.clock.advance(2)
    assert receipts(alice) == []
    read(chat, bob_phone, user="alice", id=ids[3])
    assert [p["id"] for p in receipts(alice)] == [ids[3]]


def test_read_receipts_off_tells_only_ones_own_devices(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    bob_laptop = chat.sign_in("bob")
    chat.request(bob, {"type": "SettingsRequest", "read_receipts": False})
    make_group(chat, alice, "team", "bob")
    sent = send(chat, alice, "team", "hello")
    alice.take(), bob_laptop.take()
    read(chat, bob, chatname="team", id=sent)
    assert receipts(alice) == []
    assert receipts(bob_laptop)[0]["chatname"] == "team"
    direct = send(chat, alice, "bob", "hi")
    read(chat, bob, user="alice", id=direct)
    assert receipts(alice) == []
    listed = conversations(chat, alice)["conversations"]
    assert [c for c in listed if c.get("user") == "bob"][0].keys() >= {"read", "unread"}
    assert "peer_read" not in [c for c in listed if c.get("user") == "bob"][0]


def test_group_receipts_to_members_but_not_to_who_blocks_the_reader(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    carol = chat.sign_in("carol")
    make_group(chat, alice, "team", "bob", "carol")
    chat.request(carol, {"type": "BlockRequest", "username": "bob"})
    sent = send(chat, alice, "team", "hello")
    alice.take(), carol.take()
    read(chat, bob, chatname="team", id=sent)
    assert receipts(alice) == [{"type": "ReadRecv", "status": 200, "chatname": "team",
                                "username": "bob", "id": sent}]
    assert receipts(carol) == []


def test_no_receipts_in_groups_above_the_limit(tmp_path: Path) -> None:
    chat = InProcessChat(make_test_config(tmp_path, chat={"read_receipts_max_group": "2"}))
    chat.start()
    try:
        alice = chat.sign_in("alice")
        bob = chat.sign_in("bob")
        bob_laptop = chat.sign_in("bob")
        chat.sign_in("carol")
        make_group(chat, alice, "pair", "bob")
        make_group(chat, alice, "three", "bob", "carol")
        for group in ("pair", "three"):
            sent = send(chat, alice, group, "hello")
            alice.take(), bob_laptop.take()
            read(chat, bob, chatname=group, id=sent)
            assert len(receipts(alice)) == (1 if group == "pair" else 0)
            assert len(receipts(bob_laptop)) == 1  # one's own devices always
    finally:
        chat.stop()


def test_unread_counts_leave_out_own_events_deleted_blocked_and_before_joining(
    chat: InProcessChat,
) -> None:
    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    carol = chat.sign_in("carol")
    send(chat, alice, "bob", "before the group")
    make_group(chat, alice, "team", "carol")
    early = send(chat, alice, "team", "before bob joined")
    chat.clock.advance(1)
    # Events (bob added) are not unread; messages after it are.
    reply = chat.request(alice, {"type": "GroupAddRequest", "chatname": "team",
                                 "users": ["bob"]})
    assert reply["status"] == 200, reply
    chat.clock.advance(1)
    in_transaction(chat.engine, lambda c: c.execute(
        update(messages).where(messages.c.id == early).values(created_at=0)))
    kept = send(chat, alice, "team", "one")
    deleted = send(chat, alice, "team", "two")
    chat.request(alice, {"type": "MessageDeleteRequest", "id": deleted})
    send(chat, bob, "team", "my own")
    send(chat, carol, "team", "from carol")
    chat.request(bob, {"type": "BlockRequest", "username": "carol"})
    set_mentions(chat, kept, '["bob"]')
    # alice->bob direct 1, team: "one" (mention) only.
    assert chat.wait(chat.store.reading.unread_total("bob")) == 2
    listed = {c.get("chatname") or c["user"]: c for c in conversations(chat, bob)["conversations"]}
    assert listed["team"]["unread"] == 1 and listed["team"]["mentions"] == 1
    assert listed["alice"]["unread"] == 1 and listed["alice"]["mentions"] == 0
    assert listed["team"]["members"] == 3
    assert listed["team"]["last_message"] == {"id": listed["team"]["activity"],
                                              "timestamp": listed["team"]["last_message"]
                                              ["timestamp"], "hidden": True}
    read(chat, bob, chatname="team", id=kept)
    assert chat.wait(chat.store.reading.unread_total("bob")) == 1


def test_mentions_of_all_and_the_cap(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    make_group(chat, alice, "team", "bob")
    rows = [{"chat": "team", "recipient": None, "sender": "alice", "content": f"m{n}",
             "created_at": 2**42, "edited": False, "deleted": False, "origin": None,
             "event": None, "mentions": '["@all"]' if n < 3 else None} for n in range(1005)]
    in_transaction(chat.engine, lambda c: c.execute(messages.insert(), rows))
    send(chat, alice, "bob", "one more, elsewhere")
    listed = conversations(chat, bob)["conversations"]
    assert listed[1]["unread"] == 100 and listed[1]["mentions"] == 3
    assert listed[0]["unread"] == 1 and listed[0]["mentions"] == 0
    # The total counts all conversations together, up to 1000.
    assert chat.wait(chat.store.reading.unread_total("bob")) == 1000
    read(chat, bob, chatname="team", id=listed[1]["activity"] - 950)
    assert chat.wait(chat.store.reading.unread_total("bob")) == 951


def test_conversations_order_paging_and_shapes(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    chat.sign_in("carol")
    make_group(chat, alice, "quiet", "bob")  # no message: activity 0
    make_group(chat, alice, "team", "carol")
    to_bob = send(chat, alice, "bob", "hi bob")
    to_team = send(chat, alice, "team", "hi team")
    to_carol = send(chat, alice, "carol", "hi carol")
    read(chat, bob, user="alice", id=to_bob)
    first = conversations(chat, alice, limit=2)
    assert first["more"] is True
    assert [c.get("chatname") or c["user"] for c in first["conversations"]] == ["carol", "team"]
    carol_entry = first["conversations"][0]
    assert carol_entry == {
        "user": "carol", "activity": to_carol, "unread": 0, "mentions": 0, "read": 0,
        "peer_read": 0,
        "last_message": {"id": to_carol, "sender": "alice", "content": "hi carol",
                         "timestamp": carol_entry["last_message"]["timestamp"],
                         "edited": False, "deleted": False},
    }
    assert first["conversations"][1]["members"] == 2
    second = conversations(chat, alice, limit=2, before=to_team)
    names = [c.get("chatname") or c["user"] for c in second["conversations"]]
    # The quiet group (activity 0) comes on the page that reaches it, whole.
    assert names == ["bob", "quiet"] and second["more"] is False
    assert second["conversations"][0]["peer_read"] == to_bob
    assert second["conversations"][1]["last_message"] is None
    assert second["conversations"][1]["activity"] == 0
    assert conversations(chat, alice, limit=1, before=1)["conversations"][0]["chatname"] == "quiet"
    # The other side of the same chat ("@alice:bob" seen by bob, the second of the pair).
    read(chat, alice, user="bob", id=to_bob)
    of_bob = {c.get("chatname") or c["user"]: c for c in conversations(chat, bob)["conversations"]}
    assert of_bob["alice"]["peer_read"] == to_bob and of_bob["alice"]["read"] == to_bob
    for bad in ({"limit": 0}, {"limit": 201}, {"before": 0}):
        reply = chat.request(alice, {"type": "ConversationsRequest", **bad})
        assert reply["status"] == 400, reply


def test_markers_move_with_a_group_rename_and_unread_stays_right(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    make_group(chat, alice, "team", "bob")
    sent = send(chat, alice, "team", "one")
    read(chat, bob, chatname="team", id=sent)
    reply = chat.request(alice, {"type": "GroupUpdateRequest", "chatname": "team",
                                 "name": "crew"})
    assert reply["status"] == 200, reply
    send(chat, alice, "crew", "two")
    listed = conversations(chat, bob)["conversations"]
    assert listed[0]["chatname"] == "crew"
    assert listed[0]["read"] == sent and listed[0]["unread"] == 1


def test_ephemeral_server_answers_501(tmp_path: Path) -> None:
    chat = InProcessChat(make_test_config(tmp_path, chat={"store_messages": "false"}))
    chat.start()
    try:
        alice = chat.connect()
        reply = chat.request(alice, {"type": "RegisterRequest", "username": "alice",
                                     "password": "secret"})
        assert "unread_total" not in reply
        assert chat.request(alice, {"type": "ReadRequest", "user": "alice", "id": 1})[
            "status"] == 501
        assert chat.request(alice, {"type": "ConversationsRequest"})["status"] == 501
    finally:
        chat.stop()


def test_markers_move_with_a_user_rename_and_go_with_an_erasure(chat: InProcessChat) -> None:
    from chateau.store.identity import rename_user_txn
    from chateau.store.reading import marker_txn

    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    make_group(chat, alice, "team", "bob")
    direct = send(chat, alice, "bob", "hi")
    group = send(chat, alice, "team", "hello")
    send(chat, bob, "alice", "hi back")
    read(chat, bob, user="alice", id=direct)
    read(chat, bob, chatname="team", id=group)
    read(chat, alice, user="bob", id=direct + 10)
    in_transaction(chat.engine, rename_user_txn, "bob", "robert", None)
    robert_chat = direct_chat("alice", "robert")
    assert in_transaction(chat.engine, marker_txn, "robert", robert_chat) == direct
    assert in_transaction(chat.engine, marker_txn, "robert", "team") == group
    assert in_transaction(chat.engine, marker_txn, "alice", robert_chat) > direct
    assert in_transaction(chat.engine, marker_txn, "bob", direct_chat("alice", "bob")) == 0
    assert chat.wait(chat.store.reading.unread_total("robert")) == 0
    assert chat.wait(chat.store.reading.unread_total("alice")) == 0
    # Erasing robert: his markers go; alice's follows the conversation.
    chat.wait(chat.store.erasure.erase("robert", "robert", "erase", 2**42))
    assert in_transaction(chat.engine, marker_txn, "robert", "team") == 0
    from chateau.names import DELETED_USER
    assert in_transaction(
        chat.engine, marker_txn, "alice", direct_chat(DELETED_USER, "alice")) > direct


def test_unread_stays_right_after_a_retention_purge(chat: InProcessChat) -> None:
    from twisted.internet.defer import ensureDeferred

    from chateau.retention import purge_once
    from chateau.store.records import now_millis

    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    make_group(chat, alice, "team", "bob")
    old = [send(chat, alice, "team", f"old {n}") for n in range(3)]
    read(chat, bob, chatname="team", id=old[1])
    new = [send(chat, alice, "team", f"new {n}") for n in range(2)]
    # The old ones are a year old; the group keeps messages 30 days.
    in_transaction(chat.engine, lambda c: c.execute(
        update(messages).where(messages.c.id.in_(old)).values(created_at=1)))
    reply = chat.request(alice, {"type": "GroupUpdateRequest", "chatname": "team",
                                 "retention_days": 30})
    assert reply["status"] == 200, reply
    chat.wait(ensureDeferred(purge_once(chat.store.runner.run, chat.config.chat, now_millis())))
    assert chat.wait(chat.store.messages.get_message(old[2])) is None
    listed = conversations(chat, bob)["conversations"]
    # old[2] is gone; the two new messages are unread (the settings event is not).
    assert listed[0]["read"] == old[1] and listed[0]["unread"] == 2
    assert chat.wait(chat.store.reading.unread_total("bob")) == 2
    read(chat, bob, chatname="team", id=new[1])
    assert chat.wait(chat.store.reading.unread_total("bob")) == 0
