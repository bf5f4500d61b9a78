"""``chateau-admin``'s moderation commands: server admins, bans, announcements,
deleting messages and groups.

``user admin|unadmin NAME`` grant and take server admin rights; ``user
ban NAME [--hours H] --reason TEXT`` and ``user unban NAME`` ban a user
server-wide; ``message delete ID`` deletes any message; ``announce TEXT``
tells every user; ``group show NAME`` prints a group's topic, settings and
members; ``group add|remove|role`` change its members and roles as its
owner could (its bans and limits hold), and ``group delete NAME`` deletes it
(its name stays taken).

Each is one transaction on the database, recorded in the moderation log
with the actor ``cli:`` + the operator's login name. Running servers learn
of them from the database: a ban closes the user's connections (its keys
are revoked, chateau.signout), and announcements and deletions reach users
online through the notices every node polls (chateau.notices), within
``[chat] revocation_check_interval`` seconds.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from chateau.config import Config

OK = 0

# The same bounds as UserBanRequest (chateau.handlers.operators).
MAX_BAN_HOURS = 87600
MAX_REASON_LENGTH = 500


def actor() -> str:
    """Who the audit log records for a command-line action: ``cli:`` + the login name."""
    from chateau.accounts import cli_actor

    return cli_actor()


# chateau.admin's runner of one command on the prepared database.
Prepared = Callable[[argparse.Namespace, Callable[[Config, Any], int]], int]


def _run(args: argparse.Namespace, work: Callable[[Config, Any], int]) -> int:
    """Run *work* with the runner chateau.admin passed in (``args.prepared``)."""
    prepared: Prepared = args.prepared
    return prepared(args, work)


def _user(raw: str) -> str:
    from chateau.accounts import AdminError
    from chateau.names import USERNAME_RULE, check_username

    name = check_username(raw)
    if name is None:
        raise AdminError(f"invalid username {raw!r}: {USERNAME_RULE}")
    return name


def _within(config: Config) -> str:
    return f"within {config.chat.revocation_check_interval:g} s"


def _admin_command(args: argparse.Namespace) -> int:
    """user admin | unadmin NAME."""
    from chateau.accounts import AdminError
    from chateau.store.accounts import set_admin_txn
    from chateau.store.engine import in_transaction
    from chateau.store.audit import record_txn

    grant = args.action == "admin"

    def work(config: Config, engine: Any) -> int:
        name = _user(args.username)

        def txn(connection: Any) -> None:
            if not set_admin_txn(connection, name, grant):
                raise AdminError(f"no such user: {name!r}")
            record_txn(connection, actor(), "user_admin" if grant else "user_unadmin", name)

        in_transaction(engine, txn)
        print(f"{name!r} is {'now' if grant else 'no longer'} a server admin "
              "(from their next request; sign-ins say admin: true)")
        return OK

    return _run(args, work)


def _ban_command(args: argparse.Namespace) -> int:
    """user ban NAME [--hours H] --reason TEXT | user unban NAME."""
    from chateau.accounts import AdminError
    from chateau.store.accounts import ban_user_txn, unban_user_txn
    from chateau.store.engine import in_transaction
    from chateau.store.records import BAN_FOREVER, ban_end, now_millis

    def work(config: Config, engine: Any) -> int:
        name = _user(args.username)
        if args.action == "unban":
            lifted = in_transaction(engine, unban_user_txn, actor(), name)
            if lifted is None:
                raise AdminError(f"no such user: {name!r}")
            if not lifted:
                raise AdminError(f"{name!r} is not banned")
            print(f"unbanned {name!r}")
            return OK
        hours = args.hours
        if hours is not None and not 1 <= hours <= MAX_BAN_HOURS:
            raise AdminError(f"--hours must be between 1 and {MAX_BAN_HOURS} "
                             "(leave it out to ban until unbanned)")
        reason = args.reason.strip()
        if not reason or len(reason) > MAX_REASON_LENGTH or "\x00" in reason:
            raise AdminError(f"--reason must say why, in at most {MAX_REASON_LENGTH} characters")
        until = BAN_FOREVER if hours is None else now_millis() + hours * 3_600_000
        revoked = in_transaction(engine, ban_user_txn, actor(), name, until, reason)
        if revoked is None:
            raise AdminError(f"no such user: {name!r}")
        print(f"banned {name!r} until {ban_end(until)}; {revoked} session key(s) revoked; "
              f"running servers close the account's connections {_within(config)} "
              "(close code 4003)")
        return OK

    return _run(args, work)


def _message_command(args: argparse.Namespace) -> int:
    """message delete ID."""
    from chateau.accounts import AdminError
    from chateau.store.engine import in_transaction
    from chateau.store.operators import delete_message_as_operator_txn

    def work(config: Config, engine: Any) -> int:
        done = in_transaction(engine, delete_message_as_operator_txn, actor(), args.id,
                              args.reason)
        if done == "missing":
            raise AdminError(f"no message with id {args.id}")
        if done == "event":
            raise AdminError("a group's system events cannot be deleted")
        print(f"deleted message {args.id} of {done.sender!r} in {done.chat!r}; members online "
              f"are told {_within(config)}")
        return OK

    return _run(args, work)


def _announce_command(args: argparse.Namespace) -> int:
    """announce TEXT."""
    from chateau.accounts import AdminError
    from chateau.messages import largest_message_frame
    from chateau.store.announcements import announce_txn
    from chateau.store.engine import in_transaction

    def work(config: Config, engine: Any) -> int:
        text = args.text
        limit = config.chat.max_content_length
        if not text.strip() or "\x00" in text:
            raise AdminError("the announcement must say something (and hold no NUL)")
        if len(text) > limit or largest_message_frame(text) > config.server.max_message_size:
            raise AdminError(f"the announcement is longer than [chat] max_content_length "
                             f"({limit} characters) or than a frame may carry")
        announcement = in_transaction(engine, announce_txn, actor(), text)
        print(f"announcement {announcement.id}: users online get it {_within(config)}, "
              "the others when they next sign in")
        return OK

    return _run(args, work)


def _group_command(args: argparse.Namespace) -> int:
    """group show | add | remove | role | delete NAME."""
    from chateau.accounts import AdminError
    from chateau.names import canonical
    from chateau.store.engine import in_transaction
    from chateau.store.groups import group_info_txn
    from chateau.store.operators import delete_group_txn
    from chateau.store.records import iso_timestamp

    def work(config: Config, engine: Any) -> int:
        name = canonical(args.chatname)
        if args.action == "delete":
            deleted = in_transaction(engine, delete_group_txn, actor(), name, args.reason)
            if deleted is None:
                raise AdminError(f"no such group: {name!r}")
            print(f"deleted group {name!r} ({len(deleted.members)} member(s) told "
                  f"{_within(config)}); its name stays taken and its messages are kept")
            return OK
        if args.action == "add":
            return _group_add(config, engine, name, args.usernames)
        if args.action == "remove":
            return _group_remove(config, engine, name, args.username, args.ban, args.reason)
        if args.action == "role":
            return _group_role(config, engine, name, args.username, args.role)
        info = in_transaction(engine, group_info_txn, name)
        if info is None:
            raise AdminError(f"no such group: {name!r}")
        print(f"group      {info.chatname}")
        print(f"created    {iso_timestamp(info.created_at)} by {info.creator}")
        print(f"topic      {info.topic}")
        print(f"settings   join={info.join_rule} visibility={info.visibility} "
              f"who_can_add={info.who_can_add} who_can_send={info.who_can_send} "
              f"retention_days={_retention(info.retention_days, config)}")
        for member in info.members:
            muted = ("" if member.muted_until is None
                     else f"  muted until {iso_timestamp(member.muted_until)}")
            print(f"  {member.username:<32} {member.role:<7}{muted}")
        print(f"{len(info.members)} member(s)")
        return OK

    return _run(args, work)


def _retention(days: int | None, config: Config) -> str:
    """A group's retention as ``group show`` prints it."""
    if days is None:
        return f"{config.chat.retention_days} (the server's)"
    return str(days)


