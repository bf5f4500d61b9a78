"""Reports: ReportRequest, ReportListRequest, ReportResolveRequest.

The rules in-process first (tests/inprocess.py), then the wire over real
sockets on SQLite and PostgreSQL.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any, Iterator

import pytest

from chateau.errors import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    NOT_IMPLEMENTED,
    TOO_MANY_REQUESTS,
)
from chateau.handlers.reports import report_page
from chateau.names import RANDOM_PREFIX
from chateau.store import migrate
from chateau.store.accounts import create_user_txn, get_user_txn, set_admin_txn
from chateau.store.engine import in_transaction, make_engine
from chateau.store.messages import add_messages_txn, get_message_txn
from chateau.store.audit import entries_txn
from chateau.store.notices import notices_since_txn
from chateau.store.records import BAN_FOREVER, ReportRecord, direct_chat
from chateau.store.reports import add_report_txn, get_report_txn
from tests.deferreds import inline
from tests.inprocess import FakeConnection, InProcessChat, make_test_config
from tests.test_admin_cli import admin as run_admin
from tests.test_cluster import cluster  # noqa: F401 (the fixture)
from tests.wsclient import send_message as socket_send


def start_chat(tmp_path: Path, **limits: str) -> InProcessChat:
    running = InProcessChat(make_test_config(tmp_path, limits=limits))
    running.start()
    return running


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[InProcessChat]:
    running = start_chat(tmp_path)
    yield running
    running.stop()


def send(chat: InProcessChat, sender: FakeConnection, recipient: str, content: str) -> int:
    ack = chat.request(
        sender, {"type": "MessageRequest", "recipient": recipient, "content": content}
    )
    assert ack["type"] == "MessageSendResponse", ack
    return ack["id"]


def report(chat: InProcessChat, who: FakeConnection, **fields: Any) -> dict[str, Any]:
    fields.setdefault("reason", "abusive")
    return chat.request(who, {"type": "ReportRequest", **fields})


def admin(chat: InProcessChat, name: str = "root") -> FakeConnection:
    connection = chat.sign_in(name)
    assert chat.wait(chat.store.accounts.set_admin(name, True))
    return connection


def listed(chat: InProcessChat, who: FakeConnection, **fields: Any) -> dict[str, Any]:
    reply = chat.request(who, {"type": "ReportListRequest", **fields})
    assert reply["type"] == "ReportListResponse", reply
    return reply


def resolve(
    chat: InProcessChat, who: FakeConnection, report_id: int, action: str, note: str = "seen"
) -> dict[str, Any]:
    return chat.request(who, {"type": "ReportResolveRequest", "report_id": report_id,
                              "action": action, "note": note})


def refused(reply: dict[str, Any], status: int) -> str:
    assert reply["type"] == "ErrorResponse" and reply["status"] == status, reply
    return reply["detail"]


def make_group(chat: InProcessChat, creator: FakeConnection, chatname: str, *members: str) -> None:
    reply = chat.request(creator, {"type": "GroupMessageInitRequest",
                                   "recipients": list(members), "chatname": chatname})
    assert reply["status"] == 200, reply


# -- making a report ------------------------------------------------------------

def test_a_reported_direct_message_is_kept_after_its_author_deletes_it(
    chat: InProcessChat,
) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    message_id = send(chat, alice, "bob", "you will regret this")
    reply = report(chat, bob, message_id=message_id, reason="a threat", msg_id=7)
    assert reply == {"type": "ReportResponse", "status": 201, "report_id": reply["report_id"],
                     "msg_id": 7}
    deleted = chat.request(alice, {"type": "MessageDeleteRequest", "id": message_id})
    assert deleted["type"] == "MessageDeleteResponse", deleted
    root = admin(chat)
    (entry,) = listed(chat, root)["reports"]
    assert entry["report_id"] == reply["report_id"] and entry["status"] == "open"
    assert entry["reporter"] == "bob" and entry["username"] == "alice"
    assert entry["reason"] == "a threat" and entry["message_id"] == message_id
    assert entry["chatname"] is None
    snapshot = entry["snapshot"]["message"]
    assert snapshot["content"] == "you will regret this" and snapshot["sender"] == "alice"
    assert snapshot["recipient"] == "bob" and snapshot["id"] == message_id
    assert snapshot["edited"] is False and snapshot["timestamp"].endswith("Z")
    assert entry["resolved_by"] is None and entry["resolved"] is None
    assert entry["action"] is None and entry["note"] is None


def test_the_reason_and_the_targets_are_checked(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    chat.sign_in("bob")
    assert "'reason' must not be empty" in refused(report(chat, alice, username="bob",
                                                          reason="  "), BAD_REQUEST)
    assert "longer than 1000" in refused(report(chat, alice, username="bob", reason="x" * 1001),
                                         BAD_REQUEST)
    assert "NUL" in refused(report(chat, alice, username="bob", reason="a\x00b"), BAD_REQUEST)
    assert "at least one of" in refused(report(chat, alice), BAD_REQUEST)
    assert report(chat, alice, username="bob", reason="x" * 1000)["status"] == 201
    assert "own name" in refused(report(chat, alice, username="Alice"), BAD_REQUEST)
    assert "no such user" in refused(report(chat, alice, username="nobody"), NOT_FOUND)


def test_only_what_the_reporter_sees_can_be_reported(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    direct = send(chat, alice, "bob", "private")
    make_group(chat, alice, "club", "bob")
    in_group = send(chat, alice, "club", "members only")
    # Another's direct message, a group one is not in, and no message at all
    # are answered alike: nothing says which exists.
    for message_id in (direct, in_group, 10_000):
        detail = refused(report(chat, carol, message_id=message_id), NOT_FOUND)
        assert detail == f"no message with id {message_id} that you can see"
    assert "own message" in refused(report(chat, alice, message_id=direct), BAD_REQUEST)
    assert report(chat, bob, message_id=in_group)["status"] == 201
    assert "not a member" in refused(report(chat, carol, chatname="club"), FORBIDDEN)
    assert "no such group" in refused(report(chat, carol, chatname="nowhere"), NOT_FOUND)
    assert report(chat, bob, chatname="Club")["status"] == 201
    # Targets that disagree with the message are refused.
    assert "not sent by" in refused(report(chat, bob, message_id=in_group, username="carol"),
                                    BAD_REQUEST)
    assert "is not in" in refused(report(chat, bob, message_id=direct, chatname="club"),
                                  BAD_REQUEST)
    assert report(chat, bob, message_id=direct, chatname="alice", username="alice")["status"] == 201


def test_a_system_event_is_not_reported(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    make_group(chat, alice, "club", "bob")
    role = chat.request(alice, {"type": "GroupRoleRequest", "chatname": "club", "user": "bob",
                                "role": "admin"})
    assert role["type"] == "GroupRoleResponse", role
    (event,) = [m for m in bob.take() if m["type"] == "GroupEventRecv"]
    assert "system event" in refused(report(chat, bob, message_id=event["id"]), BAD_REQUEST)


def test_a_random_chat_report_keeps_its_last_20_messages(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    chat.sign_in("carol")
    first = chat.request(alice, {"type": "RandomMessageRequest", "content": "message 0"})
    chatname, partner = first["chatname"], first["client"]
    assert chatname.startswith(RANDOM_PREFIX)
    people = {"alice": alice, "bob": bob, "carol": chat.connections[2]}
    for number in range(1, 25):
        sender = people[partner] if number % 2 else alice
        send(chat, sender, chatname, f"message {number}")
    reply = report(chat, people[partner], chatname=chatname, reason="rude")
    assert reply["status"] == 201
    root = admin(chat)
    (entry,) = listed(chat, root)["reports"]
    assert entry["chatname"] == chatname and entry["username"] == "alice"
    kept = entry["snapshot"]["chat"]
    assert kept["chatname"] == chatname
    assert [m["content"] for m in kept["messages"]] == [f"message {n}" for n in range(5, 25)]
    assert chat.registry.kept_apart(partner, "alice") and chat.registry.kept_apart("alice", partner)
    outsider = next(name for name in people if name not in ("alice", partner))
    assert refused(report(chat, people[outsider], chatname=chatname), NOT_FOUND) == (
        f"no such chat: {chatname!r}")


def test_an_ended_random_chat_is_reported_by_who_wrote_in_it(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    first = chat.request(alice, {"type": "RandomMessageRequest", "content": "hello"})
    chatname = first["chatname"]
    rude = send(chat, bob, chatname, "go away")
    chat.disconnect(alice)
    assert chat.registry.pair(chatname) is None
    alice = chat.sign_in("alice")
    reply = report(chat, alice, message_id=rude)
    assert reply["status"] == 201
    root = admin(chat)
    (entry,) = listed(chat, root)["reports"]
    assert entry["username"] == "bob" and entry["chatname"] == chatname
    assert entry["snapshot"]["message"]["content"] == "go away"
    assert [m["content"] for m in entry["snapshot"]["chat"]["messages"]] == ["hello", "go away"]
    assert report(chat, alice, chatname=chatname)["status"] == 201
    carol = chat.sign_in("carol")
    assert refused(report(chat, carol, message_id=rude), NOT_FOUND)
    assert refused(report(chat, carol, chatname=chatname), NOT_FOUND)


def test_open_reports_per_hour_are_limited(tmp_path: Path) -> None:
    chat = start_chat(tmp_path, reports_per_hour="2")
    try:
        alice = chat.sign_in("alice")
        chat.sign_in("bob")
        first = report(chat, alice, username="bob")["report_id"]
        assert report(chat, alice, username="bob")["status"] == 201
        reply = report(chat, alice, username="bob")
        assert "2 open reports from the last hour" in refused(reply, TOO_MANY_REQUESTS)
        assert 3500 < reply["retry_after"] <= 3600
        # A resolved report no longer counts.
        root = admin(chat)
        assert resolve(chat, root, first, "dismiss")["status"] == 200
        assert report(chat, alice, username="bob")["status"] == 201
    finally:
        chat.stop()


# -- reading and resolving reports ------------------------------------------------------

def test_only_server_admins_read_and_resolve_reports(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    chat.sign_in("bob")
    report_id = report(chat, alice, username="bob")["report_id"]
    reply = chat.request(alice, {"type": "ReportListRequest"})
    assert refused(reply, FORBIDDEN) == "only server admins may read reports"
    reply = resolve(chat, alice, report_id, "dismiss")
    assert refused(reply, FORBIDDEN) == "only server admins may resolve reports"
    # Even nonsense is refused as a non-admin's first.
    assert refused(resolve(chat, alice, 999, "nonsense"), FORBIDDEN)


def test_listing_pages_through_reports_by_status(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    chat.sign_in("bob")
    ids = [report(chat, alice, username="bob", reason=f"r{n}")["report_id"] for n in range(5)]
    root = admin(chat)
    assert resolve(chat, root, ids[1], "dismiss", note="fine")["status"] == 200
    page = listed(chat, root, limit=2)
    assert [r["report_id"] for r in page["reports"]] == [ids[4], ids[3]] and page["more"]
    page = listed(chat, root, limit=2, before=ids[3])
    assert [r["report_id"] for r in page["reports"]] == [ids[2], ids[0]] and not page["more"]
    (closed,) = listed(chat, root, status="closed")["reports"]
    assert closed["report_id"] == ids[1] and closed["status"] == "closed"
    assert closed["resolved_by"] == "root" and closed["action"] == "dismiss"
    assert closed["note"] == "fine" and closed["resolved"].endswith("Z")
    assert len(listed(chat, root, status="all")["reports"]) == 5
    assert "'status'" in refused(chat.request(root, {"type": "ReportListRequest",
                                                     "status": "pending"}), BAD_REQUEST)
    for limit in (0, 201):
        assert "'limit'" in refused(chat.request(root, {"type": "ReportListRequest",
                                                        "limit": limit}), BAD_REQUEST)


def test_a_page_of_reports_fits_in_a_frame() -> None:
    big = {"message": {"content": "x" * 3000}}
    records = [ReportRecord(n, "alice", "why", "bob", None, None, big, 0, "open", None, None,
                            None, None) for n in range(10, 0, -1)]
    page = report_page(records, False, None, 10_000)
    assert len(page["reports"]) == 3 and page["more"] is True
    alone = report_page(records, False, None, 100)
    assert len(alone["reports"]) == 1 and alone["more"] is True


def test_resolving_with_ban_user_bans_the_reported_user_until_unbanned(
    chat: InProcessChat,
) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    by_user = report(chat, alice, username="bob", reason="threats")["report_id"]
    root = admin(chat)
    reply = resolve(chat, root, by_user, "ban_user", note="")
    assert reply["status"] == 200 and reply["action"] == "ban_user", reply
    # Closed at once on this node (4003), refused at sign-in with the reason.
    assert bob.closed_with is not None and bob.closed_with[0] == 4003
    user = chat.wait(chat.store.accounts.get_user("bob"))
    assert user.banned_until == BAN_FOREVER and user.ban_reason == f"report {by_user}: threats"
    entries = chat.wait(chat.store.audit.entries())
    assert [(e.action, e.target) for e in entries[:2]] == [
        ("report_ban_user", "bob"), ("user_ban", "bob")]
    assert listed(chat, root, status="closed")["reports"][0]["action"] == "ban_user"


def test_resolving_checks_the_report_and_the_action(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    chat.sign_in("bob")
    make_group(chat, alice, "club", "bob")
    by_user = report(chat, alice, username="bob")["report_id"]
    by_chat = report(chat, alice, chatname="club")["report_id"]
    root = admin(chat)
    assert refused(resolve(chat, root, 999, "dismiss"), NOT_FOUND) == "no report with id 999"
    assert "unknown action 'smite'" in refused(resolve(chat, root, by_user, "smite"), BAD_REQUEST)
    assert "longer than 1000" in refused(resolve(chat, root, by_user, "dismiss", "n" * 1001),
                                         BAD_REQUEST)
    assert "names no user to warn" in refused(resolve(chat, root, by_chat, "warn"), BAD_REQUEST)
    assert "names no message" in refused(resolve(chat, root, by_user, "delete_message"),
                                         BAD_REQUEST)
    assert listed(chat, root)["reports"][-1]["status"] == "open"
    reply = resolve(chat, root, by_user, "dismiss", note="")
    assert reply == {"type": "ReportResolveResponse", "status": 200, "report_id": by_user,
                     "action": "dismiss", "msg_id": None}
    again = resolve(chat, root, by_user, "warn")
    assert refused(again, CONFLICT) == f"report {by_user} is already resolved (dismiss by root)"
    (entry, *_) = chat.wait(chat.store.audit.entries())
    assert (entry.actor, entry.action, entry.target, entry.reason) == (
        "root", "report_dismiss", "bob", "")
    assert entry.detail["report_id"] == by_user and entry.detail["reporter"] == "alice"


def test_a_warning_reaches_the_reported_user(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    report_id = report(chat, alice, username="bob")["report_id"]
    bob.take()
    root = admin(chat)
    assert resolve(chat, root, report_id, "warn", note="be kind")["status"] == 200
    assert bob.take() == [{"type": "ModerationWarningRecv", "status": 200,
                           "report_id": report_id, "note": "be kind"}]
    assert alice.take() == []


def test_resolving_with_delete_message_deletes_it_for_everyone(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    make_group(chat, alice, "club", "bob", "carol")
    message_id = send(chat, bob, "club", "spam spam spam")
    report_id = report(chat, carol, message_id=message_id)["report_id"]
    for connection in (alice, bob, carol):
        connection.take()
    root = admin(chat)
    assert resolve(chat, root, report_id, "delete_message", note="spam")["status"] == 200
    deleted = {"type": "MessageDeleted", "status": 200, "id": message_id, "chatname": "club",
               "sender": "bob"}
    for connection in (alice, bob, carol):
        assert connection.take() == [deleted]
    assert root.take() == []
    record = chat.wait(chat.store.messages.get_message(message_id))
    assert record.deleted and record.content is None
    (entry, *_) = chat.wait(chat.store.audit.entries())
    assert entry.action == "report_delete_message" and entry.reason == "spam"
    (closed,) = listed(chat, root, status="closed")["reports"]
    assert closed["snapshot"]["message"]["content"] == "spam spam spam"


def test_delete_message_on_a_message_already_deleted_just_closes_the_report(
    chat: InProcessChat,
) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    message_id = send(chat, alice, "bob", "oops")
    report_id = report(chat, bob, message_id=message_id)["report_id"]
    chat.request(alice, {"type": "MessageDeleteRequest", "id": message_id})
    bob.take()
    root = admin(chat)
    assert resolve(chat, root, report_id, "delete_message")["status"] == 200
    assert bob.take() == []


# -- over real sockets ------------------------------------------------------------

@inline
async def test_socket_report_delete_and_resolve(server: Any) -> None:
    """A reported direct message survives its deletion for moderators; a resolution
    with delete_message pushes the deletion; a non-admin is refused."""
    alice = await server.client("alice")
    bob = await server.client("bob")
    carol = await server.client("carol")
    root = await server.client("root")
    await server.service.store.accounts.set_admin("root", True)

    ack = await socket_send(alice, "bob", "meet me or else")
    await bob.expect("MessageRecv", content="meet me or else")
    reply = await bob.request({"type": "ReportRequest", "message_id": ack["id"],
                               "reason": "threat", "msg_id": 1})
    assert reply["type"] == "ReportResponse" and reply["status"] == 201, reply
    dm_report = reply["report_id"]
    deleted = await alice.request({"type": "MessageDeleteRequest", "id": ack["id"]})
    assert deleted["type"] == "MessageDeleteResponse", deleted
    await bob.expect("MessageDeleted", id=ack["id"])

    refusal = await carol.request({"type": "ReportListRequest", "msg_id": 2})
    assert refusal["type"] == "ErrorResponse" and refusal["status"] == 403, refusal
    page = await root.request({"type": "ReportListRequest", "msg_id": 3})
    assert page["type"] == "ReportListResponse" and page["more"] is False, page
    (entry,) = page["reports"]
    assert entry["report_id"] == dm_report
    assert entry["snapshot"]["message"]["content"] == "meet me or else"

    group = await alice.request({"type": "GroupMessageInitRequest", "chatname": "club",
                                 "recipients": ["bob", "carol"]})
    assert group["status"] == 200, group
    await bob.expect("GroupMessageInitResponse", status=201)
    await carol.expect("GroupMessageInitResponse", status=201)
    spam = await socket_send(carol, "club", "buy now")
    await alice.expect("GroupMessageRecv", content="buy now")
    await bob.expect("GroupMessageRecv", content="buy now")
    reply = await alice.request({"type": "ReportRequest", "message_id": spam["id"],
                                 "reason": "spam"})
    assert reply["status"] == 201, reply
    resolved = await root.request({"type": "ReportResolveRequest", "report_id": reply["report_id"],
                                   "action": "delete_message", "note": "spam", "msg_id": 4})
    assert resolved == {"type": "ReportResolveResponse", "status": 200, "msg_id": 4,
                        "report_id": reply["report_id"], "action": "delete_message"}
    for member in (alice, bob, carol):
        await member.expect("MessageDeleted", id=spam["id"], chatname="club", sender="carol")
    history = await bob.request({"type": "HistoryRequest", "chatname": "club"})
    assert [m["deleted"] for m in history["messages"] if m["id"] == spam["id"]] == [True]
    again = await root.request({"type": "ReportResolveRequest", "report_id": reply["report_id"],
                                "action": "dismiss", "note": ""})
    assert again["status"] == 409, again

    warned = await root.request({"type": "ReportResolveRequest", "report_id": dm_report,
                                 "action": "warn", "note": "no threats"})
    assert warned["status"] == 200, warned
    await alice.expect("ModerationWarningRecv", report_id=dm_report, note="no threats")


@inline
async def test_socket_random_chat_report_keeps_the_last_20_messages(server: Any) -> None:
    alice = await server.client("alice")
    bob = await server.client("bob")
    root = await server.client("root")
    await server.service.store.accounts.set_admin("root", True)
    # Root is online too, so pair until alice's partner is bob.
    while True:
        first = await alice.request({"type": "RandomMessageRequest", "content": "message 0"})
        assert first["type"] == "RandomMessageResponse", first
        if first["client"] == "bob":
            break
        await root.expect("MessageRecv", random=True)
        await alice.request({"type": "GroupLeaveRequest", "chatname": first["chatname"]})
        await root.expect("RandomChatEndedRecv")
    chatname = first["chatname"]
    await bob.expect("MessageRecv", content="message 0")
    for number in range(1, 30):
        sender, receiver = (bob, alice) if number % 2 else (alice, bob)
        await socket_send(sender, chatname, f"message {number}")
        await receiver.expect("GroupMessageRecv", content=f"message {number}")
    reply = await bob.request({"type": "ReportRequest", "chatname": chatname, "reason": "rude"})
    assert reply["status"] == 201, reply
    page = await root.request({"type": "ReportListRequest"})
    (entry,) = page["reports"]
    assert entry["username"] == "alice" and entry["chatname"] == chatname
    contents = [m["content"] for m in entry["snapshot"]["chat"]["messages"]]
    assert contents == [f"message {n}" for n in range(10, 30)]
    assert server.service.registry.kept_apart("bob", "alice")


# -- chateau-admin reports ---------------------------------------------------------


def seed_reports(database_url: str) -> tuple[int, int, int]:
    """Alice's direct message to bob, reported by bob; a report of carol by bob.

    Returns (message id, the message's report, the user's report).
    """
    engine = make_engine(database_url)
    try:
        def txn(connection: Any) -> tuple[int, int, int]:
            migrate.prepare(connection)
            for name in ("alice", "bob", "carol"):
                assert create_user_txn(connection, name, None, "local", None)
            (stored,) = add_messages_txn(
                connection, [(direct_chat("alice", "bob"), "alice", "pay up", "bob")]
            )
            snapshot = {"message": {"id": stored.id, "content": "pay up"}}
            by_message, _ = add_report_txn(connection, "bob", "extortion", "alice", None,
                                           stored.id, snapshot, 0, 20)
            by_user, _ = add_report_txn(connection, "bob", "rude\nand loud", "carol", None,
                                        None, {}, 0, 20)
            assert by_message is not None and by_user is not None
            return stored.id, by_message, by_user

        return in_transaction(engine, txn)
    finally:
        engine.dispose()


def test_cli_lists_shows_and_resolves_reports(tmp_path: Path, database_url: str) -> None:
    message_id, by_message, by_user = seed_reports(database_url)
    listing = run_admin(tmp_path, database_url, "reports", "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].startswith(f"{by_user:<6} open ")
    assert "bob on user carol: rude and loud" in lines[0]
    assert f"bob on user alice, message {message_id}: extortion" in lines[1]
    assert lines[-1] == "2 report(s)"

    shown = run_admin(tmp_path, database_url, "reports", "show", str(by_message))
    assert shown.returncode == 0, shown.stderr
    assert "reporter:     bob" in shown.stdout and '"content": "pay up"' in shown.stdout
    missing = run_admin(tmp_path, database_url, "reports", "show", "999")
    assert missing.returncode == 1 and "no report with id 999" in missing.stderr

    resolved = run_admin(tmp_path, database_url, "reports", "resolve", str(by_message),
                         "--action", "delete_message", "--note", "extortion")
    assert resolved.returncode == 0, resolved.stderr
    assert "the running servers tell the members online" in resolved.stdout
    again = run_admin(tmp_path, database_url, "reports", "resolve", str(by_message),
                      "--action", "dismiss", "--note", "")
    assert again.returncode == 1 and "already resolved (delete_message by cli:" in again.stderr
    no_message = run_admin(tmp_path, database_url, "reports", "resolve", str(by_user),
                           "--action", "delete_message", "--note", "")
    assert no_message.returncode == 1 and "names no message" in no_message.stderr
    ban = run_admin(tmp_path, database_url, "reports", "resolve", str(by_user),
                    "--action", "ban_user", "--note", "")
    assert ban.returncode == 0, ban.stderr
    assert "'carol' is banned until unbanned" in ban.stdout
    warned = run_admin(tmp_path, database_url, "reports", "resolve", str(by_user),
                       "--action", "warn", "--note", "calm down")
    assert warned.returncode == 1 and "already resolved (ban_user by cli:" in warned.stderr

    assert run_admin(tmp_path, database_url, "reports", "list").stdout.strip() == "0 report(s)"
    closed = run_admin(tmp_path, database_url, "reports", "list", "--status", "closed")
    assert "2 report(s)" in closed.stdout and " closed " in closed.stdout

    engine = make_engine(database_url)
    try:
        record = in_transaction(engine, get_message_txn, message_id)
        assert record.deleted and record.content is None
        report = in_transaction(engine, get_report_txn, by_message)
        assert report.resolved_by == f"cli:{getpass.getuser()}"[:64]
        assert report.snapshot["message"]["content"] == "pay up"
        entries = in_transaction(engine, entries_txn)
        carol = in_transaction(engine, get_user_txn, "carol")
        notices = in_transaction(engine, notices_since_txn, 0)
    finally:
        engine.dispose()
    # The ban has its own entry, with the report as its reason (the note was empty).
    assert [(e.action, e.target, e.reason) for e in entries] == [
        ("report_ban_user", "carol", ""), ("user_ban", "carol", "report 2: rude\nand loud"),
        ("report_delete_message", "alice", "extortion")]
    assert carol.banned_until == BAN_FOREVER
    # The running servers learn of the deletion through a notice.
    assert [(n.kind, n.body["id"]) for n in notices] == [("message_deleted", message_id)]
    assert all(e.actor.startswith("cli:") for e in entries)


def test_cli_and_protocol_know_the_same_statuses_and_actions() -> None:
    from chateau import admin_reports
    from chateau.handlers import reports

    assert admin_reports.STATUSES == reports.STATUSES
    assert admin_reports.ACTIONS == reports.ACTIONS


# -- across the nodes of a cluster ---------------------------------------------------


@inline
async def test_reports_resolve_across_nodes(cluster: Any) -> None:
    """A report made on one node is resolved from another; the warning and the
    deletion reach users on a third."""
    alice = await cluster.client("n1", "alice")
    bob = await cluster.client("n2", "bob")
    root = await cluster.client("n3", "root")
    engine = make_engine(cluster.database_url)
    try:
        assert in_transaction(engine, set_admin_txn, "root", True)
    finally:
        engine.dispose()
    ack = await socket_send(alice, "bob", "nasty words")
    await bob.expect("MessageRecv", content="nasty words")
    reply = await bob.request({"type": "ReportRequest", "message_id": ack["id"], "reason": "nasty"})
    assert reply["status"] == 201, reply
    page = await root.request({"type": "ReportListRequest"})
    (entry,) = page["reports"]
    assert entry["report_id"] == reply["report_id"] and entry["username"] == "alice"
    resolved = await root.request({"type": "ReportResolveRequest", "report_id": entry["report_id"],
                                   "action": "delete_message", "note": "no"})
    assert resolved["status"] == 200, resolved
    await alice.expect("MessageDeleted", id=ack["id"], chatname="bob", sender="alice")
    await bob.expect("MessageDeleted", id=ack["id"], chatname="alice", sender="alice")
    reply = await bob.request({"type": "ReportRequest", "username": "alice", "reason": "again"})
    warned = await root.request({"type": "ReportResolveRequest", "report_id": reply["report_id"],
                                 "action": "warn", "note": "last warning"})
    assert warned["status"] == 200, warned
    await alice.expect("ModerationWarningRecv", report_id=reply["report_id"], note="last warning")
    await cluster.close()
