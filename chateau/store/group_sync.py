"""Groups that follow the directory: one transaction per directory group.

The sync (chateau.group_sync) reads the directory's groups, then hands each
one here: :func:`sync_group_txn` locks the group's row (``FOR NO KEY
UPDATE`` on PostgreSQL, as :mod:`chateau.store.membership` does), reads
its members and writes the difference, so two syncs racing (two nodes, or
a node and ``chateau-admin ldap-sync``) cannot add or remove anyone twice:
the second finds nothing left to do. Only directory accounts
(``users.auth_method = 'ldap'``) are ever members: a local account that
happens to share a directory uid is someone else.

Removals and additions are written to the audit log (actor ``directory``)
in the same transaction; members removed while offline are told at their
next sign-in (``removal_notices``, as GroupRemoveRequest does), and
members added while offline get the 201 notice of the group at their next
sign-in (``group_members.notified``), as group creation does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from chateau.store.accounts import claim_name_txn
from chateau.store.audit import record_txn
from chateau.store.engine import Engine, Runner
from chateau.store.membership import note_removal_txn
from chateau.store.notices import append_notice_txn
from chateau.store.records import MEMBER, now_millis
from chateau.store.tables import group_members, group_sync_runs, groups, names, users

T = TypeVar("T")

# Who the sync acts as: the creator of synced groups, the actor in the audit
# log, and "by" in the pushes members get.
DIRECTORY_ACTOR = "directory"
# The kind of the notice chateau-admin ldap-sync writes for the nodes.
NOTICE_KIND = "group_synced"


@dataclass(frozen=True)
class SyncOutcome:
    """What syncing one directory group came to.

    *skipped* says why nothing was done (a name collision, too many
    members...); *waiting*: no member has an account yet, so the group is
    not made yet. *limited*: directory members not added because they are
    already in ``[limits] max_groups_per_user`` groups.
    """

    chatname: str
    dn: str
    created: bool = False
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    # Members before and after the change.
    before: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    skipped: str | None = None
    waiting: bool = False
    limited: tuple[str, ...] = ()
    # The group's name here when it differs from the one asked for (kept by DN).
    adopted_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.created or bool(self.added or self.removed)


class GroupSyncStore:
    """The sync's transactions, on the store's pool: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def claim_run(self, node: str, gap_ms: int) -> Deferred[bool]:
        """Whether this node runs the sync now (none started in the last *gap_ms*)."""
        return self._runner.run(claim_run_txn, node, now_millis(), gap_ms)

    def synced_groups(self) -> Deferred[dict[str, str]]:
        """Every synced group: directory DN -> chatname."""
        return self._runner.run(synced_groups_txn)

    def sync_group(
        self, dn: str, chatname: str, wanted: list[str], present: frozenset[str],
        online: Iterable[str], max_members: int, max_groups: int,
    ) -> Deferred[SyncOutcome]:
        """Make the group of *dn* have exactly *wanted* (those with accounts) as members.

        Members removed who are not *online* are told at their next sign-in.
        """
        return self._runner.run(
            sync_group_txn, dn, chatname, list(wanted), present, set(online), max_members,
            max_groups,
        )

    def is_synced(self, chatname: str) -> Deferred[bool]:
        """Whether *chatname* is a group whose membership follows the directory."""
        return self._runner.run(is_synced_txn, chatname)


def claim_run_txn(connection: Connection, node: str, now: int, gap_ms: int) -> bool:
    """Take the turn to sync: true for one caller per *gap_ms*, whichever node."""
    taken = connection.execute(
        update(group_sync_runs)
        .where((group_sync_runs.c.id == 1) & (group_sync_runs.c.started_at <= now - gap_ms))
        .values(started_at=now, node=node[:64])
    ).rowcount
    if taken:
        return True
    if connection.execute(select(group_sync_runs.c.id)).first() is not None:
        return False
    try:
        with connection.begin_nested():
            connection.execute(insert(group_sync_runs).values(id=1, started_at=now, node=node[:64]))
    except IntegrityError:
        return False
    return True


