"""The message writer's batch insert, one way per database.

Both take the rows of one batch inside the writer's transaction and return
their ids in the batch's order, going straight to the driver: SQLAlchemy's
per-statement work costs the writer more than the rows themselves, and the
writer holds the GIL the reactor needs while it runs. What the rows are
and when they are committed is :func:`chateau.store.messages.add_messages_txn`'s.
"""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import insert
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from chateau.store.search import WRITER_MARK_SQL, index_writer_batch
from chateau.store.tables import messages

# The PostgreSQL advisory lock (pg_advisory_xact_lock) every transaction
# that inserts into messages takes first: ids are drawn and committed in
# the same order across threads, processes and cluster nodes, so a reader
# that sees id N+1 committed sees every id below it (SyncRequest pages on
# ids). SQLite's single write lock already gives this.
MESSAGES_LOCK = 0x43686174  # "Chat"


# The hot INSERT on SQLite, compiled once from the table (named parameters).
_SQLITE_INSERT_MESSAGE = str(
    insert(messages).compile(
        dialect=sqlite_dialect.dialect(paramstyle="named"),
        column_keys=["chat", "recipient", "sender", "content", "created_at", "edited",
                     "deleted", "origin", "event", "mentions"],
    )
)


def insert_sqlite(connection: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert *rows* one by one on the DB-API cursor; their ids, in order.

    SQLite cannot return ordered ids from one multi-row INSERT, so SQLAlchemy runs an
    ordered insert-many row by row through its whole execution path, holding the GIL the
    reactor needs; the driver's per-row execute (its statement cache, ``lastrowid``) gives
    the same ids for a fraction of that. A marker sets the search index's trigger aside.
    """
    cursor = connection.connection.driver_connection.cursor()
    try:
        ids = []
        cursor.execute(WRITER_MARK_SQL)
        for row in rows:
            cursor.execute(_SQLITE_INSERT_MESSAGE, row)
            ids.append(cursor.lastrowid)
        index_writer_batch(cursor, ids)
        return ids
    finally:
        cursor.close()


# The hot INSERT on PostgreSQL: the batch as one array per column, so one
# statement (prepared once by the server) serves every batch size. The rows
# are inserted in the batch's order, under MESSAGES_LOCK, so their ids rise
# in that order and sorting them gives each row's id.
_POSTGRES_LOCK_MESSAGE_IDS = "SELECT pg_advisory_xact_lock(%s)"
_POSTGRES_INSERT_MESSAGES = (
    "INSERT INTO messages (chat, recipient, sender, content, created_at, edited, deleted, "
    "origin, event, mentions) "
    "SELECT chat, recipient, sender, content, %s, false, false, %s, event, mentions "
    "FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::text[], %s::text[], "
    "%s::text[]) WITH ORDINALITY AS batch(chat, recipient, sender, content, event, mentions, n) "
    "ORDER BY n RETURNING id"
)


def insert_postgres(
    connection: Connection, batch: list[tuple[Any, ...]], created: int, origin: str | None,
) -> list[int]:
    """Take :data:`MESSAGES_LOCK` and insert *batch*; the ids in the batch's order.

    Both statements go on the driver's connection in one pipeline, with the
    transaction's BEGIN: one round trip to the server instead of three, and
    none of SQLAlchemy's per-statement work (each round trip costs the
    writer more CPU than the rows it carries, on the client and the server).
    """
    columns: list[list[Any]] = [[], [], [], [], [], []]
    for item in batch:
        columns[0].append(item[0])
        columns[1].append(item[3])
        columns[2].append(item[1])
        columns[3].append(item[2])
        columns[4].append(item[4] if len(item) > 4 else None)
        columns[5].append(item[5] if len(item) > 5 else None)
    driver = connection.connection.driver_connection
    try:
        with driver.pipeline(), driver.cursor() as cursor:
            cursor.execute(_POSTGRES_LOCK_MESSAGE_IDS, (MESSAGES_LOCK,))
            cursor.execute(_POSTGRES_INSERT_MESSAGES, (created, origin, *columns))
            ids = sorted(row[0] for row in cursor.fetchall())
    except psycopg.Error as exc:
        # As SQLAlchemy's own execution would: its error (the store's failures
        # are DBAPIError), and a connection that was lost is not pooled again.
        lost = bool(driver.broken or driver.closed)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            _POSTGRES_INSERT_MESSAGES, None, exc, psycopg.Error, connection_invalidated=lost,
        ) from exc
    return ids
