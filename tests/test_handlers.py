"""The handlers in-process: requests through the Dispatcher, no sockets, no reactor.

Each test wires a whole chat as the service does (tests/inprocess.py), with
a real registry and a real SQLite store whose pools run work at once and a
Clock for a reactor, so a request is answered before the next line runs.
The statuses and wire shapes are those the socket tests (test_protocol.py,
test_durable.py) see.
"""

from __future__ import annotations

from typing import Any


from chateau.errors import BAD_REQUEST, FORBIDDEN, NOT_AUTHENTICATED, NOT_FOUND
from chateau.names import RANDOM_PREFIX
from chateau.store.records import direct_chat, hash_session_key
from tests.inprocess import FakeConnection, InProcessChat


def send(
    chat: InProcessChat, sender: FakeConnection, recipient: str, content: str
) -> dict[str, Any]:
    """A chat message, checked to be accepted; its MessageSendResponse."""
    ack = chat.request(
        sender, {"type": "MessageRequest", "recipient": recipient, "content": content}
    )
    assert ack["type"] == "MessageSendResponse", ack
    return ack


def make_group(chat: InProcessChat, creator: FakeConnection, chatname: str, *members: str) -> None:
    reply = chat.request(creator, {"type": "GroupMessageInitRequest",
                                   "recipients": list(members), "chatname": chatname})
    assert reply["status"] == 200, reply


def stored_contents(chat: InProcessChat, chat_key: str) -> list[tuple[str, str | None]]:
    """(sender, content) of a chat's stored messages, oldest first, read from the store."""
    records, _ = chat.wait(chat.store.messages.history(chat_key, None, 100))
    return [(record.sender, record.content) for record in reversed(records)]


# -- signing in --------------------------------------------------------------

def test_register_creates_a_local_account_with_a_session_key(chat: InProcessChat) -> None:
    alice = chat.connect()
    reply = chat.request(alice, {"type": "RegisterRequest", "username": "Alice", "password": "pw",
                                 "auth": False, "msg_id": {"any": ["json", 1]}})
    key = reply.pop("session_key")
    session_id = reply.pop("session_id")
    assert reply == {"type": "RegisterResponse", "status": 200, "username": "alice", "unread_total": 0,
                     "msg_id": {"any": ["json", 1]}}
    assert len(session_id) == 16 and int(session_id, 16) >= 0  # public, not the key
    assert isinstance(key, str) and len(key) >= 43
    assert alice.username == "alice" and chat.registry.is_online("alice")
    assert alice.session_key_hash == hash_session_key(key)
    account = chat.wait(chat.store.accounts.get_user("alice"))
    assert account.auth_method == "local" and not account.disabled
    assert account.password_hash.startswith("$2b$04$")  # bcrypt at the configured cost
    assert alice.take() == []  # a new user has missed nothing


def test_a_wrong_password_is_refused_with_301(chat: InProcessChat) -> None:
    chat.disconnect(chat.sign_in("alice", "right"))
    again = chat.connect()
    reply = chat.request(again, {"type": "RegisterRequest", "username": "ALICE",
                                 "password": "right", "msg_id": 1})
    assert reply["type"] == "RegisterResponse"
    assert reply["username"] == "alice"
    wrong = chat.connect()
    reply = chat.request(wrong, {"type": "RegisterRequest", "username": "alice",
                                 "password": "nope", "msg_id": 2})
    assert reply == {"type": "ErrorResponse", "status": NOT_AUTHENTICATED,
                     "detail": "authentication failed: wrong username or password", "msg_id": 2}
    assert wrong.username is None and not wrong.signing_in
    assert chat.registry.connections("alice") == [again]