def synced_groups_txn(connection: Connection) -> dict[str, str]:
    return {
        row.directory_dn: row.chatname
        for row in connection.execute(
            select(groups.c.chatname, groups.c.directory_dn)
            .where(groups.c.directory_dn.is_not(None))
        )
    }


def is_synced_txn(connection: Connection, chatname: str) -> bool:
    return connection.execute(
        select(groups.c.directory_dn).where(groups.c.chatname == chatname)
    ).scalar() is not None


def _open_transaction(connection: Connection) -> None:
    """Make sure the transaction has begun before the name's savepoint.

    Python's sqlite3 module begins a transaction only before a write, so a
    SAVEPOINT that comes first (``claim_name_txn``) would be the outermost
    transaction, and its release would commit the claim alone, even in a
    transaction later rolled back (``--dry-run``). A write that changes
    nothing begins it; on PostgreSQL it is as harmless.
    """
    connection.execute(
        update(group_sync_runs).where(group_sync_runs.c.id == -1).values(node="")
    )


def _lock(connection: Connection, where: Any) -> Any:
    return connection.execute(
        select(groups.c.chatname, groups.c.directory_dn).where(where)
        .with_for_update(key_share=True)
    ).first()


def _directory_accounts(connection: Connection, wanted: list[str]) -> list[str]:
    """Those of *wanted* who have a directory account here, locked, by name."""
    if not wanted:
        return []
    return list(connection.execute(
        select(users.c.username)
        .where(users.c.username.in_(wanted) & (users.c.auth_method == "ldap"))
        .order_by(users.c.username).with_for_update(key_share=True)
    ).scalars())


def _at_group_limit(connection: Connection, usernames: list[str], max_groups: int) -> set[str]:
    if not usernames:
        return set()
    counts = dict(connection.execute(
        select(group_members.c.username, func.count())
        .where(group_members.c.username.in_(usernames))
        .group_by(group_members.c.username)
    ).all())
    return {name for name in usernames if counts.get(name, 0) >= max_groups}


def _name_refusal(connection: Connection, chatname: str, blocked_by: str) -> str:
    if blocked_by != chatname:
        return f"the name looks like the existing name {blocked_by!r}"
    kind = connection.execute(select(names.c.kind).where(names.c.name == chatname)).scalar()
    if kind == "user":
        return "a user has this name"
    return f"the name is taken ({kind or 'reserved'})"


