"""Stable identity: directory accounts bound to their directory id, and user renames.

A directory account is bound to its entry's ``[ldap] id_attribute``
(``users.directory_id``) at its first sign-in, or its first since migration
0013. :func:`directory_account_txn` decides, in one transaction, what a
directory sign-in comes to: the bound account (renamed when its uid
changed), a binding made, a new account, or a uid recycled from another
person, which the checker (chateau.auth.ldap) settles with the directory
and :func:`rename_account_txn` or :func:`retire_account_txn`.

:func:`rename_user_txn` moves an account to a new name in one
transaction, as a group rename does (chateau.store.group_settings): the new
name is claimed, a copy of the ``users`` row inserted under it, every
column that holds a user's name (:data:`USER_NAME_COLUMNS`) moved onto it,
the direct chats' keys ("@a:b", a sorted pair) recomputed, the old row
deleted, and the old name either held (kind "held" until a time) or
released. Foreign keys point at ``users.username`` and ``names.name`` and
both databases enforce them, so parents are inserted first and deleted
last. The audit log is history and keeps the old names. A notice
``user_renamed`` tells every node (chateau.notices).
"""

from __future__ import annotations

import dataclasses

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.names import RANDOM_PREFIX
from chateau.store.accounts import (
    _user_record,
    claim_name_txn,
    create_user_txn,
    get_user_txn,
    release_name_txn,
    revoke_all_sessions_txn,
)
from chateau.store.audit import record_txn
from chateau.store.engine import Runner
from chateau.store.notices import append_notice_txn
from chateau.store.records import HELD, NameClaim, UserRecord, direct_chat, now_millis
from chateau.store.tables import (
    announcements,
    blocks,
    contacts,
    delivery_cursors,
    direct_chats,
    group_bans,
    group_invites,
    group_members,
    groups,
    messages,
    names,
    random_avoid,
    read_markers,
    removal_notices,
    reports,
    sessions,
    user_settings,
    users,
)

if TYPE_CHECKING:
    from chateau.store.writer import MessageWriter

# Every column, besides users.username, direct_chats and the namespace's own
# tables, that holds a user's name: a rename moves each in its transaction.
# A table added later with a user name column is one more line here. The
# audit log is not here: it is history, and keeps the names of then.
USER_NAME_COLUMNS: tuple[Column[Any], ...] = (
    messages.c.sender,
    messages.c.recipient,
    group_members.c.username,
    group_bans.c.username,
    group_bans.c.banned_by,
    group_invites.c.created_by,
    groups.c.creator,
    contacts.c.requester,
    contacts.c.addressee,
    blocks.c.blocker,
    blocks.c.blocked,
    user_settings.c.username,
    random_avoid.c.a,
    random_avoid.c.b,
    sessions.c.username,
    delivery_cursors.c.username,
    removal_notices.c.username,
    removal_notices.c.removed_by,
    reports.c.reporter,
    reports.c.username,
    reports.c.resolved_by,
    announcements.c.by,
    read_markers.c.username,
)

# The actor of what the directory changed, in the audit log.
DIRECTORY_ACTOR = "directory"
# The notice every node acts on when a user is renamed (chateau.notices).
USER_RENAMED = "user_renamed"
# A retired account's name: its old name, this mark and six hex digits. No
# username rule accepts the mark (it starts random chats' names), so nobody
# can ever sign in with, register or be given such a name.
RETIRED_MARK = RANDOM_PREFIX
# How far behind the newest message at a rename the notice's appliers look
# for messages committed under the old name afterwards (ids of concurrent
# transactions are not committed in order).
STRAGGLER_LOOKBACK = 1000


@dataclass(frozen=True)
class DirectorySignIn:
    """What a directory sign-in came to (:func:`directory_account_txn`).

    *outcome*:
    - "ok": *record* is the account, bound (or bound now: *bound* is true);
    - "created": a new account *record*, bound;
    - "renamed": the bound account had another name, *old_name*; it is
      *record* now, under the directory's uid;
    - "taken": the name (or the new name of a rename) is in the way: *claim*
      says by what (a held name, a group, a confusable name);
    - "local": *record* is a local account with the uid's name;
    - "recycled": *record* is an account with the uid's name bound to
      another directory id, *other_id*: the checker asks the directory;
    - "unacceptable": the uid would have to be taken as a new name, and
      passes only the older NFKC name rule.
    """

    outcome: str
    record: UserRecord | None = None
    old_name: str | None = None
    claim: NameClaim | None = None
    other_id: str | None = None
    bound: bool = False
    rename_id: str = ""


