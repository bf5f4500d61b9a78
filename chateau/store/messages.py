"""Messages: the batch insert the writer commits, history, offline delivery, edits.

Transaction functions (``*_txn``) take a connection and return plain
records; :class:`Messages` runs them on the store's pool and returns
Deferreds. New messages do not go through the pool: they are queued for the
single message writer (chateau.store.writer), which commits them in batches
with :func:`add_messages_txn`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, insert, or_, select, true, union_all, update
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.records import (
    ANY_ORIGIN,
    MessageRecord,
    StoredMessage,
    iso_timestamp,
    now_millis,
)
from chateau.store.tables import blocks, direct_chats, group_members, messages, upsert

if TYPE_CHECKING:
    from chateau.store.writer import MessageWriter


class Messages:
    """Chat messages: each method returns a Deferred."""

    def __init__(self, runner: Runner, writer: MessageWriter) -> None:
        self._runner = runner
        self._writer = writer

    def add_message(
        self, chat: str, sender: str, content: str, recipient: str | None = None,
        event: str | None = None, mentions: list[str] | None = None,
    ) -> Deferred[StoredMessage]:
        """Commit a message; the Deferred fires only once it is durable.

        *event* (JSON) makes it a group's system event; it goes through the
        same writer so that ids stay in routing order (see MessageWriter).
        *mentions* (chateau.mentions) goes in ``messages.mentions``.
        """
        return self._writer.add(chat, sender, content, recipient, event, mentions_json(mentions))

    def last_message_id(self, origin: str | None | object = ANY_ORIGIN) -> Deferred[int]:
        """The newest message id (of one origin node, in cluster mode)."""
        return self._runner.run(last_message_id_txn, origin)

    def history(
        self, chat: str, before: int | None, limit: int, max_bytes: int | None = None,
        viewer: str | None = None, direct: bool = False,
    ) -> Deferred[tuple[list[MessageRecord], bool]]:
        """Up to *limit* messages of *chat* older than *before*, newest first; and whether more exist.

        With *max_bytes*, reading stops after the message whose content
        brings the total past it (see :func:`read_until_full`). With
        *viewer*, messages from people the viewer blocks are left out of a
        *direct* chat, and in a group come back marked ``hidden``.
        """
        return self._runner.run(history_txn, chat, before, limit, max_bytes, viewer, direct)

    def missed_in_ranges(
        self, username: str, ranges: list[tuple[Any, int, int | None]], limit: int,
        max_bytes: int | None = None,
    ) -> Deferred[tuple[list[MessageRecord], bool]]:
        """Messages for *username* in any of *ranges*, oldest first; and whether the page is full.

        Each range is ``(origin, after, upto)``: that origin's messages with
        ids in (after, upto], every one committed so far when upto is None.
        The page is full at *limit* messages, or, with *max_bytes*, once
        their content passes that many bytes: then more may follow.
        """
        return self._runner.run(missed_in_ranges_txn, username, list(ranges), limit, max_bytes)

    def get_message(self, message_id: int) -> Deferred[MessageRecord | None]:
        return self._runner.run(get_message_txn, message_id)

    def edit_message(
        self, message_id: int, content: str, mentions: list[str] | None = None
    ) -> Deferred[None]:
        return self._runner.run(edit_message_txn, message_id, content, mentions)

    def delete_message(self, message_id: int) -> Deferred[None]:
        return self._runner.run(delete_message_txn, message_id)

    def has_written(self, chat: str, username: str) -> Deferred[bool]:
        """Whether *username* sent any message in *chat* (took part in a random chat)."""
        return self._runner.run(has_written_txn, chat, username)


def add_messages_txn(
    connection: Connection, batch: list[tuple[Any, ...]],
    origin: str | None = None, new_chats: set[str] | None = None,
) -> list[StoredMessage]:
    """Insert a batch in one transaction; ids come back in the batch's order.

    PostgreSQL takes the batch as one statement; on SQLite the rows go
    through the driver's cursor (see :func:`_insert_messages_sqlite`).
    The sender and recipient of a direct message in one of *new_chats*
    (every direct chat of the batch when None) are recorded in
    direct_chats, in the same transaction, so offline delivery finds the
    message exactly when it is committed.
    """
    created = now_millis()
    timestamp = iso_timestamp(created)
    # Each item is (chat, sender, content, recipient[, event[, mentions]]).
    rows = [
        {"chat": item[0], "recipient": item[3], "sender": item[1], "content": item[2],
         "created_at": created, "edited": False, "deleted": False, "origin": origin,
         "event": item[4] if len(item) > 4 else None,
         "mentions": item[5] if len(item) > 5 else None}
        for item in batch
    ]
    if connection.dialect.name == "sqlite":
        ids = _insert_messages_sqlite(connection, rows)
    else:
        statement = insert(messages).returning(messages.c.id, sort_by_parameter_order=True)
        ids = connection.execute(statement, rows).scalars().all()
    members = {
        (name, chat)
        for chat, sender, _, recipient, *_ in batch
        if recipient is not None and (new_chats is None or chat in new_chats)
        for name in (sender, recipient)
    }
    if members:
        _record_direct_chats(connection, sorted(members))
    return [StoredMessage(int(message_id), timestamp) for message_id in ids]


def mentions_json(mentions: list[str] | None) -> str | None:
    """``messages.mentions``: a sorted JSON list (``["@all","bob"]``), NULL for none.

    Written compactly and unescaped, so that ``"bob"`` appears in it exactly
    so (what counting a reader's mentions looks for).
    """
    if not mentions:
        return None
    return json.dumps(sorted(set(mentions)), ensure_ascii=False, separators=(",", ":"))


def _record_direct_chats(connection: Connection, members: list[tuple[str, str]]) -> None:
    """Add ``(username, chat)`` rows to direct_chats; those already there stay as they are."""
    connection.execute(
        upsert(connection, direct_chats).on_conflict_do_nothing(),
        [{"username": name, "chat": chat} for name, chat in members],
    )


# The hot INSERT on SQLite, compiled once from the table (named parameters).
_SQLITE_INSERT_MESSAGE = str(
    insert(messages).compile(
        dialect=sqlite_dialect.dialect(paramstyle="named"),
        column_keys=["chat", "recipient", "sender", "content", "created_at", "edited",
                     "deleted", "origin", "event", "mentions"],
    )
)


def _insert_messages_sqlite(connection: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert *rows* one by one on the DB-API cursor; their ids, in order.

    SQLite cannot return ordered ids from one multi-row INSERT, so
    SQLAlchemy's ordered insert-many runs one statement per row through its
    whole execution path: most of the writer thread's Python, all of it
    holding the GIL the reactor needs. The driver's own per-row execute
    (its statement cache, ``lastrowid``) gives the same ids in the same
    order for a fraction of that, inside the same transaction.
    """
    cursor = connection.connection.driver_connection.cursor()
    try:
        ids = []
        for row in rows:
            cursor.execute(_SQLITE_INSERT_MESSAGE, row)
            ids.append(cursor.lastrowid)
        return ids
    finally:
        cursor.close()


def _message_record(row: Any) -> MessageRecord:
    return MessageRecord(
        int(row.id), row.chat, row.recipient, row.sender, row.content,
        iso_timestamp(row.created_at), bool(row.edited), bool(row.deleted), row.origin,
        None if row.event is None else json.loads(row.event),
        bool(getattr(row, "hidden", False)),
        tuple(json.loads(row.mentions)) if getattr(row, "mentions", None) else (),
    )


def _from_blocked(viewer: str) -> Any:
    """Whether a message is one a person *viewer* blocks wrote (system events never are)."""
    blocked = select(blocks.c.blocked).where(blocks.c.blocker == viewer)
    return messages.c.sender.in_(blocked) & messages.c.event.is_(None)


def _origin_filter(origin: Any) -> Any:
    if origin is ANY_ORIGIN:
        return true()
    if origin is None:
        return messages.c.origin.is_(None)
    return messages.c.origin == origin


def last_message_id_txn(connection: Connection, origin: Any = ANY_ORIGIN) -> int:
    query = select(func.max(messages.c.id)).where(_origin_filter(origin))
    return int(connection.execute(query).scalar() or 0)


# Rows fetched from the database at a time when reading until a page is
# full: few enough that a page of large messages is not read whole first
# (PostgreSQL streams them through a server-side cursor).
_ROWS_AT_A_TIME = 16


def read_until_full(
    connection: Connection, query: Any, limit: int, max_bytes: int | None
) -> tuple[list[MessageRecord], bool]:
    """Up to *limit* records of *query*, stopping once their content passes *max_bytes*.

    Returns the records and whether the page is full (a record more was
    there, or the bytes ran out): memory holds about one page of
    messages, however large each is.
    """
    if max_bytes is None:
        rows = connection.execute(query.limit(limit + 1)).all()
        return [_message_record(row) for row in rows[:limit]], len(rows) > limit
    records: list[MessageRecord] = []
    total = 0
    result = connection.execution_options(yield_per=_ROWS_AT_A_TIME).execute(
        query.limit(limit + 1)
    )
    try:
        for row in result:
            if len(records) == limit or total >= max_bytes:
                return records, True
            record = _message_record(row)
            records.append(record)
            total += len(record.content.encode()) if record.content else 0
        return records, False
    finally:
        result.close()


def history_txn(
    connection: Connection, chat: str, before: int | None, limit: int,
    max_bytes: int | None = None, viewer: str | None = None, direct: bool = False,
) -> tuple[list[MessageRecord], bool]:
    if viewer is None:
        query = select(messages).where(messages.c.chat == chat)
    elif direct:
        query = select(messages).where((messages.c.chat == chat) & ~_from_blocked(viewer))
    else:
        query = select(messages, _from_blocked(viewer).label("hidden")).where(
            messages.c.chat == chat
        )
    if before is not None:
        query = query.where(messages.c.id < before)
    return read_until_full(connection, query.order_by(messages.c.id.desc()), limit, max_bytes)


def missed_in_ranges_txn(
    connection: Connection, username: str, ranges: list[tuple[Any, int, int | None]], limit: int,
    max_bytes: int | None = None,
) -> tuple[list[MessageRecord], bool]:
    if not ranges:
        return [], False
    # The user's groups and direct chats; each is read through ix_messages_chat_id.
    my_chats = union_all(
        select(group_members.c.chatname).where(group_members.c.username == username),
        select(direct_chats.c.chat).where(direct_chats.c.username == username),
    )
    wanted = or_(*[
        _origin_filter(origin) & (messages.c.id > after)
        & (true() if upto is None else messages.c.id <= upto)
        for origin, after, upto in ranges
    ])
    # The ids first, then the rows: merging several chats in id order takes
    # a sort, and sorting only ids keeps a page of large messages out of the
    # database's sorter (SQLite's is in this process).
    ids = (
        select(messages.c.id)
        .where(
            # The lowest bound on its own lets each chat's part of the index
            # be read from there, whatever the ranges' origins.
            (messages.c.id > min(after for _, after, _ in ranges))
            & wanted
            & (messages.c.sender != username)
            & ~messages.c.deleted
            # Nothing from people the user blocks (chateau.store.safety).
            & ~_from_blocked(username)
            & messages.c.chat.in_(my_chats)
            & (messages.c.recipient.is_(None) | (messages.c.recipient == username))
        )
        .order_by(messages.c.id)
        .limit(limit + 1)
    )
    query = select(messages).where(messages.c.id.in_(ids)).order_by(messages.c.id)
    return read_until_full(connection, query, limit, max_bytes)


def get_message_txn(connection: Connection, message_id: int) -> MessageRecord | None:
    row = connection.execute(select(messages).where(messages.c.id == message_id)).first()
    return None if row is None else _message_record(row)


def edit_message_txn(
    connection: Connection, message_id: int, content: str, mentions: list[str] | None = None
) -> None:
    """New content, and the mentions recomputed from it (chateau.mentions)."""
    connection.execute(
        update(messages).where(messages.c.id == message_id).values(
            content=content, edited=True, mentions=mentions_json(mentions)
        )
    )


def delete_message_txn(connection: Connection, message_id: int) -> None:
    connection.execute(
        # Who it mentioned goes with its words.
        update(messages).where(messages.c.id == message_id)
        .values(content=None, deleted=True, mentions=None)
    )


def rename_mentions_txn(connection: Connection, old: str, new: str) -> int:
    """Write *new* for *old* in the mentions of the messages of *new*'s groups.

    Part of a user's rename (chateau.store.identity), after group_members
    moved: the groups the user is in now, read through ix_messages_chat_id,
    so a rename never scans every message. (Groups they left keep the old
    name in their mentions, as in their content.) How many messages changed.
    """
    their_groups = select(group_members.c.chatname).where(group_members.c.username == new)
    rows = connection.execute(
        select(messages.c.id, messages.c.mentions).where(
            messages.c.chat.in_(their_groups)
            & messages.c.mentions.contains(f'"{old}"', autoescape=True)
        )
    ).all()
    changed = [
        {"target": row.id, "renamed": mentions_json(
            [new if name == old else name for name in json.loads(row.mentions)]
        )}
        for row in rows
    ]
    if changed:
        connection.execute(
            update(messages).where(messages.c.id == bindparam("target"))
            .values(mentions=bindparam("renamed")),
            changed,
        )
    return len(changed)


def has_written_txn(connection: Connection, chat: str, username: str) -> bool:
    query = select(messages.c.id).where(
        (messages.c.chat == chat) & (messages.c.sender == username)
    ).limit(1)
    return connection.execute(query).first() is not None