def sync_group_txn(
    connection: Connection, dn: str, chatname: str, wanted: list[str], present: frozenset[str],
    online: set[str], max_members: int, max_groups: int, tell_all_later: bool = False,
    notice: bool = False,
) -> SyncOutcome:
    """One directory group's sync (see :meth:`GroupSyncStore.sync_group`).

    The group is found by its DN first (whatever its name here), else by
    *chatname*: a synced group there whose DN is no longer in the
    directory (*present*: every DN of this read) was moved in the
    directory and is taken over; any other group, a user or a name that
    looks like one are collisions, skipped. *tell_all_later*: every member
    removed is told at their next sign-in (chateau-admin cannot know who
    is online; the nodes take the notice of those who are, see
    ``chateau.handlers.synced_groups``). *notice*: write the notice the
    nodes act on.
    """
    wanted = sorted(set(wanted))
    _open_transaction(connection)
    row = _lock(connection, groups.c.directory_dn == dn)
    adopted_from = None
    if row is None:
        row = _lock(connection, groups.c.chatname == chatname)
        if row is not None:
            if row.directory_dn is None:
                return SyncOutcome(chatname, dn, skipped="a group not synced from the directory "
                                   "has this name")
            if row.directory_dn in present:
                return SyncOutcome(chatname, dn, skipped="the group synced from "
                                   f"{row.directory_dn} has this name")
            adopted_from = row.directory_dn
            connection.execute(
                update(groups).where(groups.c.chatname == chatname).values(directory_dn=dn)
            )
    accounts = _directory_accounts(connection, wanted)
    if row is None:
        return _create(connection, dn, chatname, accounts, online, max_members, max_groups,
                       notice)
    chatname = row.chatname
    current = set(connection.execute(
        select(group_members.c.username).where(group_members.c.chatname == chatname)
    ).scalars())
    removed = sorted(current - set(wanted))
    candidates = [name for name in accounts if name not in current]
    limited = _at_group_limit(connection, candidates, max_groups)
    added = [name for name in candidates if name not in limited]
    after = (current - set(removed)) | set(added)
    if len(after) > max_members:
        return SyncOutcome(chatname, dn, skipped=f"it would have {len(after)} members, more "
                           f"than [chat] max_group_members ({max_members})")
    now = now_millis()
    if removed:
        connection.execute(delete(group_members).where(
            (group_members.c.chatname == chatname) & group_members.c.username.in_(removed)
        ))
        for name in removed:
            if tell_all_later or name not in online:
                note_removal_txn(connection, name, chatname, DIRECTORY_ACTOR, "", False)
            record_txn(connection, DIRECTORY_ACTOR, "group_sync_remove", chatname, "",
                       {"user": name, "dn": dn})
    if added:
        connection.execute(insert(group_members), [
            {"chatname": chatname, "username": name, "notified": name in online,
             "role": MEMBER, "joined_at": now} for name in added
        ])
        for name in added:
            record_txn(connection, DIRECTORY_ACTOR, "group_sync_add", chatname, "",
                       {"user": name, "dn": dn})
    outcome = SyncOutcome(
        chatname, dn, added=tuple(added), removed=tuple(removed),
        before=tuple(sorted(current)), members=tuple(sorted(after)),
        limited=tuple(sorted(limited)), adopted_from=adopted_from,
    )
    if notice and outcome.changed:
        _notice(connection, outcome)
    return outcome


def _create(
    connection: Connection, dn: str, chatname: str, accounts: list[str], online: set[str],
    max_members: int, max_groups: int, notice: bool,
) -> SyncOutcome:
    limited = _at_group_limit(connection, accounts, max_groups)
    members = [name for name in accounts if name not in limited]
    if len(members) > max_members:
        return SyncOutcome(chatname, dn, skipped=f"it has {len(members)} members, more than "
                           f"[chat] max_group_members ({max_members})")
    if not members:
        return SyncOutcome(chatname, dn, waiting=True, limited=tuple(sorted(limited)))
    claim = claim_name_txn(connection, chatname, "group")
    if not claim:
        return SyncOutcome(chatname, dn, skipped=_name_refusal(
            connection, chatname, claim.blocked_by or chatname))
    now = now_millis()
    connection.execute(insert(groups).values(
        chatname=chatname, creator=DIRECTORY_ACTOR, created_at=now, directory_dn=dn,
    ))
    connection.execute(insert(group_members), [
        {"chatname": chatname, "username": name, "notified": name in online,
         "role": MEMBER, "joined_at": now} for name in members
    ])
    record_txn(connection, DIRECTORY_ACTOR, "group_sync_create", chatname, "",
               {"dn": dn, "members": members})
    outcome = SyncOutcome(chatname, dn, created=True, added=tuple(members),
                          members=tuple(members), limited=tuple(sorted(limited)))
    if notice:
        _notice(connection, outcome)
    return outcome


def _notice(connection: Connection, outcome: SyncOutcome) -> None:
    append_notice_txn(connection, NOTICE_KIND, {
        "chatname": outcome.chatname, "by": DIRECTORY_ACTOR, "created": outcome.created,
        "added": list(outcome.added), "removed": list(outcome.removed),
        "members": list(outcome.members),
    })


def rehearse(engine: Engine, txn: Callable[..., T], *args: Any) -> T:
    """Run *txn* in a transaction that is rolled back: what it would do, undone.

    ``chateau-admin ldap-sync --dry-run`` runs the very transactions of a
    sync this way, so what it prints is what a sync would do.
    """
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            return txn(connection, *args)
        finally:
            transaction.rollback()
