"""Who is in a group: adding, removing, banning, muting, invite codes and joins.

Every change of membership locks the group's row first (``FOR NO KEY
UPDATE`` on PostgreSQL, which leaves foreign-key checks alone; SQLite has one writer and the store one thread for it), so
what it checks (bans, the limits on members and on groups per user, the
target's role) still holds when it writes: a ban and an add racing on two
nodes cannot let the banned user in, and two adds cannot pass
``max_group_members`` together. Users being added are locked too (in name
order), so ``max_groups_per_user`` holds across groups. Removals, bans,
unbans and mutes are recorded in the moderation log in the same
transaction. Invite codes are stored only as their SHA-256, like the
account invites of :mod:`chateau.store.invites`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.groups import remove_group_member_txn, role_of_txn
from chateau.store.audit import record_txn
from chateau.store.records import MEMBER, AddOutcome, BanRecord, RemovalNotice, now_millis
from chateau.store.tables import (
    group_bans, group_invites, group_members, groups, removal_notices, users,
)


def hash_group_invite(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


class Membership:
    """Membership changes and group invite codes: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def add_members(
        self, chatname: str, usernames: list[str], online: Iterable[str], max_members: int,
        max_groups: int,
    ) -> Deferred[AddOutcome]:
        """Add *usernames* (those not *online* are told at their next sign-in)."""
        return self._runner.run(
            add_members_txn, chatname, list(usernames), set(online), max_members, max_groups
        )

    def remove(
        self, chatname: str, by: str, username: str, ban: bool, reason: str,
        may_act_on: frozenset[str], tell_later: bool = False,
    ) -> Deferred[tuple[str, str | None, str | None]]:
        """Remove (and/or ban) *username*: (outcome, their role, new owner).

        outcome is "removed", "banned", or a refusal: "no_group",
        "not_member", "forbidden" (their role is not in *may_act_on*), "synced"
        (the group's membership follows the directory).
        With *tell_later* (they are offline everywhere), a member removed is
        told at their next sign-in (:func:`take_removal_notices_txn`).
        """
        return self._runner.run(
            remove_txn, chatname, by, username, ban, reason, may_act_on, tell_later
        )

    def take_removal_notices(self, username: str) -> Deferred[list[RemovalNotice]]:
        """The removals *username* has not been told of, oldest first; forgotten once read."""
        return self._runner.run(take_removal_notices_txn, username)

    def unban(self, chatname: str, by: str, username: str) -> Deferred[bool]:
        return self._runner.run(unban_txn, chatname, by, username)

    def mute(
        self, chatname: str, by: str, username: str, until: int | None,
        may_act_on: frozenset[str],
    ) -> Deferred[str]:
        """"muted" (or lifted, *until* None), "not_member" or "forbidden"."""
        return self._runner.run(mute_txn, chatname, by, username, until, may_act_on)

    def who_can_add(self, chatname: str) -> Deferred[str | None]:
        """The group's ``who_can_add`` setting; None when there is no such group."""
        return self._runner.run(who_can_add_txn, chatname)

    def bans(self, chatname: str) -> Deferred[list[BanRecord]]:
        return self._runner.run(bans_txn, chatname)

    def is_banned(self, chatname: str, username: str) -> Deferred[bool]:
        return self._runner.run(is_banned_txn, chatname, username)

    def create_invite(
        self, code: str, chatname: str, by: str, max_uses: int | None, expires_at: int
    ) -> Deferred[int]:
        return self._runner.run(
            create_invite_txn, hash_group_invite(code), chatname, by, max_uses, expires_at
        )

    def join_by_code(
        self, code: str, username: str, online: bool, max_members: int, max_groups: int,
    ) -> Deferred[AddOutcome]:
        """Join with an invite code; a use is taken only when someone is added."""
        return self._runner.run(
            join_by_code_txn, hash_group_invite(code), username, online, max_members, max_groups
        )

    def join_public(
        self, chatname: str, username: str, online: bool, max_members: int, max_groups: int,
    ) -> Deferred[AddOutcome]:
        """Join a public, open group by its name."""
        return self._runner.run(
            join_public_txn, chatname, username, online, max_members, max_groups
        )


