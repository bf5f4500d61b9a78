"""Stable identity: directory accounts bound to their entryUUID, renamed uids,
recycled uids (real slapd over LDAPS, SQLite and PostgreSQL, real sockets)."""

from __future__ import annotations

import secrets
from typing import Any

import bcrypt
import pytest
from sqlalchemy import select, text

from chateau.store import migrate
from chateau.store.engine import make_engine
from chateau.store.tables import names, users
from tests import slapd as openldap
from tests.conftest import make_config
from tests.deferreds import inline, sleep
from tests.wsclient import Client

# The session-scoped fixture: a real OpenLDAP slapd for this module.
slapd = openldap.slapd


def fresh(prefix: str) -> str:
    """A uid no other test uses (the directory lives for the whole session)."""
    return f"{prefix}{secrets.token_hex(3)}"


def directory_request(username: str, password: str) -> dict[str, Any]:
    return {"type": "RegisterRequest", "username": username, "password": password,
            "auth": True}


def local_request(username: str, password: str) -> dict[str, Any]:
    return {"type": "RegisterRequest", "username": username, "password": password,
            "auth": False}


@pytest.fixture
def start(slapd, server_factory, config_factory):
    """A server with local and directory sign-in; keyword arguments override [ldap]."""

    async def start(database: str | None = None, **ldap: str):
        sections: dict[str, dict[str, str]] = {
            "auth": {"methods": "local,ldap"}, "ldap": slapd.settings(**ldap),
            "limits": {"signin_free_failures": "1000"},
            "chat": {"revocation_check_interval": "0.1"},
        }
        if database is not None:
            sections["database"] = {"url": database}
        return await server_factory(config_factory(**sections))

    return start


async def add_local_user(running, username: str, password: str) -> None:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    assert await running.service.store.accounts.create_user(username, hashed, "local")


_ids = iter(range(1, 10**9))


async def call(client: Client, message: dict[str, Any]) -> dict[str, Any]:
    """The reply to *message*; pushes that arrive first are kept in ``client.pushes``."""
    msg_id = f"t{next(_ids)}"
    client.send({**message, "msg_id": msg_id})
    while True:
        frame = await client.recv()
        if frame.get("msg_id") == msg_id:
            return frame
        client.__dict__.setdefault("pushes", []).append(frame)


async def pushed(client: Client, content: str) -> dict[str, Any]:
    """The pushed message with *content* (already seen, or the next ones)."""
    for frame in client.__dict__.setdefault("pushes", []):
        if frame.get("content") == content:
            return frame
    while True:
        frame = await client.recv()
        if frame.get("content") == content:
            return frame


async def send(client: Client, recipient: str, content: str) -> None:
    ack = await call(client, {"type": "MessageRequest", "recipient": recipient,
                              "content": content})
    assert ack["type"] == "MessageSendResponse", ack


async def sign_in(running, username: str, password: str) -> tuple[Client, dict[str, Any]]:
    client = await running.client()
    reply = await call(client, directory_request(username, password))
    assert reply["type"] == "RegisterResponse", reply
    await client.frames_until_heartbeat()
    return client, reply


async def history(client: Client, **where: str) -> list[dict[str, Any]]:
    reply = await call(client, {"type": "HistoryRequest", **where})
    assert reply["type"] == "HistoryResponse", reply
    return reply["messages"]


async def members(client: Client, chatname: str) -> dict[str, str]:
    reply = await call(client, {"type": "GroupInfoRequest", "chatname": chatname})
    assert reply["type"] == "GroupInfoResponse", reply
    return {member["username"]: member["role"] for member in reply["members"]}


async def until(check: Any, timeout: float = 5.0) -> Any:
    for _ in range(int(timeout / 0.05)):
        result = await check()
        if result:
            return result
        await sleep(0.05)
    return await check()


