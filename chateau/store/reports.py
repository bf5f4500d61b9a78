"""Reports: what users report, and how server admins resolve them.

A report keeps a snapshot (JSON) of what was reported as it was then, so a
deletion afterwards hides nothing from moderators. The server runs these
transaction functions through :class:`Reports`; ``chateau-admin reports``
runs them with :func:`~chateau.store.engine.in_transaction`. A resolution,
the deletion it may make and its line in the moderation log are one
transaction: a report is closed exactly once, by whoever's ``UPDATE`` finds
it still open.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.accounts import ban_user_txn
from chateau.store.messages import delete_message_txn, get_message_txn
from chateau.store.notices import append_notice_txn
from chateau.store.audit import record_txn
from chateau.store.records import BAN_FOREVER, REPORT_CLOSED, REPORT_OPEN, ReportRecord, now_millis
from chateau.store.tables import reports

# Widest actor the tables keep (reports.resolved_by, audit_log.actor).
ACTOR_LENGTH = 64


class Reports:
    """Reports on the store's pool: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def add_report(
        self, reporter: str, reason: str, username: str | None, chatname: str | None,
        message_id: int | None, snapshot: dict[str, Any], since: int, most: int,
    ) -> Deferred[tuple[int | None, list[int]]]:
        """Store a report unless *reporter* has *most* open ones made after *since*.

        Fires with the new id (None when refused) and the creation times of
        those open reports, oldest first.
        """
        return self._runner.run(
            add_report_txn, reporter, reason, username, chatname, message_id, snapshot,
            since, most,
        )

    def reports(
        self, status: str, limit: int, before: int | None
    ) -> Deferred[tuple[list[ReportRecord], bool]]:
        return self._runner.run(list_reports_txn, status, limit, before)

    def get_report(self, report_id: int) -> Deferred[ReportRecord | None]:
        return self._runner.run(get_report_txn, report_id)

    def resolve(
        self, report_id: int, actor: str, action: str, note: str, delete_message: bool = False,
    ) -> Deferred[ReportRecord | None]:
        """Close an open report (see :func:`resolve_report_txn`)."""
        return self._runner.run(
            resolve_report_txn, report_id, actor, action, note, delete_message
        )


def _report_record(row: Any) -> ReportRecord:
    return ReportRecord(
        int(row.id), row.reporter, row.reason, row.username, row.chatname,
        None if row.message_id is None else int(row.message_id),
        json.loads(row.snapshot or "{}"), int(row.created_at), row.status, row.resolved_by,
        None if row.resolved_at is None else int(row.resolved_at), row.action, row.note,
    )


def add_report_txn(
    connection: Connection, reporter: str, reason: str, username: str | None,
    chatname: str | None, message_id: int | None, snapshot: dict[str, Any], since: int,
    most: int,
) -> tuple[int | None, list[int]]:
    times = [
        int(value) for value in connection.execute(
            select(reports.c.created_at)
            .where((reports.c.reporter == reporter) & (reports.c.status == REPORT_OPEN)
                   & (reports.c.created_at > since))
            .order_by(reports.c.created_at)
        ).scalars()
    ]
    if len(times) >= most:
        return None, times
    result = connection.execute(
        insert(reports).values(
            reporter=reporter, reason=reason, username=username, chatname=chatname,
            message_id=message_id, snapshot=json.dumps(snapshot, ensure_ascii=False),
            created_at=now_millis(), status=REPORT_OPEN,
        )
    )
    return int(result.inserted_primary_key[0]), times


def list_reports_txn(
    connection: Connection, status: str, limit: int, before: int | None
) -> tuple[list[ReportRecord], bool]:
    """Up to *limit* reports older than *before* (an id), newest first; and whether more exist.

    *status* is ``open``, ``closed`` or ``all``.
    """
    query = select(reports).order_by(reports.c.id.desc()).limit(limit + 1)
    if status != "all":
        query = query.where(reports.c.status == status)
    if before is not None:
        query = query.where(reports.c.id < before)
    rows = connection.execute(query).all()
    return [_report_record(row) for row in rows[:limit]], len(rows) > limit


def get_report_txn(connection: Connection, report_id: int) -> ReportRecord | None:
    row = connection.execute(select(reports).where(reports.c.id == report_id)).first()
    return None if row is None else _report_record(row)


def resolve_report_txn(
    connection: Connection, report_id: int, actor: str, action: str, note: str,
    delete_message: bool = False, ban_reason: str | None = None, notify: bool = False,
) -> ReportRecord | None:
    """Close report *report_id* with *action*; the report as it was before (None: no such report).

    Only an open report is closed (its returned status is ``open``); a
    closed one comes back unchanged. With *delete_message* the reported
    message is deleted in the same transaction; with *ban_reason* the
    reported user is banned server-wide until unbanned (their keys revoked,
    so every node closes their connections). The resolution is recorded in
    the moderation log (action ``report_<action>``, the note as reason).
    *notify* (chateau-admin, which cannot reach live connections) also
    appends the notice that makes every node push the deletion.
    """
    record = get_report_txn(connection, report_id)
    if record is None or record.status != REPORT_OPEN:
        return record
    actor = actor[:ACTOR_LENGTH]
    closed = connection.execute(
        update(reports)
        .where((reports.c.id == report_id) & (reports.c.status == REPORT_OPEN))
        .values(status=REPORT_CLOSED, resolved_by=actor, resolved_at=now_millis(),
                action=action, note=note)
    )
    if closed.rowcount != 1:
        # Someone else closed it between the read and the update.
        return get_report_txn(connection, report_id)
    if delete_message and record.message_id is not None:
        message = get_message_txn(connection, record.message_id)
        if message is not None and not message.deleted:
            delete_message_txn(connection, record.message_id, actor)
        if notify and message is not None and not message.deleted:
            append_notice_txn(connection, "message_deleted", {
                "id": message.id, "chat": message.chat, "recipient": message.recipient,
                "sender": message.sender, "by": actor,
            })
    if ban_reason is not None and record.username is not None:
        ban_user_txn(connection, actor, record.username, BAN_FOREVER, ban_reason)
    target = record.username or record.chatname or f"message {record.message_id}"
    record_txn(
        connection, actor, f"report_{action}", target, note,
        {"report_id": record.id, "reporter": record.reporter, "chatname": record.chatname,
         "message_id": record.message_id},
    )
    return record
