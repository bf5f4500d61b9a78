"""Messages: the batch insert the writer commits, history, offline delivery, edits.

Transaction functions (``*_txn``) take a connection and return plain
records; :class:`Messages` runs them on the store's pool and returns
Deferreds. New messages do not go through the pool: they are queued for the
single message writer (chateau.store.writer), which commits them in batches
with :func:`add_messages_txn`. Edits and deletions also insert a *change
row* (:func:`record_change_txn`) for SyncRequest (chateau.store.sync);
every other reader leaves change rows out (:data:`NOT_A_CHANGE`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any


from sqlalchemy import bindparam, func, insert, literal, null, or_, select, true, union_all, update
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
from chateau.store.batch_insert import MESSAGES_LOCK, insert_postgres, insert_sqlite
from chateau.store.tables import blocks, direct_chats, group_members, messages, upsert

if TYPE_CHECKING:
    from chateau.store.writer import MessageWriter


# A change row's kinds (its event {"change": kind}).
CHANGE_EDITED = "edited"
CHANGE_DELETED = "deleted"

# Rows that are messages or group events, not change rows: every reader
# of messages but SyncRequest wants only these.
NOT_A_CHANGE = messages.c.changes.is_(None)


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
        viewer: str | None = None, direct: bool = False, *, after: int | None = None,
        before_time: int | None = None, after_time: int | None = None,
    ) -> Deferred[tuple[list[MessageRecord], bool]]:
        """Up to *limit* messages of *chat* older than *before*, newest first; and whether more exist.

        With *max_bytes*, reading stops after the message whose content
        brings the total past it (see :func:`read_until_full`). With
        *viewer*, messages from people the viewer blocks are left out of a
        *direct* chat, and in a group come back marked ``hidden``.
        *before_time* (ms) reads before a moment instead; *after* (an id)
        or *after_time* (ms) read the messages right after it, oldest first.
        """
        return self._runner.run(
            history_txn, chat, before, limit, max_bytes, viewer, direct, after, before_time,
            after_time,
        )

    def missed_in_ranges(
        self, username: str, ranges: list[tuple[Any, int, int | None]], limit: int,
        max_bytes: int | None = None,
    ) -> Deferred[tuple[list[MessageRecord], bool]]:
        """Messages for *username* in any of *ranges*, oldest first; and whether the page is full.

        Change rows are not messages: offline delivery never pushes them
        (the live MessageEdited/MessageDeleted pushes and SyncRequest tell
        of changes).

        Each range is ``(origin, after, upto)``: that origin's messages with
        ids in (after, upto], every one committed so far when upto is None.
        The page is full at *limit* messages, or, with *max_bytes*, once
        their content passes that many bytes: then more may follow.
        """
        return self._runner.run(missed_in_ranges_txn, username, list(ranges), limit, max_bytes)

    def get_message(self, message_id: int) -> Deferred[MessageRecord | None]:
        return self._runner.run(get_message_txn, message_id)

    def edit_message(
        self, message_id: int, content: str, actor: str, mentions: list[str] | None = None
    ) -> Deferred[None]:
        """Edit; *actor* (the author) is recorded in the change row."""
        return self._runner.run(edit_message_txn, message_id, content, actor, mentions)

    def delete_message(self, message_id: int, actor: str) -> Deferred[None]:
        """Delete; *actor* (the author or a server admin) is recorded in the change row."""
        return self._runner.run(delete_message_txn, message_id, actor)

    def has_written(self, chat: str, username: str) -> Deferred[bool]:
        """Whether *username* sent any message in *chat* (took part in a random chat)."""
        return self._runner.run(has_written_txn, chat, username)


def add_messages_txn(
    connection: Connection, batch: list[tuple[Any, ...]],
    origin: str | None = None, new_chats: set[str] | None = None,
) -> list[StoredMessage]:
    """Insert a batch in one transaction; ids come back in the batch's order.

    On PostgreSQL the batch is one statement, pipelined with the lock that
    orders message ids (:func:`chateau.store.batch_insert.insert_postgres`); on SQLite the
    rows go through the driver's cursor (:func:`~chateau.store.batch_insert.insert_sqlite`).
    The sender and recipient of a direct message in one of *new_chats*
    (every direct chat of the batch when None) are recorded in
    direct_chats, in the same transaction, so offline delivery finds the
    message exactly when it is committed.
    """
    created = now_millis()
    timestamp = iso_timestamp(created)
    # Each item is (chat, sender, content, recipient[, event[, mentions]]).
    if connection.dialect.name == "postgresql":
        ids = insert_postgres(connection, batch, created, origin)
    else:
        ids = insert_sqlite(connection, [
            {"chat": item[0], "recipient": item[3], "sender": item[1], "content": item[2],
             "created_at": created, "edited": False, "deleted": False, "origin": origin,
             "event": item[4] if len(item) > 4 else None,
             "mentions": item[5] if len(item) > 5 else None}
            for item in batch
        ])
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


def lock_message_ids_txn(connection: Connection) -> None:
    """Take :data:`MESSAGES_LOCK` until the transaction ends (PostgreSQL only).

    Taken before anything else that could wait on the writer, so two
    inserting transactions never wait on each other in turn.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(MESSAGES_LOCK)))


def _change_row(kind: str, actor: str, created: int) -> dict[str, Any]:
    return {"sender": actor, "content": None, "created_at": created, "edited": False,
            "deleted": False, "origin": None, "event": json.dumps({"change": kind})}