def _lock_group(connection: Connection, chatname: str) -> Any:
    return connection.execute(
        select(groups.c.chatname, groups.c.creator, groups.c.join_rule, groups.c.visibility,
               groups.c.directory_dn)
        .where(groups.c.chatname == chatname)
        .with_for_update(key_share=True)
    ).first()


def _add_locked(
    connection: Connection, group: Any, usernames: list[str], online: set[str],
    max_members: int, max_groups: int,
) -> AddOutcome:
    chatname = group.chatname
    if group.directory_dn is not None:
        # Its membership follows the directory (chateau.store.group_sync).
        return AddOutcome(chatname, refusal="synced")
    current = set(connection.execute(
        select(group_members.c.username).where(group_members.c.chatname == chatname)
    ).scalars())
    already = tuple(name for name in usernames if name in current)
    new = [name for name in usernames if name not in current]
    if new:
        found = set(connection.execute(
            select(users.c.username).where(users.c.username.in_(new))
            .order_by(users.c.username).with_for_update(key_share=True)
        ).scalars())
        for name in new:
            if name not in found:
                return AddOutcome(chatname, refusal="missing", who=name)
        banned = set(connection.execute(
            select(group_bans.c.username)
            .where((group_bans.c.chatname == chatname) & group_bans.c.username.in_(new))
        ).scalars())
        for name in new:
            if name in banned:
                return AddOutcome(chatname, refusal="banned", who=name)
        if len(current) + len(new) > max_members:
            return AddOutcome(chatname, refusal="full")
        counts = dict(connection.execute(
            select(group_members.c.username, func.count())
            .where(group_members.c.username.in_(new))
            .group_by(group_members.c.username)
        ).all())
        for name in new:
            if counts.get(name, 0) >= max_groups:
                return AddOutcome(chatname, refusal="too_many_groups", who=name)
        now = now_millis()
        connection.execute(
            insert(group_members),
            [{"chatname": chatname, "username": name, "notified": name in online,
              "role": MEMBER, "joined_at": now} for name in new],
        )
    return AddOutcome(
        chatname, tuple(new), already, creator=group.creator,
        members=tuple(sorted(current | set(new))),
    )


def add_members_txn(
    connection: Connection, chatname: str, usernames: list[str], online: set[str],
    max_members: int, max_groups: int,
) -> AddOutcome:
    group = _lock_group(connection, chatname)
    if group is None:
        return AddOutcome(chatname, refusal="no_group")
    return _add_locked(connection, group, usernames, online, max_members, max_groups)


def remove_txn(
    connection: Connection, chatname: str, by: str, username: str, ban: bool, reason: str,
    may_act_on: frozenset[str], tell_later: bool = False,
) -> tuple[str, str | None, str | None]:
    group = _lock_group(connection, chatname)
    if group is None:
        return "no_group", None, None
    if group.directory_dn is not None:
        return "synced", None, None
    role = role_of_txn(connection, chatname, username)
    if role is None and not ban:
        return "not_member", None, None
    if (role or MEMBER) not in may_act_on:
        return "forbidden", role, None
    heir = None
    if role is not None:
        heir = remove_group_member_txn(connection, chatname, username)
        if tell_later:
            note_removal_txn(connection, username, chatname, by, reason, ban)
    if ban:
        connection.execute(
            delete(group_bans).where(
                (group_bans.c.chatname == chatname) & (group_bans.c.username == username)
            )
        )
        connection.execute(insert(group_bans).values(
            chatname=chatname, username=username, banned_by=by, reason=reason,
            banned_at=now_millis(),
        ))
    record_txn(connection, by, "group_ban" if ban else "group_remove", username, reason,
               {"chatname": chatname, "was_member": role is not None})
    return ("banned" if ban else "removed"), role, heir


def note_removal_txn(
    connection: Connection, username: str, chatname: str, by: str, reason: str, banned: bool,
) -> None:
    """Keep a removal for *username* to be told of at their next sign-in (the latest wins)."""
    where = (removal_notices.c.username == username) & (removal_notices.c.chatname == chatname)
    connection.execute(delete(removal_notices).where(where))
    connection.execute(insert(removal_notices).values(
        username=username, chatname=chatname, removed_by=by, reason=reason,
        banned=banned, removed_at=now_millis(),
    ))


