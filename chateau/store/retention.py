"""Retention: deleting messages older than their chat keeps them, in batches.

Each chat keeps its messages for its group's ``retention_days`` when the
group sets one, else for the server's ``[chat] retention_days``; 0 keeps
them forever. :func:`purge_batch_txn` deletes one batch (one transaction,
a bounded number of rows, so a big backlog never holds a long lock or a
long write); chateau.retention drives the batches, on the store's pool.

Messages are found in id order from where the previous batch stopped
(``after``), so a run reads the table once; a group's own retention is read
through ``ix_messages_chat_id``. On SQLite, the newest message of the whole
table is never deleted: SQLite gives a new row the highest id plus one, so
deleting the newest would hand its id out again, below delivery cursors
that already passed it (PostgreSQL's sequence never goes back).

``direct_chats`` rows stay when their chat's messages go: they hold no
words, only who has a direct chat with whom, and each node's message writer
remembers the chats it recorded there and records a chat only with its
first message, so deleting the row would hide that pair's next messages
from offline delivery.

``scheduled_runs`` lets one node of a cluster claim a periodic job
(:func:`claim_run_txn`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.tables import audit_log, groups, messages, scheduled_runs, upsert

DAY_MS = 86_400_000


@dataclass(frozen=True)
class PurgePlan:
    """What one run deletes: per group with its own retention, and for the rest.

    *own* maps each group that sets its own retention (days > 0) to its
    cutoff (ms: messages created before it go); *default_cutoff* is the
    cutoff of every other chat (None: kept forever); *keep_from* is the
    lowest id never deleted (SQLite's newest message; None on PostgreSQL).
    """

    own: dict[str, int]
    default_cutoff: int | None
    keep_from: int | None


@dataclass(frozen=True)
class PurgedBatch:
    """One batch: how many messages went, how many from each chat, the last id it
    saw, and how many rows it deleted (change rows too: fewer than asked, the end)."""

    removed: int
    chats: dict[str, int]
    last_id: int
    rows: int = 0


class Retention:
    """Claims of periodic jobs (a Deferred each).

    The purge's own transactions are run batch by batch by
    chateau.retention.purge_once, through the store's runner.
    """

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def claim_run(self, job: str, node: str, now: int, gap: int) -> Deferred[bool]:
        """Whether this node may run *job* now (no run started in the last *gap* ms)."""
        return self._runner.run(claim_run_txn, job, node, now, gap)


def cutoff(days: int, now: int) -> int | None:
    """Messages created before this (ms) are older than *days*; None: kept forever."""
    return None if days <= 0 else now - days * DAY_MS


def plan_txn(connection: Connection, default_days: int, now: int) -> PurgePlan:
    own = {}
    for chatname, days in connection.execute(
        select(groups.c.chatname, groups.c.retention_days)
        .where(groups.c.retention_days.is_not(None) & (groups.c.retention_days > 0))
    ):
        own[chatname] = now - int(days) * DAY_MS
    keep_from = None
    if connection.dialect.name == "sqlite":
        keep_from = connection.execute(select(func.max(messages.c.id))).scalar()
    return PurgePlan(own, cutoff(default_days, now), keep_from)


def purge_batch_txn(
    connection: Connection, plan: PurgePlan, chat: str | None, after: int, batch: int,
    dry_run: bool = False,
) -> PurgedBatch:
    """Delete up to *batch* messages past their retention with ids above *after*.

    *chat* names a group of ``plan.own`` (its own cutoff), or is None for
    every chat without a retention of its own (the server's cutoff). With
    *dry_run* nothing is deleted: the batch says what would be.
    """
    if chat is not None:
        where = (messages.c.chat == chat) & (messages.c.created_at < plan.own[chat])
    else:
        assert plan.default_cutoff is not None
        own_setting = select(groups.c.chatname).where(groups.c.retention_days.is_not(None))
        where = (messages.c.created_at < plan.default_cutoff) & messages.c.chat.not_in(own_setting)
    where = where & (messages.c.id > after)
    if plan.keep_from is not None:
        where = where & (messages.c.id < plan.keep_from)
    rows = connection.execute(
        select(messages.c.id, messages.c.chat, messages.c.changes)
        .where(where).order_by(messages.c.id).limit(batch)
    ).all()
    if not rows:
        return PurgedBatch(0, {}, after)
    ids = [int(row.id) for row in rows]
    if not dry_run:
        connection.execute(delete(messages).where(messages.c.id.in_(ids)))
    # Change rows (SyncRequest's record of edits and deletions) go with the
    # rest but are not messages: they are not counted.
    chats: dict[str, int] = {}
    for row in rows:
        if row.changes is None:
            chats[row.chat] = chats.get(row.chat, 0) + 1
    return PurgedBatch(sum(chats.values()), chats, ids[-1], len(ids))


def claim_run_txn(connection: Connection, job: str, node: str, now: int, gap: int) -> bool:
    """Claim *job* for *node* unless a run of it started less than *gap* ms ago.

    One conditional UPDATE: of several nodes claiming at once, exactly one
    changes the row (the others' conditions fail once it commits).
    """
    connection.execute(
        upsert(connection, scheduled_runs).on_conflict_do_nothing(),
        [{"job": job, "started_at": 0, "node": None}],
    )
    claimed = connection.execute(
        update(scheduled_runs)
        .where((scheduled_runs.c.job == job) & (scheduled_runs.c.started_at <= now - gap))
        .values(started_at=now, node=node[:64])
    )
    return claimed.rowcount == 1


def audit_older_txn(connection: Connection, before: int) -> int:
    """How many audit rows are older than *before* (what a purge would delete)."""
    return int(connection.execute(
        select(func.count()).select_from(audit_log).where(audit_log.c.at < before)
    ).scalar() or 0)
