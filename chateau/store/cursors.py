"""Delivery cursors: how far each user has had the messages of each origin.

``users.delivered_until`` is the cursor for messages without an origin (a
server running alone) and the starting point of an origin without a row;
in a cluster, ``delivery_cursors`` keeps one per user and origin node, and
``cluster_nodes`` lists the origins offline delivery asks about. A cursor
never moves back. Transaction functions (``*_txn``) take a connection and
return plain data; :class:`Cursors` runs them on the store's pool.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.records import ANY_ORIGIN, in_slices, now_millis
from chateau.store.tables import cluster_nodes, delivery_cursors, upsert, users


class Cursors:
    """Delivery cursors and cluster nodes: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def save_cursors(self, username: str, cursors: dict[Any, int]) -> Deferred[None]:
        """Move several of *username*'s per-origin cursors forward in one transaction.

        Key None (or ``ANY_ORIGIN``) is ``users.delivered_until``.
        """
        return self._runner.run(
            save_cursors_txn, [(username, origin, value) for origin, value in cursors.items()]
        )

    def save_cursor_rows(self, rows: list[tuple[str, Any, int]]) -> Deferred[None]:
        """``(username, origin, id)`` rows, as :meth:`save_cursors`, for many users at once."""
        return self._runner.run(save_cursors_txn, list(rows))

    def delivery_cursors(self, username: str) -> Deferred[dict[str | None, int]]:
        """Per-origin cursors of *username*; key None is the base (and no-origin) cursor."""
        return self._runner.run(delivery_cursors_txn, username)

    def register_node(self, name: str) -> Deferred[None]:
        """Record a cluster node, so offline delivery knows to ask about its messages."""
        return self._runner.run(register_node_txn, name)

    def known_origins(self) -> Deferred[list[str]]:
        return self._runner.run(known_origins_txn)


def set_delivered_until_txn(connection: Connection, usernames: list[str], message_id: int) -> None:
    """Move ``users.delivered_until`` forward (never back)."""
    for part in in_slices(usernames):
        connection.execute(
            update(users)
            .where(users.c.username.in_(part) & (users.c.delivered_until < message_id))
            .values(delivered_until=message_id)
        )


def _upsert_cursors(connection: Connection, rows: list[tuple[str, str, int]]) -> None:
    """Insert or raise per-origin cursors; a cursor never moves back."""
    statement = upsert(connection, delivery_cursors)
    statement = statement.on_conflict_do_update(
        index_elements=[delivery_cursors.c.username, delivery_cursors.c.origin],
        set_={"delivered_until": statement.excluded.delivered_until},
        where=delivery_cursors.c.delivered_until < statement.excluded.delivered_until,
    )
    connection.execute(
        statement,
        [{"username": name, "origin": origin, "delivered_until": value}
         for name, origin, value in rows],
    )


def save_cursors_txn(connection: Connection, rows: list[tuple[str, Any, int]]) -> None:
    named = []
    # users.delivered_until: one UPDATE per distinct value (usually one).
    plain: dict[int, list[str]] = {}
    for username, origin, value in rows:
        if origin is None or origin is ANY_ORIGIN:
            plain.setdefault(value, []).append(username)
        else:
            named.append((username, origin, value))
    for value, usernames in plain.items():
        set_delivered_until_txn(connection, usernames, value)
    if named:
        # An account erased while its connection closed has no row to point at.
        existing: set[str] = set()
        for part in in_slices(sorted({row[0] for row in named})):
            existing.update(connection.execute(
                select(users.c.username).where(users.c.username.in_(part))
            ).scalars())
        named = [row for row in named if row[0] in existing]
    if named:
        _upsert_cursors(connection, named)


def delivery_cursors_txn(connection: Connection, username: str) -> dict[str | None, int]:
    base = connection.execute(
        select(users.c.delivered_until).where(users.c.username == username)
    ).scalar()
    cursors: dict[str | None, int] = {None: int(base or 0)}
    for origin, value in connection.execute(
        select(delivery_cursors.c.origin, delivery_cursors.c.delivered_until)
        .where(delivery_cursors.c.username == username)
    ):
        cursors[origin] = int(value)
    return cursors


def register_node_txn(connection: Connection, name: str) -> None:
    exists = connection.execute(
        select(cluster_nodes.c.name).where(cluster_nodes.c.name == name)
    ).first()
    if exists is None:
        try:
            with connection.begin_nested():
                connection.execute(insert(cluster_nodes).values(name=name, first_seen=now_millis()))
        except IntegrityError:
            pass  # another process registered it at the same moment


def known_origins_txn(connection: Connection) -> list[str]:
    return list(connection.execute(select(cluster_nodes.c.name).order_by(cluster_nodes.c.name)).scalars())
