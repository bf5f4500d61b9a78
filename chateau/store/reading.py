"""Read state: read markers, unread counts and the conversation list.

A user's marker in a conversation (``read_markers``: a group's chatname or
a direct chat's "@a:b") is the id of the newest message they have read; it
only moves up. Nothing is written per message: unread counts are the
conversation's messages after the marker, read through ix_messages_chat_id
and capped at :data:`UNREAD_CAP` per conversation, so a conversation with a
million unread costs no more to count than one with a hundred. The total at
sign-in (``unread_total``) counts across all conversations at once and stops
at :data:`UNREAD_TOTAL_CAP`, so it reads at most that many rows.

What is counted as unread: messages with an id above the marker (0 without
a row), not change rows (``changes``), not groups' system events
(``event``), not deleted, not the reader's own, not from someone the reader
blocks, and in a group only those created at or after the reader joined.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    String,
    case,
    false,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.messages import _message_record
from chateau.store.records import MessageRecord, now_millis
from chateau.store.tables import blocks, direct_chats, group_members, messages, read_markers, upsert

# Unread (and mentions) are counted up to this many per conversation: 100
# means "100 or more" (clients show "99+").
UNREAD_CAP = 100
# unread_total is counted up to this many over all conversations together:
# 1000 means "1000 or more" (clients show "999+").
UNREAD_TOTAL_CAP = 1000

GROUP = "g"
DIRECT = "d"


@dataclass(frozen=True)
class MarkerMove:
    """A ReadRequest's outcome: the marker before and after it."""

    before: int
    after: int

    @property
    def moved(self) -> bool:
        return self.after > self.before


@dataclass(frozen=True)
class ConversationRow:
    """One conversation of a ConversationsResponse, as the store reads it."""

    chat: str
    kind: str  # GROUP or DIRECT
    activity: int
    last_message: MessageRecord | None
    # Whom the last message mentions (messages.mentions), [] for nobody.
    last_mentions: list[str]
    unread: int
    mentions: int
    read: int
    # The other person's marker in a direct chat (None in groups, or without one).
    peer_read: int | None


class Reading:
    """Read markers and the counts read from them: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def mark_read(self, username: str, chat: str, message_id: int) -> Deferred[MarkerMove]:
        """Move *username*'s marker in *chat* up to *message_id* (at most the newest message)."""
        return self._runner.run(mark_read_txn, username, chat, message_id)

    def unread_total(self, username: str) -> Deferred[int]:
        """The sum of *username*'s unread over their conversations, each capped."""
        return self._runner.run(unread_total_txn, username)

    def conversations(
        self, username: str, limit: int, before: int | None
    ) -> Deferred[tuple[list[ConversationRow], bool]]:
        """A page of *username*'s conversations by activity, newest first; and whether more follow."""
        return self._runner.run(conversations_txn, username, limit, before)

    def unread(self, username: str, chat: str, since: int = 0) -> Deferred[tuple[int, int]]:
        """(unread, mentions) of *username* in one conversation (for tests and tools)."""
        return self._runner.run(unread_txn, username, chat, since)


def _no_jit(connection: Connection) -> None:
    """Turn PostgreSQL's JIT compiler off for this transaction.

    The capped counts are many small index range scans, but the planner
    prices each conversation's count at its cap, so a list of a thousand
    conversations looks expensive enough to compile: compiling then takes
    tens to hundreds of milliseconds, far more than the queries themselves.
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL jit = off")


def newest_id_txn(connection: Connection, chat: str) -> int:
    """The id of *chat*'s newest message or group event (not a change row); 0 for none."""
    query = (
        select(messages.c.id)
        .where((messages.c.chat == chat) & messages.c.changes.is_(None))
        .order_by(messages.c.id.desc()).limit(1)
    )
    return int(connection.execute(query).scalar() or 0)


def marker_txn(connection: Connection, username: str, chat: str) -> int:
    query = select(read_markers.c.last_read_id).where(
        (read_markers.c.username == username) & (read_markers.c.chat == chat)
    )
    return int(connection.execute(query).scalar() or 0)


def mark_read_txn(connection: Connection, username: str, chat: str, message_id: int) -> MarkerMove:
    before = marker_txn(connection, username, chat)
    target = min(message_id, newest_id_txn(connection, chat))
    if target <= before:
        return MarkerMove(before, before)
    statement = upsert(connection, read_markers).values(
        username=username, chat=chat, last_read_id=target, updated_at=now_millis()
    )
    excluded = statement.excluded
    # Two requests racing each keep the higher marker: it never moves back.
    statement = statement.on_conflict_do_update(
        index_elements=[read_markers.c.username, read_markers.c.chat],
        set_={"last_read_id": case(
            (excluded.last_read_id > read_markers.c.last_read_id, excluded.last_read_id),
            else_=read_markers.c.last_read_id,
        ), "updated_at": excluded.updated_at},
    )
    connection.execute(statement)
    return MarkerMove(before, marker_txn(connection, username, chat))


