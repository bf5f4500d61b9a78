"""Directory groups become chat groups: the group sync ([ldap] sync_base).

Every ``[ldap] sync_interval`` seconds each node asks the database for the
turn (:func:`chateau.store.group_sync.claim_run_txn`: one row holds when
a sync last started, and only the node whose UPDATE moves it runs, so in a
cluster one node at a time syncs, about once per interval). The node that
has the turn reads the directory's groups on the directory's thread pool
with a deadline (``Directory.groups``: a paged search of ``sync_base`` for
``sync_filter``), names each one ``sync_prefix`` + its
``sync_name_attribute`` (canonicalised as every chat name is), and syncs
each group in a transaction of its own (chateau.store.group_sync); the
members are told as the governance requests tell them
(chateau.handlers.synced_groups). When the directory cannot be read,
nothing changes: a sync never acts on half an answer.

:func:`plan` is shared with ``chateau-admin ldap-sync``, which runs the
same transactions itself and lets the nodes know through a notice.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from chateau.auth.directory import (
    UNAVAILABLE_DETAIL,
    Directory,
    DirectoryError,
    DirectoryGroup,
    DirectoryUnavailable,
)
from chateau.errors import ChateauError
from chateau.handlers.context import Services
from chateau.handlers.synced_groups import apply_sync
from chateau.names import CHATNAME_RULE, check_new_chatname, check_username
from chateau.polling import SinglePoll
from chateau.store.errors import StoreUnavailable
from chateau.store.group_sync import SyncOutcome
from chateau.threads import in_thread_with_deadline, run_in_background_priority

# A node takes the turn when no sync started in the last 90% of the
# interval, so that the nodes' own timers drifting apart never skip a turn.
TURN_SHARE = 0.9


@dataclass(frozen=True)
class PlannedGroup:
    """A directory group as a chat group: its DN, its name here, its members' names."""

    dn: str
    chatname: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    groups: list[PlannedGroup]
    # (name, why) of the directory groups that cannot be chat groups.
    skipped: list[tuple[str, str]]
    # Every DN the directory has under sync_base, skipped ones too: a synced
    # group whose DN is not among them is no longer in the directory.
    present: frozenset[str] = frozenset()


def plan(found: list[DirectoryGroup], prefix: str) -> Plan:
    """Names and members of the directory's groups, as the chat would have them.

    A name that is not a valid chat name, or that two directory groups
    would share (the first by DN is kept), is skipped with the reason.
    Member names that are not valid usernames are left out: no account can
    have them.
    """
    planned: list[PlannedGroup] = []
    skipped: list[tuple[str, str]] = []
    first: dict[str, str] = {}
    for group in sorted(found, key=lambda g: g.dn.lower()):
        chatname = check_new_chatname(prefix + group.name)
        if chatname is None:
            skipped.append((prefix + group.name, f"not a valid group name ({group.dn}): "
                            f"{CHATNAME_RULE}"))
            continue
        if chatname in first:
            skipped.append((chatname, f"{group.dn} has the same name as {first[chatname]}"))
            continue
        first[chatname] = group.dn
        members = []
        for uid in group.members:
            name = check_username(uid)
            if name is not None and name not in members:
                members.append(name)
        planned.append(PlannedGroup(group.dn, chatname, tuple(sorted(members))))
    return Plan(planned, skipped, frozenset(group.dn for group in found))