def record_change_txn(connection: Connection, message_id: int, kind: str, actor: str) -> None:
    """Record that *actor* edited or deleted (*kind*) message *message_id*: a change row.

    Called in the transaction that makes the change, before it, by every
    path that edits or deletes a message, so that SyncRequest hands the
    change to every device after the messages committed before it.
    """
    lock_message_ids_txn(connection)
    target = connection.execute(
        select(messages.c.chat, messages.c.recipient).where(messages.c.id == message_id)
    ).first()
    if target is None:
        return
    connection.execute(insert(messages).values(
        chat=target.chat, recipient=target.recipient, changes=message_id,
        **_change_row(kind, actor, now_millis()),
    ))


def record_changes_txn(connection: Connection, which: Any, kind: str, actor: str) -> int:
    """One change row each for the messages *which* selects, in one statement; how many."""
    lock_message_ids_txn(connection)
    row = _change_row(kind, actor, now_millis())
    source = select(
        messages.c.chat, messages.c.recipient, literal(row["sender"]), null(),
        literal(row["created_at"]), literal(False), literal(False), null(),
        literal(row["event"]), messages.c.id,
    ).where(which & NOT_A_CHANGE).order_by(messages.c.id)
    result = connection.execute(insert(messages).from_select(
        ["chat", "recipient", "sender", "content", "created_at", "edited", "deleted", "origin",
         "event", "changes"], source,
    ))
    return int(result.rowcount or 0)


def _record_direct_chats(connection: Connection, members: list[tuple[str, str]]) -> None:
    """Add ``(username, chat)`` rows to direct_chats; those already there stay as they are."""
    connection.execute(
        upsert(connection, direct_chats).on_conflict_do_nothing(),
        [{"username": name, "chat": chat} for name, chat in members],
    )


def _message_record(row: Any) -> MessageRecord:
    return MessageRecord(
        int(row.id), row.chat, row.recipient, row.sender, row.content,
        iso_timestamp(row.created_at), bool(row.edited), bool(row.deleted), row.origin,
        None if row.event is None else json.loads(row.event),
        bool(getattr(row, "hidden", False)),
        tuple(json.loads(row.mentions)) if getattr(row, "mentions", None) else (),
        None if row.changes is None else int(row.changes),
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
    after: int | None = None, before_time: int | None = None, after_time: int | None = None,
) -> tuple[list[MessageRecord], bool]:
    if before_time is not None:
        before = first_id_at_txn(connection, chat, before_time)
    if after_time is not None:
        after = first_id_at_txn(connection, chat, after_time) - 1
    query = _chat_query(chat, viewer, direct)
    if after is not None:
        query = query.where(messages.c.id > after).order_by(messages.c.id)
    else:
        if before is not None:
            query = query.where(messages.c.id < before)
        query = query.order_by(messages.c.id.desc())
    return read_until_full(connection, query, limit, max_bytes)


def first_id_at_txn(connection: Connection, chat: str, moment: int) -> int:
    """The lowest id from which *chat*'s messages were created at or after *moment* (ms).

    Above the chat's newest id when none was. A binary search over the
    chat's ids, each step one seek in ix_messages_chat_id: no index on
    created_at is needed, as it grows with the id (one clock per node).
    """
    in_chat = (messages.c.chat == chat) & NOT_A_CHANGE
    low, high = connection.execute(
        select(func.min(messages.c.id), func.max(messages.c.id)).where(in_chat)
    ).one()
    if low is None:
        return 1
    # The answer is the first id at or above some x in [low, high + 1]:
    # the smallest x whose first message was created at or after the moment.
    low, high = int(low), int(high) + 1
    while low < high:
        middle = (low + high) // 2
        row = connection.execute(
            select(messages.c.id, messages.c.created_at)
            .where(in_chat & (messages.c.id >= middle)).order_by(messages.c.id).limit(1)
        ).one()
        if row.created_at >= moment:
            high = middle
        else:
            low = int(row.id) + 1
    first = connection.execute(
        select(func.min(messages.c.id)).where(in_chat & (messages.c.id >= low))
    ).scalar()
    return int(first) if first is not None else low


def _chat_query(chat: str, viewer: str | None, direct: bool) -> Any:
    """The messages and events of *chat* as *viewer* sees them (see history_txn)."""
    in_chat = (messages.c.chat == chat) & NOT_A_CHANGE
    if viewer is None:
        return select(messages).where(in_chat)
    if direct:
        return select(messages).where(in_chat & ~_from_blocked(viewer))
    return select(messages, _from_blocked(viewer).label("hidden")).where(in_chat)


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
            & NOT_A_CHANGE
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
    """Message or group event *message_id* (a change row is none)."""
    row = connection.execute(
        select(messages).where((messages.c.id == message_id) & NOT_A_CHANGE)
    ).first()
    return None if row is None else _message_record(row)


def edit_message_txn(
    connection: Connection, message_id: int, content: str, actor: str,
    mentions: list[str] | None = None,
) -> None:
    """New content, and the mentions recomputed from it (chateau.mentions)."""
    record_change_txn(connection, message_id, CHANGE_EDITED, actor)
    connection.execute(
        update(messages).where(messages.c.id == message_id).values(
            content=content, edited=True, mentions=mentions_json(mentions)
        )
    )


def delete_message_txn(connection: Connection, message_id: int, actor: str) -> None:
    record_change_txn(connection, message_id, CHANGE_DELETED, actor)
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
        (messages.c.chat == chat) & (messages.c.sender == username) & NOT_A_CHANGE
    ).limit(1)
    return connection.execute(query).first() is not None
