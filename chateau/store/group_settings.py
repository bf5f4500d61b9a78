"""A group's topic, settings and name (GroupUpdateRequest), and the public directory.

A rename moves, in one transaction, everything that names the group: its
row in the shared namespace (a new ``names`` row is claimed as a group's
creation claims it, then the old one is removed), ``groups`` itself, and
every other table that holds the chat name (:data:`GROUP_NAME_COLUMNS`:
membership, bans, history and its system events, reports). The foreign
keys point from ``group_members`` and ``group_bans`` to ``groups`` and from
``groups`` to ``names``; both databases enforce them (SQLite with
``PRAGMA foreign_keys``), so the new parent rows are inserted first, the
children moved onto them, and the old parents deleted last: no constraint
is ever broken, on either database, without deferring any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.accounts import claim_name_txn, release_name_txn
from chateau.store.engine import Runner
from chateau.store.groups import role_of_txn
from chateau.store.audit import record_txn
from chateau.store.records import NameClaim
from chateau.store.tables import (
    group_bans,
    group_invites,
    group_members,
    groups,
    messages,
    names,
    read_markers,
    reports,
)

if TYPE_CHECKING:
    from chateau.store.writer import MessageWriter

# Every column, besides groups.chatname and the namespace's own tables, that
# holds a group's name: a rename moves each in its transaction. A table added
# later with a chat name column is one more line here.
GROUP_NAME_COLUMNS: tuple[Column[Any], ...] = (
    group_members.c.chatname,
    group_bans.c.chatname,
    group_invites.c.chatname,
    messages.c.chat,
    reports.c.chatname,
    read_markers.c.chat,
)

# The settings GroupUpdateRequest changes, their groups column, and the
# values each may take (the first is the default).
SETTINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "join": ("join_rule", ("invite", "open")),
    "visibility": ("visibility", ("private", "public")),
    "who_can_add": ("who_can_add", ("admins", "members")),
    "who_can_send": ("who_can_send", ("everyone", "admins")),
}
# The group's own retention (days; 0 forever; None: the server's), beside SETTINGS.
RETENTION = "retention_days"


@dataclass(frozen=True)
class GroupUpdate:
    """What a GroupUpdateRequest came to.

    *outcome* is "updated", "gone" (no such group), or "name_taken" (then
    *claim* says by what; nothing changed). *chatname* is the group's name
    now; *changed* holds the settings that changed (by their wire names),
    *topic_changed* whether the topic did.
    """

    outcome: str
    chatname: str
    old_name: str
    topic: str = ""
    settings: dict[str, Any] | None = None
    changed: dict[str, Any] | None = None
    topic_changed: bool = False
    claim: NameClaim | None = None

    @property
    def renamed(self) -> bool:
        return self.outcome == "updated" and self.chatname != self.old_name


@dataclass(frozen=True)
class DirectoryEntry:
    chatname: str
    topic: str
    members: int
    join: str


class GroupSettings:
    """Groups' settings, renames and the directory: each method returns a Deferred."""

    def __init__(self, runner: Runner, writer: MessageWriter) -> None:
        self._runner = runner
        self._writer = writer

    def role_of(self, chatname: str, username: str) -> Deferred[str | None]:
        """*username*'s role in the group, None when not a member."""
        return self._runner.run(role_of_txn, chatname, username)

    def update_group(
        self, chatname: str, by: str, new_name: str | None, topic: str | None,
        settings: dict[str, Any],
    ) -> Deferred[GroupUpdate]:
        """Change a group's topic, settings and name together, or nothing.

        *settings* holds :data:`SETTINGS` keys and :data:`RETENTION`.
        """
        return self._runner.run(update_group_txn, chatname, by, new_name, topic, settings)

    def move_stragglers(self, old_name: str, new_name: str) -> Deferred[int]:
        """Move messages committed under a group's old name after its rename.

        Waits until the message writer has committed everything queued so
        far: a send that passed its check under the old name (here, or on
        a node that had not yet heard of the rename) is then in the table.
        """
        return self._writer.drain().addCallback(
            lambda _: self._runner.run(move_stragglers_txn, old_name, new_name)
        )

    def directory(self, query: str, limit: int) -> Deferred[list[DirectoryEntry]]:
        return self._runner.run(directory_txn, query, limit)


def _claim_new_name(connection: Connection, old: str, new: str) -> NameClaim:
    """Claim *new* for the group now called *old*.

    A name that only looks like the group's own old name is free to it: the
    old name goes in the same transaction, so nobody could be misled. The
    old name then gives up its skeleton first (inside a savepoint, restored
    if the claim still fails).
    """
    claim = claim_name_txn(connection, new, "group")
    if claim or claim.blocked_by != old:
        return claim
    savepoint = connection.begin_nested()
    connection.execute(update(names).where(names.c.name == old).values(skeleton=None))
    claim = claim_name_txn(connection, new, "group")
    if claim:
        savepoint.commit()
    else:
        savepoint.rollback()
    return claim