class GroupSync:
    """The group sync of one node: a LoopingCall, started and stopped with the service."""

    log = Logger()

    def __init__(
        self, ctx: Services, directory: Directory, reactor: Any, pool: ThreadPool, node: str,
    ) -> None:
        self.ctx = ctx
        self.directory = directory
        self.reactor = reactor
        self.pool = pool
        self.node = node
        settings = ctx.config.ldap
        self.interval = settings.sync_interval
        self.prefix = settings.sync_prefix
        # The whole read may take longer than one sign-in's deadline (many
        # groups, many members); each LDAP answer is still bounded by timeout.
        self.deadline = max(directory.timeout * (len(directory.urls) + 1), self.interval / 2)
        self._poll = SinglePoll(self._turn, "group sync")
        self._loop = LoopingCall(self.check)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self) -> Deferred[None] | None:
        """One tick (the LoopingCall's); skipped while the previous sync runs."""
        return self._poll()

    async def _turn(self) -> None:
        gap_ms = int(self.interval * 1000 * TURN_SHARE)
        try:
            if not await self.ctx.store.group_sync.claim_run(self.node, gap_ms):
                return
        except StoreUnavailable as exc:
            self.log.warn("group sync: cannot take the turn, the database is unavailable: "
                          "{reason}", reason=str(exc).splitlines()[0] if str(exc) else "")
            return
        await self.run()

    def read(self) -> Deferred[list[DirectoryGroup]]:
        """The directory's groups, read on the directory's pool within the deadline."""
        def job(cancelled: threading.Event) -> list[DirectoryGroup]:
            run_in_background_priority()
            return self.directory.groups(cancelled=cancelled)

        def expired(timeout: float) -> DirectoryUnavailable:
            return DirectoryUnavailable(
                UNAVAILABLE_DETAIL,
                f"no result within {timeout:g} s from {' '.join(self.directory.urls)}",
            )

        return in_thread_with_deadline(self.reactor, self.pool, self.deadline, job, expired)

    async def run(self) -> list[SyncOutcome]:
        """One sync, whoever's turn: what changed, group by group."""
        try:
            found = await self.read()
        except DirectoryError as failure:
            self.log.warn("group sync: cannot read the directory's groups, nothing changed: "
                          "{reason}", reason=failure.reason)
            return []
        planned = plan(found, self.prefix)
        for name, reason in planned.skipped:
            self.log.warn("group sync: skipped {chatname}: {reason}", chatname=name,
                          reason=reason)
        present = planned.present
        outcomes = []
        for group in planned.groups:
            outcome = await self._sync_one(group, present)
            if outcome is not None:
                outcomes.append(outcome)
        try:
            synced = await self.ctx.store.group_sync.synced_groups()
        except StoreUnavailable:
            synced = {}
        for dn, chatname in sorted(synced.items()):
            if dn not in present:
                self.log.warn(
                    "group sync: {chatname} follows {dn}, which is no longer in the directory "
                    "under [ldap] sync_base; its members stay as they are (delete it with "
                    "chateau-admin group delete)", chatname=chatname, dn=dn)
        return outcomes

    async def _sync_one(self, group: PlannedGroup, present: frozenset[str]) -> SyncOutcome | None:
        ctx = self.ctx
        registry = ctx.registry
        current = registry.group(group.chatname)
        concerned = set(group.members) | (current.members if current is not None else set())
        try:
            ctx.delivery.check_reachable(sorted(concerned))
            outcome = await ctx.store.group_sync.sync_group(
                group.dn, group.chatname, list(group.members), present,
                [name for name in concerned if registry.is_online(name)],
                ctx.config.chat.max_group_members, ctx.config.limits.max_groups_per_user,
            )
        except (ChateauError, StoreUnavailable) as exc:
            self.log.warn("group sync: {chatname} not synced this time: {reason}",
                          chatname=group.chatname, reason=getattr(exc, "detail", None) or exc)
            return None
        if outcome.skipped is not None:
            self.log.warn("group sync: skipped {chatname} ({dn}): {reason}",
                          chatname=group.chatname, dn=group.dn, reason=outcome.skipped)
            return outcome
        if outcome.limited:
            self.log.warn(
                "group sync: {users} not added to {chatname}: already in [limits] "
                "max_groups_per_user groups", users=", ".join(outcome.limited),
                chatname=outcome.chatname)
        if outcome.changed:
            self.log.info(
                "group sync: {chatname}{created} +{added} -{removed}",
                chatname=outcome.chatname, created=" created" if outcome.created else "",
                added=",".join(outcome.added) or "nobody",
                removed=",".join(outcome.removed) or "nobody")
            try:
                await apply_sync(ctx, outcome)
            except Exception:
                self.log.failure("group sync: telling the members of {chatname} failed",
                                 chatname=outcome.chatname)
        return outcome
