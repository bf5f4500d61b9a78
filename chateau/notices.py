"""Acting on changes made in the database by another process: the notices.

``chateau-admin`` reaches only the database; a node's protocol handlers
reach the others through it too when the change must hold everywhere
(an announcement). Such a change is appended to ``admin_notices`` in the
transaction that makes it (chateau.store.notices), and every node polls for
notices above the newest id it has seen, every ``[chat]
revocation_check_interval`` seconds, as chateau.signout polls revocations:
one indexed query, the same for a server alone and for every node of a
cluster, with or without Redis.

Ids are not always committed in order (two transactions on PostgreSQL may
commit in the opposite order of their ids), so each poll also looks
:data:`LOOKBACK_MS` behind the newest stamp seen, as chateau.signout does,
and skips the notices it has already applied.

Each kind of notice has one applier, passed in at construction (see
chateau.service): a function of the notice's body that acts on this node
only. A kind without an applier is logged and skipped, so an older node
ignores what a newer ``chateau-admin`` writes.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chateau.polling import LOOKBACK_MS, SinglePoll
from chateau.store import Store

# What acts on one kind of notice here; may return an awaitable.
Applier = Callable[[dict[str, Any]], "Awaitable[None] | None"]


class NoticeWatch:
    """Polls ``admin_notices`` and applies each new notice on this node."""

    log = Logger()

    def __init__(self, store: Store, appliers: Mapping[str, Applier]) -> None:
        self.store = store
        self.appliers = dict(appliers)
        # The newest notice id seen; None before start.
        self._newest: int | None = None
        # The newest stamp seen, and the notices seen within LOOKBACK_MS of
        # it (id -> stamp), which are not applied again.
        self._newest_at = 0
        self._seen: dict[int, int] = {}
        self._poll = SinglePoll(self._check, "notice check")

    async def start(self) -> None:
        """Note the notices there are, so only later ones are acted on."""
        newest, self._newest_at = await self.store.notices.latest()
        for notice in await self.store.notices.since(newest, self._newest_at - LOOKBACK_MS):
            self._note(notice.id, notice.at)
        self._newest = newest

    def _note(self, notice_id: int, at: int) -> None:
        self._seen[notice_id] = at
        self._newest_at = max(self._newest_at, at)

    def check(self) -> Deferred[None] | None:
        """One poll (the LoopingCall's); skipped while the previous one runs."""
        if self._newest is None:
            return None
        return self._poll()

    async def _check(self) -> None:
        assert self._newest is not None
        found = await self.store.notices.since(
            self._newest, self._newest_at - LOOKBACK_MS, self._seen
        )
        for notice in found:
            if notice.id in self._seen:
                continue
            self._newest = max(self._newest, notice.id)
            self._note(notice.id, notice.at)
            applier = self.appliers.get(notice.kind)
            if applier is None:
                self.log.warn("notice {id} of unknown kind {kind} skipped",
                              id=notice.id, kind=notice.kind)
                continue
            try:
                result = applier(notice.body)
                if result is not None:
                    await result
            except Exception:
                self.log.failure("applying notice {id} ({kind}) failed",
                                 id=notice.id, kind=notice.kind)
        horizon = self._newest_at - LOOKBACK_MS
        self._seen = {n: at for n, at in self._seen.items() if at >= horizon}