async def populate(running, ivan: Client, bob: Client, ivan_name: str, club: str) -> None:
    """ivan writes to bob and to a group bob made (ivan an admin there); contacts; a setting."""
    await send(ivan, "bob", "hello bob")
    reply = await call(bob, {"type": "GroupMessageInitRequest", "chatname": club,
                               "recipients": [ivan_name]})
    assert reply["status"] == 200, reply
    reply = await call(bob, {"type": "GroupRoleRequest", "chatname": club,
                               "user": ivan_name, "role": "admin"})
    assert reply["status"] == 200, reply
    await ivan.frames_until_heartbeat()
    await send(ivan, club, "hi club")
    reply = await call(ivan, {"type": "ContactRequest", "username": "bob"})
    assert reply["status"] == 200, reply
    reply = await call(bob, {"type": "ContactAccept", "username": ivan_name})
    assert reply["status"] == 200, reply
    reply = await call(ivan, {"type": "SettingsRequest", "presence": "contacts"})
    assert reply["status"] == 200, reply
    await ivan.frames_until_heartbeat()
    await bob.frames_until_heartbeat()


# -- a renamed uid ---------------------------------------------------------------

@inline
async def test_a_uid_renamed_in_the_directory_keeps_its_account(start, slapd):
    old, new, club = fresh("ivan"), fresh("ivo"), fresh("club")
    slapd.add_person(old, "ivan-pw", "Ivan Petrov")
    running = await start()
    store = running.service.store
    await add_local_user(running, "bob", "bob-pw")
    bob = await running.client("bob", "bob-pw")
    ivan, first = await sign_in(running, old, "ivan-pw")
    assert first["username"] == old
    assert await store.identity.directory_id_of(old) == slapd.entry_uuid(old)
    await populate(running, ivan, bob, old, club)

    slapd.rename_person(old, new)
    ivo, reply = await sign_in(running, new, "ivan-pw")
    assert reply["username"] == new and reply["display_name"] == "Ivan Petrov"
    # The connection under the old name is closed (4001); its key still works.
    assert await ivan.closed() == 4001
    resumed = await running.client()
    again = await call(resumed, {"type": "ResumeRequest", "session_key": first["session_key"]})
    assert again["type"] == "ResumeResponse" and again["username"] == new, again
    await resumed.frames_until_heartbeat()

    # Everybody sees the new name: group members (role kept), history, contacts, who is online.
    assert await members(bob, club) == {"bob": "owner", new: "admin"}
    assert [m["sender"] for m in await history(bob, user=new)] == [new]
    assert [(m["sender"], m["content"]) for m in await history(bob, chatname=club)][0] == (
        new, "hi club")
    contacts = await call(bob, {"type": "ContactListRequest"})
    assert contacts["contacts"] == [{"username": new, "online": True}], contacts
    online = await call(bob, {"type": "ClientListRequest"})
    assert new in online["clients"] and old not in online["clients"], online
    # And so does the user: history, contacts, groups, settings, sending.
    assert [m["content"] for m in await history(ivo, user="bob")] == ["hello bob"]
    assert (await call(ivo, {"type": "ContactListRequest"}))["contacts"][0]["username"] == "bob"
    settings = await call(ivo, {"type": "SettingsRequest"})
    assert settings["presence"] == "contacts", settings
    await send(ivo, club, "still here")
    push = await pushed(bob, "still here")
    assert push["sender"] == new, push
    await send(ivo, "bob", "new name, same me")
    push = await pushed(bob, "new name, same me")
    assert push["sender"] == new, push
    assert [m["content"] for m in await history(bob, user=new)] == [
        "new name, same me", "hello bob"]
    assert await store.accounts.get_user(old) is None

    # The old name is held: refused to a local registration and to a new directory entry.
    stranger = await running.client()
    reply = await call(stranger, local_request(old, "stranger-pw"))
    assert reply["status"] == 301, reply
    assert f"the name '{old}' is reserved until " in reply["detail"]
    assert "after a rename; please tell the server administrator" in reply["detail"]
    slapd.add_person(old, "newcomer-pw")
    reply = await call(stranger, directory_request(old, "newcomer-pw"))
    assert reply["status"] == 301 and "is reserved until" in reply["detail"], reply
    assert await store.accounts.get_user(old) is None

    entries = [e for e in await store.audit.entries(50, target=new)
               if not e.action.startswith("sign_in")]
    assert [(e.actor, e.action, e.detail) for e in entries] == [
        ("directory", "user_rename", {"old_name": old})]


