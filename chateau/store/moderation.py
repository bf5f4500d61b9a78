"""The moderation log: every moderation action, who took it, on whom, when and why.

Group removals and bans, server bans, deletions by admins, announcements
and resolved reports are each recorded here, in the same transaction as the
action where the action is itself a transaction function (pass
:func:`record_txn` the same connection), or through :class:`Moderation`
right after it. ``chateau-admin`` reads it; nothing ever rewrites it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.records import now_millis
from chateau.store.tables import moderation_log


@dataclass(frozen=True)
class ModerationEntry:
    id: int
    at: int
    actor: str
    action: str
    target: str
    reason: str
    detail: dict[str, Any]


class Moderation:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def record(
        self, actor: str, action: str, target: str, reason: str = "", **detail: Any
    ) -> Deferred[int]:
        """Record one action; fires with its id."""
        return self._runner.run(record_txn, actor, action, target, reason, detail)

    def entries(self, limit: int = 100, target: str | None = None) -> Deferred[list[ModerationEntry]]:
        """The newest entries first (of one target when given)."""
        return self._runner.run(entries_txn, limit, target)


def record_txn(
    connection: Connection, actor: str, action: str, target: str, reason: str = "",
    detail: dict[str, Any] | None = None,
) -> int:
    result = connection.execute(
        insert(moderation_log).values(
            at=now_millis(), actor=actor, action=action, target=target, reason=reason or "",
            detail=json.dumps(detail or {}, sort_keys=True),
        )
    )
    return int(result.inserted_primary_key[0])


def entries_txn(
    connection: Connection, limit: int = 100, target: str | None = None
) -> list[ModerationEntry]:
    query = select(moderation_log).order_by(moderation_log.c.id.desc()).limit(limit)
    if target is not None:
        query = query.where(moderation_log.c.target == target)
    return [
        ModerationEntry(int(row.id), int(row.at), row.actor, row.action, row.target, row.reason,
                        json.loads(row.detail or "{}"))
        for row in connection.execute(query)
    ]
