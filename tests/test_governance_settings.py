"""Group settings, renames and the public directory, in-process (tests/inprocess.py).

GroupUpdateRequest and GroupDirectoryRequest through the Dispatcher with a
real registry and SQLite store; the wire, PostgreSQL, restarts and a
cluster are in tests/test_governance_settings_wire.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chateau.store.engine import in_transaction
from chateau.store.audit import entries_txn
from tests.inprocess import FakeConnection, InProcessChat, make_test_config

SETTINGS = {"join": "invite", "visibility": "private", "who_can_add": "admins",
            "who_can_send": "everyone", "retention_days": None}


def make_group(chat: InProcessChat, creator: FakeConnection, chatname: str, *members: str) -> None:
    reply = chat.request(creator, {"type": "GroupMessageInitRequest",
                                   "recipients": list(members), "chatname": chatname})
    assert reply["status"] == 200, reply


def update(chat: InProcessChat, who: FakeConnection, chatname: str, **fields: Any) -> dict[str, Any]:
    return chat.request(who, {"type": "GroupUpdateRequest", "chatname": chatname, **fields})


def events(connection: FakeConnection) -> list[dict[str, Any]]:
    """The GroupEventRecv pushes since the last take, without id and timestamp."""
    found = []
    for push in connection.take():
        if push["type"] == "GroupEventRecv":
            assert push.pop("id") > 0 and push.pop("timestamp")
            found.append(push)
    return found


def set_role(chat: InProcessChat, owner: FakeConnection, chatname: str, user: str, role: str) -> None:
    reply = chat.request(owner, {"type": "GroupRoleRequest", "chatname": chatname,
                                 "user": user, "role": role})
    assert reply["status"] == 200, reply


# -- who may (the UPDATE cells of the permission table, through the handler) -------

@pytest.mark.parametrize("actor,allowed", [
    ("owner", True), ("admin", True), ("member", False), ("outsider", False),
    ("server_admin", True),
])
def test_update_permission_per_role(chat: InProcessChat, actor: str, allowed: bool) -> None:
    owner, admin, member = chat.sign_in("owner"), chat.sign_in("admin"), chat.sign_in("member")
    outsider, root = chat.sign_in("outsider"), chat.sign_in("root")
    chat.wait(chat.store.accounts.set_admin("root", True))
    make_group(chat, owner, "club", "admin", "member")
    set_role(chat, owner, "club", "admin", "admin")
    who = {"owner": owner, "admin": admin, "member": member, "outsider": outsider,
           "server_admin": root}[actor]
    reply = update(chat, who, "club", topic="hello")
    if allowed:
        assert reply["type"] == "GroupUpdateResponse" and reply["status"] == 200, reply
        assert reply["topic"] == "hello"
    else:
        assert reply["status"] == 403, reply
        if actor == "outsider":
            assert "not a member" in reply["detail"]
        else:
            assert "only admins and owners" in reply["detail"]
        info = chat.request(owner, {"type": "GroupInfoRequest", "chatname": "club"})
        assert info["topic"] == ""


# -- topic and settings ----------------------------------------------------------

def test_topic_and_settings_are_stored_told_and_shown(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    make_group(chat, alice, "club", "bob")
    bob.take()
    reply = update(chat, alice, "Club", topic="Exams on Friday", join="open", visibility="public",
                   msg_id=7)
    assert reply == {"type": "GroupUpdateResponse", "status": 200, "chatname": "club",
                     "topic": "Exams on Friday",
                     "settings": {**SETTINGS, "join": "open", "visibility": "public"},
                     "msg_id": 7}
    base = {"type": "GroupEventRecv", "status": 200, "chatname": "club", "user": "alice",
            "by": "alice"}
    assert events(bob) == [
        {**base, "event": "topic", "topic": "Exams on Friday"},
        {**base, "event": "settings", "settings": {"join": "open", "visibility": "public"}},
    ]
    assert alice.take() == []
    # The same values again change nothing and tell nobody; only what changed is told.
    again = update(chat, alice, "club", topic="Exams on Friday", join="open", who_can_send="admins")
    assert again["settings"]["who_can_send"] == "admins"
    assert events(bob) == [{**base, "event": "settings", "settings": {"who_can_send": "admins"}}]
    # The registry's mirror for the send path.
    assert chat.registry.group("club").who_can_send == "admins"
    info = chat.request(bob, {"type": "GroupInfoRequest", "chatname": "club"})
    assert info["topic"] == "Exams on Friday"
    assert info["settings"] == {"join": "open", "visibility": "public", "who_can_add": "admins",
                                "who_can_send": "admins", "retention_days": None}
    page = chat.request(bob, {"type": "HistoryRequest", "chatname": "club"})
    assert [(m["content"], m["event"]["event"]) for m in reversed(page["messages"])] == [
        ("alice set the topic: Exams on Friday", "topic"),
        ("alice changed the group's settings", "settings"),
        ("alice changed the group's settings", "settings")]
    # An empty topic clears it.
    assert update(chat, alice, "club", topic="")["topic"] == ""


@pytest.mark.parametrize("fields,detail", [
    ({}, "at least one"),
    ({"join": "closed"}, "join must be one of 'invite', 'open'"),
    ({"visibility": "hidden"}, "visibility must be one of 'private', 'public'"),
    ({"who_can_add": "everyone"}, "who_can_add must be one of 'admins', 'members'"),
    ({"who_can_send": "members"}, "who_can_send must be one of 'everyone', 'admins'"),
    ({"topic": "x" * 501}, "at most 500"),
    ({"topic": "a\x00b"}, "NUL"),
    ({"name": "no*stars"}, "invalid name"),
    ({"name": ""}, "invalid name"),
    ({"name": "x" * 65}, "invalid name"),
])
def test_bad_values_are_refused_with_400_naming_what_is_allowed(
    chat: InProcessChat, fields: dict[str, Any], detail: str,
) -> None:
    alice = chat.sign_in("alice")
    chat.sign_in("bob")
    make_group(chat, alice, "club", "bob")
    reply = update(chat, alice, "club", **fields)
    assert reply["status"] == 400 and detail in reply["detail"], reply
    assert update(chat, alice, "club", topic="x" * 500)["status"] == 200


def test_an_unknown_group_is_404(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    assert update(chat, alice, "nope", topic="x")["status"] == 404


# -- renames ---------------------------------------------------------------------

def test_a_rename_moves_history_membership_roles_and_bans(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    chat.sign_in("eve")
    make_group(chat, alice, "club", "bob", "carol")
    set_role(chat, alice, "club", "bob", "admin")
    first = chat.request(carol, {"type": "MessageRequest", "recipient": "club", "content": "hi"})
    assert first["status"] == 200
    chat.wait(chat.store.runner.run(_ban, "club", "eve", "alice"))
    for c in (alice, bob, carol):
        c.take()
    reply = update(chat, bob, "club", name="Study Hall", topic="quiet please")
    assert reply["status"] == 200 and reply["chatname"] == "study hall", reply
    pushed = events(carol)
    assert pushed == [
        {"type": "GroupEventRecv", "status": 200, "chatname": "study hall", "event": "renamed",
         "user": "bob", "by": "bob", "old_name": "club", "new_name": "study hall"},
        {"type": "GroupEventRecv", "status": 200, "chatname": "study hall", "event": "topic",
         "user": "bob", "by": "bob", "topic": "quiet please"}]
    assert [e["event"] for e in events(alice)] == ["renamed", "topic"]
    # The old name finds nothing: sends, history, info, another update.
    for request in ({"type": "MessageRequest", "recipient": "club", "content": "x"},
                    {"type": "HistoryRequest", "chatname": "club"},
                    {"type": "GroupInfoRequest", "chatname": "club"},
                    {"type": "GroupMembersRequest", "chatname": "club"},
                    {"type": "GroupUpdateRequest", "chatname": "club", "topic": "x"}):
        assert chat.request(carol, request)["status"] == 404, request
    # History (with the message and the events), roles and membership moved.
    page = chat.request(carol, {"type": "HistoryRequest", "chatname": "study hall"})
    assert [m["content"] for m in reversed(page["messages"])] == [
        "alice made bob admin", "hi", "bob renamed the group from club to study hall",
        "bob set the topic: quiet please"]
    info = chat.request(carol, {"type": "GroupInfoRequest", "chatname": "study hall"})
    assert info["creator"] == "alice" and info["topic"] == "quiet please"
    assert [(m["username"], m["role"]) for m in info["members"]] == [
        ("alice", "owner"), ("bob", "admin"), ("carol", "member")]
    assert chat.wait(chat.store.runner.run(_bans, "study hall")) == ["eve"]
    assert chat.wait(chat.store.runner.run(_bans, "club")) == []
    # Sending under the new name: the group had started, so no 201 again.
    ack = chat.request(carol, {"type": "MessageRequest", "recipient": "study hall",
                               "content": "still here"})
    assert ack["status"] == 200
    (recv,) = [p for p in alice.take() if p["type"] == "GroupMessageRecv"]
    assert recv["chatname"] == "study hall" and recv["status"] == 200
    # The registry keeps one object per group, under the new name only.
    assert chat.registry.group("club") is None
    assert chat.registry.group_count("carol") == 1
    # The rename is in the moderation log.
    log = [e for e in in_transaction(chat.engine, entries_txn, 10)
           if not e.action.startswith("sign_in")]
    assert [(e.actor, e.action, e.target, e.detail) for e in log] == [
        ("bob", "group_rename", "club", {"new_name": "study hall"})]
    # The old name is free again, for a user or a group.
    assert chat.sign_in("club").username == "club"


def _ban(connection: Any, chatname: str, username: str, by: str) -> None:
    from sqlalchemy import insert

    from chateau.store.tables import group_bans
    connection.execute(insert(group_bans).values(
        chatname=chatname, username=username, banned_by=by, reason="", banned_at=1))


def _bans(connection: Any, chatname: str) -> list[str]:
    from sqlalchemy import select

    from chateau.store.tables import group_bans
    return list(connection.execute(
        select(group_bans.c.username).where(group_bans.c.chatname == chatname)).scalars())


def test_a_rename_to_a_taken_or_confusable_name_is_409_and_changes_nothing(
    chat: InProcessChat,
) -> None:
    alice = chat.sign_in("alice")
    chat.sign_in("bob")
    make_group(chat, alice, "club", "bob")
    make_group(chat, alice, "den", "bob")
    for name, detail in (("den", "is taken"), ("bob", "is taken"), ("Bob", "is taken"),
                         ("b\u03bfb", "looks like the existing name 'bob'"),
                         ("d\u0435n", "looks like the existing name 'den'")):
        reply = update(chat, alice, "club", name=name, topic="changed")
        assert reply["status"] == 409 and detail in reply["detail"], (name, reply)
    info = chat.request(alice, {"type": "GroupInfoRequest", "chatname": "club"})
    assert info["topic"] == ""
    # Its own name, or one that only looks like its own, is not in the way.
    assert update(chat, alice, "club", name="CLUB")["chatname"] == "club"
    reply = update(chat, alice, "club", name="c\u04cfub")  # Cyrillic palochka for l
    assert reply["status"] == 200 and reply["chatname"] == "c\u04cfub", reply
    assert chat.registry.group("c\u04cfub") is not None
    # ... and the name it gave up is free.
    make_group(chat, alice, "club", "bob")


def test_a_rename_keeps_look_alike_flags_true(chat: InProcessChat) -> None:
    """A name flagged as looking like the old one takes over its skeleton."""
    from sqlalchemy import insert, select

    from chateau.names import skeleton
    from chateau.store.tables import name_collisions, names

    alice = chat.sign_in("alice")
    chat.sign_in("bob")
    make_group(chat, alice, "club", "bob")

    def flag(connection: Any) -> None:
        # A group made before skeletons existed, looking like 'club'.
        connection.execute(insert(names).values(name="c1ub", kind="group", skeleton=None))
        connection.execute(insert(name_collisions).values(
            name="c1ub", confusable_with="club", skeleton=skeleton("club"), flagged_at=1))

    chat.wait(chat.store.runner.run(flag))
    assert update(chat, alice, "club", name="society")["status"] == 200

    def state(connection: Any) -> tuple[Any, ...]:
        return (
            connection.execute(select(names.c.name, names.c.skeleton)
                               .where(names.c.name.in_(["club", "c1ub"]))).all(),
            connection.execute(select(name_collisions.c.name)).scalars().all(),
        )

    assert chat.wait(chat.store.runner.run(state)) == ([("c1ub", skeleton("club"))], [])


def test_history_events_and_catch_up_follow_the_rename(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    make_group(chat, alice, "club", "bob")
    chat.disconnect(bob)
    chat.request(alice, {"type": "MessageRequest", "recipient": "club", "content": "before"})
    assert update(chat, alice, "club", name="lounge")["status"] == 200
    chat.request(alice, {"type": "MessageRequest", "recipient": "lounge", "content": "after"})
    bob = chat.sign_in("bob")
    missed = [(p["chatname"], p.get("event"), p["content"] if "content" in p else None)
              for p in bob.take() if p.get("offline")]
    assert missed == [("lounge", None, "before"), ("lounge", "renamed", None),
                      ("lounge", None, "after")]


def test_a_send_committed_under_the_old_name_joins_the_moved_history(chat: InProcessChat) -> None:
    """A send queued before the rename commits after it: it is moved too."""
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    make_group(chat, alice, "club", "bob")
    chat.writer_pool.pause()
    late = chat.begin(bob, {"type": "MessageRequest", "recipient": "club", "content": "late"})
    rename = chat.begin(alice, {"type": "GroupUpdateRequest", "chatname": "club",
                                "name": "lounge"})
    chat.writer_pool.resume()
    assert chat.finish(late)["status"] == 200
    assert chat.finish(rename)["status"] == 200
    page = chat.request(bob, {"type": "HistoryRequest", "chatname": "lounge"})
    assert "late" in [m["content"] for m in page["messages"]]
    assert chat.wait(chat.store.messages.history("club", None, 10))[0] == []


def test_a_restart_loads_the_renamed_group_with_its_send_rule(tmp_path: Path) -> None:
    config = make_test_config(tmp_path)
    first = InProcessChat(config)
    first.start()
    alice = first.sign_in("alice")
    first.sign_in("bob")
    make_group(first, alice, "club", "bob")
    first.request(alice, {"type": "MessageRequest", "recipient": "club", "content": "x"})
    assert update(first, alice, "club", name="lounge", who_can_send="admins")["status"] == 200
    first.stop()
    second = InProcessChat(config)
    second.start()
    try:
        group = second.registry.group("lounge")
        assert group is not None and group.members == {"alice", "bob"}
        assert group.started and group.who_can_send == "admins"
        assert second.registry.group("club") is None
    finally:
        second.stop()


def test_the_cluster_events_rename_and_set_send_rules(chat: InProcessChat) -> None:
    """What another node announces moves the group here (ClusterSync)."""
    from chateau.backplane import NullBackplane
    from chateau.cluster_sync import ClusterSync

    alice = chat.sign_in("alice")
    chat.sign_in("bob")
    make_group(chat, alice, "club", "bob")
    sync = ClusterSync(chat.registry, chat.store, chat.delivery, chat.catch_up, NullBackplane())
    sync.event({"t": "group_renamed", "node": "n2", "chatname": "club", "new_name": "lounge"})
    sync.event({"t": "group_settings", "node": "n2", "chatname": "lounge",
                "who_can_send": "admins"})
    chat.clock.settle()
    assert chat.registry.group("club") is None
    assert chat.registry.group("lounge").who_can_send == "admins"
    # This database still has 'club' (no rename committed): nothing of it is moved.
    assert chat.wait(chat.store.group_settings.move_stragglers("club", "lounge")) == 0
    # A rename of a group this node does not know, or onto a held name, is ignored.
    sync.event({"t": "group_renamed", "node": "n2", "chatname": "nope", "new_name": "x"})
    assert chat.registry.group("x") is None


# -- the directory ------------------------------------------------------------------

def test_the_directory_lists_public_groups_biggest_first(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    for name in ("bob", "carol", "dan"):
        chat.sign_in(name)
    make_group(chat, alice, "chess", "bob", "carol")
    make_group(chat, alice, "go", "bob", "carol")
    make_group(chat, alice, "quiet", "bob")
    make_group(chat, alice, "secret", "bob", "carol", "dan")
    assert update(chat, alice, "chess", visibility="public", topic="Board GAMES")["status"] == 200
    assert update(chat, alice, "go", visibility="public", join="open")["status"] == 200
    assert update(chat, alice, "quiet", visibility="public", topic="100% silent_")["status"] == 200
    dan = chat.sign_in("dan")

    def directory(**fields: Any) -> dict[str, Any]:
        return chat.request(dan, {"type": "GroupDirectoryRequest", **fields})

    reply = directory(msg_id=3)
    assert reply == {"type": "GroupDirectoryResponse", "status": 200, "msg_id": 3, "groups": [
        {"chatname": "chess", "topic": "Board GAMES", "members": 3, "join": "invite"},
        {"chatname": "go", "topic": "", "members": 3, "join": "open"},
        {"chatname": "quiet", "topic": "100% silent_", "members": 2, "join": "invite"}]}
    assert [g["chatname"] for g in directory(query="games")["groups"]] == ["chess"]
    assert [g["chatname"] for g in directory(query="GO")["groups"]] == ["go"]
    assert [g["chatname"] for g in directory(query="%")["groups"]] == ["quiet"]
    assert [g["chatname"] for g in directory(query="t_")["groups"]] == ["quiet"]
    assert directory(query="secret")["groups"] == []
    assert [g["chatname"] for g in directory(limit=1)["groups"]] == ["chess"]
    for bad in ({"limit": 0}, {"limit": 201}, {"query": "x" * 101}, {"query": "\x00"}):
        assert directory(**bad)["status"] == 400, bad
    # Case-insensitive beyond ASCII too.
    assert update(chat, alice, "go", topic="ÉCHECS")["status"] == 200
    assert [g["chatname"] for g in directory(query="échecs")["groups"]] == ["go"]


# -- the store on both databases ---------------------------------------------------

def _populate(connection: Any) -> None:
    """Users, a group with a member, a ban, history, a report and a look-alike flag."""
    from sqlalchemy import insert

    from chateau.names import skeleton
    from chateau.store.accounts import create_user_txn
    from chateau.store.groups import create_group_txn
    from chateau.store.messages import add_messages_txn
    from chateau.store.tables import group_bans, name_collisions, names, reports

    for user in ("ann", "ben", "eve"):
        assert create_user_txn(connection, user, "x", "local", None)
    assert create_group_txn(connection, "club", "ann", ["ann", "ben"], {"ann"})
    connection.execute(insert(group_bans).values(
        chatname="club", username="eve", banned_by="ann", reason="spam", banned_at=1))
    add_messages_txn(connection, [("club", "ben", "hello", None, None)], None, set())
    connection.execute(insert(reports).values(
        reporter="ben", reason="rude", chatname="club", created_at=1))
    connection.execute(insert(names).values(name="c1ub", kind="group", skeleton=None))
    connection.execute(insert(name_collisions).values(
        name="c1ub", confusable_with="club", skeleton=skeleton("club"), flagged_at=1))


def test_a_rename_moves_every_row_under_foreign_keys_on_both_databases(database_url) -> None:
    from sqlalchemy import select

    from chateau.names import skeleton
    from chateau.store import migrate
    from chateau.store.engine import make_engine
    from chateau.store.group_settings import update_group_txn
    from chateau.store.groups import group_info_txn
    from chateau.store.tables import group_bans, messages, name_collisions, names, reports

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            migrate.prepare(connection)
            _populate(connection)
        taken = in_transaction(engine, update_group_txn, "club", "ann", "ben", "x", {})
        assert taken.outcome == "name_taken" and taken.claim.blocked_by == "ben"
        done = in_transaction(engine, update_group_txn, "club", "ann", "society", "t",
                              {"join": "open", "who_can_send": "admins"})
        assert (done.outcome, done.chatname, done.old_name, done.renamed) == (
            "updated", "society", "club", True)
        assert done.changed == {"join": "open", "who_can_send": "admins"} and done.topic_changed
        with engine.begin() as connection:
            assert group_info_txn(connection, "club") is None
            info = group_info_txn(connection, "society")
            assert [(m.username, m.role) for m in info.members] == [
                ("ann", "owner"), ("ben", "member")]
            assert (info.topic, info.join_rule, info.who_can_send, info.creator) == (
                "t", "open", "admins", "ann")
            assert connection.execute(select(group_bans.c.chatname)).scalars().all() == [
                "society"]
            assert connection.execute(select(messages.c.chat)).scalars().all() == ["society"]
            assert connection.execute(select(reports.c.chatname)).scalars().all() == ["society"]
            assert connection.execute(
                select(names.c.name).where(names.c.kind == "group").order_by(names.c.name)
            ).scalars().all() == ["c1ub", "society"]
            assert connection.execute(select(name_collisions)).all() == []
        gone = in_transaction(engine, update_group_txn, "club", "ann", None, "x", {})
        assert gone.outcome == "gone"
        # A look-alike of its own name only (Cyrillic о): the skeleton moves with it.
        alike = in_transaction(engine, update_group_txn, "society", "ann", "s\u043eciety",
                               None, {})
        assert alike.outcome == "updated" and alike.renamed, alike
        with engine.begin() as connection:
            assert connection.execute(
                select(names.c.name).where(names.c.skeleton == skeleton("society"))
            ).scalars().all() == ["s\u043eciety"]
    finally:
        engine.dispose()


def test_the_directory_query_on_both_databases(database_url) -> None:
    from sqlalchemy import update as sql_update

    from chateau.store import migrate
    from chateau.store.engine import make_engine
    from chateau.store.group_settings import directory_txn
    from chateau.store.groups import create_group_txn
    from chateau.store.tables import groups

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            migrate.prepare(connection)
            _populate(connection)
            assert create_group_txn(connection, "den", "ann", ["ann"], set())
            connection.execute(sql_update(groups).values(visibility="public", topic="ÉCHECS 50%"))
        names = [e.chatname for e in in_transaction(engine, directory_txn, "", 10)]
        assert names == ["club", "den"]
        assert [e.members for e in in_transaction(engine, directory_txn, "", 10)] == [2, 1]
        assert len(in_transaction(engine, directory_txn, "échecs", 10)) == 2
        assert len(in_transaction(engine, directory_txn, "%", 10)) == 2
        assert len(in_transaction(engine, directory_txn, "_", 10)) == 0
        assert [e.chatname for e in in_transaction(engine, directory_txn, "DE", 10)] == ["den"]
    finally:
        engine.dispose()


def test_upgrading_to_0009_keeps_groups_and_indexes_visibility(database_url) -> None:
    from alembic import command
    from sqlalchemy import inspect, text

    from chateau.store import migrate
    from chateau.store.engine import make_engine
    from chateau.store.group_settings import directory_txn

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0007")
            connection.execute(text(
                "INSERT INTO names (name, kind) VALUES ('ann', 'user'), ('club', 'group')"))
            connection.execute(text(
                "INSERT INTO users (username, password_hash, auth_method, disabled, created_at, "
                "delivered_until) VALUES ('ann', 'x', 'local', false, 1, 0)"))
            connection.execute(text(
                "INSERT INTO groups (chatname, creator, created_at, visibility) "
                "VALUES ('club', 'ann', 5, 'public')"))
            connection.execute(text(
                "INSERT INTO group_members (chatname, username, notified, role, joined_at) "
                "VALUES ('club', 'ann', true, 'owner', 5)"))
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0009")
            indexes = {i["name"] for i in inspect(connection).get_indexes("groups")}
            assert "ix_groups_visibility" in indexes
            # Read with SQL of this revision: later ones add columns to groups.
            assert connection.execute(text(
                "SELECT visibility FROM groups WHERE chatname = 'club'")).scalar() == "public"
            assert [e.chatname for e in directory_txn(connection, "", 5)] == ["club"]
            command.downgrade(migrate._alembic_config(connection), "0007")
            assert "ix_groups_visibility" not in {
                i["name"] for i in inspect(connection).get_indexes("groups")}
    finally:
        engine.dispose()


def test_the_registry_moves_the_same_group_object() -> None:
    from chateau.registry import Registry

    registry = Registry()
    group = registry.add_group("club", "ann", ["ann", "ben"], started=True)
    group.who_can_send = "admins"
    registry.add_group("den", "ann", ["ann"])
    assert registry.rename_group("club", "den") is None  # a held name
    assert registry.rename_group("nope", "x") is None
    assert registry.rename_group("club", "lounge") is group
    assert registry.group("club") is None and registry.group("lounge") is group
    assert (group.chatname, group.started, group.who_can_send) == ("lounge", True, "admins")
    assert registry.group_count("ben") == 1 and registry.group_count("ann") == 2
    assert registry.remove_member("lounge", "ben") is group
    assert registry.group_count("ben") == 0
    assert registry.remove_group("lounge") is group
    assert registry.group_names() == ["den"] and registry.group_count("ann") == 1
