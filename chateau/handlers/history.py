"""Stored messages: HistoryRequest, MessageEditRequest, MessageDeleteRequest."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from chateau import messages, permissions
from chateau.connection import Connection
from chateau.errors import FORBIDDEN, NOT_FOUND, BadRequest, ChateauError
from chateau.handlers.context import (
    Reply,
    Services,
    check_content,
    check_wire_size,
    fill_page,
    lookup,
    require_membership,
    require_permission,
    require_stored_messages,
)
from chateau.mentions import ALL, ALL_REFUSAL, find_mentions
from chateau.messages import HistoryRequest, MessageDeleteRequest, MessageEditRequest
from chateau.names import DELETED_USER, canonical
from chateau.store.records import MessageRecord, direct_chat

MAX_HISTORY = 100


async def history(ctx: Services, conn: Connection, request: HistoryRequest) -> Reply:
    user = conn.username
    assert user is not None
    require_stored_messages(ctx, "message history")
    if (request.chatname is None) == (request.user is None):
        raise BadRequest("HistoryRequest: give exactly one of 'chatname' or 'user'")
    if not 1 <= request.limit <= MAX_HISTORY:
        raise BadRequest(f"HistoryRequest: 'limit' must be between 1 and {MAX_HISTORY}")
    bounds = (request.before, request.before_time, request.after, request.after_time)
    if sum(bound is not None for bound in bounds) > 1:
        raise BadRequest(
            "HistoryRequest: give at most one of 'before', 'before_time', 'after', 'after_time'"
        )
    before_time = _moment("before_time", request.before_time)
    after_time = _moment("after_time", request.after_time)
    if request.user is not None:
        other = lookup(request.user)
        # DELETED_USER: the conversations of erased accounts (chateau.store.erasure).
        if other != DELETED_USER and not ctx.registry.is_online(other) \
                and not await ctx.store.accounts.user_exists(other):
            raise ChateauError(NOT_FOUND, f"no such user: {request.user!r}")
        key, name, chat_key = "user", other, direct_chat(user, other)
    else:
        name = canonical(request.chatname or "")
        require_membership(ctx, user, name)
        key, chat_key = "chatname", name
    frame_limit = ctx.config.server.max_message_size
    # Messages from people the user blocks: left out of a direct chat, a gap
    # (hidden) in a group or random chat.
    records, more = await ctx.store.messages.history(
        chat_key, request.before, request.limit, max_bytes=frame_limit,
        viewer=user, direct=key == "user", after=request.after,
        before_time=before_time, after_time=after_time,
    )
    return history_page(key, name, records, more, request.msg_id, frame_limit)


# ISO 8601 in UTC, as every timestamp the server gives: milliseconds (or
# none, or any fraction), "Z" or "+00:00".
_MOMENT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:Z|\+00:00)", re.ASCII
)


def _moment(field: str, value: str | None) -> int | None:
    """*value* (an ISO 8601 UTC time) in ms since the epoch; None for None."""
    if value is None:
        return None
    match = _MOMENT.fullmatch(value)
    try:
        if match is None:
            raise ValueError(value)
        year, month, day, hour, minute, second, fraction = match.groups()
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                          tzinfo=timezone.utc)
    except (ValueError, OverflowError):
        raise BadRequest(
            f"HistoryRequest: '{field}' must be an ISO 8601 UTC time such as "
            "2026-11-21T13:04:02.789Z"
        ) from None
    millis = int((fraction or "0").ljust(3, "0")[:3])
    return int(moment.timestamp()) * 1000 + millis


def history_page(
    key: str, name: str, records: list[MessageRecord], more: bool, msg_id: Any, frame_limit: int
) -> dict[str, Any]:
    """A HistoryResponse of the newest *records* whose frame fits in *frame_limit* bytes.

    A page that stops early says ``more: true``, so the client asks again
    with ``before`` (see :func:`fill_page`). Acceptance made sure one message
    fits (see ``check_wire_size``), so only a huge ``msg_id`` could make the
    first bigger, and then it is sent anyway.
    """
    page = messages.history_response(key, name, [], more)
    return fill_page(
        page, "messages", (record.history_entry() for record in records), msg_id, frame_limit
    )


async def _stored_message(ctx: Services, message_id: int) -> MessageRecord:
    require_stored_messages(ctx, "editing and deleting messages")
    record = await ctx.store.messages.get_message(message_id)
    if record is None or record.deleted:
        raise ChateauError(NOT_FOUND, f"no message with id {message_id}")
    if record.event is not None:
        raise ChateauError(FORBIDDEN, "a group's system events cannot be edited or deleted")
    return record


async def _own_message(ctx: Services, user: str, message_id: int) -> MessageRecord:
    record = await _stored_message(ctx, message_id)
    if record.sender != user:
        raise ChateauError(FORBIDDEN, "only the author may edit or delete a message")
    return record


def _chat_members(ctx: Services, chat: str) -> Iterable[str]:
    group = ctx.registry.group(chat)
    pair = ctx.registry.pair(chat)
    return group.members if group is not None else pair.members if pair is not None else ()


def message_audience(ctx: Services, record: MessageRecord) -> Iterable[str]:
    """Who hears of an edit or deletion of *record*."""
    if record.recipient is not None:
        return [record.recipient, record.sender]
    return _chat_members(ctx, record.chat)


def change_pushes(
    ctx: Services, record: MessageRecord, build: Callable[[str], dict[str, Any]]
) -> list[tuple[list[str], dict[str, Any], bool]]:
    """Who is told of a change to *record*, and what: (usernames, push, skippable).

    *build* makes the push from the chat's name as each side knows it: a
    direct message's recipient knows the chat by the sender's name, the
    sender by the recipient's. The connection that made the change is not
    told again where *skippable*.
    """
    if record.recipient is not None:
        return [([record.recipient], build(record.sender), False),
                ([record.sender], build(record.recipient), True)]
    return [(list(_chat_members(ctx, record.chat)), build(record.chat), True)]


def _announce_change(
    ctx: Services, conn: Connection | None, record: MessageRecord,
    build: Callable[[str], dict[str, Any]],
) -> None:
    """Tell everyone in the message's chat (and the author's other devices).

    *conn* is the connection that made the change, which is not told again
    (None when it is not in the chat: a server admin's).
    """
    for usernames, push, skippable in change_pushes(ctx, record, build):
        # Named, so that whoever blocks the author is not told either.
        ctx.delivery.deliver(usernames, push, skip=conn if skippable else None,
                             sender=record.sender)


def deleted_push(record: MessageRecord) -> Callable[[str], dict[str, Any]]:
    """The MessageDeleted push of *record*, by chat name (see change_pushes)."""
    return lambda chatname: messages.message_deleted(record.id, chatname, record.sender)


def announce_deletion(ctx: Services, record: MessageRecord, skip: Connection | None) -> None:
    """Push ``MessageDeleted`` for a deleted *record* to its chat (not to *skip*).

    Every deletion says so the same way: the author's own
    (MessageDeleteRequest), a server admin's, and one resolving a report;
    an operator's (chateau-admin) through the notice each node applies
    (chateau.handlers.operators).
    """
    _announce_change(ctx, skip, record, deleted_push(record))


async def message_edit(ctx: Services, conn: Connection, request: MessageEditRequest) -> Reply:
    user = conn.username
    assert user is not None
    check_content(ctx, request.content)
    record = await _own_message(ctx, user, request.id)
    mentions = await _edited_mentions(ctx, user, record, request.content)
    ctx.delivery.check_reachable(message_audience(ctx, record))
    await ctx.store.messages.edit_message(record.id, request.content, user, mentions)
    _announce_change(
        ctx, conn, record,
        lambda chatname: messages.message_edited(
            record.id, chatname, user, request.content, mentions
        ),
    )
    return messages.message_edit_response(record.id)


async def _edited_mentions(
    ctx: Services, user: str, record: MessageRecord, content: str
) -> list[str]:
    """The mentions of a group message's new *content*, by the group's members now.

    ``@all`` follows the rule of a send (403, nothing changed); direct
    messages and random chats have no mentions.
    """
    group = ctx.registry.group(record.chat) if record.recipient is None else None
    if group is None:
        return []
    mentions = find_mentions(content, group.members)
    if mentions:
        check_wire_size(ctx, content, mentions)
    if ALL in mentions:
        await require_permission(
            ctx, user, permissions.MENTION_ALL, group.role_of(user), ALL_REFUSAL
        )
    return mentions


async def message_delete(ctx: Services, conn: Connection, request: MessageDeleteRequest) -> Reply:
    """The author deletes their message; a server admin any message (recorded
    in the moderation log), asked of the database only when they are not the author."""
    user = conn.username
    assert user is not None
    record = await _stored_message(ctx, request.id)
    by_admin = record.sender != user
    if by_admin and not await ctx.store.accounts.is_admin(user):
        raise ChateauError(FORBIDDEN, "only the author may edit or delete a message")
    ctx.delivery.check_reachable(message_audience(ctx, record))
    await ctx.store.messages.delete_message(record.id, user)
    if by_admin:
        await ctx.store.audit.record(
            user, "message_delete", record.chat, message_id=record.id, sender=record.sender
        )
    announce_deletion(ctx, record, conn)
    return messages.message_delete_response(record.id)