@dataclass(frozen=True)
class Rename:
    """What a rename came to: *outcome* "renamed", "gone" (no such account, or
    not bound as expected any more) or "taken" (*claim* says by what)."""

    outcome: str
    old_name: str
    new_name: str
    claim: NameClaim | None = None
    # The rename's own id (in its notice's body), so a node acts on it once.
    rename_id: str = ""


class Identity:
    """Directory bindings and renames: each method returns a Deferred."""

    def __init__(self, runner: Runner, writer: MessageWriter) -> None:
        self._runner = runner
        self._writer = writer

    def directory_sign_in(
        self, username: str, directory_id: str, display_name: str | None, hold_until: int,
        may_take: bool = True,
    ) -> Deferred[DirectorySignIn]:
        return self._runner.run(
            directory_account_txn, username, directory_id, display_name, hold_until, may_take
        )

    def rename_account(
        self, old: str, new: str, directory_id: str, hold_until: int
    ) -> Deferred[Rename]:
        """Rename the account *old*, bound to *directory_id*, to *new* (audited)."""
        return self._runner.run(rename_account_txn, old, new, directory_id, hold_until)

    def retire_account(self, username: str, directory_id: str) -> Deferred[Rename]:
        """Retire the account *username*, bound to *directory_id* (gone from the directory)."""
        return self._runner.run(retire_account_txn, username, directory_id)

    def directory_id_of(self, username: str) -> Deferred[str | None]:
        return self._runner.run(directory_id_txn, username)

    def keys_of(self, username: str, key_hashes: list[str]) -> Deferred[set[str]]:
        """Those of *key_hashes* that are session keys of the account *username* now."""
        return self._runner.run(keys_of_txn, username, key_hashes)

    def held_until(self, name: str) -> Deferred[int | None]:
        """Until when (ms) *name* is held, None when it is not (or no longer)."""
        return self._runner.run(held_until_txn, name)

    def move_stragglers(self, old: str, new: str, after_id: int) -> Deferred[int]:
        """Move messages committed under a renamed user's old name after the rename.

        Waits until the message writer has committed everything queued so
        far (a send that passed its checks under the old name is then in
        the table), as a group rename's stragglers are moved.
        """
        return self._writer.drain().addCallback(
            lambda _: self._runner.run(move_stragglers_txn, old, new, after_id)
        )


# -- reading --------------------------------------------------------------------

def account_by_directory_id_txn(connection: Connection, directory_id: str) -> UserRecord | None:
    row = connection.execute(
        select(users).where(users.c.directory_id == directory_id)
    ).first()
    return None if row is None else _user_record(row)


def directory_id_txn(connection: Connection, username: str) -> str | None:
    return connection.execute(
        select(users.c.directory_id).where(users.c.username == username)
    ).scalar()


def keys_of_txn(connection: Connection, username: str, key_hashes: list[str]) -> set[str]:
    if not key_hashes:
        return set()
    return set(connection.execute(
        select(sessions.c.key_hash)
        .where((sessions.c.username == username) & sessions.c.key_hash.in_(key_hashes))
    ).scalars())


def held_until_txn(connection: Connection, name: str) -> int | None:
    until = connection.execute(
        select(names.c.held_until).where((names.c.name == name) & (names.c.kind == HELD))
    ).scalar()
    if until is None or int(until) <= now_millis():
        return None
    return int(until)


# -- sign-in --------------------------------------------------------------------

def directory_account_txn(
    connection: Connection, username: str, directory_id: str, display_name: str | None,
    hold_until: int, may_take: bool = True,
) -> DirectorySignIn:
    """Find, bind, rename or create the account of a directory sign-in.

    *username* is the directory's uid now (canonical); *directory_id* the
    entry's stable id; *may_take* whether *username* passes the rule for
    new names (outcome "unacceptable" when it would have to be taken).
    """
    bound = account_by_directory_id_txn(connection, directory_id)
    if bound is not None:
        if bound.username == username:
            return DirectorySignIn("ok", _display_name_now(connection, bound, display_name))
        if not may_take:
            return DirectorySignIn("unacceptable", bound)
        renamed = rename_account_txn(
            connection, bound.username, username, directory_id, hold_until
        )
        if renamed.outcome == "taken":
            return DirectorySignIn("taken", bound, claim=renamed.claim)
        if renamed.outcome != "renamed":
            return DirectorySignIn("taken", bound, claim=NameClaim(username, username))
        record = _display_name_now(connection, get_user_txn(connection, username), display_name)
        return DirectorySignIn("renamed", record, old_name=bound.username,
                               rename_id=renamed.rename_id)
    record = get_user_txn(connection, username)
    if record is None:
        if not may_take:
            return DirectorySignIn("unacceptable")
        claim = create_user_txn(connection, username, None, "ldap", display_name,
                                held_for=directory_id)
        if not claim:
            return DirectorySignIn("taken", claim=claim)
        connection.execute(
            update(users).where(users.c.username == username).values(directory_id=directory_id)
        )
        return DirectorySignIn("created", get_user_txn(connection, username), bound=True)
    if record.auth_method != "ldap":
        return DirectorySignIn("local", record)
    other = directory_id_txn(connection, username)
    if other is None:
        # Made before migration 0013 (or before the entry had an id): bound now.
        connection.execute(
            update(users).where(users.c.username == username).values(directory_id=directory_id)
        )
        return DirectorySignIn("ok", _display_name_now(connection, record, display_name),
                               bound=True)
    return DirectorySignIn("recycled", record, other_id=other)


