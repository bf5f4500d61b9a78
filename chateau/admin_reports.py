"""``chateau-admin reports list|show|resolve``: users' reports, from the command line.

The commands run beside the server, straight on its database (no reactor,
one transaction each), with the store's own transaction functions
(chateau.store.reports) and the protocol's rules for a resolution
(chateau.handlers.reports), so the two ways agree. The actor recorded for a
resolution, in the report and the moderation log, is ``cli:`` and the
operating-system user.

What the command line cannot do is reach live connections: ``warn`` is
recorded but pushes nothing (ReportResolveRequest pushes it to the user
online), and ``delete_message`` marks the message deleted in the database,
where clients find it at their next history read (ReportResolveRequest
also pushes the deletion to everyone in the chat).
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
from typing import Any, Callable

OK = 0
# The protocol's (chateau.handlers.reports), written here so that --help
# imports nothing of the server.
STATUSES = ("open", "closed", "all")
ACTIONS = ("dismiss", "warn", "delete_message", "ban_user")

# admin.py's helper: run work(config, engine) on the prepared database.
Prepared = Callable[[argparse.Namespace, Callable[[Any, Any], int]], int]


def cli_actor() -> str:
    """Who resolves from the command line: ``cli:`` and the operating-system user."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in this environment
        user = "unknown"
    return f"cli:{user}"


def _one_line(text: str, most: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= most else flat[: most - 1] + "…"


def _target(entry: dict[str, Any]) -> str:
    parts = []
    if entry["username"] is not None:
        parts.append(f"user {entry['username']}")
    if entry["chatname"] is not None:
        parts.append(f"chat {entry['chatname']}")
    if entry["message_id"] is not None:
        parts.append(f"message {entry['message_id']}")
    return ", ".join(parts)


def _list(engine: Any, args: argparse.Namespace) -> int:
    from chateau.accounts import AdminError
    from chateau.store.engine import in_transaction
    from chateau.store.reports import list_reports_txn

    if args.limit < 1:
        raise AdminError("--limit must be at least 1")
    records, more = in_transaction(engine, list_reports_txn, args.status, args.limit, None)
    for record in records:
        entry = record.entry()
        print(f"{entry['report_id']:<6} {entry['status']:<6} {entry['created']} "
              f"{entry['reporter']} on {_target(entry)}: {_one_line(entry['reason'])}")
    more_note = f" (more: --limit above {args.limit})" if more else ""
    print(f"{len(records)} report(s){more_note}")
    return OK


def _show(engine: Any, args: argparse.Namespace) -> int:
    from chateau.accounts import AdminError
    from chateau.store.engine import in_transaction
    from chateau.store.reports import get_report_txn

    record = in_transaction(engine, get_report_txn, args.report_id)
    if record is None:
        raise AdminError(f"no report with id {args.report_id}")
    entry = record.entry()
    snapshot = entry.pop("snapshot")
    for key, value in entry.items():
        print(f"{key + ':':<13} {'' if value is None else value}")
    print("snapshot:")
    print(json.dumps(snapshot, indent=2, ensure_ascii=False))
    return OK


def _resolve(engine: Any, args: argparse.Namespace) -> int:
    from chateau.accounts import AdminError
    from chateau.handlers.reports import (
        MAX_NOTE,
        ban_reason,
        action_problem,
        already_resolved,
        text_problem,
    )
    from chateau.store.engine import in_transaction
    from chateau.store.records import REPORT_OPEN
    from chateau.store.reports import get_report_txn, resolve_report_txn

    problem = text_problem("--note", args.note, MAX_NOTE, empty_ok=True)
    if problem is not None:
        raise AdminError(problem)
    found = in_transaction(engine, get_report_txn, args.report_id)
    if found is None:
        raise AdminError(f"no report with id {args.report_id}")
    if found.status != REPORT_OPEN:
        raise AdminError(already_resolved(found))
    problem = action_problem(found, args.resolution)
    if problem is not None:
        raise AdminError(problem)
    banning = args.resolution == "ban_user"
    before = in_transaction(
        engine, resolve_report_txn, found.id, cli_actor(), args.resolution, args.note,
        args.resolution == "delete_message", ban_reason(found, args.note) if banning else None,
        True,
    )
    if before is None or before.status != REPORT_OPEN:
        raise AdminError(already_resolved(before or found))
    print(f"report {found.id} resolved: {args.resolution}")
    if args.resolution == "warn":
        print(f"note: the warning is recorded, but {found.username!r} is not told: the command "
              "line cannot reach live connections (ReportResolveRequest pushes it)")
    elif args.resolution == "delete_message":
        print(f"message {found.message_id} is deleted; the running servers tell the members "
              "online within [chat] revocation_check_interval")
    elif banning:
        print(f"{found.username!r} is banned until unbanned; the running servers close their "
              "connections within [chat] revocation_check_interval")
    return OK


def _reports_command(args: argparse.Namespace, prepared: Prepared) -> int:
    """reports list | show | resolve: one transaction each (resolve: a read, then one)."""
    commands = {"list": _list, "show": _show, "resolve": _resolve}

    def work(config: Any, engine: Any) -> int:
        return commands[args.action](engine, args)

    return prepared(args, work)


def add_reports_commands(
    commands: Any, common: argparse.ArgumentParser, prepared: Prepared
) -> None:
    """Add ``reports list|show|resolve`` to chateau-admin's subcommands.

    *prepared* is chateau-admin's ``_on_prepared_database``: it loads the
    configuration, checks the schema and turns an ``AdminError`` into one
    line on stderr and exit status 1.
    """
    handler = functools.partial(_reports_command, prepared=prepared)
    reports = commands.add_parser(
        "reports", parents=[common], help="read and resolve users' reports",
        description="Reports users made with ReportRequest, each with a snapshot of what "
        "was reported. Resolutions are recorded in the moderation log, as cli:USER.",
    )
    actions = reports.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], help="list reports, newest first")
    listing.add_argument("--status", choices=STATUSES, default="open",
                         help="which reports (default: open)")
    listing.add_argument("--limit", type=int, default=100, metavar="N",
                         help="at most N reports (default 100)")
    listing.set_defaults(handler=handler)
    show = actions.add_parser("show", parents=[common],
                              help="one report in full, with its snapshot")
    show.add_argument("report_id", type=int, metavar="ID")
    show.set_defaults(handler=handler)
    resolve = actions.add_parser(
        "resolve", parents=[common], help="close an open report with an action",
        description="dismiss: nothing else; warn: recorded only (the command line cannot "
        "reach live connections); delete_message: the reported message is deleted in the "
        "database (clients see it at their next history read); ban_user: not available yet.",
    )
    resolve.add_argument("report_id", type=int, metavar="ID")
    resolve.add_argument("--action", dest="resolution", choices=ACTIONS, required=True)
    resolve.add_argument("--note", required=True, metavar="TEXT",
                         help="why (recorded with the resolution; may be empty)")
    resolve.set_defaults(handler=handler)
