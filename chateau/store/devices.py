"""A user's session keys as devices, their password, and their profile.

What a signed-in user manages themselves: the keys they hold (listed by
their public ``id``, never the key; revoked one by one), their password
(changing it revokes every other key), and their profile (display name and
status text). Each change is recorded in the audit log in its own
transaction (``store.audit``); a revocation also stamps ``users.revoked_at``
(``mark_revoked_txn``), so every node closes the connections of the keys
that went (chateau.signout).

Resuming with a key (:func:`resume_with_key_txn`) records when and from
where it was used, and the sign-in, in one transaction. While a key is in
use its ``last_used_at`` is refreshed by :func:`touch_keys_txn`, which the
node runs every few minutes for the keys of its connections
(chateau.session_use), never once per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.accounts import _user_record, mark_revoked_txn
from chateau.store.audit import record_txn
from chateau.store.engine import Runner
from chateau.store.records import DeviceRecord, ProfileRecord, UserRecord, now_millis
from chateau.store.tables import sessions, users

# What the audit log says of a sign-in whose key matched no live key.
UNKNOWN_KEY = "?"
# How much of a client's address is kept (sessions.address, audit_log.address).
ADDRESS_LENGTH = 64
# How many keys one UPDATE of touch_keys_txn marks used.
TOUCH_BATCH = 500
# ProfileRequest: a field given as this is left as it is.
UNCHANGED: Any = object()


@dataclass(frozen=True)
class KeyUse:
    """A resume's outcome: the account (None: no live key) and the key's public id."""

    user: UserRecord | None
    session_id: str | None


def _address(address: str | None) -> str | None:
    return address[:ADDRESS_LENGTH] if address else None


class Devices:
    """Each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def resume(
        self, key_hash: str, address: str | None, client_name: str | None
    ) -> Deferred[KeyUse]:
        """Resume with a key: see :func:`resume_with_key_txn`."""
        return self._runner.run(resume_with_key_txn, key_hash, address, client_name)

    def touch(self, key_hashes: Iterable[str], every: int) -> Deferred[int]:
        """Mark keys in use now, those not marked within *every* ms; how many were."""
        return self._runner.run(touch_keys_txn, sorted(set(key_hashes)), every)

    def list_devices(
        self, username: str, current_key_hash: str | None
    ) -> Deferred[list[DeviceRecord]]:
        return self._runner.run(list_devices_txn, username, current_key_hash)

    def revoke(
        self, username: str, session_id: str, address: str | None
    ) -> Deferred[str | None]:
        """Revoke one of *username*'s keys by id; its hash, or None when they hold no such key."""
        return self._runner.run(revoke_device_txn, username, session_id, address)

    def change_password(
        self, username: str, password_hash: str, keep_key_hash: str | None, address: str | None
    ) -> Deferred[int]:
        """Set a local account's password hash and revoke every other key; how many went."""
        return self._runner.run(
            change_password_txn, username, password_hash, keep_key_hash, address
        )

    def profile(self, username: str) -> Deferred[ProfileRecord | None]:
        return self._runner.run(profile_txn, username)

    def set_profile(
        self, username: str, display_name: Any, status_text: Any, address: str | None
    ) -> Deferred[ProfileRecord | None]:
        """Change the fields not :data:`UNCHANGED` ("" stores NULL); the profile after."""
        return self._runner.run(set_profile_txn, username, display_name, status_text, address)

    def profiles(self, usernames: Iterable[str]) -> Deferred[dict[str, ProfileRecord]]:
        return self._runner.run(profiles_txn, sorted(set(usernames)))


def resume_with_key_txn(
    connection: Connection, key_hash: str, address: str | None, client_name: str | None
) -> KeyUse:
    """The account of a live key of an enabled account, the use recorded.

    A live key of an account not banned is marked used now, from *address*
    (and *client_name*, when the client sent one), and the sign-in recorded;
    no such key, or a banned account, is recorded as a failed sign-in. A
    banned account is still returned: the caller refuses it saying why.
    """
    now = now_millis()
    row = connection.execute(
        select(users, sessions.c.id.label("session_id"))
        .join(sessions, sessions.c.username == users.c.username)
        .where((sessions.c.key_hash == key_hash) & (sessions.c.expires_at > now)
               & ~users.c.disabled)
    ).first()
    if row is None:
        record_txn(connection, UNKNOWN_KEY, "sign_in_failed", UNKNOWN_KEY,
                   "session key is invalid, expired or revoked",
                   {"method": None, "via": "resume"}, _address(address))
        return KeyUse(None, None)
    user = _user_record(row)
    detail = {"method": user.auth_method, "via": "resume"}
    refusal = user.ban_refusal(now)
    if refusal is not None:
        record_txn(connection, user.username, "sign_in_failed", user.username, "banned",
                   detail, _address(address))
        return KeyUse(user, row.session_id)
    values: dict[str, Any] = {"last_used_at": now, "address": _address(address)}
    if client_name is not None:
        values["client_name"] = client_name
    connection.execute(update(sessions).where(sessions.c.key_hash == key_hash).values(**values))
    record_txn(connection, user.username, "sign_in", user.username, "", detail,
               _address(address))
    return KeyUse(user, row.session_id)


