"""What users manage themselves, in-process: their sessions, password and profile.

PasswordChangeRequest, SessionListRequest, SessionRevokeRequest and
ProfileRequest through the real Dispatcher, registry and SQLite store
(tests/inprocess.py), and the audit rows every sign-in and change writes.
The same rules over real sockets, on PostgreSQL, across two nodes and with
a real directory are in tests/test_self_service_sockets.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select, update

from chateau.errors import (
    BAD_REQUEST, FORBIDDEN, NOT_AUTHENTICATED, NOT_FOUND, TOO_MANY_REQUESTS, WRONG_PASSWORD,
)
from chateau.session_use import SessionUse
from chateau.signout import SIGNED_OUT
from chateau.store.records import hash_session_key
from chateau.store.tables import audit_log, sessions
from tests.inprocess import FakeConnection, InProcessChat


def register(chat: InProcessChat, username: str, password: str = "secret",
             address: str = "127.0.0.1", **extra: Any) -> tuple[FakeConnection, dict[str, Any]]:
    connection = chat.connect(address)
    reply = chat.request(connection, {"type": "RegisterRequest", "username": username,
                                      "password": password, **extra})
    assert reply["type"] == "RegisterResponse", reply
    return connection, reply


def resume(chat: InProcessChat, key: str, **extra: Any) -> tuple[FakeConnection, dict[str, Any]]:
    connection = chat.connect()
    reply = chat.request(connection, {"type": "ResumeRequest", "session_key": key, **extra})
    return connection, reply


def audit_rows(chat: InProcessChat) -> list[Any]:
    with chat.engine.begin() as connection:
        return list(connection.execute(select(audit_log).order_by(audit_log.c.id)))


# -- sessions as devices ------------------------------------------------------------------

def test_two_devices_are_listed_with_the_current_one_marked(chat: InProcessChat) -> None:
    laptop, first = register(chat, "alice", address="192.0.2.1", client="Firefox on Linux")
    phone, second = register(chat, "alice", address="192.0.2.2")
    assert first["session_id"] != second["session_id"] and len(first["session_id"]) == 16
    listed = chat.request(laptop, {"type": "SessionListRequest", "msg_id": 7})
    assert listed["type"] == "SessionListResponse" and listed["status"] == 200
    assert listed["msg_id"] == 7
    by_id = {s["id"]: s for s in listed["sessions"]}
    assert set(by_id) == {first["session_id"], second["session_id"]}
    mine, other = by_id[first["session_id"]], by_id[second["session_id"]]
    assert (mine["current"], mine["client"], mine["address"]) == (
        True, "Firefox on Linux", "192.0.2.1")
    assert (other["current"], other["client"], other["address"]) == (False, None, "192.0.2.2")
    assert mine["created"].endswith("Z") and mine["last_used"].endswith("Z")
    assert set(mine) == {"id", "created", "last_used", "address", "client", "current"}
    # Newest used first: the phone signed in last.
    assert listed["sessions"][0]["id"] == second["session_id"]
    on_phone = chat.request(phone, {"type": "SessionListRequest"})
    assert [s["current"] for s in on_phone["sessions"]] == [True, False]
    # Nobody else's keys.
    bob, _ = register(chat, "bob")
    assert [s["current"] for s in chat.request(bob, {"type": "SessionListRequest"})[
        "sessions"]] == [True]


def test_resume_records_its_use_and_a_new_client_name(chat: InProcessChat) -> None:
    _, first = register(chat, "alice", client="old app")
    again, reply = resume(chat, first["session_key"], client="  new app  ")
    assert reply["type"] == "ResumeResponse" and reply["session_id"] == first["session_id"]
    listed = chat.request(again, {"type": "SessionListRequest"})["sessions"]
    assert [(s["client"], s["current"]) for s in listed] == [("new app", True)]
    # Without a client the name stays.
    third, _ = resume(chat, first["session_key"])
    assert chat.request(third, {"type": "SessionListRequest"})["sessions"][0]["client"] == (
        "new app")


@pytest.mark.parametrize("client, detail", [
    ("x" * 65, "'client' must be at most 64 characters"),
    ("tab\there", "'client' must not contain control characters"),
])
def test_a_bad_client_name_is_refused(chat: InProcessChat, client: str, detail: str) -> None:
    connection = chat.connect()
    reply = chat.request(connection, {"type": "RegisterRequest", "username": "alice",
                                      "password": "pw", "client": client})
    assert (reply["status"], reply["detail"]) == (BAD_REQUEST, detail)
    assert connection.username is None
    _, ok = register(chat, "alice", "pw", client="y" * 64)
    reply = chat.request(chat.connect(), {"type": "ResumeRequest",
                                          "session_key": ok["session_key"], "client": client})
    assert (reply["status"], reply["detail"]) == (BAD_REQUEST, detail)


def test_revoking_a_session_closes_it_and_its_key_no_longer_resumes(chat: InProcessChat) -> None:
    laptop, first = register(chat, "alice")
    phone, second = register(chat, "alice")
    bob, bobs = register(chat, "bob")
    reply = chat.request(laptop, {"type": "SessionRevokeRequest", "id": second["session_id"],
                                  "msg_id": "r"})
    assert reply == {"type": "SessionRevokeResponse", "status": 200,
                     "id": second["session_id"], "msg_id": "r"}
    assert phone.closed_with == (SIGNED_OUT, "signed out: sign in again")
    assert laptop.live and laptop.closed_with is None
    _, refused = resume(chat, second["session_key"])
    assert refused["status"] == NOT_AUTHENTICATED
    listed = chat.request(laptop, {"type": "SessionListRequest"})["sessions"]
    assert [s["id"] for s in listed] == [first["session_id"]]
    # Unknown ids, and another user's, are the same 404; nothing is revoked.
    for unknown in ("0123456789abcdef", bobs["session_id"], "", "x" * 500):
        reply = chat.request(laptop, {"type": "SessionRevokeRequest", "id": unknown})
        assert reply["status"] == NOT_FOUND, reply
    assert bob.live
    assert resume(chat, bobs["session_key"])[1]["type"] == "ResumeResponse"


def test_revoking_the_current_session_answers_then_closes(chat: InProcessChat) -> None:
    laptop, first = register(chat, "alice")
    reply = chat.request(laptop, {"type": "SessionRevokeRequest", "id": first["session_id"],
                                  "msg_id": 4})
    assert reply == {"type": "SessionRevokeResponse", "status": 200, "id": first["session_id"],
                     "msg_id": 4}
    assert laptop.closed_with == (SIGNED_OUT, "signed out: sign in again")
    assert resume(chat, first["session_key"])[1]["status"] == NOT_AUTHENTICATED


# -- password ---------------------------------------------------------------------------

def test_a_password_change_keeps_this_session_and_closes_the_others(chat: InProcessChat) -> None:
    laptop, first = register(chat, "alice", "old")
    phone, second = register(chat, "alice", "old")
    bob, _ = register(chat, "bob")
    reply = chat.request(laptop, {"type": "PasswordChangeRequest", "old_password": "old",
                                  "new_password": "new", "msg_id": 1})
    assert reply == {"type": "PasswordChangeResponse", "status": 200, "msg_id": 1}
    assert phone.closed_with == (SIGNED_OUT, "signed out: sign in again")
    assert laptop.live and bob.live
    assert chat.request(laptop, {"type": "HeartbeatRequest"})["status"] == 200
    assert resume(chat, second["session_key"])[1]["status"] == NOT_AUTHENTICATED
    assert resume(chat, first["session_key"])[1]["type"] == "ResumeResponse"
    old = chat.request(chat.connect(), {"type": "RegisterRequest", "username": "alice",
                                        "password": "old"})
    assert old["status"] == NOT_AUTHENTICATED
    register(chat, "alice", "new")


def test_a_wrong_old_password_is_refused_and_throttled_like_a_sign_in(
        chat: InProcessChat) -> None:
    laptop, _ = register(chat, "alice", "old")
    wrong = {"type": "PasswordChangeRequest", "old_password": "guess", "new_password": "new"}
    free = chat.config.limits.signin_free_failures
    for _ in range(free):
        reply = chat.request(laptop, wrong)
        assert (reply["status"], reply["detail"]) == (
            WRONG_PASSWORD, "authentication failed: the old password is wrong")
    reply = chat.request(laptop, wrong)
    assert reply["status"] == WRONG_PASSWORD
    throttled = chat.request(laptop, {**wrong, "old_password": "old"})
    assert throttled["status"] == TOO_MANY_REQUESTS and throttled["retry_after"] > 0
    # The same key as a sign-in of that name from that address.
    signin = chat.request(chat.connect(), {"type": "RegisterRequest", "username": "alice",
                                           "password": "old"})
    assert signin["status"] == TOO_MANY_REQUESTS
    assert laptop.live
    chat.clock.advance(120)
    assert chat.request(laptop, {**wrong, "old_password": "old"})["status"] == 200


@pytest.mark.parametrize("new, detail", [
    ("", "the new password is refused: empty password"),
    ("   ", "the new password is refused: empty password"),
    ("é" * 37, "the new password is refused: passwords are limited to 72 bytes (UTF-8)"),
    ("a\x00b", "the new password is refused: a password cannot contain NUL"),
])
def test_the_new_password_follows_the_servers_rule(
        chat: InProcessChat, new: str, detail: str) -> None:
    laptop, _ = register(chat, "alice", "old")
    reply = chat.request(laptop, {"type": "PasswordChangeRequest", "old_password": "old",
                                  "new_password": new})
    assert (reply["status"], reply["detail"]) == (BAD_REQUEST, detail)
    register(chat, "alice", "old")


def directory_user(chat: InProcessChat, username: str) -> FakeConnection:
    """A directory account signed in with a key (as a directory sign-in leaves it)."""
    assert chat.wait(chat.store.accounts.create_user(username, None, "ldap", "Dee Rectory"))
    chat.wait(chat.store.sessions.create_session(username, hash_session_key("k-" + username),
                                                 3600))
    connection, reply = resume(chat, "k-" + username)
    assert reply["type"] == "ResumeResponse", reply
    return connection


def test_directory_accounts_change_neither_password_nor_display_name_here(
        chat: InProcessChat) -> None:
    dee = directory_user(chat, "dee")
    reply = chat.request(dee, {"type": "PasswordChangeRequest", "old_password": "x",
                               "new_password": "y"})
    assert (reply["status"], reply["detail"]) == (
        BAD_REQUEST, "change your password in the campus directory")
    reply = chat.request(dee, {"type": "ProfileRequest", "display_name": "Dee"})
    assert (reply["status"], reply["detail"]) == (
        FORBIDDEN, "your display name comes from the campus directory")
    reply = chat.request(dee, {"type": "ProfileRequest", "status_text": "in the lab"})
    assert reply == {"type": "ProfileResponse", "status": 200, "username": "dee",
                     "display_name": "Dee Rectory", "status_text": "in the lab", "msg_id": None}


# -- profile --------------------------------------------------------------------------

def test_profile_set_read_back_cleared_and_shown_in_member_lists(chat: InProcessChat) -> None:
    alice, _ = register(chat, "alice")
    bob, _ = register(chat, "bob")
    empty = chat.request(alice, {"type": "ProfileRequest"})
    assert empty == {"type": "ProfileResponse", "status": 200, "username": "alice",
                     "display_name": None, "status_text": None, "msg_id": None}
    reply = chat.request(alice, {"type": "ProfileRequest", "display_name": "  Alice L.  ",
                                 "status_text": "reading"})
    assert (reply["display_name"], reply["status_text"]) == ("Alice L.", "reading")
    only_status = chat.request(alice, {"type": "ProfileRequest", "status_text": "away"})
    assert (only_status["display_name"], only_status["status_text"]) == ("Alice L.", "away")
    assert chat.request(alice, {"type": "ProfileRequest"})["status_text"] == "away"
    chat.request(alice, {"type": "GroupMessageInitRequest", "recipients": ["bob"],
                         "chatname": "club"})
    info = chat.request(bob, {"type": "GroupInfoRequest", "chatname": "club"})
    shown = {m["username"]: (m["display_name"], m["status_text"]) for m in info["members"]}
    assert shown == {"alice": ("Alice L.", "away"), "bob": (None, None)}
    members = chat.request(bob, {"type": "GroupMembersRequest", "chatname": "club"})
    assert members["members"][0] == {"username": "alice", "online": True,
                                     "display_name": "Alice L.", "status_text": "away"}
    cleared = chat.request(alice, {"type": "ProfileRequest", "display_name": "",
                                   "status_text": " "})
    assert (cleared["display_name"], cleared["status_text"]) == (None, None)


@pytest.mark.parametrize("fields, detail", [
    ({"display_name": "x" * 65}, "'display_name' must be at most 64 characters"),
    ({"status_text": "x" * 141}, "'status_text' must be at most 140 characters"),
    ({"display_name": "a\nb"}, "'display_name' must not contain control characters"),
    ({"status_text": "bell\x07"}, "'status_text' must not contain control characters"),
    ({"status_text": "nul\x00"}, "'status_text' must not contain control characters"),
    ({"display_name": 5}, "ProfileRequest: field 'display_name' must be a string"),
])
def test_bad_profile_fields_are_refused_and_nothing_changes(
        chat: InProcessChat, fields: dict[str, Any], detail: str) -> None:
    alice, _ = register(chat, "alice")
    chat.request(alice, {"type": "ProfileRequest", "status_text": "kept"})
    reply = chat.request(alice, {"type": "ProfileRequest", "status_text": "new", **fields})
    assert (reply["status"], reply["detail"]) == (BAD_REQUEST, detail)
    assert chat.request(alice, {"type": "ProfileRequest"})["status_text"] == "kept"
    # Limits count characters after trimming.
    ok = chat.request(alice, {"type": "ProfileRequest", "display_name": " " + "é" * 64 + " ",
                              "status_text": "x" * 140})
    assert ok["status"] == 200 and ok["display_name"] == "é" * 64


def test_requests_need_a_signed_in_connection(chat: InProcessChat) -> None:
    for wire in ({"type": "SessionListRequest"}, {"type": "SessionRevokeRequest", "id": "x"},
                 {"type": "ProfileRequest"},
                 {"type": "PasswordChangeRequest", "old_password": "a", "new_password": "b"}):
        assert chat.request(chat.connect(), wire)["status"] == NOT_AUTHENTICATED


# -- last used ------------------------------------------------------------------------

def test_keys_in_use_are_marked_used_at_most_every_few_minutes(chat: InProcessChat) -> None:
    alice, first = register(chat, "alice")
    register(chat, "bob")
    use = SessionUse(chat.registry, chat.store)
    # Just signed in: nothing to write.
    assert chat.wait(use.touch()) == 0
    with chat.engine.begin() as connection:
        connection.execute(update(sessions).values(last_used_at=1000))
    assert chat.wait(use.touch()) == 2
    assert chat.wait(use.touch()) == 0
    listed = chat.request(alice, {"type": "SessionListRequest"})["sessions"]
    assert not listed[0]["last_used"].startswith("1970")
    chat.disconnect(alice)
    with chat.engine.begin() as connection:
        connection.execute(update(sessions).values(last_used_at=1000))
    # Only keys with a live connection here are marked.
    assert chat.wait(use.touch()) == 1


# -- the audit log --------------------------------------------------------------------

def test_sign_ins_and_changes_are_audited_without_passwords_or_keys(
        chat: InProcessChat) -> None:
    laptop, first = register(chat, "alice", "pass-old-1", address="198.51.100.4")
    phone, second = register(chat, "alice", "pass-old-1", address="198.51.100.5")
    refused = chat.request(chat.connect("203.0.113.9"), {
        "type": "RegisterRequest", "username": "Alice", "password": "guess-pw-3"})
    assert refused["status"] == NOT_AUTHENTICATED
    chat.request(chat.connect("203.0.113.9"), {
        "type": "RegisterRequest", "username": "bad name!", "password": "typed-pw-4"})
    resume(chat, "no-such-key-5")
    resume(chat, first["session_key"])
    chat.request(laptop, {"type": "PasswordChangeRequest", "old_password": "wrong-pw-6",
                          "new_password": "pass-new-7"})
    chat.request(laptop, {"type": "PasswordChangeRequest", "old_password": "pass-old-1",
                          "new_password": "pass-new-7"})
    third, theirs = register(chat, "alice", "pass-new-7")
    chat.request(laptop, {"type": "SessionRevokeRequest", "id": theirs["session_id"]})
    chat.request(laptop, {"type": "ProfileRequest", "status_text": "hello"})
    rows = audit_rows(chat)
    seen = [(r.actor, r.action, r.target, r.address) for r in rows]
    assert seen == [
        ("alice", "sign_in", "alice", "198.51.100.4"),
        ("alice", "sign_in", "alice", "198.51.100.5"),
        ("alice", "sign_in_failed", "alice", "203.0.113.9"),
        ("(invalid name)", "sign_in_failed", "(invalid name)", "203.0.113.9"),
        ("?", "sign_in_failed", "?", "127.0.0.1"),
        ("alice", "sign_in", "alice", "127.0.0.1"),
        ("alice", "password_change", "alice", "198.51.100.4"),
        ("alice", "sessions_revoked", "alice", "198.51.100.4"),
        ("alice", "sign_in", "alice", "127.0.0.1"),
        ("alice", "session_revoke", "alice", "198.51.100.4"),
        ("alice", "profile", "alice", "198.51.100.4"),
    ]
    details = [json.loads(r.detail) for r in rows]
    assert details[0] == {"method": "local", "via": "register"}
    assert details[2] == {"method": "local", "via": "register"}
    assert rows[2].reason == "authentication failed: wrong username or password"
    assert details[4] == {"method": None, "via": "resume"}
    assert details[5] == {"method": "local", "via": "resume"}
    assert details[7] == {"count": 1}  # the phone's key; the laptop's stays
    assert details[9] == {"id": theirs["session_id"]}
    assert details[10] == {"fields": ["status_text"]}
    everything = "\n".join(" ".join(str(v) for v in row) for row in rows)
    secrets = ["pass-old-1", "guess-pw-3", "typed-pw-4", "no-such-key-5", "wrong-pw-6",
               "pass-new-7", first["session_key"], second["session_key"], theirs["session_key"],
               hash_session_key(first["session_key"])]
    for secret in secrets:
        assert secret not in everything


def test_many_keys_are_marked_in_batches(chat: InProcessChat) -> None:
    _, first = register(chat, "alice")
    with chat.engine.begin() as connection:
        connection.execute(update(sessions).values(last_used_at=1000))
    keys = [f"{n:064x}" for n in range(1201)] + [hash_session_key(first["session_key"])]
    assert chat.wait(chat.store.devices.touch(keys, 150_000)) == 1
