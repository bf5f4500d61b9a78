"""Sync: everything after an id that a user may see, for every device to keep up.

A device (a session key) asks for the rows after its ``sync_position``
(SyncRequest): the messages and group events of the groups the user is in
now and of their direct chats, and the *change rows* that record edits and
deletions (chateau.store.messages.record_change_txn). Ids commit in id
order (MESSAGES_LOCK on PostgreSQL, the single write lock on SQLite), so a
page that ends at id N leaves nothing at or below N for later: paging on
``since`` is gap-free and without duplicates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select, union_all, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.messages import _ROWS_AT_A_TIME, _message_record
from chateau.store.records import MessageRecord
from chateau.store.tables import blocks, direct_chats, group_members, messages, sessions


@dataclass(frozen=True)
class SyncItem:
    """One row of a sync page.

    For a change row, ``record`` is the change row (its ``changes`` the
    target's id, its ``event`` ``{"change": kind}``, its timestamp when the
    change was made) and ``author``, ``content`` and ``mentions`` are the
    target's now (None when the target is gone). ``record.hidden``: the
    author is someone the reader blocks (only in groups).
    """

    record: MessageRecord
    author: str | None = None
    content: str | None = None
    mentions: list[str] | None = None


@dataclass(frozen=True)
class SyncPage:
    """Rows after *since*, oldest first; whether more may follow; the user's groups now."""

    since: int
    items: list[SyncItem]
    more: bool
    groups: list[str]


class Sync:
    """Sync pages and each session key's position (a Deferred each)."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def page(
        self, username: str, key_hash: str | None, since: int | None, limit: int,
        max_bytes: int | None = None,
    ) -> Deferred[SyncPage]:
        """Up to *limit* rows after *since* (None: the key's sync position), oldest first.

        With *max_bytes*, reading stops once the rows' content passes it
        (the page is then full: more may follow).
        """
        return self._runner.run(sync_page_txn, username, key_hash, since, limit, max_bytes)

    def set_position(self, key_hash: str, position: int) -> Deferred[None]:
        """The key has been given everything up to *position*."""
        return self._runner.run(set_position_txn, key_hash, position)


def sync_page_txn(
    connection: Connection, username: str, key_hash: str | None, since: int | None, limit: int,
    max_bytes: int | None = None,
) -> SyncPage:
    if since is None:
        since = 0
        if key_hash is not None:
            since = int(connection.execute(
                select(sessions.c.sync_position).where(sessions.c.key_hash == key_hash)
            ).scalar() or 0)
    my_groups = select(group_members.c.chatname).where(group_members.c.username == username)
    my_direct = select(direct_chats.c.chat).where(direct_chats.c.username == username)
    target = messages.alias("target")
    # Who wrote what a row is about: the target's author for a change row.
    author = case((messages.c.changes.is_not(None), target.c.sender), else_=messages.c.sender)
    blocked = select(blocks.c.blocked).where(blocks.c.blocker == username)
    # A group's system events are never anyone's words to hide.
    from_blocked = author.in_(blocked) & (
        messages.c.event.is_(None) | messages.c.changes.is_not(None)
    )
    joined = messages.outerjoin(target, target.c.id == messages.c.changes)
    # The ids first, then the rows (as missed_in_ranges_txn does): each chat's
    # part of ix_messages_chat_id is read from *since*.
    ids = (
        select(messages.c.id)
        .select_from(joined)
        .where(
            (messages.c.id > since)
            & (messages.c.chat.in_(union_all(my_groups, my_direct)))
            & (messages.c.chat.in_(my_groups) | ~func.coalesce(from_blocked, False))
        )
        .order_by(messages.c.id)
        .limit(limit + 1)
    )
    query = (
        select(
            messages,
            func.coalesce(from_blocked, False).label("hidden"),
            target.c.sender.label("target_sender"),
            target.c.content.label("target_content"),
            target.c.mentions.label("target_mentions"),
        )
        .select_from(joined)
        .where(messages.c.id.in_(ids))
        .order_by(messages.c.id)
    )
    items: list[SyncItem] = []
    more = False
    total = 0
    result = connection.execution_options(yield_per=_ROWS_AT_A_TIME).execute(query)
    try:
        for row in result:
            if len(items) == limit or (max_bytes is not None and total >= max_bytes):
                more = True
                break
            item = _sync_item(row)
            items.append(item)
            content = item.content if item.record.changes is not None else item.record.content
            total += len(content.encode()) if content else 0
    finally:
        result.close()
    groups = sorted(connection.execute(my_groups).scalars())
    return SyncPage(since, items, more, groups)


def _sync_item(row: Any) -> SyncItem:
    record = _message_record(row)
    if record.changes is None:
        return SyncItem(record)
    mentions = json.loads(row.target_mentions) if row.target_mentions else None
    return SyncItem(record, row.target_sender, row.target_content, mentions)


def set_position_txn(connection: Connection, key_hash: str, position: int) -> None:
    connection.execute(
        update(sessions).where(sessions.c.key_hash == key_hash).values(sync_position=position)
    )