@inline
async def test_a_held_name_is_free_after_the_hold_and_the_newcomer_starts_afresh(
    start, slapd
):
    old, new = fresh("jan"), fresh("jon")
    slapd.add_person(old, "jan-pw")
    running = await start(rename_hold_days="0.00002")  # under 2 seconds
    store = running.service.store
    await add_local_user(running, "bob", "bob-pw")
    bob = await running.client("bob", "bob-pw")
    jan, _ = await sign_in(running, old, "jan-pw")
    await send(jan, "bob", "from the first holder")
    slapd.rename_person(old, new)
    await sign_in(running, new, "jan-pw")
    slapd.add_person(old, "second-pw")
    client = await running.client()
    reply = await call(client, directory_request(old, "second-pw"))
    assert reply["status"] == 301 and "is reserved until" in reply["detail"], reply
    await sleep(2.0)
    newcomer, reply = await sign_in(running, old, "second-pw")
    assert reply["username"] == old
    assert await history(newcomer, user="bob") == []
    assert [m["sender"] for m in await history(bob, user=new)] == [new]
    assert await store.identity.directory_id_of(old) == slapd.entry_uuid(old)
    assert await store.identity.directory_id_of(new) == slapd.entry_uuid(new)


@inline
async def test_the_directory_display_name_follows_the_directory_at_each_sign_in(start, slapd):
    uid = fresh("dee")
    slapd.add_person(uid, "dee-pw", cn="Dee First")
    running = await start()
    store = running.service.store
    _, reply = await sign_in(running, uid, "dee-pw")
    assert reply["display_name"] == "Dee First"
    slapd.set_display_name(uid, "Dee Second")
    _, reply = await sign_in(running, uid, "dee-pw")
    assert reply["display_name"] == "Dee Second"
    assert (await store.accounts.get_user(uid)).display_name == "Dee Second"


# -- a recycled uid ----------------------------------------------------------------

@inline
async def test_a_recycled_uid_gets_a_fresh_account_and_the_old_one_is_retired(start, slapd):
    uid, club = fresh("kim"), fresh("club")
    slapd.add_person(uid, "first-pw", "Kim First")
    running = await start()
    store = running.service.store
    await add_local_user(running, "bob", "bob-pw")
    bob = await running.client("bob", "bob-pw")
    first, _ = await sign_in(running, uid, "first-pw")
    old_id = slapd.entry_uuid(uid)
    await populate(running, first, bob, uid, club)

    slapd.delete_person(uid)
    slapd.add_person(uid, "second-pw", "Kim Second")
    assert slapd.entry_uuid(uid) != old_id
    second, reply = await sign_in(running, uid, "second-pw")
    assert reply["username"] == uid and reply["display_name"] == "Kim Second"
    # Nothing of the first person's: messages, groups, contacts, settings.
    assert await history(second, user="bob") == []
    info = await call(second, {"type": "GroupInfoRequest", "chatname": club})
    assert info["status"] == 403, info
    contacts = await call(second, {"type": "ContactListRequest"})
    assert contacts["contacts"] == [] and contacts["pending"] == [], contacts
    settings = await call(second, {"type": "SettingsRequest"})
    assert settings["presence"] == "everyone", settings
    # The first person's account is retired: renamed out of every name rule,
    # disabled, its keys revoked (its connection closed), audited.
    assert await first.closed() == 4001
    entries = await store.audit.entries(10, user=None)
    retire = [e for e in entries if e.action == "account_retire"]
    assert len(retire) == 1 and retire[0].actor == "directory", entries
    retired = retire[0].detail["new_name"]
    assert retire[0].detail["old_name"] == uid and retired.startswith(f"{uid}~")
    record = await store.accounts.get_user(retired)
    assert record is not None and record.disabled
    assert (await store.deprovisioning.deprovisioned())[retired].reason == "retired"
    assert await store.identity.directory_id_of(uid) == slapd.entry_uuid(uid)
    # Others keep the history, under the retired name.
    assert await members(bob, club) == {"bob": "owner", retired: "admin"}
    assert (await history(bob, chatname=club))[0]["sender"] == retired
    # Nobody can sign in as, or register, the retired name.
    for request in (directory_request(retired, "first-pw"), local_request(retired, "x-pw")):
        nobody = await running.client()
        reply = await call(nobody, request)
        assert reply["status"] == 301, reply
        assert "a username is 1 to 32 letters" in reply["detail"], reply


