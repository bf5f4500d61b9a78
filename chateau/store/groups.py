"""Groups and their membership, and the notices of members added while offline.

A group's name comes from the namespace it shares with users
(:func:`chateau.store.accounts.claim_name_txn`), so a group never takes a
user's name. Transaction functions (``*_txn``) take a connection and return
plain records; :class:`Groups` runs them on the store's pool.
"""

from __future__ import annotations

from typing import Iterable

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.accounts import claim_name_txn
from chateau.store.engine import Runner
from chateau.store.records import (
    ADMIN,
    MEMBER,
    OWNER,
    GroupInfoRecord,
    GroupRecord,
    MemberRecord,
    NameClaim,
    now_millis,
)
from chateau.store.tables import group_members, groups, messages, users


class Groups:
    """Groups and membership: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def create_group(
        self, chatname: str, creator: str, members: Iterable[str],
        online: Iterable[str] = (),
    ) -> Deferred[NameClaim]:
        """Create a group; false when the name, or one it looks like, is taken.

        Members not *online* are marked to be told of it when they sign in.
        """
        return self._runner.run(
            create_group_txn, chatname, creator, sorted(set(members)), set(online)
        )

    def take_group_notices(self, username: str) -> Deferred[list[GroupRecord]]:
        """Groups *username* was added to while offline; marks them told."""
        return self._runner.run(take_group_notices_txn, username)

    def load_groups(self) -> Deferred[list[GroupRecord]]:
        return self._runner.run(load_groups_txn)

    def remove_group_member(self, chatname: str, username: str) -> Deferred[str | None]:
        """Fires with the member who became owner because the last one left, if any."""
        return self._runner.run(remove_group_member_txn, chatname, username)

    def group_info(self, chatname: str) -> Deferred[GroupInfoRecord | None]:
        return self._runner.run(group_info_txn, chatname)

    def set_role(
        self, chatname: str, by: str, username: str, role: str, as_owner: bool = False,
    ) -> Deferred[str]:
        """*by* gives *username* *role*: "set", "same", or a refusal: "not_owner",
        "not_member" or "last_owner". *as_owner*: *by* is a server admin, an
        owner of every group."""
        return self._runner.run(set_role_txn, chatname, by, username, role, as_owner)

    def creation_times(self, creator: str, since: int) -> Deferred[list[int]]:
        """When *creator* made each group after *since* (ms), oldest first."""
        return self._runner.run(creation_times_txn, creator, since)


def create_group_txn(
    connection: Connection, chatname: str, creator: str, members: list[str], online: set[str]
) -> NameClaim:
    claim = claim_name_txn(connection, chatname, "group")
    if not claim:
        return claim
    now = now_millis()
    connection.execute(
        insert(groups).values(chatname=chatname, creator=creator, created_at=now)
    )
    connection.execute(
        insert(group_members),
        [{"chatname": chatname, "username": m, "notified": m in online or m == creator,
          "role": OWNER if m == creator else MEMBER, "joined_at": now}
         for m in members],
    )
    return claim


def load_groups_txn(connection: Connection) -> list[GroupRecord]:
    members: dict[str, set[str]] = {}
    roles: dict[str, list[tuple[str, str]]] = {}
    muted: dict[str, list[tuple[str, int]]] = {}
    now = now_millis()
    for chatname, username, role, muted_until in connection.execute(
        select(group_members.c.chatname, group_members.c.username, group_members.c.role,
               group_members.c.muted_until)
    ):
        members.setdefault(chatname, set()).add(username)
        if role != MEMBER:
            roles.setdefault(chatname, []).append((username, role))
        if muted_until is not None and int(muted_until) > now:
            muted.setdefault(chatname, []).append((username, int(muted_until)))
    started = set(
        connection.execute(
            select(messages.c.chat).where(messages.c.chat.in_(select(groups.c.chatname))).distinct()
        ).scalars()
    )
    return [
        GroupRecord(row.chatname, row.creator, frozenset(members.get(row.chatname, ())),
                    row.chatname in started, tuple(roles.get(row.chatname, ())),
                    tuple(muted.get(row.chatname, ())), row.who_can_send)
        for row in connection.execute(
            select(groups.c.chatname, groups.c.creator, groups.c.who_can_send)
        )
    ]


def take_group_notices_txn(connection: Connection, username: str) -> list[GroupRecord]:
    mine = (group_members.c.username == username) & ~group_members.c.notified
    found = connection.execute(
        select(groups.c.chatname, groups.c.creator)
        .where(groups.c.chatname.in_(select(group_members.c.chatname).where(mine)))
        .order_by(groups.c.created_at)
    ).all()
    records = []
    for chatname, creator in found:
        members = connection.execute(
            select(group_members.c.username).where(group_members.c.chatname == chatname)
        ).scalars()
        records.append(GroupRecord(chatname, creator, frozenset(members), False))
    connection.execute(update(group_members).where(mine).values(notified=True))
    return records


def remove_group_member_txn(connection: Connection, chatname: str, username: str) -> str | None:
    """Remove a member; when the last owner goes, the longest-serving admin, else
    member, becomes owner (ties by name), so a group always keeps an owner.
    Returns that new owner, if any."""
    in_group = group_members.c.chatname == chatname
    connection.execute(delete(group_members).where(in_group & (group_members.c.username == username)))
    if connection.execute(
        select(group_members.c.username).where(in_group & (group_members.c.role == OWNER))
    ).first():
        return None
    heir = connection.execute(
        select(group_members.c.username).where(in_group).order_by(
            (group_members.c.role != ADMIN), group_members.c.joined_at, group_members.c.username
        )
    ).scalar()
    if heir is not None:
        connection.execute(
            update(group_members)
            .where(in_group & (group_members.c.username == heir))
            .values(role=OWNER)
        )
    return heir


def role_of_txn(connection: Connection, chatname: str, username: str) -> str | None:
    return connection.execute(
        select(group_members.c.role).where(
            (group_members.c.chatname == chatname) & (group_members.c.username == username)
        )
    ).scalar()


def set_role_txn(
    connection: Connection, chatname: str, by: str, username: str, role: str,
    as_owner: bool = False,
) -> str:
    """Change a member's role in one transaction: only owners may, and the last
    owner cannot step down.

    The owners' rows are locked (PostgreSQL; SQLite serialises writers), so
    two owners stepping down at once cannot leave the group without one.
    """
    in_group = group_members.c.chatname == chatname
    owners = connection.execute(
        select(group_members.c.username)
        .where(in_group & (group_members.c.role == OWNER))
        .with_for_update()
    ).scalars().all()
    if by not in owners and not as_owner:
        return "not_owner"
    current = role_of_txn(connection, chatname, username)
    if current is None:
        return "not_member"
    if current == role:
        return "same"
    if current == OWNER and owners == [username]:
        return "last_owner"
    connection.execute(
        update(group_members)
        .where(in_group & (group_members.c.username == username))
        .values(role=role)
    )
    return "set"


def group_info_txn(connection: Connection, chatname: str) -> GroupInfoRecord | None:
    """The group's topic, settings and members with their roles, or None."""
    row = connection.execute(select(groups).where(groups.c.chatname == chatname)).first()
    if row is None:
        return None
    members = tuple(
        MemberRecord(member.username, member.role, int(member.joined_at),
                     None if member.muted_until is None else int(member.muted_until),
                     member.display_name, member.status_text)
        for member in connection.execute(
            select(group_members.c.username, group_members.c.role, group_members.c.joined_at,
                   group_members.c.muted_until, users.c.display_name, users.c.status_text)
            .select_from(group_members.outerjoin(
                users, users.c.username == group_members.c.username))
            .where(group_members.c.chatname == chatname)
            .order_by(group_members.c.joined_at, group_members.c.username)
        )
    )
    return GroupInfoRecord(
        row.chatname, row.creator, int(row.created_at), row.topic, row.join_rule,
        row.visibility, row.who_can_add, row.who_can_send, members,
        directory_dn=row.directory_dn, retention_days=row.retention_days,
    )


def creation_times_txn(connection: Connection, creator: str, since: int) -> list[int]:
    """Groups are never deleted, so this counts churn (leave and re-create) too."""
    return [
        int(value) for value in connection.execute(
            select(groups.c.created_at)
            .where((groups.c.creator == creator) & (groups.c.created_at > since))
            .order_by(groups.c.created_at)
        ).scalars()
    ]
