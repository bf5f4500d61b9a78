"""When each session key was last used: refreshed while connections use it.

``sessions.last_used_at`` is set when a key signs in or resumes. While a
connection stays signed in with it, this node marks its key used every
:data:`TOUCH_INTERVAL` seconds, in one UPDATE for all of its connections'
keys, and only for keys not marked within :data:`MIN_GAP` (so a key used on
several nodes, or just resumed, is not written again): at most one write per
key every few minutes, never one per message. SessionListResponse's
``last_used`` is therefore exact at sign-in and resume and at most
:data:`TOUCH_INTERVAL` seconds behind for a key in use.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chateau.registry import Registry
from chateau.store import Store

# Seconds between two refreshes of the keys in use on this node.
TOUCH_INTERVAL = 300.0
# A key marked used within this many seconds is not written again.
MIN_GAP = TOUCH_INTERVAL / 2


class SessionUse:
    """Marks the session keys of this node's connections used (a LoopingCall's work)."""

    log = Logger()

    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store

    def keys_in_use(self) -> set[str]:
        return {
            connection.session_key_hash
            for username in self.registry.local_users()
            for connection in self.registry.connections(username)
            if connection.live and connection.session_key_hash is not None
        }

    def touch(self) -> Deferred[int] | None:
        keys = self.keys_in_use()
        if not keys:
            return None
        return self.store.devices.touch(keys, int(MIN_GAP * 1000)).addErrback(
            lambda failure: self.log.failure("could not mark session keys used", failure)
        )