def _display_name_now(
    connection: Connection, record: UserRecord | None, display_name: str | None
) -> UserRecord | None:
    """A directory account's display name is the directory's: kept up to date at
    each sign-in, so member lists and /api/users show what the directory says."""
    if record is None or display_name is None or record.display_name == display_name:
        return record
    connection.execute(
        update(users).where(users.c.username == record.username)
        .values(display_name=display_name)
    )
    return dataclasses.replace(record, display_name=display_name)


def rename_account_txn(
    connection: Connection, old: str, new: str, directory_id: str, hold_until: int
) -> Rename:
    """Rename the directory account *old* (still bound to *directory_id*) to
    *new*, holding *old* until *hold_until* for that account; audited."""
    if directory_id_txn(connection, old) != directory_id:
        return Rename("gone", old, new)
    outcome = rename_user_txn(connection, old, new, hold_until, held_for=directory_id)
    if outcome.outcome == "renamed":
        record_txn(connection, DIRECTORY_ACTOR, "user_rename", new, "", {"old_name": old})
    return outcome


def retire_account_txn(connection: Connection, username: str, directory_id: str) -> Rename:
    """Retire the account *username*, bound to *directory_id*: its entry has
    gone from the directory and its uid was given to somebody else.

    It is renamed to ``<name>~<6 hex digits>`` (a name nobody can sign in
    with or take), disabled and marked deprovisioned ("retired"), its keys revoked (every node closes its
    connections), and its old name released at once for the newcomer.
    """
    if directory_id_txn(connection, username) != directory_id:
        return Rename("gone", username, username)
    retired = ""
    for _ in range(5):
        retired = f"{username}{RETIRED_MARK}{secrets.token_hex(3)}"
        if get_user_txn(connection, retired) is None and not connection.execute(
            select(names.c.name).where(names.c.name == retired)
        ).first():
            break
    outcome = rename_user_txn(connection, username, retired, None)
    if outcome.outcome != "renamed":
        return outcome
    # Deprovisioned too, so chateau-admin user list says why it is shut.
    connection.execute(update(users).where(users.c.username == retired).values(
        disabled=True, deprovisioned_at=now_millis(), deprovision_reason="retired"))
    revoke_all_sessions_txn(connection, retired)
    record_txn(connection, DIRECTORY_ACTOR, "account_retire", retired,
               "its directory entry is gone and its uid was given to somebody else",
               {"old_name": username, "new_name": retired})
    return outcome


# -- renames ------------------------------------------------------------------

def rename_user_txn(
    connection: Connection, old: str, new: str, hold_until: int | None,
    held_for: str | None = None,
) -> Rename:
    """Move the account *old*, and everything that names it, to *new*.

    *new* is claimed first (an expired hold in the way is released; one held
    for *held_for* too); when it is taken nothing changes. The old name is
    then held until *hold_until* (ms) for *held_for*, or released when
    *hold_until* is None. Every node is told (notice ``user_renamed``).
    """
    row = connection.execute(
        select(users).where(users.c.username == old).with_for_update()
    ).first()
    if row is None:
        return Rename("gone", old, new)
    claim = _claim_new_name(connection, old, new, held_for)
    if not claim:
        return Rename("taken", old, new, claim)
    current = dict(row._mapping)
    # users.directory_id is unique: the old row lets go of it first.
    connection.execute(update(users).where(users.c.username == old).values(directory_id=None))
    connection.execute(insert(users).values({**current, "username": new}))
    for column in USER_NAME_COLUMNS:
        connection.execute(
            update(column.table).where(column == old).values({column.name: new})
        )
    _move_direct_chats(connection, old, new)
    connection.execute(delete(users).where(users.c.username == old))
    if hold_until is None:
        release_name_txn(connection, old, new)
    else:
        connection.execute(
            update(names).where(names.c.name == old)
            .values(kind=HELD, held_until=hold_until, held_for=held_for)
        )
    newest = connection.execute(select(func.max(messages.c.id))).scalar() or 0
    rename_id = secrets.token_hex(8)
    append_notice_txn(connection, USER_RENAMED, {
        "old": old, "new": new, "last_id": int(newest), "rename_id": rename_id,
    })
    return Rename("renamed", old, new, rename_id=rename_id)


