"""Polling the database for what other processes changed, one poll at a time.

Sign-out everywhere (chateau.signout) and the operators' notices
(chateau.notices) both watch the database from a LoopingCall: a poll that
outlasts its interval must not start a second beside it, and a failed one
is logged and tried again next time. Both look :data:`LOOKBACK_MS` behind
the newest stamp they have seen, since transactions on PostgreSQL may commit
out of the order of their stamps and ids.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

# How far behind the newest stamp seen each poll looks, in ms.
LOOKBACK_MS = 5000


class SinglePoll:
    """Calls *work* when asked, unless its previous call is still running."""

    log = Logger()

    def __init__(self, work: Callable[[], Coroutine[Any, Any, None]], what: str) -> None:
        self._work = work
        self._what = what
        self._running = False

    def __call__(self) -> Deferred[None] | None:
        """One poll; None (nothing started) while the previous one runs."""
        if self._running:
            return None
        self._running = True

        def done(result: object) -> None:
            self._running = False

        return ensureDeferred(self._work()).addErrback(
            lambda failure: self.log.failure("{what} failed", failure, what=self._what)
        ).addBoth(done)
