"""``chateau-admin``'s commands on a user's data: ``user export NAME`` and
``user erase NAME [--yes]``.

``user export NAME > file.json`` writes the document ``GET /api/me/export``
gives the user (the same writer, chateau.export), reading a page of
messages at a time. ``user erase NAME`` erases the account as
AccountDeleteRequest does (chateau.store.erasure), after asking the
operator to type the name again unless ``--yes`` is given; running servers
close its connections (4005) within ``[chat] revocation_check_interval``.
Both are recorded in the audit log as ``cli:`` + the operator's login name.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from chateau.admin_moderation import Prepared, _run, _user, _within, actor
from chateau.config import Config

OK, WOULD_FAIL = 0, 1


def _export_command(args: argparse.Namespace) -> int:
    from chateau.accounts import AdminError
    from chateau.export import export_chunks, write_export
    from chateau.store.audit import record_txn
    from chateau.store.engine import in_transaction
    from chateau.store.erasure import export_head_txn, export_messages_txn
    from chateau.store.records import iso_timestamp, now_millis

    def work(config: Config, engine: Any) -> int:
        name = _user(args.username)
        head = in_transaction(engine, export_head_txn, name)
        if head is None:
            raise AdminError(f"no such user: {name!r}")
        in_transaction(engine, record_txn, actor(), "export", name, "", {"via": "cli"})
        out = sys.stdout.buffer
        write_export(
            export_chunks(head, iso_timestamp(now_millis())),
            lambda after, limit: in_transaction(engine, export_messages_txn, name, after, limit),
            out.write,
        )
        out.flush()
        return OK

    return _run(args, work)


def _erase_command(args: argparse.Namespace) -> int:
    from chateau.accounts import AdminError
    from chateau.store.engine import in_transaction
    from chateau.store.erasure import erase_account_txn
    from chateau.store.records import iso_timestamp, now_millis

    def work(config: Config, engine: Any) -> int:
        name = _user(args.username)
        if not args.yes:
            if not sys.stdin.isatty():
                raise AdminError("erasing cannot be undone: pass --yes, or run it on a terminal")
            typed = input(f"Erase {name!r} for good? Type the name again to confirm: ")
            if typed.strip() != name:
                raise AdminError("not confirmed; nothing was erased")
        mode = config.chat.erase_messages
        until = now_millis() + int(config.ldap.rename_hold_days * 86_400_000)
        erased = in_transaction(engine, erase_account_txn, actor(), name, mode, until)
        if erased is None:
            raise AdminError(f"no such user: {name!r}")
        done = "erased" if mode == "erase" else "anonymised"
        heirs = "".join(f"; {heir!r} now owns {chat!r}" for chat, heir in erased.groups if heir)
        print(f"erased {name!r}: {erased.messages} message(s) {done}, left "
              f"{len(erased.groups)} group(s){heirs}; the name is held until "
              f"{iso_timestamp(erased.held_until)}; running servers close its connections "
              f"{_within(config)} (close code 4005)")
        return OK

    return _run(args, work)


def add_data_commands(
    user_actions: Any, common: argparse.ArgumentParser, prepared: Prepared
) -> None:
    """Add ``export`` and ``erase`` to ``chateau-admin user``."""
    export = user_actions.add_parser(
        "export", parents=[common],
        help="write everything stored about the user as JSON on stdout",
    )
    export.add_argument("username", metavar="USERNAME")
    export.set_defaults(handler=_export_command, prepared=prepared)
    erase = user_actions.add_parser(
        "erase", parents=[common],
        help="erase the account for good ([chat] erase_messages says what becomes of its "
        "messages); its name is held for [ldap] rename_hold_days",
    )
    erase.add_argument("username", metavar="USERNAME")
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    erase.set_defaults(handler=_erase_command, prepared=prepared)
