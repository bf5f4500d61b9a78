"""Notices to every node: changes made in the database that nodes must act on.

``chateau-admin`` reaches only the database, and a cluster's nodes share
only it and Redis; so a change every node must act on (an announcement, a
message or a group deleted by an operator) is appended here as a notice
(kind + JSON body), in the same transaction as the change itself, and every
node polls for notices newer than the last it has seen (chateau.notices).
Appending also deletes notices older than :data:`KEEP_MS`: a node that was
down that long reloads its state at start-up anyway.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.records import now_millis
from chateau.store.tables import admin_notices

# How long a notice is kept (ms): a day.
KEEP_MS = 24 * 3600 * 1000
# The most notices one poll reads; the next poll reads on from there.
POLL_BATCH = 500


@dataclass(frozen=True)
class Notice:
    id: int
    at: int
    kind: str
    body: dict[str, Any]


class Notices:
    """Notices to every node: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def append(self, kind: str, body: dict[str, Any]) -> Deferred[int]:
        return self._runner.run(append_notice_txn, kind, body)

    def latest(self) -> Deferred[tuple[int, int]]:
        """The newest notice's id and the newest stamp (0, 0 for none)."""
        return self._runner.run(latest_notice_txn)

    def since(
        self, after: int, stamped_from: int | None = None, skip: Iterable[int] = ()
    ) -> Deferred[list[Notice]]:
        """Notices with ids above *after*, or stamped at or after *stamped_from*
        (ms), but not those in *skip*; oldest first, at most POLL_BATCH."""
        return self._runner.run(notices_since_txn, after, stamped_from, sorted(skip))


def append_notice_txn(connection: Connection, kind: str, body: dict[str, Any]) -> int:
    now = now_millis()
    connection.execute(delete(admin_notices).where(admin_notices.c.at < now - KEEP_MS))
    result = connection.execute(
        insert(admin_notices).values(at=now, kind=kind, body=json.dumps(body, sort_keys=True))
    )
    return int(result.inserted_primary_key[0])


def latest_notice_txn(connection: Connection) -> tuple[int, int]:
    row = connection.execute(
        select(func.max(admin_notices.c.id), func.max(admin_notices.c.at))
    ).first()
    return (int(row[0] or 0), int(row[1] or 0)) if row is not None else (0, 0)


def notices_since_txn(
    connection: Connection, after: int, stamped_from: int | None = None,
    skip: list[int] | None = None,
) -> list[Notice]:
    wanted = admin_notices.c.id > after
    if stamped_from is not None:
        wanted = wanted | (admin_notices.c.at >= stamped_from)
    if skip:
        wanted = wanted & admin_notices.c.id.not_in(skip)
    rows = connection.execute(
        select(admin_notices).where(wanted).order_by(admin_notices.c.id).limit(POLL_BATCH)
    )
    return [Notice(int(row.id), int(row.at), row.kind, json.loads(row.body)) for row in rows]