def settings_of(row: Any) -> dict[str, Any]:
    """A group row's settings as the wire shows them (GroupInfoResponse, GroupUpdateResponse)."""
    shown: dict[str, Any] = {key: row[column] for key, (column, _) in SETTINGS.items()}
    shown[RETENTION] = row[RETENTION]
    return shown


def update_group_txn(
    connection: Connection, chatname: str, by: str, new_name: str | None, topic: str | None,
    settings: dict[str, Any],
) -> GroupUpdate:
    """Apply a GroupUpdateRequest in one transaction (the group's row locked).

    The new name is claimed first: when it is taken, nothing changes.
    """
    row = connection.execute(
        select(groups).where(groups.c.chatname == chatname).with_for_update()
    ).first()
    if row is None:
        return GroupUpdate("gone", chatname, chatname)
    current = dict(row._mapping)
    renaming = new_name is not None and new_name != chatname
    if renaming:
        assert new_name is not None
        claim = _claim_new_name(connection, chatname, new_name)
        if not claim:
            return GroupUpdate("name_taken", chatname, chatname, claim=claim)
    values: dict[str, Any] = {}
    changed: dict[str, Any] = {}
    for key, value in settings.items():
        column = RETENTION if key == RETENTION else SETTINGS[key][0]
        if current[column] != value:
            values[column] = value
            changed[key] = value
    topic_changed = topic is not None and topic != current["topic"]
    if topic_changed:
        values["topic"] = topic
    final = new_name if renaming else chatname
    assert final is not None
    if renaming:
        # The directory group's DN is unique: it moves once the old row is gone.
        directory_dn = current.get("directory_dn")
        connection.execute(insert(groups).values(
            {**current, **values, "chatname": final, "directory_dn": None}))
        for column in GROUP_NAME_COLUMNS:
            connection.execute(
                update(column.table).where(column == chatname).values({column.name: final})
            )
        connection.execute(delete(groups).where(groups.c.chatname == chatname))
        if directory_dn is not None:
            connection.execute(
                update(groups).where(groups.c.chatname == final)
                .values(directory_dn=directory_dn)
            )
        release_name_txn(connection, chatname, final)
        record_txn(connection, by, "group_rename", chatname, "", {"new_name": final})
    elif values:
        connection.execute(update(groups).where(groups.c.chatname == chatname).values(values))
    if RETENTION in changed:
        record_txn(connection, by, "group_retention", final, "",
                   {"retention_days": changed[RETENTION]})
    now = {**current, **values}
    return GroupUpdate(
        "updated", final, chatname, now["topic"], settings_of(now), changed, topic_changed,
    )


def move_stragglers_txn(connection: Connection, old_name: str, new_name: str) -> int:
    """Messages committed under *old_name* after the rename moved the rest.

    A send that passed its check before the rename was heard (on this node
    or another) may commit afterwards under the old name. Moved only while
    the old name is free and the new one is a group, so nothing of a later
    holder of the old name is ever taken.
    """
    if connection.execute(select(names.c.name).where(names.c.name == old_name)).first():
        return 0
    if not connection.execute(select(groups.c.chatname).where(groups.c.chatname == new_name)).first():
        return 0
    return connection.execute(
        update(messages).where(messages.c.chat == old_name).values(chat=new_name)
    ).rowcount


def directory_txn(connection: Connection, query: str, limit: int) -> list[DirectoryEntry]:
    """Public groups whose name or topic holds *query* (case-insensitive), biggest first.

    One query through ix_groups_visibility; the member counts come from
    group_members' primary key. Names are stored case-folded; topics are
    case-folded by the database (SQLite through the ``casefold`` function
    the engine registers, PostgreSQL by ``lower``).
    """
    if connection.dialect.name == "sqlite":
        fold, folded_query = func.casefold, query.casefold()
    else:
        fold, folded_query = func.lower, query.lower()
    count = func.count(group_members.c.username).label("members")
    statement = (
        select(groups.c.chatname, groups.c.topic, groups.c.join_rule, count)
        .select_from(groups.outerjoin(group_members,
                                      group_members.c.chatname == groups.c.chatname))
        .where(groups.c.visibility == "public")
        .group_by(groups.c.chatname, groups.c.topic, groups.c.join_rule)
        .order_by(count.desc(), groups.c.chatname)
        .limit(limit)
    )
    if query:
        statement = statement.where(
            groups.c.chatname.contains(query.casefold(), autoescape=True)
            | fold(groups.c.topic).contains(folded_query, autoescape=True)
        )
    return [
        DirectoryEntry(row.chatname, row.topic, int(row.members), row.join_rule)
        for row in connection.execute(statement)
    ]