def test_resume_signs_a_second_connection_in_and_logout_revokes_the_key(
    chat: InProcessChat,
) -> None:
    first = chat.connect()
    key = chat.request(first, {"type": "RegisterRequest", "username": "alice",
                               "password": "secret"})["session_key"]
    other = chat.connect()
    resumed = chat.request(other, {"type": "ResumeRequest", "session_key": key, "msg_id": 1})
    assert len(resumed.pop("session_id")) == 16
    assert resumed == {"type": "ResumeResponse", "status": 200, "username": "alice", "unread_total": 0,
                       "msg_id": 1}
    assert other.username == "alice"
    assert chat.registry.connections("alice") == [first, other]
    again = chat.request(other, {"type": "ResumeRequest", "session_key": key})
    assert again["status"] == 302
    bad = chat.request(chat.connect(), {"type": "ResumeRequest", "session_key": key + "x"})
    assert bad["status"] == NOT_AUTHENTICATED
    assert "session key" in bad["detail"]
    out = chat.request(other, {"type": "LogoutRequest", "msg_id": 2})
    assert out == {"type": "LogoutResponse", "status": 200, "msg_id": 2}
    assert other.username is None and chat.registry.connections("alice") == [first]
    late = chat.request(chat.connect(), {"type": "ResumeRequest", "session_key": key})
    assert late["status"] == NOT_AUTHENTICATED


def test_requests_that_need_a_user_are_refused_before_sign_in(chat: InProcessChat) -> None:
    chat.sign_in("bob")
    stranger = chat.connect()
    requests = [
        {"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": "c"},
        {"type": "MessageRequest", "recipient": "bob", "content": "hi"},
        {"type": "ClientListRequest"},
        {"type": "RandomMessageRequest", "content": "hi"},
        {"type": "HistoryRequest", "user": "bob"},
        {"type": "ContactRequest", "username": "bob"},
    ]
    for number, request in enumerate(requests):
        reply = chat.request(stranger, {**request, "msg_id": number})
        assert reply["type"] == "ErrorResponse", reply
        assert reply["status"] == NOT_AUTHENTICATED and reply["msg_id"] == number
        assert "not signed in" in reply["detail"]
    assert chat.registry.group("c") is None
    assert chat.wait(chat.store.messages.last_message_id()) == 0
    beat = chat.request(stranger, {"type": "HeartbeatRequest", "payload": {"t": 1}, "msg_id": 9})
    assert beat == {"type": "HeartbeatResponse", "status": 200, "payload": {"t": 1}, "msg_id": 9}


# -- groups --------------------------------------------------------------------