def _group_add(config: Config, engine: Any, chatname: str, raw_names: list[str]) -> int:
    from chateau.accounts import AdminError
    from chateau.store.engine import in_transaction
    from chateau.store.operators import add_group_members_txn

    names: list[str] = []
    for raw in raw_names:
        name = _user(raw)
        if name not in names:
            names.append(name)
    outcome = in_transaction(
        engine, add_group_members_txn, actor(), chatname, names,
        config.chat.max_group_members, config.limits.max_groups_per_user,
    )
    refusals = {
        "no_group": f"no such group: {chatname!r}",
        "missing": f"no such user: {outcome.who!r}",
        "banned": f"{outcome.who!r} is banned from {chatname!r} (group unban first)",
        "full": f"a group has at most {config.chat.max_group_members} members "
                "([chat] max_group_members)",
        "too_many_groups": f"{outcome.who!r} is already in {config.limits.max_groups_per_user} "
                           "groups ([limits] max_groups_per_user)",
        "synced": f"the membership of {chatname!r} follows the campus directory; change it "
                  "there (chateau-admin ldap-sync)",
    }
    if outcome.refusal is not None:
        raise AdminError(refusals.get(outcome.refusal, outcome.refusal))
    added = ", ".join(repr(n) for n in outcome.added) or "nobody"
    already = f"; already members: {', '.join(repr(n) for n in outcome.already)}" \
        if outcome.already else ""
    print(f"added {added} to {chatname!r}{already}; they are told {_within(config)} if online, "
          "else when they next sign in")
    return OK