def _claim_new_name(
    connection: Connection, old: str, new: str, held_for: str | None
) -> NameClaim:
    """Claim *new* for the user now called *old*.

    A name that only looks like the user's own old name is free to them
    (the old name stops being theirs in the same transaction): the old name
    then gives up its skeleton first, inside a savepoint restored if the
    claim still fails.
    """
    claim = claim_name_txn(connection, new, "user", held_for)
    if claim or claim.blocked_by != old:
        return claim
    savepoint = connection.begin_nested()
    connection.execute(update(names).where(names.c.name == old).values(skeleton=None))
    claim = claim_name_txn(connection, new, "user", held_for)
    if claim:
        savepoint.commit()
    else:
        savepoint.rollback()
    return claim


def _direct_chat_after_rename(chat: str, old: str, new: str) -> str | None:
    """The key of direct chat *chat* once *old* is *new*; None if not *old*'s."""
    if not chat.startswith("@") or ":" not in chat:
        return None
    first, second = chat[1:].split(":", 1)
    if old not in (first, second):
        return None
    first = new if first == old else first
    second = new if second == old else second
    return direct_chat(first, second)


def _move_direct_chats(connection: Connection, old: str, new: str) -> None:
    """Recompute the keys of *old*'s direct chats (a sorted pair) for *new*."""
    chats = connection.execute(
        select(direct_chats.c.chat).where(direct_chats.c.username == old)
    ).scalars()
    for chat in list(chats):
        _move_direct_chat(connection, chat, old, new)


def _move_direct_chat(connection: Connection, chat: str, old: str, new: str) -> None:
    """Move direct chat *chat*'s messages (through ix_messages_chat_id), its
    reports and both participants' ``direct_chats`` rows to its key once
    *old* is *new*, with both participants' read markers."""
    moved = _direct_chat_after_rename(chat, old, new)
    if moved is None:
        return
    connection.execute(update(messages).where(messages.c.chat == chat).values(chat=moved))
    connection.execute(update(reports).where(reports.c.chatname == chat).values(chatname=moved))
    connection.execute(
        update(read_markers).where(read_markers.c.chat == chat).values(chat=moved)
    )
    holders = connection.execute(
        select(direct_chats.c.username).where(direct_chats.c.chat == chat)
    ).scalars()
    for holder in list(holders):
        target = new if holder == old else holder
        row = (direct_chats.c.username == holder) & (direct_chats.c.chat == chat)
        there = connection.execute(
            select(direct_chats.c.username)
            .where((direct_chats.c.username == target) & (direct_chats.c.chat == moved))
        ).first()
        if there:
            connection.execute(delete(direct_chats).where(row))
        else:
            connection.execute(
                update(direct_chats).where(row).values(username=target, chat=moved)
            )


def move_stragglers_txn(connection: Connection, old: str, new: str, after_id: int) -> int:
    """Messages committed under *old* after its rename to *new*, moved to *new*.

    A send that passed its checks before the rename was heard (on this node
    or another) may commit afterwards under the old name. Moved only while
    nobody has the old name and *new* is an account, so nothing of a later
    holder of the old name is ever taken. Looks from :data:`STRAGGLER_LOOKBACK`
    ids before *after_id*.
    """
    if get_user_txn(connection, old) is not None or get_user_txn(connection, new) is None:
        return 0
    start = max(after_id - STRAGGLER_LOOKBACK, 0)
    moved = 0
    for column in (messages.c.sender, messages.c.recipient):
        moved += connection.execute(
            update(messages).where((messages.c.id > start) & (column == old))
            .values({column.name: new})
        ).rowcount
    # Direct chats written to under the old key since (a range of the
    # primary key), and any direct_chats row the old name got again.
    chats = set(connection.execute(
        select(messages.c.chat).distinct()
        .where((messages.c.id > start) & messages.c.chat.startswith("@"))
    ).scalars())
    chats.update(connection.execute(
        select(direct_chats.c.chat).where(direct_chats.c.username == old)
    ).scalars())
    for chat in sorted(chats):
        _move_direct_chat(connection, chat, old, new)
    return moved
