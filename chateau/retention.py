"""The daily retention purge: messages past their chat's retention, and old audit rows.

A :class:`RetentionPurge` (built by chateau.service) runs a minute after the
node starts, then every 24 hours. In a cluster every node has one, and each
run first claims the job in the database (``scheduled_runs``): a node runs
the purge only when no node started one in the last :data:`CLAIM_GAP_MS`,
so one node a day does it, whichever is up, and a restart does not purge
again. :func:`purge_once` does the work, one transaction per batch of at
most :data:`BATCH` rows on the store's pool (never on the reactor thread),
and ``chateau-admin purge`` calls it too, outside any server.

What a message's chat keeps is chateau.store.retention's rule: the group's
``retention_days`` if it sets one, else ``[chat] retention_days`` (groups,
direct and random chats alike); 0 keeps forever. Audit rows older than
``[chat] audit_retention_days`` go the same way. Delivery cursors and
``last_routed_id`` need nothing purged: they are ids, and catch-up reads
only what is still there after a cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chateau.config import ChatConfig
from chateau.store import Store
from chateau.store.audit import purge_txn as purge_audit_txn
from chateau.store.retention import (
    PurgedBatch,
    PurgePlan,
    audit_older_txn,
    cutoff,
    plan_txn,
    purge_batch_txn,
)

# The first run comes this long after start-up (seconds), then one every INTERVAL.
FIRST_RUN_DELAY = 60.0
INTERVAL = 86_400.0
# A node claims a run when none started in the last 23 hours: one run a day
# across the cluster, whichever node's turn comes first.
CLAIM_GAP_MS = 23 * 3_600_000
JOB = "retention"
# Rows deleted per transaction.
BATCH = 1000
# The audit log's actor for the server's own purge.
SERVER = "server"

# Runs ``txn(connection, *args)`` in one transaction: the store runner's
# ``run`` in the server, a blocking call wrapped in a fired Deferred in chateau-admin.
Run = Callable[..., Deferred[Any]]


@dataclass(frozen=True)
class PurgeReport:
    """What a purge removed (or, dry, would remove)."""

    removed: int
    # Messages removed per chat.
    per_chat: dict[str, int]
    audit_removed: int
    dry_run: bool = False

    @property
    def chats(self) -> int:
        return len(self.per_chat)

    @property
    def anything(self) -> bool:
        return bool(self.removed or self.audit_removed)

    def detail(self) -> dict[str, int]:
        """The audit row's detail of a ``retention_purge``."""
        return {"removed": self.removed, "chats": self.chats, "audit_removed": self.audit_removed}


async def purge_once(
    run: Run, chat: ChatConfig, now: int, batch: int = BATCH, dry_run: bool = False,
    going_on: Callable[[], bool] = lambda: True,
) -> PurgeReport:
    """Delete every message past its chat's retention, then old audit rows, batch by batch.

    Groups with their own retention first (each read through its chat's
    index), then every other chat at the server's. With *dry_run* nothing
    is deleted and the report says what would be. Between batches it stops
    early when *going_on* says no (the server is stopping): what is left
    waits for the next run.
    """
    plan: PurgePlan = await run(plan_txn, chat.retention_days, now)
    passes: list[str | None] = sorted(plan.own)
    if plan.default_cutoff is not None:
        passes.append(None)
    removed = 0
    per_chat: dict[str, int] = {}
    for which in passes:
        after = 0
        while going_on():
            done: PurgedBatch = await run(purge_batch_txn, plan, which, after, batch, dry_run)
            removed += done.removed
            for name, count in done.chats.items():
                per_chat[name] = per_chat.get(name, 0) + count
            after = done.last_id
            if done.rows < batch:
                break
    audit_removed = 0
    audit_before = cutoff(chat.audit_retention_days, now)
    if audit_before is not None:
        if dry_run:
            audit_removed = await run(audit_older_txn, audit_before)
        else:
            while going_on():
                gone = await run(purge_audit_txn, audit_before, batch)
                audit_removed += gone
                if gone < batch:
                    break
    return PurgeReport(removed, per_chat, audit_removed, dry_run)


class RetentionPurge:
    """Runs :func:`purge_once` daily on one node of the cluster (see the module's docstring)."""

    log = Logger()

    def __init__(
        self, chat: ChatConfig, store: Store, clock: IReactorTime, node: str,
        batch: int = BATCH,
    ) -> None:
        self._chat = chat
        self._store = store
        self._clock = clock
        self._node = node
        self._batch = batch
        self._loop = LoopingCall(self.run)
        self._loop.clock = clock
        self._first: IDelayedCall | None = None
        self._stopping = False
        # The run in progress, if any: stop() waits for its current batch.
        self._current: Deferred[PurgeReport | None] | None = None

    def now(self) -> int:
        """Milliseconds since the epoch, by this service's clock."""
        return int(self._clock.seconds() * 1000)

    def start(self) -> None:
        self._first = self._clock.callLater(FIRST_RUN_DELAY, self._begin)

    def _begin(self) -> None:
        self._first = None
        self._loop.start(INTERVAL, now=True)

    def stop(self) -> Deferred[None]:
        """Stop the loop; fires once a run in progress has finished its current batch."""
        self._stopping = True
        if self._first is not None and self._first.active():
            self._first.cancel()
        self._first = None
        if self._loop.running:
            self._loop.stop()
        waiting: Deferred[None] = Deferred()
        if self._current is None:
            waiting.callback(None)
        else:

            def release(result: Any) -> Any:
                waiting.callback(None)
                return result

            self._current.addBoth(release)
        return waiting

    def run(self) -> Deferred[PurgeReport | None]:
        """One daily run: claim it, purge, log and audit. Never fails (failures are logged)."""
        current = ensureDeferred(self._run())
        if not current.called:
            self._current = current

            def done(result: PurgeReport | None) -> PurgeReport | None:
                self._current = None
                return result

            current.addBoth(done)
        return current

    async def _run(self) -> PurgeReport | None:
        now = self.now()
        try:
            if not await self._store.retention.claim_run(JOB, self._node, now, CLAIM_GAP_MS):
                self.log.info("retention purge: another node ran it in the last day; skipped")
                return None
            started = self._clock.seconds()
            report = await purge_once(self._store.runner.run, self._chat, now, self._batch,
                                      going_on=lambda: not self._stopping)
            self.log.info(
                "retention purge: removed {removed} message(s) from {chats} chat(s) and "
                "{audit_removed} audit row(s) in {seconds:.1f} s",
                removed=report.removed, chats=report.chats, audit_removed=report.audit_removed,
                seconds=self._clock.seconds() - started,
            )
            if report.anything:
                await self._store.audit.record(SERVER, "retention_purge", "*", **report.detail())
            return report
        except Exception as exc:
            self.log.warn("retention purge failed: {reason}; the next run tries again",
                          reason=str(exc).split("\n")[0] or type(exc).__name__)
            return None