def _group_remove(
    config: Config, engine: Any, chatname: str, raw: str, ban: bool, reason: str,
) -> int:
    from chateau.accounts import AdminError
    from chateau.store.engine import in_transaction
    from chateau.store.operators import remove_group_member_as_operator_txn

    name = _user(raw)
    reason = reason.strip()
    if len(reason) > MAX_REASON_LENGTH or "\x00" in reason:
        raise AdminError(f"--reason must be at most {MAX_REASON_LENGTH} characters")
    outcome, role, heir = in_transaction(
        engine, remove_group_member_as_operator_txn, actor(), chatname, name, ban, reason,
    )
    if outcome == "no_group":
        raise AdminError(f"no such group: {chatname!r}")
    if outcome == "no_user":
        raise AdminError(f"no such user: {name!r}")
    if outcome == "synced":
        raise AdminError(f"the membership of {chatname!r} follows the campus directory; "
                         "change it there (chateau-admin ldap-sync)")
    if outcome == "not_member":
        raise AdminError(f"{name!r} is not a member of {chatname!r} (use --ban to ban anyway)")
    done = "banned" if ban else "removed"
    new_owner = f"; {heir!r} is now its owner" if heir else ""
    print(f"{done} {name!r} {'from' if role else 'in'} {chatname!r}{new_owner}; members are told "
          f"{_within(config)}")
    return OK


def _group_role(config: Config, engine: Any, chatname: str, raw: str, role: str) -> int:
    from chateau.accounts import AdminError
    from chateau.store.engine import in_transaction
    from chateau.store.operators import set_group_role_as_operator_txn

    name = _user(raw)
    outcome = in_transaction(engine, set_group_role_as_operator_txn, actor(), chatname, name, role)
    refusals = {
        "no_group": f"no such group: {chatname!r}",
        "not_member": f"{name!r} is not a member of {chatname!r}",
        "last_owner": f"{name!r} is the last owner of {chatname!r}: make another member "
                      "owner first",
    }
    if outcome in refusals:
        raise AdminError(refusals[outcome])
    if outcome == "same":
        print(f"{name!r} already is {role} in {chatname!r}")
    else:
        print(f"{name!r} is now {role} in {chatname!r}; members are told {_within(config)}")
    return OK