@inline
async def test_a_recycled_uid_whose_first_owner_was_renamed_follows_them(start, slapd):
    uid, later = fresh("lee"), fresh("leo")
    slapd.add_person(uid, "first-pw")
    running = await start()
    store = running.service.store
    await add_local_user(running, "bob", "bob-pw")
    bob = await running.client("bob", "bob-pw")
    first, _ = await sign_in(running, uid, "first-pw")
    await send(first, "bob", "written by the first")
    await first.close()
    # The first person is renamed, and their old uid given to a newcomer,
    # before the first person signs in again.
    slapd.rename_person(uid, later)
    slapd.add_person(uid, "second-pw")
    client = await running.client()
    reply = await call(client, directory_request(uid, "second-pw"))
    assert reply["status"] == 301 and f"the name '{uid}' is reserved until" in reply["detail"]
    assert (await store.accounts.get_user(later)) is not None
    assert await store.accounts.get_user(uid) is None
    renamed, reply = await sign_in(running, later, "first-pw")
    assert reply["username"] == later
    assert [m["content"] for m in await history(renamed, user="bob")] == [
        "written by the first"]
    assert [m["sender"] for m in await history(bob, user=later)] == [later]


@inline
async def test_a_uid_renamed_back_within_the_hold_takes_its_name_back(start, slapd):
    old, typo = fresh("mia"), fresh("mai")
    slapd.add_person(old, "mia-pw")
    running = await start()
    await sign_in(running, old, "mia-pw")
    slapd.rename_person(old, typo)
    await sign_in(running, typo, "mia-pw")
    slapd.rename_person(typo, old)
    _, reply = await sign_in(running, old, "mia-pw")
    assert reply["username"] == old
    entries = await running.service.store.audit.entries(100)
    assert [(e.target, e.detail) for e in entries if e.action == "user_rename"
            and e.target in (old, typo)] == [(old, {"old_name": typo}), (typo, {"old_name": old})]


# -- accounts made before ids were bound --------------------------------------------

def _populate_0012(database_url: str, uid: str) -> None:
    """A database at 0012 with a directory account *uid* (unbound) and its messages."""
    from alembic import command

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0012")
            connection.execute(text(
                "INSERT INTO names (name, kind, skeleton) VALUES "
                f"('{uid}', 'user', '{uid}'), ('bob', 'user', 'bob')"
            ))
            connection.execute(text(
                "INSERT INTO users (username, password_hash, auth_method, display_name, "
                "disabled, created_at, delivered_until, revoked_at, is_admin, "
                "announced_until) VALUES "
                f"('{uid}', NULL, 'ldap', 'Old Timer', false, 1, 0, 0, false, 0), "
                f"('bob', '{bcrypt.hashpw(b'bob-pw', bcrypt.gensalt(4)).decode()}', "
                "'local', NULL, false, 1, 0, 0, false, 0)"
            ))
            chat = "@" + ":".join(sorted((uid, "bob")))
            connection.execute(text(
                "INSERT INTO messages (chat, recipient, sender, content, created_at, edited, "
                f"deleted) VALUES ('{chat}', 'bob', '{uid}', 'from before', 5, false, false)"
            ))
            connection.execute(text(
                f"INSERT INTO direct_chats (username, chat) VALUES ('{uid}', '{chat}'), "
                f"('bob', '{chat}')"
            ))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            row = connection.execute(select(users.c.directory_id)
                                     .where(users.c.username == uid)).first()
            assert row is not None and row.directory_id is None
            held = connection.execute(select(names.c.held_until, names.c.held_for)
                                      .where(names.c.name == uid)).first()
            assert held is not None and tuple(held) == (None, None)
    finally:
        engine.dispose()


