"""Announcements reaching users: live to whoever is online here, else at sign-in.

Each user is given each announcement once (chateau.store.announcements
keeps their number, ``announced_until``). A node delivers an announcement
to its online users when it applies the notice (chateau.notices) and moves
their numbers; a user signing in takes what is above their number. The two
can meet (a sign-in while the notice is applied): this node remembers the
newest announcement it pushed to each of its users, and neither pushes one
twice.
"""

from __future__ import annotations

from twisted.logger import Logger

from chateau import messages
from chateau.connection import Connection
from chateau.delivery import Delivery
from chateau.registry import Registry
from chateau.store import Store
from chateau.store.records import iso_timestamp


class Announcer:
    """This node's side of announcements."""

    log = Logger()

    def __init__(self, registry: Registry, store: Store, delivery: Delivery) -> None:
        self.registry = registry
        self.store = store
        self.delivery = delivery
        # Per user online here: the newest announcement pushed to them here.
        self._given: dict[str, int] = {}
        # The newest announcement this node has delivered: the notice written
        # with an announcement comes back to the node that made it, and a user
        # who signed in meanwhile took it at sign-in, as one away when it was sent.
        self._delivered = 0

    async def sign_on(self, connection: Connection) -> None:
        """Push *connection*'s user what was announced while they were away.

        Never raises: the sign-in was answered before this runs.
        """
        username = connection.username
        if username is None:
            return
        try:
            pending = await self.store.announcements.take_pending(username)
        except Exception:
            # The sign-in has been answered: the announcements wait for the next one.
            self.log.failure("reading {username}'s announcements failed", username=username)
            return
        given = self._given.get(username, 0)
        for announcement in pending:
            if announcement.id <= given or not connection.live:
                continue
            connection.send_message(messages.announcement_recv(
                announcement.id, announcement.content, announcement.by,
                announcement.timestamp, offline=True,
            ))
            self._given[username] = announcement.id

    async def deliver(self, announcement_id: int, at: int, by: str, content: str) -> None:
        """Push an announcement to every user online here whose account is older."""
        if announcement_id <= self._delivered:
            return
        local = self.registry.local_users()
        self._given = {u: n for u, n in self._given.items() if self.registry.is_local(u)}
        if not local:
            self._delivered = max(self._delivered, announcement_id)
            return
        eligible = await self.store.announcements.given_live(announcement_id, at, local)
        self._delivered = max(self._delivered, announcement_id)
        push = messages.announcement_recv(announcement_id, content, by, iso_timestamp(at))
        to = [u for u in eligible if self._given.get(u, 0) < announcement_id]
        for username in to:
            self._given[username] = announcement_id
        if to:
            self.delivery.deliver_here(to, push)
