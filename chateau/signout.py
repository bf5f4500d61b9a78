"""Signing users out everywhere: closing the connections of revoked keys.

A password reset, a disabled or banned account (``chateau-admin``, another process
that only reaches the database), or a sign-in that pushes a user's oldest
key past ``[limits] max_sessions_per_user``, deletes session keys and stamps
``users.revoked_at``. Every node polls that indexed column every
``[chat] revocation_check_interval`` seconds and closes, with
:data:`SIGNED_OUT` (:data:`BANNED` for a user banned server-wide), each of
its connections whose key is no longer live. The
database is what every node shares, so this works the same for a server
alone and for every node of a cluster, with or without Redis.

Stamps are compared only with stamps read from the database (never with
this host's clock), and each poll looks a few seconds behind the newest
stamp seen, so a revocation committed just after a later one is not missed;
checking a user twice is harmless, since only connections whose key is gone
are closed.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chateau.polling import LOOKBACK_MS, SinglePoll
from chateau.registry import Registry
from chateau.store import Store

# The WebSocket close code that tells a client its session is over: its key
# was revoked (password changed, account disabled, or too many sessions) and
# it must ask its user to sign in again. docs/protocol.md documents it.
SIGNED_OUT = 4001
SIGNED_OUT_REASON = "signed out: sign in again"
# The close code of a user banned server-wide (UserBanRequest, chateau-admin
# user ban): their keys are revoked as above, and clients treat it as 4001;
# signing in again is refused with the ban's end and reason.
BANNED = 4003
BANNED_REASON = "banned"
# The close code of an erased account's connections (AccountDeleteRequest,
# chateau-admin user erase), on every node: the account is gone, so
# clients must not offer to sign in again with its key.
ACCOUNT_DELETED = 4005
ACCOUNT_DELETED_REASON = "account deleted"


class SignOut:
    """Closes this node's connections whose session key was revoked."""

    log = Logger()

    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        # The newest revocation stamp read from the database; None before start.
        self._newest: int | None = None
        self._poll = SinglePoll(self._check, "revocation check")

    async def start(self) -> None:
        """Read the newest stamp, so only later revocations are acted on."""
        self._newest = await self.store.sessions.latest_revocation()

    def check(self) -> Deferred[None] | None:
        """One poll (the LoopingCall's); skipped while the previous one runs."""
        if self._newest is None:
            return None
        return self._poll()

    async def _check(self) -> None:
        assert self._newest is not None
        revoked = await self.store.sessions.revocations_since(self._newest - LOOKBACK_MS)
        if not revoked:
            return
        self._newest = max(self._newest, max(stamp for _, stamp in revoked))
        await self.close_revoked([name for name, _ in revoked])

    async def close_revoked(self, usernames: list[str]) -> int:
        """Close the connections here of *usernames* whose key is gone; how many."""
        connections = [
            connection
            for username in usernames
            for connection in self.registry.connections(username)
            if connection.live
        ]
        if not connections:
            return 0
        keys = {c.session_key_hash for c in connections if c.session_key_hash is not None}
        live = await self.store.sessions.live_keys(keys)
        gone = [c for c in connections if c.session_key_hash not in live and c.live]
        banned = set(await self.store.accounts.banned_among(
            sorted({c.username for c in gone if c.username is not None})
        )) if gone else set()
        closed = 0
        for connection in gone:
            if not connection.live:
                continue
            if connection.username in banned:
                self.log.info("closing the connections of {username}: banned",
                              username=connection.username)
                connection.close_for(BANNED, BANNED_REASON)
            else:
                self.log.info(
                    "signing {username} out: their session key was revoked",
                    username=connection.username,
                )
                connection.close_for(SIGNED_OUT, SIGNED_OUT_REASON)
            closed += 1
        return closed