@inline
async def test_an_account_made_before_ids_is_bound_at_its_next_sign_in(
    start, slapd, database_url
):
    uid, new = fresh("old"), fresh("oldr")
    slapd.add_person(uid, "old-pw")
    _populate_0012(database_url, uid)
    running = await start(database=database_url)
    store = running.service.store
    assert await store.identity.directory_id_of(uid) is None
    client, reply = await sign_in(running, uid, "old-pw")
    assert reply["username"] == uid
    assert await store.identity.directory_id_of(uid) == slapd.entry_uuid(uid)
    assert [m["content"] for m in await history(client, user="bob")] == ["from before"]
    # Bound, it now survives a rename.
    slapd.rename_person(uid, new)
    renamed, reply = await sign_in(running, new, "old-pw")
    assert reply["username"] == new
    assert [m["content"] for m in await history(renamed, user="bob")] == ["from before"]
    bob = await running.client("bob", "bob-pw")
    assert [m["sender"] for m in await history(bob, user=new)] == [new]


# -- a cluster -----------------------------------------------------------------------

@inline
async def test_every_node_of_a_cluster_sees_the_rename(
    slapd, server_factory, tmp_path, postgres, redis
):
    database = postgres.new_database()
    redis.command("FLUSHALL")
    nodes = []
    for name in ("n1", "n2"):
        nodes.append(await server_factory(make_config(
            tmp_path, database={"url": database},
            auth={"methods": "local,ldap"}, ldap=slapd.settings(),
            chat={"revocation_check_interval": "0.1"},
            cluster={"redis_url": redis.url, "node_name": name, "presence_ttl": "3",
                     "fence_timeout": "2"},
        )))
    n1, n2 = nodes
    old, new, club = fresh("nia"), fresh("noa"), fresh("club")
    slapd.add_person(old, "nia-pw")
    await add_local_user(n1, "bob", "bob-pw")
    bob = await n2.client("bob", "bob-pw")
    nia, _ = await sign_in(n2, old, "nia-pw")
    reply = await call(bob, {"type": "GroupMessageInitRequest", "chatname": club,
                               "recipients": [old]})
    assert reply["status"] == 200, reply
    await nia.frames_until_heartbeat()

    slapd.rename_person(old, new)
    noa, reply = await sign_in(n1, new, "nia-pw")
    assert reply["username"] == new
    # On the other node: the old name's connection is closed, and the group
    # lists the new name, to its members there and to the user signing in there.
    assert await nia.closed() == 4001
    assert await members(bob, club) == {"bob": "owner", new: "member"}
    other, _ = await sign_in(n2, new, "nia-pw")
    assert await members(other, club) == {"bob": "owner", new: "member"}

    async def listed() -> bool:
        clients = (await call(bob, {"type": "ClientListRequest"}))["clients"]
        return new in clients and old not in clients

    assert await until(listed)
    # A message from n2 reaches the renamed member on n1, and the other way round.
    await send(bob, club, "to the new name")
    await pushed(noa, "to the new name")
    await send(noa, club, "from the new name")
    push = await pushed(bob, "from the new name")
    assert push["sender"] == new, push


# -- the store: one transaction moves every column -----------------------------------

