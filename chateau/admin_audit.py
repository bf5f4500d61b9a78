"""``chateau-admin audit`` and ``purge``: reading the audit log, and the retention purge by hand.

``audit [--user NAME] [--since DATE] [--json] [--limit N]`` prints the audit
log (chateau.store.audit), newest first: one line per row, ``TIME actor
action target ["reason"] [address] {detail}``, or one JSON object per line
with ``--json``. ``--user`` keeps the rows where NAME is the actor or the
target; ``--since`` takes an ISO 8601 date or date and time (UTC unless it
says otherwise).

``purge [--dry-run]`` runs the daily retention purge once, now
(chateau.retention.purge_once, the server's own), and prints what it
removed, chat by chat; ``--dry-run`` only prints what it would remove. It
does not claim the day's run: the servers still run theirs.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Any, Callable

from chateau.config import Config

OK = 0
# The most rows one `audit` prints.
MAX_LIMIT = 100_000

Prepared = Callable[[argparse.Namespace, Callable[[Config, Any], int]], int]


def parse_since(raw: str) -> int:
    """An ISO 8601 date or date and time (UTC unless it says) as ms since the epoch."""
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not an ISO 8601 date or time (e.g. 2026-12-01 or 2026-12-01T08:30)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _limit(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"--limit must be between 1 and {MAX_LIMIT}")
    return value


def entry_line(entry: Any) -> str:
    """One audit row as a text line."""
    from chateau.store.records import iso_timestamp

    parts = [iso_timestamp(entry.at), entry.actor, entry.action, entry.target or "-"]
    if entry.reason:
        parts.append(json.dumps(entry.reason, ensure_ascii=False))
    if entry.address:
        parts.append(entry.address)
    if entry.detail:
        parts.append(json.dumps(entry.detail, ensure_ascii=False, sort_keys=True))
    return " ".join(parts)


def entry_json(entry: Any) -> str:
    """One audit row as a JSON line."""
    from chateau.store.records import iso_timestamp

    return json.dumps({
        "id": entry.id, "at": iso_timestamp(entry.at), "actor": entry.actor,
        "action": entry.action, "target": entry.target, "reason": entry.reason,
        "address": entry.address, "detail": entry.detail,
    }, ensure_ascii=False, sort_keys=True)


def _audit_command(args: argparse.Namespace) -> int:
    from chateau.names import canonical
    from chateau.store.audit import entries_txn
    from chateau.store.engine import in_transaction

    def work(config: Config, engine: Any) -> int:
        user = None if args.user is None else canonical(args.user)
        entries = in_transaction(engine, entries_txn, args.limit, None, user, args.since)
        for entry in entries:
            print(entry_json(entry) if args.json else entry_line(entry))
        if not args.json:
            print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}", file=sys.stderr)
        return OK

    prepared: Prepared = args.prepared
    return prepared(args, work)


def _purge_command(args: argparse.Namespace) -> int:
    from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
    from twisted.python.failure import Failure

    from chateau.admin_moderation import actor
    from chateau.retention import purge_once
    from chateau.store.audit import record_txn
    from chateau.store.engine import in_transaction
    from chateau.store.records import now_millis

    def work(config: Config, engine: Any) -> int:
        def run(txn: Callable[..., Any], *more: Any) -> Deferred[Any]:
            # Blocking here, so every Deferred has fired: the purge ends in one go.
            return maybeDeferred(in_transaction, engine, txn, *more)

        chat = config.chat
        outcome: list[Any] = []
        ensureDeferred(purge_once(run, chat, now_millis(), dry_run=args.dry_run)).addBoth(
            outcome.append
        )
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        report = outcome[0]
        kept = "forever" if chat.retention_days == 0 else f"{chat.retention_days} day(s)"
        audit_kept = ("forever" if chat.audit_retention_days == 0
                      else f"{chat.audit_retention_days} day(s)")
        print(f"messages are kept {kept} ([chat] retention_days) unless their group says "
              f"otherwise; audit rows {audit_kept} ([chat] audit_retention_days)")
        for name, count in sorted(report.per_chat.items()):
            print(f"  {name}: {count} message(s)")
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {report.removed} message(s) from {report.chats} chat(s) and "
              f"{report.audit_removed} audit row(s)")
        if not args.dry_run and report.anything:
            in_transaction(engine, record_txn, actor(), "retention_purge", "*", "",
                           report.detail())
        return OK

    prepared: Prepared = args.prepared
    return prepared(args, work)


def add_audit_commands(
    commands: Any, common: argparse.ArgumentParser, prepared: Prepared
) -> None:
    """Add ``audit`` and ``purge`` to chateau-admin's subcommands."""
    audit = commands.add_parser(
        "audit", parents=[common], help="read the audit log, newest first",
        description="Print the audit log (sign-ins, password changes, administrative and "
        "moderation actions...), newest first.",
    )
    audit.add_argument("--user", metavar="NAME", default=None,
                       help="only rows where NAME is the actor or the target")
    audit.add_argument("--since", metavar="DATE", type=parse_since, default=None,
                       help="only rows from DATE on (ISO 8601 date or date and time; UTC)")
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    audit.add_argument("--limit", metavar="N", type=_limit, default=100,
                       help="at most N rows (default 100)")
    audit.set_defaults(handler=_audit_command, prepared=prepared)

    purge = commands.add_parser(
        "purge", parents=[common],
        help="delete messages past their retention and old audit rows, now",
        description="Run the daily retention purge once: messages older than their chat's "
        "retention ([chat] retention_days, or the group's own) and audit rows older than "
        "[chat] audit_retention_days.",
    )
    purge.add_argument("--dry-run", action="store_true",
                       help="only print what would be removed")
    purge.set_defaults(handler=_purge_command, prepared=prepared)
