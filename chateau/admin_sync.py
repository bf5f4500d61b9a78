"""``chateau-admin ldap-sync [--dry-run]``: sync the directory's groups now.

It reads the directory's groups as the server's group sync does
(``Directory.groups``, :func:`chateau.group_sync.plan`) and runs the very
same transaction per group (:func:`chateau.store.group_sync.sync_group_txn`)
on the calling thread, printing each change:

- ``+ group NAME``: a chat group made for a directory group;
- ``+ NAME USER`` / ``- NAME USER``: a member added / removed;
- ``! skipped NAME: REASON``: a directory group that cannot be synced (its
  name is a user's, or a group's not synced from the directory, or not a
  valid name...), or one of its members who cannot be added.

With ``--dry-run`` each transaction is rolled back
(:func:`chateau.store.group_sync.rehearse`), so what is printed is exactly
what a sync would do, and nothing changes. Otherwise each change writes a
``group_synced`` notice in its transaction: the running nodes reload the
group and tell their online members (chateau.handlers.synced_groups);
members offline are told at their next sign-in. Exit status: 0 done, 1
when the directory could not be read (nothing changed), 2 for a usage or
configuration error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

OK, WOULD_FAIL, USAGE = 0, 1, 2

# chateau-admin's loader: the config with [ldap] checked, or None (said on stderr).
LoadLdap = Callable[[argparse.Namespace], Any]


def add_sync_command(commands: Any, common: argparse.ArgumentParser, load: LoadLdap) -> None:
    """Add ``ldap-sync`` to chateau-admin's subcommands."""
    sync = commands.add_parser(
        "ldap-sync", parents=[common],
        help="sync the directory's groups now ([ldap] sync_base)",
        description=(
            "Read the directory's groups as the server's group sync does and print what "
            "changes: '+ group NAME' (created), '+ NAME USER' (added), '- NAME USER' "
            "(removed), '! skipped NAME: REASON'; then make the changes, unless --dry-run. "
            "Running servers tell online members of them."
        ),
    )
    sync.add_argument("--dry-run", action="store_true",
                      help="only print what a sync would change")
    sync.set_defaults(handler=lambda args: ldap_sync(args, load))


def ldap_sync(args: argparse.Namespace, load: LoadLdap) -> int:
    """Sync the directory's groups now (or, with --dry-run, say what a sync would do)."""
    from chateau.auth.directory import Directory, DirectoryError
    from chateau.group_sync import plan
    from chateau.store.engine import in_transaction, make_engine
    from chateau.store.group_sync import rehearse, sync_group_txn, synced_groups_txn
    from chateau.store.migrate import SchemaOutOfDate, prepare

    config = load(args)
    if config is None:
        return USAGE
    settings = config.ldap
    if not settings.sync_base:
        print("chateau-admin: [ldap] sync_base is empty: group sync is off", file=sys.stderr)
        return USAGE
    try:
        found = Directory(settings).groups()
    except DirectoryError as failure:
        print(f"chateau-admin: cannot read the directory's groups, nothing changed: "
              f"{failure.reason}", file=sys.stderr)
        return WOULD_FAIL
    planned = plan(found, settings.sync_prefix)
    engine = make_engine(config.database.url)
    run = rehearse if args.dry_run else in_transaction
    counts = {"created": 0, "added": 0, "removed": 0, "skipped": 0}
    try:
        in_transaction(engine, prepare)
        for name, reason in planned.skipped:
            print(f"! skipped {name}: {reason}")
            counts["skipped"] += 1
        for group in planned.groups:
            outcome = run(
                engine, sync_group_txn, group.dn, group.chatname, list(group.members),
                planned.present, set(), config.chat.max_group_members,
                config.limits.max_groups_per_user, True, True,
            )
            if outcome.skipped is not None:
                print(f"! skipped {outcome.chatname}: {outcome.skipped}")
                counts["skipped"] += 1
                continue
            if outcome.waiting:
                print(f"! skipped {outcome.chatname}: none of its {len(group.members)} "
                      "member(s) has a directory account here yet (it is made at the first "
                      "sync after one signs in)")
                counts["skipped"] += 1
            if outcome.created:
                print(f"+ group {outcome.chatname}")
                counts["created"] += 1
            for name in outcome.added:
                print(f"+ {outcome.chatname} {name}")
            for name in outcome.removed:
                print(f"- {outcome.chatname} {name}")
            for name in outcome.limited:
                print(f"! skipped {outcome.chatname}: {name!r} is already in "
                      f"{config.limits.max_groups_per_user} groups ([limits] "
                      "max_groups_per_user)")
            counts["added"] += len(outcome.added)
            counts["removed"] += len(outcome.removed)
        for dn, chatname in sorted(in_transaction(engine, synced_groups_txn).items()):
            if dn not in planned.present:
                print(f"! skipped {chatname}: {dn} is no longer in the directory; its members "
                      "stay as they are")
    except SchemaOutOfDate as exc:
        print(f"chateau-admin: {exc}", file=sys.stderr)
        return WOULD_FAIL
    finally:
        engine.dispose()
    summary = (f"{len(planned.groups)} directory group(s): {counts['created']} created, "
               f"{counts['added']} member(s) added, {counts['removed']} removed, "
               f"{counts['skipped']} skipped")
    if args.dry_run:
        print(f"{summary} (dry run: nothing changed)")
    else:
        print(f"{summary}; running servers tell online members within "
              f"{config.chat.revocation_check_interval:g} s")
    return OK