def test_a_rename_moves_every_user_name_column_in_one_transaction(database_url):
    from sqlalchemy import func, insert, update

    from chateau.store import tables as t
    from chateau.store.accounts import claim_name_txn, create_user_txn
    from chateau.store.identity import (
        USER_NAME_COLUMNS,
        move_stragglers_txn,
        rename_user_txn,
    )
    from chateau.store.records import now_millis

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            migrate.prepare(connection)
            for name in ("ivan", "bob", "carol"):
                assert create_user_txn(connection, name, None, "ldap", None)
            connection.execute(update(t.users).where(t.users.c.username == "ivan")
                               .values(directory_id="id-1"))
            connection.execute(insert(t.names).values(name="club", kind="group",
                                                      skeleton="club"))
            connection.execute(insert(t.groups).values(chatname="club", creator="ivan",
                                                       created_at=1))
            connection.execute(insert(t.group_members), [
                {"chatname": "club", "username": "ivan", "role": "owner"},
                {"chatname": "club", "username": "bob", "role": "member"}])
            connection.execute(insert(t.group_bans).values(
                chatname="club", username="carol", banned_by="ivan", banned_at=1))
            connection.execute(insert(t.group_bans).values(
                chatname="club", username="ivan", banned_by="bob", banned_at=1))
            connection.execute(insert(t.group_invites).values(
                code_hash="h", chatname="club", created_by="ivan", created_at=1,
                expires_at=2))
            message = {"created_at": 1, "edited": False, "deleted": False}
            connection.execute(insert(t.messages), [
                {**message, "chat": "@bob:ivan", "sender": "ivan", "recipient": "bob",
                 "content": "to bob"},
                {**message, "chat": "@bob:ivan", "sender": "bob", "recipient": "ivan",
                 "content": "to ivan"},
                {**message, "chat": "club", "sender": "ivan", "recipient": None,
                 "content": "to the club"}])
            connection.execute(insert(t.direct_chats), [
                {"username": "ivan", "chat": "@bob:ivan"},
                {"username": "bob", "chat": "@bob:ivan"}])
            connection.execute(insert(t.contacts), [
                {"requester": "ivan", "addressee": "bob", "accepted": True, "created_at": 1},
                {"requester": "carol", "addressee": "ivan", "accepted": False,
                 "created_at": 1}])
            connection.execute(insert(t.blocks), [
                {"blocker": "ivan", "blocked": "carol", "created_at": 1},
                {"blocker": "bob", "blocked": "ivan", "created_at": 1}])
            connection.execute(insert(t.user_settings).values(username="ivan",
                                                              presence="nobody"))
            connection.execute(insert(t.random_avoid), [
                {"a": "ivan", "b": "carol", "created_at": 1},
                {"a": "bob", "b": "ivan", "created_at": 1}])
            connection.execute(insert(t.sessions).values(
                key_hash="k", username="ivan", created_at=1, expires_at=2,
                id="00000000000000aa"))
            connection.execute(insert(t.delivery_cursors).values(
                username="ivan", origin="n1", delivered_until=3))
            connection.execute(insert(t.removal_notices), [
                {"username": "ivan", "chatname": "x", "removed_by": "bob", "removed_at": 1},
                {"username": "bob", "chatname": "y", "removed_by": "ivan", "removed_at": 1}])
            connection.execute(insert(t.reports), [
                {"reporter": "ivan", "reason": "r", "username": "carol", "created_at": 1,
                 "resolved_by": None, "chatname": None},
                {"reporter": "bob", "reason": "r", "username": "ivan", "created_at": 1,
                 "resolved_by": "ivan", "chatname": "@bob:ivan"}])
            connection.execute(insert(t.announcements).values(at=1, by="ivan", content="hi"))
            connection.execute(insert(t.audit_log).values(
                at=1, actor="ivan", action="group_ban", target="carol"))
            connection.execute(insert(t.read_markers), [
                {"username": "ivan", "chat": "@bob:ivan", "last_read_id": 2, "updated_at": 1},
                {"username": "bob", "chat": "@bob:ivan", "last_read_id": 1, "updated_at": 1},
                {"username": "ivan", "chat": "club", "last_read_id": 3, "updated_at": 1}])

        hold = now_millis() + 60_000
        with engine.begin() as connection:
            renamed = rename_user_txn(connection, "ivan", "aaron", hold, held_for="id-1")
        assert renamed.outcome == "renamed" and renamed.rename_id

        with engine.begin() as connection:
            for column in USER_NAME_COLUMNS:
                table = column.table
                left = connection.execute(select(func.count()).select_from(table)
                                          .where(column == "ivan")).scalar()
                moved = connection.execute(select(func.count()).select_from(table)
                                           .where(column == "aaron")).scalar()
                assert (left, moved > 0) == (0, True), column
            chats = connection.execute(select(t.messages.c.chat, t.messages.c.content)
                                       .order_by(t.messages.c.id)).all()
            assert [tuple(row) for row in chats] == [
                ("@aaron:bob", "to bob"), ("@aaron:bob", "to ivan"), ("club", "to the club")]
            assert sorted(tuple(row) for row in connection.execute(select(t.direct_chats))) == [
                ("aaron", "@aaron:bob"), ("bob", "@aaron:bob")]
            assert set(connection.execute(select(t.reports.c.chatname)).scalars()) == {
                None, "@aaron:bob"}
            # Read markers: both sides' follow the recomputed key.
            assert sorted(tuple(row) for row in connection.execute(
                select(t.read_markers.c.username, t.read_markers.c.chat,
                       t.read_markers.c.last_read_id))) == [
                ("aaron", "@aaron:bob", 2), ("aaron", "club", 3), ("bob", "@aaron:bob", 1)]
            user = connection.execute(select(t.users).where(t.users.c.username == "aaron")).one()
            assert user.directory_id == "id-1"
            assert connection.execute(select(t.users).where(t.users.c.username == "ivan")
                                      ).first() is None
            held = connection.execute(select(t.names).where(t.names.c.name == "ivan")).one()
            assert (held.kind, held.held_until, held.held_for) == ("held", hold, "id-1")
            # A message that passed its checks before the rename and committed after it.
            connection.execute(insert(t.messages).values(
                chat="@bob:ivan", sender="ivan", recipient="bob", content="late", **message))
            connection.execute(insert(t.direct_chats).values(username="ivan", chat="@bob:ivan"))
            assert move_stragglers_txn(connection, "ivan", "aaron", 3) == 1
            late = connection.execute(select(t.messages).where(t.messages.c.content == "late")
                                      ).one()
            assert (late.chat, late.sender) == ("@aaron:bob", "aaron")
            assert sorted(tuple(row) for row in connection.execute(select(t.direct_chats))) == [
                ("aaron", "@aaron:bob"), ("bob", "@aaron:bob")]
            # The audit log is history: the old name stays there.
            assert connection.execute(select(t.audit_log.c.actor)).scalars().all() == ["ivan"]
            notice = connection.execute(select(t.admin_notices)).one()
            assert notice.kind == "user_renamed" and '"old": "ivan"' in notice.body
            # The held name: refused to others, given back to the account it is held for.
            claim = claim_name_txn(connection, "ivan", "user")
            assert not claim and claim.held_until == hold
            savepoint = connection.begin_nested()
            assert claim_name_txn(connection, "ivan", "user", held_for="id-1")
            savepoint.rollback()
        with engine.begin() as connection:
            connection.execute(update(t.names).where(t.names.c.name == "ivan")
                               .values(name="ivan", held_until=1))
        with engine.begin() as connection:
            # Held no longer: released to whoever claims it.
            assert claim_name_txn(connection, "ivan", "user")
    finally:
        engine.dispose()


