"""Deprovisioning: which directory accounts are due a check, claims, and the verdicts.

A directory account with live session keys (or connections) is checked
against the directory again every ``[ldap] recheck_interval``
(chateau.deprovisioning). ``users.directory_checked_at`` says when it last
was (or last signed in against the directory). A node *claims* a due
account by moving that stamp to now in an ``UPDATE ... WHERE
directory_checked_at`` is older than the cutoff: the database lets one
transaction win, so two nodes never check the same account in one interval
(on PostgreSQL the loser's UPDATE waits for the winner's commit and then
finds the row no longer due; accounts are claimed in name order, so two
claims never deadlock). A check the directory could not answer gives its
claim back, and the account is due again at once.

An account that fails is deprovisioned in one transaction: every session
key revoked and the revocation stamped (chateau.signout closes its
connections on every node), ``deprovisioned_at`` and ``deprovision_reason``
set, and the audit log's ``deprovision`` row written. A directory sign-in
that succeeds again clears the mark (audit ``reprovision``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import exists, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.accounts import revoke_all_sessions_txn
from chateau.store.audit import record_txn
from chateau.store.engine import Runner
from chateau.store.tables import sessions, users

# The sign-in method of directory accounts (chateau.auth.DIRECTORY; the store
# does not import the auth package).
_DIRECTORY = "ldap"
# The actor of what the directory decides, in the audit log.
DIRECTORY_ACTOR = "directory"
# How many names go in one IN (...) list: SQLite's older builds allow 999
# parameters a statement.
_CHUNK = 500


@dataclass(frozen=True)
class DueAccount:
    """A directory account claimed for a check: its name, stable id and previous stamp."""

    username: str
    directory_id: str | None
    previous: int | None  # directory_checked_at before the claim
    claimed_at: int


@dataclass(frozen=True)
class Deprovisioned:
    """Since when (ms) and why an account is deprovisioned."""

    at: int
    reason: str


class Deprovisioning:
    """The claims and verdicts of directory re-checks: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def claim_due(
        self, now: int, cutoff: int, online: Iterable[str], limit: int
    ) -> Deferred[list[DueAccount]]:
        """Claim up to *limit* directory accounts last checked before *cutoff* that
        have a live session key at *now*, or are among *online*; in name order."""
        return self._runner.run(claim_due_txn, now, cutoff, list(online), limit)

    def claim_one(self, username: str, now: int, cutoff: int) -> Deferred[DueAccount | None]:
        """Claim *username* if it is a directory account last checked before *cutoff*."""
        return self._runner.run(claim_one_txn, username, now, cutoff)

    def release(self, claims: Iterable[DueAccount]) -> Deferred[int]:
        """Give claims back (the directory could not answer): due again at once."""
        return self._runner.run(release_txn, list(claims))

    def deprovision(
        self, username: str, reason: str, now: int, **detail: Any
    ) -> Deferred[int | None]:
        """Revoke every key, mark the account and audit it; how many keys went
        (None when it is not a directory account)."""
        return self._runner.run(deprovision_txn, username, reason, now, detail)

    def signed_in(self, username: str, now: int) -> Deferred[bool]:
        """A directory sign-in succeeded: stamp the check; True when it reprovisioned."""
        return self._runner.run(signed_in_txn, username, now)

    def deprovisioned(self) -> Deferred[dict[str, Deprovisioned]]:
        return self._runner.run(deprovisioned_txn)


def _due(cutoff: int) -> Any:
    return users.c.directory_checked_at.is_(None) | (users.c.directory_checked_at < cutoff)


def _chunks(names: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(names), _CHUNK):
        yield names[start:start + _CHUNK]


def _claim_txn(connection: Connection, row: Any, now: int, cutoff: int) -> DueAccount | None:
    """Move the stamp of *row*'s account to *now* if it is still due; the claim, or None."""
    claimed = connection.execute(
        update(users)
        .where((users.c.username == row.username) & _due(cutoff))
        .values(directory_checked_at=now)
    ).rowcount
    if not claimed:
        return None
    previous = None if row.directory_checked_at is None else int(row.directory_checked_at)
    return DueAccount(row.username, row.directory_id, previous, now)