def touch_keys_txn(connection: Connection, key_hashes: list[str], every: int) -> int:
    """Mark *key_hashes* used now, those not marked within *every* ms; how many were.

    In batches of :data:`TOUCH_BATCH` keys, so a node with many connections
    stays within the databases' limits on bound parameters.
    """
    now = now_millis()
    stale = sessions.c.last_used_at.is_(None) | (sessions.c.last_used_at <= now - every)
    touched = 0
    for start in range(0, len(key_hashes), TOUCH_BATCH):
        batch = key_hashes[start:start + TOUCH_BATCH]
        touched += connection.execute(
            update(sessions).where(sessions.c.key_hash.in_(batch) & stale)
            .values(last_used_at=now)
        ).rowcount
    return touched


def list_devices_txn(
    connection: Connection, username: str, current_key_hash: str | None
) -> list[DeviceRecord]:
    """*username*'s live keys, the most recently used first."""
    used = func.coalesce(sessions.c.last_used_at, sessions.c.created_at)
    rows = connection.execute(
        select(sessions)
        .where((sessions.c.username == username) & (sessions.c.expires_at > now_millis()))
        .order_by(used.desc(), sessions.c.created_at.desc(), sessions.c.id)
    )
    return [
        DeviceRecord(
            row.id, int(row.created_at),
            None if row.last_used_at is None else int(row.last_used_at),
            row.address, row.client_name, row.key_hash == current_key_hash,
        )
        for row in rows
    ]


def revoke_device_txn(
    connection: Connection, username: str, session_id: str, address: str | None
) -> str | None:
    key_hash = connection.execute(
        select(sessions.c.key_hash)
        .where((sessions.c.id == session_id) & (sessions.c.username == username))
    ).scalar()
    if key_hash is None:
        return None
    connection.execute(delete(sessions).where(sessions.c.key_hash == key_hash))
    mark_revoked_txn(connection, username)
    record_txn(connection, username, "session_revoke", username, "", {"id": session_id},
               _address(address))
    return str(key_hash)


def change_password_txn(
    connection: Connection, username: str, password_hash: str, keep_key_hash: str | None,
    address: str | None,
) -> int:
    connection.execute(
        update(users).where(users.c.username == username).values(password_hash=password_hash)
    )
    others = sessions.c.username == username
    if keep_key_hash is not None:
        others = others & (sessions.c.key_hash != keep_key_hash)
    revoked = connection.execute(delete(sessions).where(others)).rowcount
    record_txn(connection, username, "password_change", username, "", {}, _address(address))
    if revoked:
        mark_revoked_txn(connection, username)
        record_txn(connection, username, "sessions_revoked", username, "password_change",
                   {"count": revoked}, _address(address))
    return int(revoked)


def _profile(row: Any) -> ProfileRecord:
    return ProfileRecord(row.username, row.auth_method, row.display_name, row.status_text)


def profile_txn(connection: Connection, username: str) -> ProfileRecord | None:
    row = connection.execute(
        select(users.c.username, users.c.auth_method, users.c.display_name, users.c.status_text)
        .where(users.c.username == username)
    ).first()
    return None if row is None else _profile(row)


def set_profile_txn(
    connection: Connection, username: str, display_name: Any, status_text: Any,
    address: str | None,
) -> ProfileRecord | None:
    values = {}
    if display_name is not UNCHANGED:
        values["display_name"] = display_name or None
    if status_text is not UNCHANGED:
        values["status_text"] = status_text or None
    if values:
        result = connection.execute(
            update(users).where(users.c.username == username).values(**values)
        )
        if not result.rowcount:
            return None
        # Which fields changed, not what they say: the profile itself is the record.
        record_txn(connection, username, "profile", username, "",
                   {"fields": sorted(values)}, _address(address))
    return profile_txn(connection, username)


def profiles_txn(connection: Connection, usernames: list[str]) -> dict[str, ProfileRecord]:
    if not usernames:
        return {}
    rows = connection.execute(
        select(users.c.username, users.c.auth_method, users.c.display_name, users.c.status_text)
        .where(users.c.username.in_(usernames))
    )
    return {row.username: _profile(row) for row in rows}
