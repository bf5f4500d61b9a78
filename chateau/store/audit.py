"""The audit log: who did what, to whom, when, from where and why.

Sign-ins (both outcomes), password changes, session revocations,
deprovisioning, exports, erasures, and every administrative and moderation
action (group removals and bans, server bans, deletions by admins,
announcements, resolved reports...) are each one row. An action that is
itself a transaction function records its row in the same transaction (pass
:func:`record_txn` the same connection); others go through :class:`Audit`
right after the action. ``chateau-admin audit`` reads it; only the purge of
rows older than ``[chat] audit_retention_days`` ever deletes from it.

Never put a password, a session key or an invite code in ``reason`` or
``detail``: the log is read by operators and kept for a year.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.records import now_millis
from chateau.store.tables import audit_log

# Widest values the table keeps; longer ones are cut, never refused: an
# audit row must not make the action it records fail.
_ACTOR_LENGTH = 64
_ADDRESS_LENGTH = 64
_TARGET_LENGTH = 160


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: int
    actor: str
    action: str
    target: str
    reason: str
    address: str | None
    detail: dict[str, Any]


class Audit:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def record(
        self, actor: str, action: str, target: str, reason: str = "",
        address: str | None = None, **detail: Any,
    ) -> Deferred[int]:
        """Record one action; fires with its id."""
        return self._runner.run(record_txn, actor, action, target, reason, detail, address)

    def entries(
        self, limit: int = 100, target: str | None = None, user: str | None = None,
        since: int | None = None,
    ) -> Deferred[list[AuditEntry]]:
        """The newest entries first: of one target, or one user as actor or target, since a time."""
        return self._runner.run(entries_txn, limit, target, user, since)

    def purge(self, before: int, batch: int = 1000) -> Deferred[int]:
        """Delete up to *batch* rows older than *before* (ms); fires with how many went."""
        return self._runner.run(purge_txn, before, batch)


def record_txn(
    connection: Connection, actor: str, action: str, target: str, reason: str = "",
    detail: dict[str, Any] | None = None, address: str | None = None,
) -> int:
    result = connection.execute(
        insert(audit_log).values(
            at=now_millis(), actor=actor[:_ACTOR_LENGTH], action=action,
            target=target[:_TARGET_LENGTH], reason=reason or "",
            address=address[:_ADDRESS_LENGTH] if address else None,
            detail=json.dumps(detail or {}, sort_keys=True),
        )
    )
    return int(result.inserted_primary_key[0])


def entries_txn(
    connection: Connection, limit: int = 100, target: str | None = None,
    user: str | None = None, since: int | None = None,
) -> list[AuditEntry]:
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if target is not None:
        query = query.where(audit_log.c.target == target)
    if user is not None:
        query = query.where(or_(audit_log.c.actor == user, audit_log.c.target == user))
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    return [
        AuditEntry(int(row.id), int(row.at), row.actor, row.action, row.target, row.reason,
                   row.address, json.loads(row.detail or "{}"))
        for row in connection.execute(query)
    ]


def purge_txn(connection: Connection, before: int, batch: int = 1000) -> int:
    """One batch of the purge, oldest first, so a big backlog never holds a long lock."""
    ids = [row.id for row in connection.execute(
        select(audit_log.c.id).where(audit_log.c.at < before).order_by(audit_log.c.id).limit(batch)
    )]
    if not ids:
        return 0
    connection.execute(delete(audit_log).where(audit_log.c.id.in_(ids)))
    return len(ids)
