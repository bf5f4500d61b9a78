"""Deprovisioning: the directory's "no" reaches accounts that are already signed in.

A session key lives for ``[chat] session_lifetime_days``; without a second
look, a student removed from the directory (or from ``required_group``)
would keep chatting on it for weeks. :class:`Deprovisioner` looks again:
every directory account with a live session key, or a connection on this
node, is checked against the directory at most ``[ldap] recheck_interval``
seconds after its last check (or its last directory sign-in). The node looks
for due accounts every tenth of the interval and claims them in the database
(chateau.store.deprovisioning), so two nodes never check the same account in
one interval and an account that fails loses its keys and connections within
one interval of the directory's change.

A check (``Directory.account_status`` on the directory checker's pool, with
its deadline) fails when the entry is gone (``missing``), matches ``[ldap]
disabled_filter`` (``disabled``) or is not in ``required_group``
(``not_in_group``). An entry found by its stable id (``users.directory_id``)
under another uid was renamed, which is no reason to shut the account out.
A failed account is deprovisioned: every key revoked and the revocation
stamped in one transaction, so chateau.signout closes its connections on
every node (4001); the row is marked and the audit log says why.

When the directory cannot answer, nobody is signed out: the claim is given
back, a warning logged and ``chateau_directory_checks_total{result=
"unavailable"}`` counted, and the next look (a tenth of the interval later)
catches up. A ``ResumeRequest`` of a directory account last checked more than
an interval ago checks first (:meth:`Deprovisioner.recheck_on_resume`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chateau.auth.directory import ACCOUNT_OK, AccountStatus, DirectoryError
from chateau.config import LdapConfig
from chateau.metrics import Metrics
from chateau.names import check_username
from chateau.polling import SinglePoll
from chateau.store import Store
from chateau.store.deprovisioning import DueAccount

# Looks an account up: (username, directory_id) -> what the directory says now.
Lookup = Callable[[str, "str | None"], "Deferred[AccountStatus]"]

# The node looks for due accounts this many times an interval.
LOOKS_PER_INTERVAL = 10
# Accounts claimed at once; a look claims batch after batch until none is due.
BATCH = 100

OK = "ok"
FAILED = "failed"
UNAVAILABLE = "unavailable"


class Deprovisioner:
    """Re-checks directory accounts and deprovisions those the directory refuses."""

    log = Logger()

    def __init__(
        self, settings: LdapConfig, store: Store, lookup: Lookup, metrics: Metrics,
        local_users: Callable[[], Iterable[str]], clock: Any,
    ) -> None:
        self.store = store
        self._lookup = lookup
        self._checks = {
            result: metrics.directory_checks.labels(result)
            for result in (OK, FAILED, UNAVAILABLE)
        }
        self._local_users = local_users
        self._clock = clock
        self.interval = settings.recheck_interval
        self.every = self.interval / LOOKS_PER_INTERVAL
        # Leave sign-ins half of the directory pool.
        self._at_once = DeferredSemaphore(max(1, settings.threads // 2))
        self._poll = SinglePoll(self._check_due, "directory re-check")
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        self._loop.start(self.every, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self) -> Deferred[None] | None:
        """One look for due accounts (the LoopingCall's); skipped while one runs."""
        return self._poll()

    # -- the checks ---------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def _check_due(self) -> None:
        while True:
            now = self._now()
            # Due a little early, so that each account is checked again within
            # one interval of its last check whatever the phase of the looks.
            cutoff = now - int((self.interval - self.every) * 1000)
            claims = await self.store.deprovisioning.claim_due(
                now, cutoff, self._local_users(), BATCH
            )
            if not claims:
                return
            if not await self._check_batch(claims) or len(claims) < BATCH:
                return

    async def _check_batch(self, claims: list[DueAccount]) -> bool:
        """Check *claims*, a few at a time; False when the directory stopped answering."""
        answering = True
        skipped: list[DueAccount] = []

        async def one(claim: DueAccount) -> None:
            nonlocal answering
            if not answering:
                skipped.append(claim)
                return
            if await self._check(claim, "recheck") == UNAVAILABLE:
                answering = False

        await gatherResults([
            self._at_once.run(lambda claim=claim: ensureDeferred(one(claim)))
            for claim in claims
        ])
        if skipped:
            await self.store.deprovisioning.release(skipped)
        return answering

    async def recheck_on_resume(self, username: str) -> bool:
        """Before a directory account resumes: False when the directory refuses it now.

        Only an account last checked more than an interval ago is looked up;
        when the directory cannot answer, the resume goes on.
        """
        now = self._now()
        claim = await self.store.deprovisioning.claim_one(
            username, now, now - int(self.interval * 1000)
        )
        if claim is None:
            return True
        return await self._check(claim, "resume") != FAILED

    async def _check(self, claim: DueAccount, via: str) -> str:
        """Look *claim* up and act on the answer: OK, FAILED or UNAVAILABLE."""
        username = claim.username
        try:
            status = await self._lookup(username, claim.directory_id)
        except Exception as failure:
            reason = failure.reason if isinstance(failure, DirectoryError) else repr(failure)
            self._checks[UNAVAILABLE].inc()
            self.log.warn(
                "directory re-check of {username} failed: {reason}; nobody is signed out "
                "until the directory answers", username=username, reason=reason,
            )
            await self.store.deprovisioning.release([claim])
            return UNAVAILABLE
        if status.status == ACCOUNT_OK:
            self._checks[OK].inc()
            if status.uid is not None and check_username(status.uid) != username:
                self.log.info(
                    "directory account {username} is {uid!r} in the directory now "
                    "({dn}): renamed, not deprovisioned", username=username,
                    uid=status.uid, dn=status.dn,
                )
            return OK
        self._checks[FAILED].inc()
        detail: dict[str, Any] = {"via": via}
        if status.dn is not None:
            detail["dn"] = status.dn
        revoked = await self.store.deprovisioning.deprovision(
            username, status.status, self._now(), **detail
        )
        self.log.info(
            "directory account {username} deprovisioned ({reason}, found on {via}): "
            "{revoked} session key(s) revoked; its connections close on every node",
            username=username, reason=status.status, via=via, revoked=revoked or 0,
        )
        return FAILED
