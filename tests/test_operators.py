"""Operators' rules in-process: server admins, announcements, server-wide
bans, deletion by admins, and the notices every node applies (what
chateau-admin changes in the database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from chateau.errors import BAD_REQUEST, FORBIDDEN, NOT_AUTHENTICATED, NOT_FOUND, TOO_LARGE
from chateau.signout import BANNED, SIGNED_OUT, SignOut
from chateau.store import records
from chateau.store.engine import in_transaction
from chateau.store.operators import delete_group_txn, delete_message_as_operator_txn
from chateau.store.records import hash_session_key
from tests.inprocess import FakeConnection, InProcessChat, make_test_config


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[InProcessChat]:
    running = InProcessChat(make_test_config(tmp_path, chat={"max_content_length": "100"}))
    running.start()
    yield running
    running.stop()


def make_admin(chat: InProcessChat, name: str = "root") -> FakeConnection:
    chat.disconnect(chat.sign_in(name))
    assert chat.wait(chat.store.accounts.set_admin(name, True))
    return chat.sign_in(name)


def of_type(connection: FakeConnection, kind: str) -> list[dict[str, Any]]:
    return [m for m in connection.take() if m["type"] == kind]


def log_actions(chat: InProcessChat) -> list[tuple[str, str, str, str]]:
    """The moderation actions of the audit log, oldest first (sign-ins left out)."""
    entries = chat.wait(chat.store.audit.entries())
    return [(e.actor, e.action, e.target, e.reason) for e in reversed(entries)
            if not e.action.startswith("sign_in")]


# -- server admins ------------------------------------------------------------

def test_sign_in_says_admin_true_for_server_admins_only(chat: InProcessChat) -> None:
    first = chat.connect()
    reply = chat.request(first, {"type": "RegisterRequest", "username": "root", "password": "pw"})
    assert "admin" not in reply
    chat.wait(chat.store.accounts.set_admin("root", True))
    again = chat.request(chat.connect(), {"type": "RegisterRequest", "username": "root",
                                          "password": "pw"})
    assert again["admin"] is True
    resumed = chat.request(chat.connect(), {"type": "ResumeRequest",
                                            "session_key": reply["session_key"]})
    assert resumed["type"] == "ResumeResponse" and resumed["admin"] is True
    chat.wait(chat.store.accounts.set_admin("root", False))
    plain = chat.request(chat.connect(), {"type": "ResumeRequest",
                                          "session_key": reply["session_key"]})
    assert "admin" not in plain


# -- announcements ------------------------------------------------------------

def test_an_announcement_reaches_everyone_online_and_the_others_at_sign_in_once(
    chat: InProcessChat,
) -> None:
    root = make_admin(chat)
    alice = chat.sign_in("alice")
    chat.disconnect(chat.sign_in("bob"))
    reply = chat.request(root, {"type": "AnnounceRequest", "content": "maintenance at 6",
                                "msg_id": 7})
    assert reply["type"] == "AnnounceResponse" and reply["status"] == 201
    assert reply["msg_id"] == 7
    pushed = of_type(alice, "AnnouncementRecv")
    assert len(pushed) == 1
    push = pushed[0]
    assert push["id"] == reply["id"] and push["content"] == "maintenance at 6"
    assert push["by"] == "root" and push["timestamp"].endswith("Z") and "offline" not in push
    # The poll of the notice written with it does not push it again.
    chat.wait(chat.notices.check())
    assert of_type(alice, "AnnouncementRecv") == []
    # Bob was away: he gets it when he signs in, once.
    bob = chat.sign_in("bob")
    (late,) = of_type(bob, "AnnouncementRecv")
    assert late["id"] == reply["id"] and late["offline"] is True
    assert of_type(chat.sign_in("bob"), "AnnouncementRecv") == []
    # An account made afterwards never gets it.
    assert of_type(chat.sign_in("carol"), "AnnouncementRecv") == []
    # Alice got it live: not again at her next sign-in.
    chat.disconnect(alice)
    assert of_type(chat.sign_in("alice"), "AnnouncementRecv") == []
    assert ("root", "announce", "*", "") in log_actions(chat)


def test_only_server_admins_announce_and_content_is_checked(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    refused = chat.request(alice, {"type": "AnnounceRequest", "content": "hi"})
    assert refused["status"] == FORBIDDEN and "server admins" in refused["detail"]
    root = make_admin(chat)
    assert chat.request(root, {"type": "AnnounceRequest", "content": ""})["status"] == BAD_REQUEST
    long = chat.request(root, {"type": "AnnounceRequest", "content": "x" * 101})
    assert long["status"] == TOO_LARGE
    assert of_type(alice, "AnnouncementRecv") == []


def test_an_announcement_made_by_chateau_admin_arrives_with_the_next_poll(
    chat: InProcessChat,
) -> None:
    from chateau.store.announcements import announce_txn

    alice = chat.sign_in("alice")
    announcement = in_transaction(chat.engine, announce_txn, "cli:ops", "hello all")
    assert of_type(alice, "AnnouncementRecv") == []
    chat.wait(chat.notices.check())
    (push,) = of_type(alice, "AnnouncementRecv")
    assert push["id"] == announcement.id and push["by"] == "cli:ops"


# -- bans -----------------------------------------------------------------------

def test_a_ban_closes_connections_refuses_sign_in_and_is_recorded(chat: InProcessChat) -> None:
    root = make_admin(chat)
    eve = chat.connect()
    key = chat.request(eve, {"type": "RegisterRequest", "username": "eve",
                             "password": "pw"})["session_key"]
    reply = chat.request(root, {"type": "UserBanRequest", "username": "Eve", "reason": "spam"})
    assert reply == {"type": "UserBanResponse", "status": 200, "username": "eve",
                     "until": None, "msg_id": None}
    assert eve.closed_with == (BANNED, "banned")
    again = chat.request(chat.connect(), {"type": "RegisterRequest", "username": "eve",
                                          "password": "pw"})
    assert again["status"] == FORBIDDEN
    assert again["detail"] == "banned until unbanned: spam"
    # The old key was revoked; a key made in a race with the ban resumes nobody either.
    assert chat.request(chat.connect(), {"type": "ResumeRequest",
                                         "session_key": key})["status"] == NOT_AUTHENTICATED
    chat.wait(chat.store.sessions.create_session("eve", hash_session_key("raced"), 3600))
    raced = chat.request(chat.connect(), {"type": "ResumeRequest", "session_key": "raced"})
    assert raced["status"] == FORBIDDEN and raced["detail"] == "banned until unbanned: spam"
    unban = chat.request(root, {"type": "UserUnbanRequest", "username": "eve"})
    assert unban["type"] == "UserUnbanResponse" and unban["username"] == "eve"
    assert chat.request(root, {"type": "UserUnbanRequest",
                               "username": "eve"})["status"] == NOT_FOUND
    assert chat.sign_in("eve", "pw").username == "eve"
    assert log_actions(chat)[-2:] == [("root", "user_ban", "eve", "spam"),
                                      ("root", "user_unban", "eve", "")]


def test_a_timed_ban_ends_by_itself(chat: InProcessChat, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_admin(chat)
    chat.disconnect(chat.sign_in("eve", "pw"))
    reply = chat.request(root, {"type": "UserBanRequest", "username": "eve", "hours": 2,
                                "reason": "cool off"})
    until = reply["until"]
    assert until.endswith("Z")
    refused = chat.request(chat.connect(), {"type": "RegisterRequest", "username": "eve",
                                            "password": "pw"})
    assert refused["detail"] == f"banned until {until}: cool off"
    real = records.now_millis
    monkeypatch.setattr(records, "now_millis", lambda: real() + 2 * 3_600_000 + 1000)
    assert chat.sign_in("eve", "pw").username == "eve"


def test_ban_refusals(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    chat.sign_in("eve")
    ask = {"type": "UserBanRequest", "username": "eve", "reason": "spam"}
    assert chat.request(alice, ask)["status"] == FORBIDDEN
    assert chat.request(alice, {"type": "UserUnbanRequest",
                                "username": "eve"})["status"] == FORBIDDEN
    root = make_admin(chat)
    assert chat.request(root, {**ask, "username": "root"})["status"] == BAD_REQUEST
    assert chat.request(root, {**ask, "username": "ghost"})["status"] == NOT_FOUND
    assert chat.request(root, {**ask, "reason": "  "})["status"] == BAD_REQUEST
    assert chat.request(root, {**ask, "reason": "x" * 501})["status"] == BAD_REQUEST
    for hours in (0, -1, 87601):
        assert chat.request(root, {**ask, "hours": hours})["status"] == BAD_REQUEST
    assert chat.request(root, {**ask, "hours": "2"})["status"] == BAD_REQUEST
    assert chat.request(root, {"type": "UserUnbanRequest",
                               "username": "ghost"})["status"] == NOT_FOUND
    assert chat.registry.is_online("eve")


def test_a_ban_made_elsewhere_closes_connections_here_with_4003(chat: InProcessChat) -> None:
    """chateau-admin (or another node) bans: the revocation poll closes with 4003."""
    from chateau.store.accounts import ban_user_txn

    sign_out = SignOut(chat.registry, chat.store)
    chat.wait(sign_out.start())
    eve = chat.sign_in("eve")
    bob = chat.sign_in("bob")
    in_transaction(chat.engine, ban_user_txn, "cli:ops", "eve", records.BAN_FOREVER, "abuse")
    chat.wait(sign_out.check())
    assert eve.closed_with == (BANNED, "banned")
    assert bob.closed_with is None
    # A plain revocation still says 4001.
    chat.wait(chat.store.sessions.revoke_session(bob.session_key_hash))
    assert chat.wait(sign_out.close_revoked(["bob"])) == 1
    assert bob.closed_with[0] == SIGNED_OUT


# -- deletion by admins ---------------------------------------------------------

def test_a_server_admin_deletes_anyones_message_and_it_is_recorded(chat: InProcessChat) -> None:
    root = make_admin(chat)
    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    reply = chat.request(alice, {"type": "GroupMessageInitRequest", "recipients": ["bob"],
                                 "chatname": "club"})
    assert reply["status"] == 200
    sent = chat.request(alice, {"type": "MessageRequest", "recipient": "club", "content": "bad"})
    dm = chat.request(alice, {"type": "MessageRequest", "recipient": "bob", "content": "psst"})
    bob.take()
    assert chat.request(bob, {"type": "MessageDeleteRequest",
                              "id": sent["id"]})["status"] == FORBIDDEN
    deleted = chat.request(root, {"type": "MessageDeleteRequest", "id": sent["id"]})
    assert deleted["type"] == "MessageDeleteResponse"
    (push,) = of_type(bob, "MessageDeleted")
    assert push["id"] == sent["id"] and push["chatname"] == "club" and push["sender"] == "alice"
    assert chat.request(root, {"type": "MessageDeleteRequest", "id": dm["id"]})["status"] == 200
    (push,) = of_type(bob, "MessageDeleted")
    assert push["chatname"] == "alice"
    assert [a for a in log_actions(chat) if a[1] == "message_delete"] == [
        ("root", "message_delete", "club", ""), ("root", "message_delete", "@alice:bob", ""),
    ]
    # The author's own deletion is no moderation.
    own = chat.request(alice, {"type": "MessageRequest", "recipient": "club", "content": "x"})
    chat.request(alice, {"type": "MessageDeleteRequest", "id": own["id"]})
    assert len([a for a in log_actions(chat) if a[1] == "message_delete"]) == 2


# -- notices: what chateau-admin changes ---------------------------------------

def test_an_operators_deletion_reaches_members_through_the_notice(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    chat.request(alice, {"type": "GroupMessageInitRequest", "recipients": ["bob"],
                         "chatname": "club"})
    sent = chat.request(alice, {"type": "MessageRequest", "recipient": "club", "content": "x"})
    bob.take()
    alice.take()
    record = in_transaction(chat.engine, delete_message_as_operator_txn, "cli:ops", sent["id"])
    assert record.chat == "club"
    assert in_transaction(chat.engine, delete_message_as_operator_txn, "cli:ops",
                          sent["id"]) == "missing"
    chat.wait(chat.notices.check())
    for member in (alice, bob):
        (push,) = of_type(member, "MessageDeleted")
        assert push["id"] == sent["id"] and push["chatname"] == "club"
    history = chat.request(bob, {"type": "HistoryRequest", "chatname": "club"})
    assert history["messages"][-1]["deleted"] is True


def test_a_group_deleted_by_an_operator_is_gone_but_its_name_stays_taken(
    chat: InProcessChat,
) -> None:
    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    chat.request(alice, {"type": "GroupMessageInitRequest", "recipients": ["bob"],
                         "chatname": "club"})
    chat.request(alice, {"type": "MessageRequest", "recipient": "club", "content": "kept"})
    bob.take()
    alice.take()
    deleted = in_transaction(chat.engine, delete_group_txn, "cli:ops", "club", "abuse")
    assert deleted.members == ["alice", "bob"]
    assert in_transaction(chat.engine, delete_group_txn, "cli:ops", "club") is None
    chat.wait(chat.notices.check())
    for member in (alice, bob):
        (push,) = of_type(member, "GroupRemovedRecv")
        assert push == {"type": "GroupRemovedRecv", "status": 200, "chatname": "club",
                        "by": "cli:ops", "reason": "abuse", "banned": False}
    assert chat.registry.group("club") is None and chat.registry.group_count("alice") == 0
    gone = chat.request(alice, {"type": "MessageRequest", "recipient": "club", "content": "y"})
    assert gone["status"] == NOT_FOUND
    assert chat.request(bob, {"type": "HistoryRequest",
                              "chatname": "club"})["status"] == NOT_FOUND
    again = chat.request(alice, {"type": "GroupMessageInitRequest", "recipients": ["bob"],
                                 "chatname": "club"})
    assert again["status"] == NOT_AUTHENTICATED and "taken" in again["detail"]
    records_kept, _ = chat.wait(chat.store.messages.history("club", None, 10))
    assert [r.content for r in records_kept] == ["kept"]
    assert ("cli:ops", "group_delete", "club", "abuse") in log_actions(chat)


def test_notices_committed_out_of_id_order_are_applied_once_each(chat: InProcessChat) -> None:
    """On PostgreSQL a notice may commit after one with a higher id: the poll
    looks a few seconds back and applies each notice once."""
    from sqlalchemy import insert

    from chateau.notices import NoticeWatch
    from chateau.store.notices import append_notice_txn
    from chateau.store.records import now_millis
    from chateau.store.tables import admin_notices

    applied: list[int] = []
    in_transaction(chat.engine, append_notice_txn, "probe", {"n": 1})
    watch = NoticeWatch(chat.store, {"probe": lambda body: applied.append(body["n"])})
    chat.wait(watch.start())
    chat.wait(watch.check())
    assert applied == []  # what was there before start is not applied

    def add(notice_id: int, n: int) -> None:
        def txn(connection: Any) -> None:
            connection.execute(insert(admin_notices).values(
                id=notice_id, at=now_millis(), kind="probe", body=f'{{"n": {n}}}'))
        in_transaction(chat.engine, txn)

    add(100, 2)
    chat.wait(watch.check())
    add(50, 3)  # an earlier id, committed later
    chat.wait(watch.check())
    chat.wait(watch.check())
    in_transaction(chat.engine, append_notice_txn, "probe", {"n": 4})
    chat.wait(watch.check())
    assert applied == [2, 3, 4]


def test_a_notice_of_an_unknown_kind_is_skipped(chat: InProcessChat) -> None:
    from chateau.store.announcements import announce_txn
    from chateau.store.notices import append_notice_txn

    alice = chat.sign_in("alice")
    in_transaction(chat.engine, append_notice_txn, "from_the_future", {"x": 1})
    announcement_id = in_transaction(chat.engine, announce_txn, "cli:ops", "after it").id
    chat.wait(chat.notices.check())
    (push,) = of_type(alice, "AnnouncementRecv")
    assert push["id"] == announcement_id


def test_an_operator_adds_removes_and_sets_roles_through_the_notice(chat: InProcessChat) -> None:
    from chateau.store.operators import (
        add_group_members_txn,
        remove_group_member_as_operator_txn,
        set_group_role_as_operator_txn,
    )

    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    carol = chat.sign_in("carol")
    chat.disconnect(chat.sign_in("dave"))
    chat.request(alice, {"type": "GroupMessageInitRequest", "recipients": ["bob"],
                         "chatname": "club"})
    for member in (alice, bob, carol):
        member.take()

    outcome = in_transaction(chat.engine, add_group_members_txn, "cli:ops", "club",
                             ["carol", "dave", "bob"], 100, 100)
    assert outcome.added == ("carol", "dave") and outcome.already == ("bob",)
    chat.wait(chat.notices.check())
    (welcome,) = carol.take()
    assert welcome["type"] == "GroupMessageInitResponse" and welcome["status"] == 201
    assert welcome["chatname"] == "club" and "dave" in welcome["members"]
    events = [(m["event"], m["user"], m["by"]) for m in of_type(bob, "GroupEventRecv")]
    assert events == [("added", "carol", "cli:ops"), ("added", "dave", "cli:ops")]
    assert chat.registry.group("club").members == {"alice", "bob", "carol", "dave"}
    # Dave was away: told when he signs in, once.
    dave = chat.sign_in("dave")
    assert [m["chatname"] for m in of_type(dave, "GroupMessageInitResponse")] == ["club"]
    sent = chat.request(carol, {"type": "MessageRequest", "recipient": "club", "content": "hi"})
    assert sent["type"] == "MessageSendResponse"

    assert in_transaction(chat.engine, set_group_role_as_operator_txn, "cli:ops", "club",
                          "bob", "admin") == "set"
    assert in_transaction(chat.engine, set_group_role_as_operator_txn, "cli:ops", "club",
                          "alice", "member") == "last_owner"
    assert in_transaction(chat.engine, set_group_role_as_operator_txn, "cli:ops", "club",
                          "eve", "admin") == "not_member"
    chat.wait(chat.notices.check())
    (role,) = of_type(carol, "GroupEventRecv")
    assert (role["event"], role["user"], role["role"]) == ("role", "bob", "admin")
    assert chat.registry.group("club").role_of("bob") == "admin"

    result = in_transaction(chat.engine, remove_group_member_as_operator_txn, "cli:ops", "club",
                            "carol", True, "spam")
    assert result[0] == "banned"
    assert in_transaction(chat.engine, remove_group_member_as_operator_txn, "cli:ops", "club",
                          "ghost", True, "")[0] == "no_user"
    chat.wait(chat.notices.check())
    (removed,) = of_type(carol, "GroupRemovedRecv")
    assert removed == {"type": "GroupRemovedRecv", "status": 200, "chatname": "club",
                       "by": "cli:ops", "reason": "spam", "banned": True}
    (banned,) = [m for m in of_type(bob, "GroupEventRecv") if m["event"] != "role"]
    assert (banned["event"], banned["user"], banned["reason"]) == ("banned", "carol", "spam")
    assert "carol" not in chat.registry.group("club").members
    refused = chat.request(alice, {"type": "GroupAddRequest", "chatname": "club",
                                   "users": ["carol"]})
    assert refused["status"] == 409  # the ban holds
    actions = [a[1] for a in log_actions(chat)]
    assert actions[-3:] == ["group_add", "group_role", "group_ban"]