def test_group_init_tells_the_online_members_and_is_stored(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    eve = chat.sign_in("eve")
    reply = chat.request(alice, {"type": "GroupMessageInitRequest", "recipients": ["Bob", "carol"],
                                 "chatname": "Study Group", "msg_id": "g"})
    assert reply == {"type": "GroupMessageInitResponse", "status": 200,
                     "chatname": "study group", "msg_id": "g"}
    notice = {"type": "GroupMessageInitResponse", "status": 201, "chatname": "study group",
              "creator": "alice", "members": ["alice", "bob", "carol"]}
    assert bob.take() == [notice] and carol.take() == [notice]
    assert alice.take() == [] and eve.take() == []
    (stored,) = chat.wait(chat.store.groups.load_groups())
    assert (stored.chatname, stored.creator) == ("study group", "alice")
    assert stored.members == {"alice", "bob", "carol"}
    taken = chat.request(alice, {"type": "GroupMessageInitRequest", "recipients": ["bob"],
                                 "chatname": "STUDY GROUP"})
    # 301 for a taken name, as the original server answered (test_protocol.py).
    assert taken["status"] == NOT_AUTHENTICATED
    assert "is taken" in taken["detail"]


def test_group_info_shows_roles_settings_and_who_is_online(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    chat.disconnect(chat.sign_in("carol"))
    make_group(chat, alice, "club", "bob", "carol")
    info = chat.request(bob, {"type": "GroupInfoRequest", "chatname": "Club", "msg_id": 4})
    assert info["type"] == "GroupInfoResponse" and info["status"] == 200, info
    assert (info["chatname"], info["creator"], info["topic"], info["msg_id"]) == (
        "club", "alice", "", 4)
    assert info["settings"] == {"join": "invite", "visibility": "private",
                                "who_can_add": "admins", "who_can_send": "everyone",
                                "retention_days": None}
    assert {m["username"]: (m["role"], m["online"], m["muted"]) for m in info["members"]} == {
        "alice": ("owner", True, False), "bob": ("member", True, False),
        "carol": ("member", False, False)}
    outsider = chat.sign_in("eve")
    assert chat.request(outsider, {"type": "GroupInfoRequest", "chatname": "club"})["status"] == 403
    assert chat.request(outsider, {"type": "GroupInfoRequest", "chatname": "nope"})["status"] == 404


def test_the_last_owner_leaving_hands_the_group_to_the_longest_serving_member(
    chat: InProcessChat,
) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    chat.disconnect(chat.sign_in("carol"))
    make_group(chat, alice, "club", "bob", "carol")
    left = chat.request(alice, {"type": "GroupLeaveRequest", "chatname": "club"})
    assert left["status"] == 200, left
    info = chat.request(bob, {"type": "GroupInfoRequest", "chatname": "club"})
    # bob and carol joined together: the first by name takes over.
    assert [(m["username"], m["role"]) for m in info["members"]] == [
        ("bob", "owner"), ("carol", "member")]


def test_owners_set_roles_and_a_group_keeps_an_owner(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    make_group(chat, alice, "club", "bob", "carol")
    bob.take(), carol.take()

    def role(who: FakeConnection, user: str, new: str) -> dict[str, Any]:
        return chat.request(who, {"type": "GroupRoleRequest", "chatname": "club",
                                  "user": user, "role": new})

    assert role(alice, "bob", "admin") == {
        "type": "GroupRoleResponse", "status": 200, "chatname": "club", "user": "bob",
        "role": "admin", "msg_id": None}
    event = {"type": "GroupEventRecv", "status": 200, "chatname": "club", "event": "role",
             "user": "bob", "by": "alice", "role": "admin"}
    pushed = bob.take()
    assert len(pushed) == 1 and pushed[0].pop("id") > 0 and pushed[0].pop("timestamp")
    assert pushed == [event] and alice.take() == []
    assert [{k: v for k, v in m.items() if k not in ("id", "timestamp")}
            for m in carol.take()] == [event]
    # The event has its place in the group's history, in words and in fields.
    page = chat.request(carol, {"type": "HistoryRequest", "chatname": "club"})
    assert [(m["content"], m["event"]) for m in page["messages"]] == [
        ("alice made bob admin", {"event": "role", "user": "bob", "by": "alice", "role": "admin"})]
    # The same role again changes nothing and tells nobody.
    assert role(alice, "bob", "admin")["status"] == 200 and carol.take() == []
    # Only owners set roles, admins included.
    assert role(bob, "carol", "admin")["status"] == 403
    assert role(carol, "carol", "owner")["status"] == 403
    assert role(alice, "carol", "king")["status"] == 400
    assert role(alice, "eve", "admin")["status"] == 404
    # The last owner cannot step down; with a second owner, they can.
    assert role(alice, "alice", "member")["status"] == 409
    assert role(alice, "bob", "owner")["status"] == 200
    assert role(alice, "alice", "member")["status"] == 200
    info = chat.request(carol, {"type": "GroupInfoRequest", "chatname": "club"})
    assert [(m["username"], m["role"]) for m in info["members"]] == [
        ("alice", "member"), ("bob", "owner"), ("carol", "member")]
    outsider = chat.sign_in("eve")
    assert role(outsider, "bob", "member")["status"] == 403


def test_group_messages_reach_the_other_members_and_are_stored(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    eve = chat.sign_in("eve")
    make_group(chat, alice, "team", "bob", "carol")
    for member in (bob, carol):
        member.take()
    ack = chat.request(alice, {"type": "GroupMessageRequest", "recipient": "team",
                               "content": "hello", "msg_id": 5})
    assert ack["type"] == "MessageSendResponse"
    assert ack["status"] == 200 and ack["msg_id"] == 5
    assert isinstance(ack["id"], int) and ack["timestamp"].endswith("Z")
    first = {"type": "GroupMessageRecv", "status": 201, "sender": "alice", "chatname": "team",
             "content": "hello", "id": ack["id"], "timestamp": ack["timestamp"]}
    assert bob.take() == [first] and carol.take() == [first]
    assert alice.take() == []  # the sender has it already
    ack2 = send(chat, bob, "team", "hi")
    assert ack2["id"] > ack["id"]
    for member in (alice, carol):
        (got,) = member.take()
        assert (got["type"], got["status"], got["sender"], got["content"], got["id"]) == (
            "GroupMessageRecv", 200, "bob", "hi", ack2["id"])
    assert bob.take() == []
    refused = chat.request(eve, {"type": "GroupMessageRequest", "recipient": "team",
                                 "content": "let me in"})
    assert refused["status"] == FORBIDDEN
    assert "not a member" in refused["detail"]
    assert [c.take() for c in (alice, bob, carol)] == [[], [], []]
    assert stored_contents(chat, "team") == [("alice", "hello"), ("bob", "hi")]
    page = chat.request(carol, {"type": "HistoryRequest", "chatname": "team"})
    assert [(m["id"], m["content"]) for m in page["messages"]] == [
        (ack2["id"], "hi"), (ack["id"], "hello")]


# -- history ---------------------------------------------------------------------

def test_group_history_pages_newest_first_with_more(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    make_group(chat, alice, "team", "bob")
    ids = [send(chat, alice, "team", f"m{n}")["id"] for n in range(7)]
    assert ids == sorted(ids)
    page = chat.request(bob, {"type": "HistoryRequest", "chatname": "Team", "limit": 3,
                              "msg_id": "h"})
    assert page["type"] == "HistoryResponse"
    assert page["chatname"] == "team" and page["msg_id"] == "h" and page["more"] is True
    assert [m["content"] for m in page["messages"]] == ["m6", "m5", "m4"]
    newest = page["messages"][0]
    assert newest == {"id": ids[6], "sender": "alice", "content": "m6",
                      "timestamp": newest["timestamp"], "edited": False, "deleted": False}
    page = chat.request(bob, {"type": "HistoryRequest", "chatname": "team", "limit": 3,
                              "before": page["messages"][-1]["id"]})
    assert [m["content"] for m in page["messages"]] == ["m3", "m2", "m1"]
    assert page["more"] is True
    page = chat.request(bob, {"type": "HistoryRequest", "chatname": "team",
                              "before": page["messages"][-1]["id"]})
    assert [m["content"] for m in page["messages"]] == ["m0"] and page["more"] is False
    whole = chat.request(bob, {"type": "HistoryRequest", "chatname": "team", "limit": 7})
    assert [m["id"] for m in whole["messages"]] == ids[::-1] and whole["more"] is False


def test_direct_history_and_its_refusals(chat: InProcessChat) -> None:
    alice, bob, eve = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("eve")
    first = send(chat, alice, "bob", "hi bob")
    second = send(chat, bob, "alice", "hi alice")
    page = chat.request(alice, {"type": "HistoryRequest", "user": "Bob"})
    assert page["user"] == "bob" and page["more"] is False
    assert [(m["id"], m["sender"], m["content"]) for m in page["messages"]] == [
        (second["id"], "bob", "hi alice"), (first["id"], "alice", "hi bob")]
    page = chat.request(bob, {"type": "HistoryRequest", "user": "alice", "limit": 1})
    assert [m["content"] for m in page["messages"]] == ["hi alice"] and page["more"] is True
    assert chat.request(eve, {"type": "HistoryRequest", "user": "bob"})["messages"] == []
    make_group(chat, alice, "secret", "bob")
    refusals = [
        (eve, {"chatname": "secret"}, FORBIDDEN, "not a member"),
        (eve, {"chatname": "nothing"}, NOT_FOUND, "no such group"),
        (eve, {"user": "ghost"}, NOT_FOUND, "no such user"),
        (alice, {"user": "bob", "limit": 0}, BAD_REQUEST, "'limit' must be between 1 and 100"),
        (alice, {"user": "bob", "limit": 101}, BAD_REQUEST, "'limit' must be between 1 and 100"),
        (alice, {}, BAD_REQUEST, "exactly one of"),
        (alice, {"chatname": "secret", "user": "bob"}, BAD_REQUEST, "exactly one of"),
    ]
    for who, fields, status, detail in refusals:
        reply = chat.request(who, {"type": "HistoryRequest", **fields})
        assert reply["status"] == status, (fields, reply)
        assert detail in reply["detail"], (fields, reply)


# -- contacts ----------------------------------------------------------------------

def test_contacts_request_accept_list_presence_and_remove(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    reply = chat.request(alice, {"type": "ContactRequest", "username": "Bob", "msg_id": 1})
    assert reply == {"type": "ContactRequestResponse", "status": 200, "username": "bob",
                     "state": "pending", "msg_id": 1}
    assert bob.take() == [{"type": "ContactRequestRecv", "status": 200, "from": "alice"}]
    listing = chat.request(bob, {"type": "ContactListRequest"})
    assert listing["contacts"] == []
    assert listing["pending"] == [{"username": "alice", "direction": "incoming"}]
    listing = chat.request(alice, {"type": "ContactListRequest"})
    assert listing["pending"] == [{"username": "bob", "direction": "outgoing"}]

    reply = chat.request(bob, {"type": "ContactAccept", "username": "alice"})
    assert reply == {"type": "ContactAcceptResponse", "status": 200, "username": "alice",
                     "online": True, "msg_id": None}
    assert alice.take() == [
        {"type": "ContactAcceptRecv", "status": 200, "username": "bob", "online": True}]
    for me, other in ((alice, "bob"), (bob, "alice")):
        listing = chat.request(me, {"type": "ContactListRequest"})
        assert listing["contacts"] == [{"username": other, "online": True}]
        assert listing["pending"] == []
    assert chat.wait(chat.store.contacts.contact_book("alice")).contacts == ["bob"]

    chat.disconnect(bob)
    assert alice.take() == [
        {"type": "PresenceRecv", "status": 200, "username": "bob", "online": False}]
    listing = chat.request(alice, {"type": "ContactListRequest"})
    assert listing["contacts"] == [{"username": "bob", "online": False}]
    bob = chat.sign_in("bob")
    assert alice.take() == [
        {"type": "PresenceRecv", "status": 200, "username": "bob", "online": True}]

    reply = chat.request(bob, {"type": "ContactRemove", "username": "alice"})
    assert reply["type"] == "ContactRemoveResponse"
    assert alice.take() == [{"type": "ContactRemoveRecv", "status": 200, "username": "bob"}]
    for me in (alice, bob):
        assert chat.request(me, {"type": "ContactListRequest"})["contacts"] == []
    assert chat.wait(chat.store.contacts.contact_book("alice")).contacts == []
    chat.disconnect(bob)
    assert alice.take() == []  # no presence for someone who is no longer a contact
    again = chat.request(alice, {"type": "ContactRemove", "username": "bob"})
    assert again["status"] == NOT_FOUND


# -- random pairing ------------------------------------------------------------------

def test_a_random_message_alone_is_404(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    reply = chat.request(alice, {"type": "RandomMessageRequest", "content": "anyone?"})
    assert reply["status"] == NOT_FOUND
    assert "not enough people online" in reply["detail"]
    assert chat.wait(chat.store.messages.last_message_id()) == 0


def test_a_random_pair_carries_messages_both_ways(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    reply = chat.request(alice, {"type": "RandomMessageRequest", "content": "hi stranger",
                                 "msg_id": "r"})
    assert reply["type"] == "RandomMessageResponse"
    assert reply["status"] == 200 and reply["client"] == "bob" and reply["msg_id"] == "r"
    chatname = reply["chatname"]
    assert chatname.startswith(RANDOM_PREFIX)
    assert chat.registry.pair(chatname).members == ("alice", "bob")
    assert bob.take() == [{"type": "MessageRecv", "status": 200, "sender": "alice",
                           "chatname": chatname, "groupchat": False, "content": "hi stranger",
                           "id": reply["id"], "timestamp": reply["timestamp"], "random": True}]
    assert alice.take() == []

    back = send(chat, bob, chatname, "hey")
    assert alice.take() == [{"type": "GroupMessageRecv", "status": 200, "sender": "bob",
                             "chatname": chatname, "content": "hey", "id": back["id"],
                             "timestamp": back["timestamp"]}]
    forth = send(chat, alice, chatname, "how are you?")
    (got,) = bob.take()
    assert (got["type"], got["sender"], got["content"], got["id"]) == (
        "GroupMessageRecv", "alice", "how are you?", forth["id"])
    assert reply["id"] < back["id"] < forth["id"]
    assert stored_contents(chat, chatname) == [
        ("alice", "hi stranger"), ("bob", "hey"), ("alice", "how are you?")]

    carol = chat.sign_in("carol")
    outsider = chat.request(carol, {"type": "GroupMessageRequest", "recipient": chatname,
                                    "content": "me too"})
    assert outsider["status"] == FORBIDDEN
    chat.disconnect(bob)
    assert alice.take() == [{"type": "RandomChatEndedRecv", "status": 200, "chatname": chatname,
                             "user": "bob", "reason": "disconnected"}]
    gone = chat.request(alice, {"type": "GroupMessageRequest", "recipient": chatname,
                                "content": "still there?"})
    assert gone["status"] == NOT_FOUND


# -- offline delivery ------------------------------------------------------------------

def test_missed_messages_arrive_once_at_resume_marked_offline(chat: InProcessChat) -> None:
    bob = chat.connect()
    key = chat.request(bob, {"type": "RegisterRequest", "username": "bob",
                             "password": "secret"})["session_key"]
    chat.disconnect(bob)
    alice = chat.sign_in("alice")
    make_group(chat, alice, "team", "bob")
    sent = [send(chat, alice, "bob", "direct 1"), send(chat, alice, "team", "group 2"),
            send(chat, alice, "bob", "direct 3")]

    bob = chat.connect()
    reply = chat.request(bob, {"type": "ResumeRequest", "session_key": key, "msg_id": 1})
    assert len(reply.pop("session_id")) == 16
    assert reply == {"type": "ResumeResponse", "status": 200, "username": "bob", "unread_total": 3,
                     "msg_id": 1}
    assert bob.wire[0] == reply  # the reply first, then what was missed
    notice, *missed = bob.take()
    assert notice == {"type": "GroupMessageInitResponse", "status": 201, "chatname": "team",
                      "creator": "alice", "members": ["alice", "bob"], "offline": True}
    assert [m["id"] for m in missed] == [s["id"] for s in sent]
    assert [(m["type"], m["chatname"], m["content"]) for m in missed] == [
        ("MessageRecv", "alice", "direct 1"), ("GroupMessageRecv", "team", "group 2"),
        ("MessageRecv", "alice", "direct 3")]
    assert all(m["offline"] is True for m in missed)

    live = send(chat, alice, "bob", "live 4")
    (got,) = bob.take()
    assert got["content"] == "live 4" and got["id"] == live["id"] and "offline" not in got
    second = chat.sign_in("bob")
    assert second.take() == []  # a second connection gets no replay
    chat.disconnect(bob)
    chat.disconnect(second)
    assert chat.wait(chat.store.cursors.delivery_cursors("bob"))[None] == live["id"]
    assert chat.sign_in("bob").take() == []  # nothing twice


def test_a_missed_direct_message_arrives_at_register_once(chat: InProcessChat) -> None:
    chat.disconnect(chat.sign_in("bob"))
    alice = chat.sign_in("alice")
    ack = send(chat, alice, "bob", "while you were away")
    assert stored_contents(chat, direct_chat("alice", "bob")) == [("alice", "while you were away")]
    bob = chat.sign_in("bob")
    assert bob.take() == [{"type": "MessageRecv", "status": 200, "sender": "alice",
                           "chatname": "alice", "groupchat": False,
                           "content": "while you were away", "id": ack["id"],
                           "timestamp": ack["timestamp"], "offline": True}]
    chat.disconnect(bob)
    assert chat.sign_in("bob").take() == []


def test_messages_routed_during_a_catch_up_follow_the_missed_ones(chat: InProcessChat) -> None:
    """Frames routed to a connection while its backlog is read are held, not lost or reordered."""
    chat.disconnect(chat.sign_in("bob"))
    alice = chat.sign_in("alice")
    missed = [send(chat, alice, "bob", f"missed {n}") for n in range(2)]
    bob = chat.connect()
    chat.db_pool.pause()
    signing_in = chat.begin(bob, {"type": "RegisterRequest", "username": "bob",
                                  "password": "secret", "msg_id": 1})
    # Run the sign-in's database calls until the catch-up has started.
    while not chat.registry.is_online("bob"):
        chat.db_pool.run_next()
        chat.clock.settle()
    assert [m["type"] for m in bob.wire] == ["RegisterResponse"]
    live = chat.begin(alice, {"type": "MessageRequest", "recipient": "bob", "content": "live"})
    assert [m["type"] for m in bob.wire] == ["RegisterResponse"]  # held back
    chat.db_pool.resume()
    assert chat.finish(signing_in)["type"] == "RegisterResponse"
    ack = chat.finish(live)
    assert [(m["content"], m.get("offline")) for m in bob.take()] == [
        ("missed 0", True), ("missed 1", True), ("live", None)]
    assert [m["id"] for m in bob.wire[1:]] == [missed[0]["id"], missed[1]["id"], ack["id"]]
