"""``chateau-admin``: administration commands that run beside the server.

Each command is a subcommand with its own handler; they all read the server's
own INI file (``--config``, by default ``chateau.ini`` in the working
directory when there is one), so what they check is what the server will do.

``user add|passwd|disable|enable|list`` manage accounts, ``invite
create|list|revoke`` the invite codes of ``[auth] registration = invite``, and
``db upgrade`` applies the schema migrations (see chateau.accounts and
chateau.store.migrate), ``reports list|show|resolve`` reads and closes
users' reports (chateau.admin_reports), and ``names collisions`` lists the existing names that
look like older ones (confusable: equal UTS #39 skeletons), which keep working
and are never renamed.

``user admin|unadmin|ban|unban``, ``message delete``, ``announce`` and
``group show|delete`` are the operators' moderation commands
(chateau.admin_moderation); ``user export|erase`` act on a user's data
(chateau.admin_data).
(chateau.admin_moderation); ``audit`` reads the audit log and ``purge``
runs the retention purge once (chateau.admin_audit). Every command that
changes something records it in the audit log, with the actor ``cli:`` +
the operator's login name.

``ldap-check USERNAME`` walks through a directory sign-in step by step
(connect, TLS, search, bind, group) and prints one line per step with OK or
FAILED and the reason, so a certificate problem is told apart from a wrong
password. Exit status: 0 when the sign-in would succeed, 1 when it would
not, 2 for a usage or configuration error.

``ldap-sync [--dry-run]`` syncs the directory's groups ([ldap] sync_base)
now, as the server's group sync does (chateau.group_sync), printing each
change; running nodes learn of it through a notice.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import unicodedata
from typing import Any, Callable, Sequence

from chateau.admin_data import add_data_commands
from chateau.admin_audit import add_audit_commands
from chateau.admin_reports import add_reports_commands
from chateau.admin_moderation import add_moderation_commands
from chateau.admin_sync import add_sync_command
from chateau.config import Config, check_ldap, load_config
from chateau.errors import ConfigError

DEFAULT_CONFIG = "chateau.ini"
PASSWORD_VARIABLE = "CHATEAU_PASSWORD"

OK, WOULD_FAIL, USAGE = 0, 1, 2


def _line(step: str, ok: bool, message: str) -> None:
    print(f"{step:<13} {'OK' if ok else 'FAILED'}: {message}", flush=True)


def _config_path(args: argparse.Namespace) -> str | None:
    path = getattr(args, "config", None)
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    return path


def _account_step(config: Config, username: str) -> bool:
    """Would the database let this directory user in? (The naming rule.)

    Read-only and best effort: a database this host cannot reach is reported
    and skipped, since the server creates the row itself on first sign-in.
    """
    from chateau.store.accounts import name_owner_txn
    from chateau.store.identity import held_until_txn
    from chateau.store.records import HELD, iso_timestamp
    from chateau.store.engine import Connection, in_transaction, make_engine, sqlite_file
    from chateau.store.migrate import table_names

    path = sqlite_file(config.database.url)
    if path is not None and not os.path.exists(path):
        print(f"{'account':<13} skipped: no database at {path} yet")
        return True

    def owner(connection: Connection) -> tuple[str | None, str | None, str | None] | None:
        if not {"names", "users"} <= table_names(connection):
            return None
        kind, method, alike = name_owner_txn(connection, username)
        if kind == HELD:
            until = held_until_txn(connection, username)
            # An expired hold is released when the name is next taken.
            return (None, None, None) if until is None else (HELD, iso_timestamp(until), None)
        return kind, method, alike

    try:
        engine = make_engine(config.database.url)
        try:
            found = in_transaction(engine, owner)
        finally:
            engine.dispose()
    except Exception as exc:  # any driver error: this check is advisory
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{'account':<13} skipped: cannot read the database: {reason}")
        return True
    if found is None:
        print(f"{'account':<13} skipped: the database has no schema yet")
        return True
    kind, method, alike = found
    if alike is not None:
        _line(
            "account", False,
            f"{username!r} looks like the existing name {alike!r} on this server, and is "
            "refused (409); rename one of them",
        )
        return False
    if kind is None:
        _line("account", True, f"{username!r} is free; created on first sign-in")
        return True
    if kind == HELD:
        _line(
            "account", False,
            f"{username!r} is the old name of a renamed directory account, held until "
            f"{method} ([ldap] rename_hold_days); only that account may take it back",
        )
        return False
    if kind != "user":
        _line("account", False, f"{username!r} is a group name on this server; rename the group")
        return False
    if method != "ldap":
        _line(
            "account", False,
            f"{username!r} is a local account on this server; rename or remove it to let "
            "the directory user in",
        )
        return False
    _line("account", True, f"{username!r} is already a directory account")
    return True


def ldap_check(args: argparse.Namespace) -> int:
    """Try a directory sign-in as the server would, printing every step."""
    from chateau.auth.directory import Directory, DirectoryError
    from chateau.auth.passwords import PasswordProblem, password_problem
    from chateau.names import USERNAME_RULE, check_username

    path = _config_path(args)
    try:
        config = load_config(path)
        check_ldap(config.ldap)
    except ConfigError as exc:
        where = path or f"no {DEFAULT_CONFIG} here; pass --config FILE"
        print(f"chateau-admin: {exc} ({where})", file=sys.stderr)
        return USAGE
    name = check_username(args.username)
    if name is None:
        _line("username", False, f"{args.username!r}: {USERNAME_RULE}")
        return WOULD_FAIL
    password = os.environ.get(PASSWORD_VARIABLE)
    if password is None:
        try:
            password = getpass.getpass(f"Directory password for {args.username}: ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return WOULD_FAIL
    problem = password_problem(password)
    if problem is PasswordProblem.EMPTY:
        _line("password", False, "empty; the server refuses empty passwords before any bind")
        return WOULD_FAIL
    if problem is not None:
        _line("password", False, f"{problem.reason}; the server refuses it before any bind")
        return WOULD_FAIL
    directory = Directory(config.ldap)
    print(f"{'directory':<13} {directory.mode} via {' '.join(directory.urls)}")
    typed = unicodedata.normalize("NFKC", args.username)
    try:
        user = directory.authenticate(typed, password, report=_line)
    except DirectoryError as failure:
        print(f"{'result':<13} FAILED: {failure.detail}")
        return WOULD_FAIL
    ok = _account_step(config, user.username)
    if "ldap" not in config.auth.methods:
        _line(
            "methods", False,
            "[auth] methods does not include ldap: the server answers auth: true with 301",
        )
        ok = False
    if not ok:
        print(f"{'result':<13} FAILED: the directory accepts {user.uid!r}, but the server "
              "would not sign them in (see above)")
        return WOULD_FAIL
    shown = f" ({user.display_name})" if user.display_name else ""
    print(f"{'result':<13} OK: {args.username!r} signs in as {user.username!r}{shown}")
    return OK


def _ldap_config(args: argparse.Namespace) -> Config | None:
    """The configuration with its [ldap] section checked; None (said on stderr) if bad."""
    path = _config_path(args)
    try:
        config = load_config(path)
        check_ldap(config.ldap)
    except ConfigError as exc:
        where = path or f"no {DEFAULT_CONFIG} here; pass --config FILE"
        print(f"chateau-admin: {exc} ({where})", file=sys.stderr)
        return None
    return config


def _load(args: argparse.Namespace) -> Config | None:
    path = _config_path(args)
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"chateau-admin: {exc}", file=sys.stderr)
        return None


def _engine(config: Config):  # -> Engine; imported lazily to keep --help quick
    from chateau.store.engine import make_engine

    return make_engine(config.database.url)


def _on_prepared_database(
    args: argparse.Namespace, work: Callable[[Config, Any], int]
) -> int:
    """Run *work(config, engine)* on the configured database, its schema checked.

    A schema older than the code, or a refusal by the command
    (``AdminError``), is one line on stderr and status WOULD_FAIL.
    """
    from chateau.accounts import AdminError
    from chateau.store.engine import in_transaction
    from chateau.store.migrate import SchemaOutOfDate, prepare

    config = _load(args)
    if config is None:
        return USAGE
    engine = _engine(config)
    try:
        in_transaction(engine, prepare)
        return work(config, engine)
    except (AdminError, SchemaOutOfDate) as exc:
        print(f"chateau-admin: {exc}", file=sys.stderr)
        return WOULD_FAIL
    finally:
        engine.dispose()


def _new_password(username: str) -> str | None:
    """The new password from $CHATEAU_PASSWORD, or asked twice on the terminal."""
    password = os.environ.get(PASSWORD_VARIABLE)
    if password is not None:
        return password
    try:
        first = getpass.getpass(f"New password for {username}: ")
        second = getpass.getpass("Again: ")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return None
    if first != second:
        print("chateau-admin: the passwords differ", file=sys.stderr)
        return None
    return first


def _account_command(args: argparse.Namespace) -> int:
    """user add | passwd | disable | enable | list: one transaction each."""
    from chateau import accounts
    from chateau.store.records import iso_timestamp

    def work(config: Config, engine: Any) -> int:
        action = args.action
        if action == "list":
            users = accounts.list_users(engine)
            for user in users:
                state = "disabled" if user.disabled else "active"
                if user.deprovisioned is not None:
                    state = (f"deprovisioned ({user.deprovisioned.reason}) since "
                             f"{iso_timestamp(user.deprovisioned.at)}")
                shown = f"  {user.display_name}" if user.display_name else ""
                print(f"{user.username:<32} {user.method:<6} {state:<9} "
                      f"{user.sessions} session(s){shown}")
            print(f"{len(users)} account(s)")
            return OK
        if action in ("add", "passwd"):
            password = _new_password(args.username)
            if password is None:
                return WOULD_FAIL
            if action == "add":
                name = accounts.add_user(engine, args.username, password, config.auth.bcrypt_cost)
                print(f"created local account {name!r}")
            else:
                revoked = accounts.set_password(
                    engine, args.username, password, config.auth.bcrypt_cost
                )
                print(f"password changed; {revoked} session key(s) revoked; running servers "
                      f"close the account's connections within "
                      f"{config.chat.revocation_check_interval:g} s (close code 4001)")
            return OK
        revoked = accounts.set_disabled(engine, args.username, action == "disable")
        if action == "disable":
            print(f"disabled; {revoked} session key(s) revoked; running servers close "
                  f"the account's connections within "
                  f"{config.chat.revocation_check_interval:g} s (close code 4001)")
        else:
            print("enabled")
        return OK

    return _on_prepared_database(args, work)


def _invite_command(args: argparse.Namespace) -> int:
    """invite create | list | revoke: one transaction each."""
    from chateau import accounts
    from chateau.store.records import iso_timestamp

    def work(config: Config, engine: Any) -> int:
        if args.action == "create":
            invite_id, code = accounts.create_invite(engine, args.uses, args.hours)
            print(code)
            until = "no expiry" if args.hours is None else f"expires in {args.hours:g} h"
            print(f"invite {invite_id}: {args.uses} account(s), {until}; the code is shown "
                  "only now", file=sys.stderr)
            if config.auth.registration != "invite":
                print(f"note: [auth] registration is {config.auth.registration!r}; codes are "
                      "used only with registration = invite", file=sys.stderr)
        elif args.action == "list":
            invites = accounts.list_invites(engine)
            for invite in invites:
                until = "never" if invite.expires_at is None else iso_timestamp(invite.expires_at)
                print(f"{invite.id:<6} {invite.uses} use(s) left, expires {until}")
            print(f"{len(invites)} usable invite(s)")
        else:
            accounts.revoke_invite(engine, args.code)
            print("revoked")
        return OK

    return _on_prepared_database(args, work)


def _names_command(args: argparse.Namespace) -> int:
    """names collisions: the existing names flagged as confusable, one a line."""
    from chateau.accounts import name_collisions

    def work(config: Config, engine: Any) -> int:
        collisions = name_collisions(engine)
        for found in collisions:
            print(f"{found.name:<32} {found.kind:<5} looks like {found.confusable_with!r} "
                  f"({found.other_kind})")
        print(f"{len(collisions)} confusable name(s)")
        return OK

    return _on_prepared_database(args, work)


def _db_command(args: argparse.Namespace) -> int:
    from chateau.accounts import upgrade_database

    config = _load(args)
    if config is None:
        return USAGE
    engine = _engine(config)
    try:
        before, after = upgrade_database(engine)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"chateau-admin: upgrade failed: {reason}", file=sys.stderr)
        return WOULD_FAIL
    finally:
        engine.dispose()
    if before == after:
        print(f"the schema is up to date (revision {after})")
    else:
        print(f"upgraded the schema from {before or 'nothing'} to revision {after}")
    return OK


def build_parser() -> argparse.ArgumentParser:
    # --config works before or after the subcommand; the later one wins.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
        help=f"the server's INI file (default: {DEFAULT_CONFIG} if present)",
    )
    parser = argparse.ArgumentParser(
        prog="chateau-admin",
        description="Administer a Chateau server.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "ldap-check", parents=[common],
        help="try a directory sign-in step by step",
        description=(
            "Sign USERNAME in against the directory configured in [ldap], as the "
            f"server would, and report each step. The password is read from "
            f"${PASSWORD_VARIABLE} when set, else asked for. Exit status 0 when the "
            "sign-in would succeed."
        ),
    )
    check.add_argument("username", metavar="USERNAME")
    check.set_defaults(handler=ldap_check)
    add_sync_command(commands, common, _ldap_config)

    user = commands.add_parser(
        "user", parents=[common], help="manage accounts",
        description="Manage accounts in the server's database.",
    )
    actions = user.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("add", f"create a local account (password from ${PASSWORD_VARIABLE} or asked)"),
        ("passwd", "reset a local account's password and revoke all its session keys"),
        ("disable", "refuse the account's sign-ins, revoke its keys, close its connections"),
        ("enable", "undo disable"),
    ):
        action = actions.add_parser(name, parents=[common], help=text, description=text)
        action.add_argument("username", metavar="USERNAME")
        action.set_defaults(handler=_account_command)
    listing = actions.add_parser("list", parents=[common], help="list accounts")
    listing.set_defaults(handler=_account_command)

    invite = commands.add_parser(
        "invite", parents=[common], help="manage invite codes ([auth] registration = invite)",
        description="Invite codes let people create their own account when "
        "[auth] registration = invite: RegisterRequest with an \"invite\" field.",
    )
    invite_actions = invite.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = invite_actions.add_parser(
        "create", parents=[common], help="make a code and print it (shown only once)",
    )
    create.add_argument("--uses", type=int, default=1, metavar="N",
                        help="accounts the code may create (default 1)")
    create.add_argument("--hours", type=float, default=None, metavar="H",
                        help="hours until the code expires (default: never)")
    create.set_defaults(handler=_invite_command)
    invite_list = invite_actions.add_parser(
        "list", parents=[common], help="list usable codes by id (the codes are not kept)",
    )
    invite_list.set_defaults(handler=_invite_command)
    revoke = invite_actions.add_parser("revoke", parents=[common], help="delete a code")
    revoke.add_argument("code", metavar="CODE", help="the code, or its id from invite list")
    revoke.set_defaults(handler=_invite_command)

    names = commands.add_parser(
        "names", parents=[common], help="inspect the shared namespace of users and groups",
    )
    names_actions = names.add_subparsers(dest="action", metavar="ACTION", required=True)
    collisions = names_actions.add_parser(
        "collisions", parents=[common],
        help="list existing names that look like older ones (kept, never renamed)",
    )
    collisions.set_defaults(handler=_names_command)

    add_reports_commands(commands, common, _on_prepared_database)

    db = commands.add_parser("db", parents=[common], help="manage the database schema")
    db_actions = db.add_subparsers(dest="action", metavar="ACTION", required=True)
    upgrade = db_actions.add_parser(
        "upgrade", parents=[common], help="apply the packaged schema migrations",
    )
    upgrade.set_defaults(handler=_db_command)
    add_moderation_commands(commands, actions, common, _on_prepared_database)
    add_data_commands(actions, common, _on_prepared_database)
    add_audit_commands(commands, common, _on_prepared_database)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
