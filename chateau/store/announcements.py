"""Announcements by server admins, and which of them each user has been given.

Each user has one number, ``users.announced_until``: the newest
announcement they were given. An announcement goes live to whoever is
online on each node (:func:`given_live_txn` moves their numbers), and the
others get what is above their number when they next sign in
(:func:`take_pending_txn`). An account created after an announcement never
gets it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.audit import record_txn
from chateau.store.notices import append_notice_txn
from chateau.store.records import iso_timestamp, now_millis
from chateau.store.tables import announcements, users

# The most announcements pushed at one sign-in (the newest ones).
MAX_PENDING = 50
# Users per statement when an announcement goes live.
SLICE = 1000


@dataclass(frozen=True)
class Announcement:
    id: int
    at: int
    by: str
    content: str

    @property
    def timestamp(self) -> str:
        return iso_timestamp(self.at)


class Announcements:
    """Announcements: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def announce(self, by: str, content: str) -> Deferred[Announcement]:
        """Store it, record it and tell every node (a notice), in one transaction."""
        return self._runner.run(announce_txn, by, content)

    def take_pending(self, username: str) -> Deferred[list[Announcement]]:
        """What *username* has not been given yet, oldest first; now given."""
        return self._runner.run(take_pending_txn, username)

    def given_live(self, announcement_id: int, at: int, usernames: list[str]) -> Deferred[list[str]]:
        """Those of *usernames* whose accounts are older than the announcement; now given."""
        return self._runner.run(given_live_txn, announcement_id, at, usernames)


def announce_txn(connection: Connection, by: str, content: str) -> Announcement:
    now = now_millis()
    result = connection.execute(insert(announcements).values(at=now, by=by, content=content))
    announcement = Announcement(int(result.inserted_primary_key[0]), now, by, content)
    record_txn(connection, by, "announce", "*", "", {"id": announcement.id, "content": content})
    append_notice_txn(connection, "announcement", {
        "id": announcement.id, "at": now, "by": by, "content": content,
    })
    return announcement


def take_pending_txn(connection: Connection, username: str) -> list[Announcement]:
    """Read what the user has not been given; if anything, move their number
    past it only if nobody else moved it meanwhile (compare and set), so two
    sign-ins on different nodes never both take the same announcements. A
    sign-in with nothing pending (nearly all of them) writes nothing."""
    mine = users.c.username == username
    for _ in range(3):
        row = connection.execute(
            select(users.c.announced_until, users.c.created_at).where(mine)
        ).first()
        if row is None:
            return []
        found = connection.execute(
            select(announcements)
            .where((announcements.c.id > row.announced_until)
                   & (announcements.c.at > row.created_at))
            .order_by(announcements.c.id.desc()).limit(MAX_PENDING)
        ).all()
        if not found:
            return []
        newest = max(int(a.id) for a in found)
        taken = connection.execute(
            update(users).where(mine & (users.c.announced_until == row.announced_until))
            .values(announced_until=newest)
        ).rowcount
        if taken:
            return [Announcement(int(a.id), int(a.at), a.by, a.content) for a in reversed(found)]
    return []


def given_live_txn(
    connection: Connection, announcement_id: int, at: int, usernames: list[str]
) -> list[str]:
    eligible: list[str] = []
    # In slices: a node may have many thousands of users online, more than
    # one statement may bind.
    for start in range(0, len(usernames), SLICE):
        older = users.c.username.in_(usernames[start:start + SLICE]) & (users.c.created_at < at)
        eligible.extend(connection.execute(select(users.c.username).where(older)).scalars())
        connection.execute(
            update(users).where(older & (users.c.announced_until < announcement_id))
            .values(announced_until=announcement_id)
        )
    return eligible