def take_removal_notices_txn(connection: Connection, username: str) -> list[RemovalNotice]:
    mine = removal_notices.c.username == username
    rows = connection.execute(
        select(removal_notices).where(mine).order_by(removal_notices.c.removed_at)
    ).all()
    if rows:
        connection.execute(delete(removal_notices).where(mine))
    return [RemovalNotice(row.chatname, row.removed_by, row.reason, bool(row.banned))
            for row in rows]


def unban_txn(connection: Connection, chatname: str, by: str, username: str) -> bool:
    if _lock_group(connection, chatname) is None:
        return False
    gone = connection.execute(
        delete(group_bans).where(
            (group_bans.c.chatname == chatname) & (group_bans.c.username == username)
        )
    ).rowcount
    if not gone:
        return False
    record_txn(connection, by, "group_unban", username, "", {"chatname": chatname})
    return True


def mute_txn(
    connection: Connection, chatname: str, by: str, username: str, until: int | None,
    may_act_on: frozenset[str],
) -> str:
    if _lock_group(connection, chatname) is None:
        return "not_member"
    role = role_of_txn(connection, chatname, username)
    if role is None:
        return "not_member"
    if role not in may_act_on:
        return "forbidden"
    connection.execute(
        update(group_members)
        .where((group_members.c.chatname == chatname) & (group_members.c.username == username))
        .values(muted_until=until)
    )
    record_txn(connection, by, "group_mute" if until is not None else "group_unmute", username,
               "", {"chatname": chatname, "until": until})
    return "muted"


def who_can_add_txn(connection: Connection, chatname: str) -> str | None:
    return connection.execute(
        select(groups.c.who_can_add).where(groups.c.chatname == chatname)
    ).scalar()


def bans_txn(connection: Connection, chatname: str) -> list[BanRecord]:
    return [
        BanRecord(row.username, row.banned_by, row.reason, int(row.banned_at))
        for row in connection.execute(
            select(group_bans).where(group_bans.c.chatname == chatname)
            .order_by(group_bans.c.banned_at, group_bans.c.username)
        )
    ]


def is_banned_txn(connection: Connection, chatname: str, username: str) -> bool:
    return connection.execute(
        select(group_bans.c.username).where(
            (group_bans.c.chatname == chatname) & (group_bans.c.username == username)
        )
    ).first() is not None


def create_invite_txn(
    connection: Connection, code_hash: str, chatname: str, by: str, max_uses: int | None,
    expires_at: int,
) -> int:
    result = connection.execute(insert(group_invites).values(
        code_hash=code_hash, chatname=chatname, created_by=by, created_at=now_millis(),
        expires_at=expires_at, max_uses=max_uses, uses=0,
    ))
    return int(result.inserted_primary_key[0])


def join_by_code_txn(
    connection: Connection, code_hash: str, username: str, online: bool, max_members: int,
    max_groups: int,
) -> AddOutcome:
    invite = connection.execute(
        select(group_invites.c.id, group_invites.c.chatname)
        .where(
            (group_invites.c.code_hash == code_hash)
            & (group_invites.c.expires_at > now_millis())
            & or_(group_invites.c.max_uses.is_(None),
                  group_invites.c.uses < group_invites.c.max_uses)
        )
        .with_for_update()
    ).first()
    if invite is None:
        return AddOutcome("", refusal="no_code")
    group = _lock_group(connection, invite.chatname)
    if group is None:
        return AddOutcome("", refusal="no_code")
    outcome = _add_locked(
        connection, group, [username], {username} if online else set(), max_members, max_groups
    )
    if outcome.added:
        connection.execute(
            update(group_invites).where(group_invites.c.id == invite.id)
            .values(uses=group_invites.c.uses + 1)
        )
    return outcome


def join_public_txn(
    connection: Connection, chatname: str, username: str, online: bool, max_members: int,
    max_groups: int,
) -> AddOutcome:
    group = _lock_group(connection, chatname)
    if group is None:
        return AddOutcome(chatname, refusal="no_group")
    if group.join_rule != "open" or group.visibility != "public":
        return AddOutcome(chatname, refusal="closed")
    return _add_locked(
        connection, group, [username], {username} if online else set(), max_members, max_groups
    )