def claim_due_txn(
    connection: Connection, now: int, cutoff: int, online: list[str], limit: int
) -> list[DueAccount]:
    columns = (users.c.username, users.c.directory_id, users.c.directory_checked_at)
    candidates = (
        (users.c.auth_method == _DIRECTORY)
        & users.c.deprovisioned_at.is_(None)
        & _due(cutoff)
    )
    live_key = exists().where(
        (sessions.c.username == users.c.username) & (sessions.c.expires_at > now)
    )
    rows = {
        row.username: row
        for row in connection.execute(
            select(*columns).where(candidates & live_key)
            .order_by(users.c.username).limit(limit)
        )
    }
    for names in _chunks(sorted(set(online))):
        for row in connection.execute(
            select(*columns).where(candidates & users.c.username.in_(names))
            .order_by(users.c.username).limit(limit)
        ):
            rows.setdefault(row.username, row)
    claims = []
    for username in sorted(rows)[:limit]:
        claim = _claim_txn(connection, rows[username], now, cutoff)
        if claim is not None:
            claims.append(claim)
    return claims


def claim_one_txn(
    connection: Connection, username: str, now: int, cutoff: int
) -> DueAccount | None:
    row = connection.execute(
        select(users.c.username, users.c.directory_id, users.c.directory_checked_at)
        .where((users.c.username == username) & (users.c.auth_method == _DIRECTORY)
               & _due(cutoff))
    ).first()
    return None if row is None else _claim_txn(connection, row, now, cutoff)


def release_txn(connection: Connection, claims: list[DueAccount]) -> int:
    released = 0
    for claim in claims:
        # Only our own claim: a sign-in since then stamped a newer check.
        released += connection.execute(
            update(users)
            .where((users.c.username == claim.username)
                   & (users.c.directory_checked_at == claim.claimed_at))
            .values(directory_checked_at=claim.previous)
        ).rowcount
    return released


def deprovision_txn(
    connection: Connection, username: str, reason: str, now: int, detail: dict[str, Any]
) -> int | None:
    row = connection.execute(
        select(users.c.deprovisioned_at)
        .where((users.c.username == username) & (users.c.auth_method == _DIRECTORY))
    ).first()
    if row is None:
        return None
    revoked = revoke_all_sessions_txn(connection, username)
    if row.deprovisioned_at is None:
        connection.execute(
            update(users).where(users.c.username == username)
            .values(deprovisioned_at=now, deprovision_reason=reason)
        )
        record_txn(connection, DIRECTORY_ACTOR, "deprovision", username, reason,
                   {**detail, "sessions": revoked})
    return revoked


def signed_in_txn(connection: Connection, username: str, now: int) -> bool:
    row = connection.execute(
        select(users.c.deprovisioned_at, users.c.deprovision_reason)
        .where((users.c.username == username) & (users.c.auth_method == _DIRECTORY))
    ).first()
    if row is None:
        return False
    connection.execute(
        update(users).where(users.c.username == username)
        .values(directory_checked_at=now, deprovisioned_at=None, deprovision_reason=None)
    )
    if row.deprovisioned_at is None:
        return False
    record_txn(connection, DIRECTORY_ACTOR, "reprovision", username, "",
               {"was": row.deprovision_reason, "since": int(row.deprovisioned_at)})
    return True


def deprovisioned_txn(connection: Connection) -> dict[str, Deprovisioned]:
    rows = connection.execute(
        select(users.c.username, users.c.deprovisioned_at, users.c.deprovision_reason)
        .where(users.c.deprovisioned_at.is_not(None))
    )
    return {
        row.username: Deprovisioned(int(row.deprovisioned_at), row.deprovision_reason or "")
        for row in rows
    }