def _mentions_me(username: str) -> Any:
    # "IS NOT NULL" lets both databases read ix_messages_mentioned (a
    # partial index of exactly those rows) instead of every unread message.
    return messages.c.mentions.is_not(None) & or_(
        messages.c.mentions.contains(json.dumps(username), autoescape=True),
        messages.c.mentions.contains(json.dumps("@all"), autoescape=True),
    )


def _unread_rows(username: str, chat: Any, marker: Any, since: Any, mentions: bool = False) -> Any:
    """The rows that count as *username*'s unread in *chat* after *marker* (see the docstring)."""
    blocked = select(blocks.c.blocked).where(blocks.c.blocker == username)
    rows = select(literal(1).label("one")).where(
        (messages.c.chat == chat)
        & (messages.c.id > marker)
        & messages.c.changes.is_(None)
        & messages.c.event.is_(None)
        & (messages.c.deleted == false())
        & (messages.c.sender != username)
        & messages.c.sender.not_in(blocked)
        & (messages.c.created_at >= since)
    )
    return rows.where(_mentions_me(username)) if mentions else rows


def _capped_unread(
    username: str, chat: Any, marker: Any, since: Any, mentions: bool = False,
    outer: Any = None,
) -> Any:
    """A scalar subquery: *username*'s unread in *chat* after *marker*, capped (see the docstring).

    *outer* is the enclosing query's table the columns come from: the
    inner query is correlated to it explicitly (SQLAlchemy does not do so
    through the FROM subquery that caps the count).
    """
    rows = _unread_rows(username, chat, marker, since, mentions)
    if outer is not None:
        rows = rows.correlate(outer)
    capped = rows.limit(UNREAD_CAP).subquery()
    return select(func.count()).select_from(capped).scalar_subquery()


def _my_conversations(username: str) -> Any:
    """The user's groups (member now) and direct chats, with their marker in each.

    (chat, kind, since, marker): the marker is joined in (0 without a row),
    so the counts correlated to it compare ids with a value, which lets
    them read ix_messages_chat_id from the marker on.
    """
    both = union_all(
        select(group_members.c.chatname.label("chat"), literal(GROUP, String).label("kind"),
               group_members.c.joined_at.label("since"))
        .where(group_members.c.username == username),
        select(direct_chats.c.chat.label("chat"), literal(DIRECT, String).label("kind"),
               literal(0).label("since"))
        .where(direct_chats.c.username == username),
    ).subquery("both_kinds")
    own = (read_markers.c.username == username) & (read_markers.c.chat == both.c.chat)
    return select(
        both.c.chat, both.c.kind, both.c.since,
        func.coalesce(read_markers.c.last_read_id, 0).label("marker"),
    ).select_from(both.outerjoin(read_markers, own)).subquery("conversations")


def unread_total_txn(connection: Connection, username: str) -> int:
    """One query: the unread rows of all conversations together, up to UNREAD_TOTAL_CAP.

    Each conversation's messages after its marker are read through
    ix_messages_chat_id; the limit stops the scan at the cap, however much
    is unread. SQLite runs the join as that loop by itself; PostgreSQL's
    planner, pricing the join over the whole table, would hash it, so
    there each conversation's rows are a LATERAL subquery with its own
    limit, which only an index scan serves.
    """
    _no_jit(connection)
    mine = _my_conversations(username)
    rows = _unread_rows(username, mine.c.chat, mine.c.marker, mine.c.since)
    if connection.dialect.name == "postgresql":
        each = rows.correlate(mine).limit(UNREAD_TOTAL_CAP).lateral("each_chat")
        rows = select(each.c.one).select_from(mine.join(each, true()))
    else:
        rows = rows.select_from(mine)
    capped = rows.limit(UNREAD_TOTAL_CAP).subquery("unread_rows")
    return int(connection.execute(select(func.count()).select_from(capped)).scalar() or 0)


def unread_txn(connection: Connection, username: str, chat: str, since: int = 0) -> tuple[int, int]:
    marker = marker_txn(connection, username, chat)
    unread = connection.execute(select(_capped_unread(username, chat, marker, since))).scalar()
    mentions = connection.execute(
        select(_capped_unread(username, chat, marker, since, mentions=True))
    ).scalar()
    return int(unread or 0), int(mentions or 0)