def add_moderation_commands(
    commands: Any, user_actions: Any, common: argparse.ArgumentParser, prepared: Prepared
) -> None:
    """Add these commands to chateau-admin's parser (*commands*: its
    subcommands; *user_actions*: those of ``user``); each runs its work
    through *prepared* (chateau.admin's ``_on_prepared_database``)."""
    for name, text in (("admin", "make the user a server admin"),
                       ("unadmin", "take the user's server admin rights")):
        action = user_actions.add_parser(name, parents=[common], help=text, description=text)
        action.add_argument("username", metavar="USERNAME")
        action.set_defaults(handler=_admin_command, prepared=prepared)
    ban = user_actions.add_parser(
        "ban", parents=[common], help="ban the user server-wide: sign-ins refused, "
        "keys revoked, connections closed (4003)",
    )
    ban.add_argument("username", metavar="USERNAME")
    ban.add_argument("--hours", type=int, default=None, metavar="H",
                     help="hours the ban lasts (default: until unbanned)")
    ban.add_argument("--reason", required=True, metavar="TEXT",
                     help="why (the user is told it when refused)")
    ban.set_defaults(handler=_ban_command, prepared=prepared)
    unban = user_actions.add_parser("unban", parents=[common], help="lift a server-wide ban")
    unban.add_argument("username", metavar="USERNAME")
    unban.set_defaults(handler=_ban_command, prepared=prepared)

    message = commands.add_parser("message", parents=[common], help="moderate messages")
    message_actions = message.add_subparsers(dest="action", metavar="ACTION", required=True)
    delete = message_actions.add_parser(
        "delete", parents=[common], help="delete any message (members online are told)",
    )
    delete.add_argument("id", type=int, metavar="ID")
    delete.add_argument("--reason", default="", metavar="TEXT",
                        help="why (for the moderation log)")
    delete.set_defaults(handler=_message_command, prepared=prepared)

    announce = commands.add_parser(
        "announce", parents=[common], help="tell every user (now if online, else at sign-in)",
    )
    announce.add_argument("text", metavar="TEXT")
    announce.set_defaults(handler=_announce_command, prepared=prepared)

    group = commands.add_parser("group", parents=[common], help="inspect and moderate groups")
    group_actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = group_actions.add_parser(
        "show", parents=[common], help="the group's topic, settings and members with roles",
    )
    show.add_argument("chatname", metavar="NAME")
    show.set_defaults(handler=_group_command, prepared=prepared)
    add = group_actions.add_parser(
        "add", parents=[common], help="add users to the group (its bans and limits hold)",
    )
    add.add_argument("chatname", metavar="NAME")
    add.add_argument("usernames", nargs="+", metavar="USERNAME")
    add.set_defaults(handler=_group_command, prepared=prepared)
    kick = group_actions.add_parser(
        "remove", parents=[common], help="remove (or ban) a user from the group",
    )
    kick.add_argument("chatname", metavar="NAME")
    kick.add_argument("username", metavar="USERNAME")
    kick.add_argument("--ban", action="store_true",
                      help="also ban them: no way back until unbanned")
    kick.add_argument("--reason", default="", metavar="TEXT", help="why (they are told it)")
    kick.set_defaults(handler=_group_command, prepared=prepared)
    role = group_actions.add_parser(
        "role", parents=[common], help="give a member a role (the group keeps an owner)",
    )
    role.add_argument("chatname", metavar="NAME")
    role.add_argument("username", metavar="USERNAME")
    role.add_argument("role", choices=("owner", "admin", "member"), metavar="ROLE",
                      help="owner, admin or member")
    role.set_defaults(handler=_group_command, prepared=prepared)
    remove = group_actions.add_parser(
        "delete", parents=[common],
        help="delete the group (members are told; its name stays taken, its messages kept)",
    )
    remove.add_argument("chatname", metavar="NAME")
    remove.add_argument("--reason", default="", metavar="TEXT",
                        help="why (members are told it)")
    remove.set_defaults(handler=_group_command, prepared=prepared)