def test_upgrading_to_0014_keeps_names_and_holds_them_for_nobody(database_url):
    from alembic import command

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0013")
            connection.execute(text(
                "INSERT INTO names (name, kind, skeleton, held_until) VALUES "
                "('ann', 'user', 'ann', NULL), ('gone', 'held', 'gone', 99)"
            ))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            rows = connection.execute(select(names.c.name, names.c.kind, names.c.held_until,
                                             names.c.held_for).order_by(names.c.name)).all()
            assert [tuple(row) for row in rows] == [
                ("ann", "user", None, None), ("gone", "held", 99, None)]
    finally:
        engine.dispose()


@inline
async def test_ldap_check_says_when_a_name_is_held(start, slapd, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    old, new = fresh("pia"), fresh("pio")
    slapd.add_person(old, "pia-pw")
    running = await start()
    await sign_in(running, old, "pia-pw")
    slapd.rename_person(old, new)
    await sign_in(running, new, "pia-pw")
    slapd.add_person(old, "newcomer-pw")
    lines = ["[auth]", "methods = local,ldap", "[database]",
             f"url = {running.service.config.database.url}", "[ldap]"]
    lines += [f"{key} = {value}" for key, value in slapd.settings().items()]
    path = tmp_path / "check.ini"
    path.write_text("\n".join(lines) + "\n")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "chateau.admin", "--config", str(path), "ldap-check", old],
        capture_output=True, text=True, timeout=30, cwd=tmp_path, stdin=subprocess.DEVNULL,
        env={**os.environ, "CHATEAU_PASSWORD": "newcomer-pw", "PYTHONPATH": str(root)},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert any(line.startswith("account") and "FAILED" in line and "held until" in line
               for line in result.stdout.splitlines()), result.stdout
