"""Personal safety: blocks, users' settings and the random pairs never made again.

Transaction functions (``*_txn``) take a connection and return plain
records; :class:`Safety` runs them on the store's pool. Messages from
blocked people are filtered where messages are read (chateau.store.messages).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.safety import DEFAULT_SETTINGS, Settings
from chateau.store.engine import Runner
from chateau.store.records import now_millis
from chateau.store.tables import blocks, contacts, random_avoid, reports, upsert, user_settings


@dataclass(frozen=True)
class SafetyRecord:
    """What the registry keeps of a user online: whom they block, whom they are never paired with."""

    blocked: frozenset[str]
    avoid: frozenset[str]


@dataclass(frozen=True)
class BlockOutcome:
    """What a block changed: whether it is new, and whether it ended an accepted contact."""

    new: bool
    was_contact: bool


class Safety:
    """Blocks, settings and random-chat avoidance: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def block(self, blocker: str, blocked: str) -> Deferred[BlockOutcome]:
        """Block; ends their contact, drops pending requests, and keeps them apart in random chat."""
        return self._runner.run(block_txn, blocker, blocked)

    def unblock(self, blocker: str, blocked: str) -> Deferred[bool]:
        return self._runner.run(unblock_txn, blocker, blocked)

    def block_list(self, blocker: str) -> Deferred[list[tuple[str, int]]]:
        """(blocked, since ms), by name."""
        return self._runner.run(block_list_txn, blocker)

    def is_blocked(self, blocker: str, blocked: str) -> Deferred[bool]:
        return self._runner.run(is_blocked_txn, blocker, blocked)

    def safety_state(self, username: str) -> Deferred[SafetyRecord]:
        return self._runner.run(safety_state_txn, username)

    def keep_apart(self, first: str, second: str) -> Deferred[None]:
        """Never pair these two in a random chat again."""
        return self._runner.run(keep_apart_txn, first, second)

    def settings(self, username: str) -> Deferred[Settings]:
        return self._runner.run(settings_txn, username)

    def change_settings(self, username: str, changes: dict[str, Any]) -> Deferred[Settings]:
        """Apply *changes* (already checked) and return the whole settings."""
        return self._runner.run(change_settings_txn, username, changes)

    def all_settings(self) -> Deferred[dict[str, Settings]]:
        """Every user's settings that are not the defaults."""
        return self._runner.run(all_settings_txn)


def block_txn(connection: Connection, blocker: str, blocked: str) -> BlockOutcome:
    exists = connection.execute(
        select(blocks.c.blocker).where((blocks.c.blocker == blocker) & (blocks.c.blocked == blocked))
    ).first()
    if exists is None:
        connection.execute(
            blocks.insert().values(blocker=blocker, blocked=blocked, created_at=now_millis())
        )
    between = (
        ((contacts.c.requester == blocker) & (contacts.c.addressee == blocked))
        | ((contacts.c.requester == blocked) & (contacts.c.addressee == blocker))
    )
    was_contact = connection.execute(
        select(contacts.c.accepted).where(between & contacts.c.accepted)
    ).first() is not None
    connection.execute(delete(contacts).where(between))
    keep_apart_txn(connection, blocker, blocked)
    return BlockOutcome(exists is None, was_contact)


def unblock_txn(connection: Connection, blocker: str, blocked: str) -> bool:
    result = connection.execute(
        delete(blocks).where((blocks.c.blocker == blocker) & (blocks.c.blocked == blocked))
    )
    return result.rowcount > 0


def block_list_txn(connection: Connection, blocker: str) -> list[tuple[str, int]]:
    rows = connection.execute(
        select(blocks.c.blocked, blocks.c.created_at)
        .where(blocks.c.blocker == blocker)
        .order_by(blocks.c.blocked)
    )
    return [(row.blocked, int(row.created_at)) for row in rows]


def is_blocked_txn(connection: Connection, blocker: str, blocked: str) -> bool:
    return connection.execute(
        select(blocks.c.blocker).where((blocks.c.blocker == blocker) & (blocks.c.blocked == blocked))
    ).first() is not None


def safety_state_txn(connection: Connection, username: str) -> SafetyRecord:
    """Whom *username* blocks; and whom random chat keeps them from.

    The second is both directions of every block, of every left random chat
    (random_avoid) and of every report naming a user: whoever pairs, only
    their own node's registry need know it.
    """
    blocked = {
        row.blocked for row in connection.execute(
            select(blocks.c.blocked).where(blocks.c.blocker == username)
        )
    }
    avoid = set(blocked)
    queries = [
        select(blocks.c.blocker).where(blocks.c.blocked == username),
        select(random_avoid.c.b).where(random_avoid.c.a == username),
        select(random_avoid.c.a).where(random_avoid.c.b == username),
        select(reports.c.username).where(
            (reports.c.reporter == username) & reports.c.username.is_not(None)
        ),
        select(reports.c.reporter).where(reports.c.username == username),
    ]
    for query in queries:
        avoid.update(row[0] for row in connection.execute(query))
    avoid.discard(username)
    return SafetyRecord(frozenset(blocked), frozenset(avoid))


def keep_apart_txn(connection: Connection, first: str, second: str) -> None:
    connection.execute(
        upsert(connection, random_avoid).on_conflict_do_nothing(),
        [{"a": first, "b": second, "created_at": now_millis()}],
    )


def _settings_of(row: Any) -> Settings:
    return Settings(
        direct_messages=row.direct_messages, presence=row.presence,
        random_chat=bool(row.random_chat), read_receipts=bool(row.read_receipts),
    )


def settings_txn(connection: Connection, username: str) -> Settings:
    row = connection.execute(
        select(user_settings).where(user_settings.c.username == username)
    ).first()
    return DEFAULT_SETTINGS if row is None else _settings_of(row)


def change_settings_txn(connection: Connection, username: str, changes: dict[str, Any]) -> Settings:
    current = settings_txn(connection, username)
    values = {f.name: changes.get(f.name, getattr(current, f.name)) for f in fields(Settings)}
    settings = Settings(**values)
    if settings.is_default:
        connection.execute(delete(user_settings).where(user_settings.c.username == username))
        return settings
    statement = upsert(connection, user_settings).values(username=username, **values)
    connection.execute(
        statement.on_conflict_do_update(index_elements=["username"], set_=values)
    )
    return settings


def all_settings_txn(connection: Connection) -> dict[str, Settings]:
    return {row.username: _settings_of(row) for row in connection.execute(select(user_settings))}