def conversations_txn(
    connection: Connection, username: str, limit: int, before: int | None
) -> tuple[list[ConversationRow], bool]:
    """A page of the user's conversations, by activity (newest first; ties by key).

    The order is one query over the user's conversations, each's newest id
    read through ix_messages_chat_id (one index step each); the page's
    details (markers, capped counts, the last messages) are one more query,
    for the page's conversations only. Conversations without any message
    (activity 0) are rare and all come on one page, never split (a third
    query lists them when a page reaches them).
    """
    _no_jit(connection)
    mine = _my_conversations(username)
    activity = func.coalesce(
        select(messages.c.id)
        .where((messages.c.chat == mine.c.chat) & messages.c.changes.is_(None))
        .order_by(messages.c.id.desc()).limit(1)
        .scalar_subquery(), 0,
    ).label("activity")
    ranked = select(mine.c.chat, mine.c.kind, mine.c.since, activity).subquery("ranked")
    order = select(ranked).order_by(ranked.c.activity.desc(), ranked.c.chat)
    if before is not None:
        order = order.where(ranked.c.activity < before)
    rows = connection.execute(order.limit(limit + 1)).all()
    more = len(rows) > limit
    page = rows[:limit]
    if page and page[-1].activity == 0:
        # The page reached the conversations without messages: all of them.
        active = [row for row in page if row.activity > 0]
        quiet = connection.execute(
            select(ranked).where(ranked.c.activity == 0).order_by(ranked.c.chat)
        ).all()
        page, more = active + list(quiet), False
    if not page:
        return [], False
    details = _page_details(
        connection, username, [row.chat for row in page],
        [row.activity for row in page if row.activity],
    )
    result = []
    for row in page:
        read, peer, unread, mentions, last, last_mentions = details.get(
            row.chat, (0, None, 0, 0, None, []))
        result.append(ConversationRow(
            row.chat, row.kind, int(row.activity), last, last_mentions,
            unread, mentions, read, peer if row.kind == DIRECT else None,
        ))
    return result, more


# The last message's columns in the page's details query, prefixed apart
# from the conversation's own.
_LAST = "last_"


class _Prefixed:
    """A row's ``last_*`` columns under their own names, for _message_record."""

    def __init__(self, row: Any) -> None:
        self._row = row

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, _LAST + name)


def _peer_of(username: str, chat: Any) -> Any:
    """The other person of direct chat *chat* ("@a:b", a and b sorted) of *username*, in SQL.

    So the other person's marker is read by its primary key (username, chat).
    """
    prefix = f"@{username}:"
    return case(
        (func.substr(chat, 1, len(prefix)) == prefix, func.substr(chat, len(prefix) + 1)),
        else_=func.substr(chat, 2, func.length(chat) - len(username) - 2),
    )


def _page_details(
    connection: Connection, username: str, chats: list[str], last_ids: list[int]
) -> dict[str, tuple[int, int | None, int, int, MessageRecord | None, list[str]]]:
    """For each of *chats*, in one query: (own marker, the other person's marker,
    unread, mentions, the last message (one of *last_ids*), whom it mentions)."""
    mine = _my_conversations(username)
    marker = mine.c.marker
    peer = (
        select(read_markers.c.last_read_id)
        .where((read_markers.c.username == _peer_of(username, mine.c.chat))
               & (read_markers.c.chat == mine.c.chat) & (mine.c.kind == DIRECT))
        .correlate(mine).scalar_subquery()
    )
    last = messages.alias("last_message")
    blocked = select(blocks.c.blocked).where(blocks.c.blocker == username)
    hidden = last.c.sender.in_(blocked) & last.c.event.is_(None)
    query = select(
        mine.c.chat, marker.label("read"), peer.label("peer"),
        _capped_unread(username, mine.c.chat, marker, mine.c.since, outer=mine).label("unread"),
        _capped_unread(username, mine.c.chat, marker, mine.c.since, mentions=True, outer=mine)
        .label("mentions"),
        *[column.label(_LAST + column.name) for column in last.c],
        hidden.label(_LAST + "hidden"),
    ).select_from(
        # The last message through ix_messages_chat_id: (chat, id) is known.
        mine.outerjoin(last, (last.c.chat == mine.c.chat) & last.c.id.in_(last_ids or [0]))
    ).where(mine.c.chat.in_(chats))
    found = {}
    for row in connection.execute(query):
        record = None if row.last_id is None else _message_record(_Prefixed(row))
        found[row.chat] = (
            int(row.read), None if row.peer is None else int(row.peer),
            int(row.unread), int(row.mentions), record,
            json.loads(row.last_mentions) if row.last_mentions else [],
        )
    return found
