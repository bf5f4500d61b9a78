"""Accounts: users, the names they share with groups, session keys, disabling.

Transaction functions (``*_txn``) take a connection and return plain
records. The server runs them on the store's pool through :class:`Accounts`
and :class:`Sessions`, whose methods return Deferreds; ``chateau-admin``
(chateau.accounts) runs the same functions synchronously with
:func:`~chateau.store.engine.in_transaction`, composing several in one
transaction where an operation needs it.

One concern, an account's own rows (its user row, its name, its session
keys), hence its length; what a user does with their keys as devices is in
``devices``, what the directory changes in ``deprovisioning`` and ``identity``.
"""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from chateau.names import skeleton
from chateau.store.engine import Runner
from chateau.store.audit import record_txn
from chateau.store.records import (
    BAN_FOREVER,
    HELD,
    NameClaim,
    NameCollision,
    UserRecord,
    in_slices,
    new_session_id,
    now_millis,
)
from chateau.store.tables import messages, name_collisions, names, sessions, users


class Accounts:
    """User accounts: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def get_user(self, username: str) -> Deferred[UserRecord | None]:
        return self._runner.run(get_user_txn, username)

    def create_user(
        self, username: str, password_hash: str | None, auth_method: str,
        display_name: str | None = None,
    ) -> Deferred[NameClaim]:
        """Create an account; false when the name, or one it looks like, is taken."""
        return self._runner.run(
            create_user_txn, username, password_hash, auth_method, display_name
        )

    def missing_users(self, usernames: Iterable[str]) -> Deferred[list[str]]:
        """Those of *usernames* that are not accounts, in the order given."""
        return self._runner.run(missing_users_txn, list(usernames))

    def user_exists(self, username: str) -> Deferred[bool]:
        return self._runner.run(user_exists_txn, username)

    def disabled_among(self, usernames: Iterable[str]) -> Deferred[list[str]]:
        return self._runner.run(disabled_among_txn, list(usernames))

    def is_admin(self, username: str) -> Deferred[bool]:
        """Whether *username* is a server admin, as the database says now.

        Asked only when a rule would otherwise refuse, so granting or
        taking admin rights holds at once on every node, without a cache.
        """
        return self._runner.run(is_admin_txn, username)

    def set_admin(self, username: str, admin: bool) -> Deferred[bool]:
        """Grant or take server admin rights; False when there is no such user."""
        return self._runner.run(set_admin_txn, username, admin)

    def name_collisions(self) -> Deferred[list[NameCollision]]:
        """Existing names flagged as confusable with older ones."""
        return self._runner.run(name_collisions_txn)

    def ban(
        self, actor: str, username: str, until: int, reason: str
    ) -> Deferred[int | None]:
        """Ban *username* server-wide until *until* (ms; BAN_FOREVER: until
        unbanned), revoke their keys, record it; None when there is no such user."""
        return self._runner.run(ban_user_txn, actor, username, until, reason)

    def unban(self, actor: str, username: str) -> Deferred[bool | None]:
        """Lift a ban (recorded): True, False when none is in force, None when
        there is no such user."""
        return self._runner.run(unban_user_txn, actor, username)

    def held_until(self, name: str) -> Deferred[int | None]:
        """Until when (ms) *name* is held (an erased or renamed account's), or None."""
        return self._runner.run(held_until_txn, name)

    def banned_among(self, usernames: Iterable[str]) -> Deferred[list[str]]:
        """Those of *usernames* under a server-wide ban now."""
        return self._runner.run(banned_among_txn, list(usernames))


class Sessions:
    """Session keys, stored as their hashes: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def create_session(
        self, username: str, key_hash: str, lifetime: float, most: int | None = None,
        session_id: str | None = None, address: str | None = None,
        client_name: str | None = None, audit: dict[str, Any] | None = None,
    ) -> Deferred[int]:
        """Store a new key; past *most* live keys, the oldest are revoked. How many were.

        *session_id* is its public name (random when None); *address* and
        *client_name* where and what it is used from; with *audit* (the
        detail) the sign-in is recorded in the same transaction.
        """
        return self._runner.run(
            create_session_txn, username, key_hash, lifetime, most, session_id, address,
            client_name, audit,
        )

    def resume_session(self, key_hash: str) -> Deferred[UserRecord | None]:
        """The account of a live, unexpired key, unless the account is disabled.

        A banned account is returned (the caller refuses it, saying why)."""
        return self._runner.run(resume_session_txn, key_hash)

    def revoke_session(self, key_hash: str) -> Deferred[None]:
        return self._runner.run(revoke_session_txn, key_hash)

    def latest_revocation(self) -> Deferred[int]:
        """The newest ``revoked_at`` stamp of any account (0 for none)."""
        return self._runner.run(latest_revocation_txn)

    def revocations_since(self, since: int) -> Deferred[list[tuple[str, int]]]:
        """(username, revoked_at) of the accounts revoked after *since*."""
        return self._runner.run(revocations_since_txn, since)

    def live_keys(self, key_hashes: Iterable[str]) -> Deferred[set[str]]:
        """Those of *key_hashes* that are stored and unexpired, of enabled accounts."""
        return self._runner.run(live_keys_txn, list(key_hashes))


# -- users --------------------------------------------------------------------

def _user_record(row: Any) -> UserRecord:
    return UserRecord(
        row.username, row.password_hash, row.auth_method, row.display_name,
        bool(row.disabled), int(row.delivered_until), bool(row.is_admin),
        None if row.banned_until is None else int(row.banned_until), row.ban_reason,
        getattr(row, "status_text", None),
    )


def _not_banned(now: int) -> Any:
    """Accounts under no server-wide ban at *now* (a timed ban ends by itself)."""
    return users.c.banned_until.is_(None) | (users.c.banned_until <= now)


def get_user_txn(connection: Connection, username: str) -> UserRecord | None:
    row = connection.execute(select(users).where(users.c.username == username)).first()
    return None if row is None else _user_record(row)


def claim_name_txn(
    connection: Connection, name: str, kind: str, held_for: str | None = None
) -> NameClaim:
    """Reserve *name* in the shared namespace inside a savepoint.

    The primary key refuses the same name and the unique index on skeletons
    a confusable one, so two requests racing on different threads or nodes
    cannot both win, on SQLite and PostgreSQL alike.

    A held name (a renamed user's old name, kind "held") in the way is
    released when its hold has ended, or when it is held for *held_for*
    (the directory id of the account taking its own old name back); else
    the claim says until when it is held.
    """
    shape = skeleton(name)
    for _ in range(2):
        try:
            with connection.begin_nested():
                connection.execute(insert(names).values(name=name, kind=kind, skeleton=shape))
        except IntegrityError:
            blocker = name_in_the_way_txn(connection, name, shape)
            held = connection.execute(
                select(names.c.held_until, names.c.held_for)
                .where((names.c.name == blocker) & (names.c.kind == HELD))
            ).first()
            if held is None:
                return NameClaim(name, blocker)
            until = int(held.held_until or 0)
            if until > now_millis() and (held_for is None or held.held_for != held_for):
                return NameClaim(name, blocker, until)
            release_name_txn(connection, blocker)
            continue
        return NameClaim(name)
    return NameClaim(name, name_in_the_way_txn(connection, name, shape))


def name_in_the_way_txn(connection: Connection, name: str, shape: str) -> str:
    """The existing name that kept *name* (of skeleton *shape*) from being taken."""
    if connection.execute(select(names.c.name).where(names.c.name == name)).first():
        return name
    holder = connection.execute(
        select(names.c.name).where(names.c.skeleton == shape)
    ).scalar()
    return holder or name


def held_until_txn(connection: Connection, name: str) -> int | None:
    until = connection.execute(
        select(names.c.held_until).where((names.c.name == name) & (names.c.kind == "held"))
    ).scalar()
    return None if until is None else int(until)


def confusable_holder_txn(connection: Connection, name: str) -> str | None:
    """Another existing name *name* looks like (one indexed query), or None."""
    return connection.execute(
        select(names.c.name).where((names.c.skeleton == skeleton(name)) & (names.c.name != name))
    ).scalar()


def release_name_txn(connection: Connection, old: str, new: str | None = None) -> None:
    """Delete *old*'s namespace row, keeping the look-alike flags true.

    A name flagged as looking like *old* (name_collisions) had no skeleton
    of its own while *old* held it: the first such name takes it over and
    the others are flagged against that one; when *new* (the name that
    replaces *old*, already claimed) holds the same skeleton, they are
    flagged against *new*.
    """
    connection.execute(delete(name_collisions).where(name_collisions.c.name == old))
    shape = connection.execute(select(names.c.skeleton).where(names.c.name == old)).scalar()
    flagged = list(connection.execute(
        select(name_collisions.c.name)
        .where(name_collisions.c.confusable_with == old)
        .order_by(name_collisions.c.flagged_at, name_collisions.c.name)
    ).scalars())
    connection.execute(update(names).where(names.c.name == old).values(skeleton=None))
    if flagged:
        if shape is not None and new is not None and skeleton(new) == shape:
            heir = new
        else:
            heir = flagged.pop(0)
            connection.execute(delete(name_collisions).where(name_collisions.c.name == heir))
            connection.execute(update(names).where(names.c.name == heir).values(skeleton=shape))
        connection.execute(
            update(name_collisions)
            .where(name_collisions.c.confusable_with == old)
            .values(confusable_with=heir)
        )
    connection.execute(delete(names).where(names.c.name == old))


def name_collisions_txn(connection: Connection) -> list[NameCollision]:
    """Every flagged name, with the older name it looks like, by name."""
    kinds = {row.name: row.kind for row in connection.execute(select(names.c.name, names.c.kind))}
    rows = connection.execute(select(name_collisions).order_by(name_collisions.c.name))
    return [
        NameCollision(row.name, kinds.get(row.name, "?"), row.confusable_with,
                      kinds.get(row.confusable_with, "?"), int(row.flagged_at))
        for row in rows
    ]


def create_user_txn(
    connection: Connection, username: str, password_hash: str | None,
    auth_method: str, display_name: str | None, held_for: str | None = None,
) -> NameClaim:
    claim = claim_name_txn(connection, username, "user", held_for)
    if not claim:
        return claim
    last = connection.execute(select(func.max(messages.c.id))).scalar() or 0
    connection.execute(
        insert(users).values(
            username=username,
            password_hash=password_hash,
            auth_method=auth_method,
            display_name=display_name,
            disabled=False,
            created_at=now_millis(),
            delivered_until=last,
        )
    )
    return claim


def missing_users_txn(connection: Connection, usernames: list[str]) -> list[str]:
    if not usernames:
        return []
    found = set(
        connection.execute(
            select(users.c.username).where(users.c.username.in_(usernames))
        ).scalars()
    )
    return [name for name in usernames if name not in found]


def user_exists_txn(connection: Connection, username: str) -> bool:
    return not missing_users_txn(connection, [username])


def is_admin_txn(connection: Connection, username: str) -> bool:
    query = select(users.c.is_admin).where(users.c.username == username)
    return bool(connection.execute(query).scalar())


def set_admin_txn(connection: Connection, username: str, admin: bool) -> bool:
    result = connection.execute(
        update(users).where(users.c.username == username).values(is_admin=admin)
    )
    return bool(result.rowcount)


def disabled_among_txn(connection: Connection, usernames: list[str]) -> list[str]:
    found: list[str] = []
    for part in in_slices(usernames):
        found.extend(connection.execute(
            select(users.c.username).where(users.c.username.in_(part) & users.c.disabled)
        ).scalars())
    return sorted(set(found))


def name_owner_txn(
    connection: Connection, name: str
) -> tuple[str | None, str | None, str | None]:
    """What holds *name*: its kind ("user", "group" or None), for a user the
    sign-in method, and for a free name the existing name it looks like, if any."""
    kind = connection.execute(select(names.c.kind).where(names.c.name == name)).scalar()
    method = connection.execute(
        select(users.c.auth_method).where(users.c.username == name)
    ).scalar()
    alike = confusable_holder_txn(connection, name) if kind is None else None
    return kind, method, alike


# -- administration (chateau-admin) -------------------------------------------

def set_password_hash_txn(connection: Connection, username: str, password_hash: str) -> None:
    connection.execute(
        update(users).where(users.c.username == username).values(password_hash=password_hash)
    )


def set_disabled_txn(connection: Connection, username: str, disabled: bool) -> None:
    connection.execute(
        update(users).where(users.c.username == username).values(disabled=disabled)
    )


def list_users_txn(connection: Connection) -> list[UserRecord]:
    """Every account, by username."""
    rows = connection.execute(select(users).order_by(users.c.username))
    return [_user_record(row) for row in rows]


def session_counts_txn(connection: Connection) -> dict[str, int]:
    """How many session keys each user has stored (expired ones included)."""
    counts: dict[str, int] = {}
    for (name,) in connection.execute(select(sessions.c.username)):
        counts[name] = counts.get(name, 0) + 1
    return counts


def ban_user_txn(
    connection: Connection, actor: str, username: str, until: int, reason: str
) -> int | None:
    """Ban, revoke every key (running servers close the connections) and
    record it in the moderation log, in one transaction; how many keys went."""
    result = connection.execute(
        update(users).where(users.c.username == username)
        .values(banned_until=until, ban_reason=reason)
    )
    if not result.rowcount:
        return None
    revoked = revoke_all_sessions_txn(connection, username)
    record_txn(connection, actor, "user_ban", username, reason,
               {"until": None if until >= BAN_FOREVER else until})
    return revoked


def unban_user_txn(connection: Connection, actor: str, username: str) -> bool | None:
    row = connection.execute(
        select(users.c.banned_until).where(users.c.username == username)
    ).first()
    if row is None:
        return None
    if row.banned_until is None or row.banned_until <= now_millis():
        return False
    connection.execute(
        update(users).where(users.c.username == username)
        .values(banned_until=None, ban_reason=None)
    )
    record_txn(connection, actor, "user_unban", username)
    return True


def banned_among_txn(connection: Connection, usernames: list[str]) -> list[str]:
    if not usernames:
        return []
    return list(
        connection.execute(
            select(users.c.username)
            .where(users.c.username.in_(usernames) & ~_not_banned(now_millis()))
        ).scalars()
    )


# -- sessions -----------------------------------------------------------------

def create_session_txn(
    connection: Connection, username: str, key_hash: str, lifetime: float,
    most: int | None = None, session_id: str | None = None, address: str | None = None,
    client_name: str | None = None, audit: dict[str, Any] | None = None,
) -> int:
    now = now_millis()
    connection.execute(
        delete(sessions).where((sessions.c.username == username) & (sessions.c.expires_at <= now))
    )
    connection.execute(
        insert(sessions).values(
            key_hash=key_hash, username=username, created_at=now,
            expires_at=now + int(lifetime * 1000), id=session_id or new_session_id(),
            last_used_at=now, address=address[:64] if address else None,
            client_name=client_name,
            # A new key (device) syncs from here (SyncRequest without since).
            sync_position=select(func.coalesce(func.max(messages.c.id), 0)).scalar_subquery(),
        )
    )
    if audit is not None:
        record_txn(connection, username, "sign_in", username, "", audit, address)
    if most is None:
        return 0
    # The newest *most* keys stay; older ones are revoked, and the stamp
    # tells every node to close the connections that used them.
    extra = list(
        connection.execute(
            select(sessions.c.key_hash)
            .where(sessions.c.username == username)
            .order_by(sessions.c.created_at.desc(), sessions.c.key_hash.desc())
            .offset(most)
        ).scalars()
    )
    if key_hash in extra:  # created in the same millisecond as older ones: keep the new one
        extra.remove(key_hash)
    if not extra:
        return 0
    connection.execute(delete(sessions).where(sessions.c.key_hash.in_(extra)))
    mark_revoked_txn(connection, username)
    return len(extra)


def resume_session_txn(connection: Connection, key_hash: str) -> UserRecord | None:
    row = connection.execute(
        select(users)
        .join(sessions, sessions.c.username == users.c.username)
        .where(
            (sessions.c.key_hash == key_hash)
            & (sessions.c.expires_at > now_millis())
            & ~users.c.disabled
        )
    ).first()
    return None if row is None else _user_record(row)


def revoke_session_txn(connection: Connection, key_hash: str) -> None:
    connection.execute(delete(sessions).where(sessions.c.key_hash == key_hash))


def revoke_all_sessions_txn(connection: Connection, username: str) -> int:
    """Revoke every key of *username*; running servers close its connections."""
    mark_revoked_txn(connection, username)
    return connection.execute(delete(sessions).where(sessions.c.username == username)).rowcount


def mark_revoked_txn(connection: Connection, username: str) -> None:
    """Stamp the account's revocation, always later than its previous stamp."""
    previous = connection.execute(
        select(users.c.revoked_at).where(users.c.username == username)
    ).scalar() or 0
    connection.execute(
        update(users).where(users.c.username == username)
        .values(revoked_at=max(now_millis(), previous + 1))
    )


def latest_revocation_txn(connection: Connection) -> int:
    return int(connection.execute(select(func.max(users.c.revoked_at))).scalar() or 0)


def revocations_since_txn(connection: Connection, since: int) -> list[tuple[str, int]]:
    """Accounts stamped after *since* (never those never revoked, stamped 0)."""
    rows = connection.execute(
        select(users.c.username, users.c.revoked_at)
        .where(users.c.revoked_at > max(since, 0))
    )
    return [(row.username, int(row.revoked_at)) for row in rows]


def live_keys_txn(connection: Connection, key_hashes: list[str]) -> set[str]:
    if not key_hashes:
        return set()
    return set(
        connection.execute(
            select(sessions.c.key_hash)
            .join(users, users.c.username == sessions.c.username)
            .where(
                sessions.c.key_hash.in_(key_hashes)
                & (sessions.c.expires_at > now_millis())
                & ~users.c.disabled
                & _not_banned(now_millis())
            )
        ).scalars()
    )
