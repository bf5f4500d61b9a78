"""Read state: ReadRequest, ConversationsRequest, and the unread total of a sign-in.

A reader's marker moves only up (chateau.store.reading). When it moves, the
reader's other connections, on every node, hear of it at once so their
badges clear; the other side of a direct chat and the other members of a
group hear of it too, paced (chateau.receipts), unless the reader's
``read_receipts`` setting is off or the group has more than ``[chat]
read_receipts_max_group`` members. Whoever blocks the reader is not told.
"""

from __future__ import annotations

from typing import Any

from chateau import messages
from chateau.connection import Connection
from chateau.errors import NOT_FOUND, BadRequest, ChateauError
from chateau.handlers.context import (
    Reply,
    Services,
    fill_page,
    lookup,
    require_membership,
    require_stored_messages,
)
from chateau.messages import ConversationsRequest, ReadRequest
from chateau.names import DELETED_USER, canonical
from chateau.store.reading import DIRECT, ConversationRow
from chateau.store.records import direct_chat

# ConversationsRequest's limit: at most this many conversations a page.
MAX_CONVERSATIONS = 200


async def _conversation(
    ctx: Services, user: str, request_name: str, chatname: str | None, other_raw: str | None
) -> tuple[str, str, str]:
    """(key, name, chat key) of the conversation a request names; 400, 403 or 404."""
    if (chatname is None) == (other_raw is None):
        raise BadRequest(f"{request_name}: give exactly one of 'chatname' or 'user'")
    if other_raw is not None:
        other = lookup(other_raw)
        if other != DELETED_USER and not ctx.registry.is_online(other) \
                and not await ctx.store.accounts.user_exists(other):
            raise ChateauError(NOT_FOUND, f"no such user: {other_raw!r}")
        return "user", other, direct_chat(user, other)
    name = canonical(chatname or "")
    if ctx.registry.group(name) is None:
        # Random chats keep no read state.
        raise ChateauError(NOT_FOUND, f"no such group: {chatname!r}")
    require_membership(ctx, user, name)
    return "chatname", name, name


async def read(ctx: Services, conn: Connection, request: ReadRequest) -> Reply:
    user = conn.username
    assert user is not None
    require_stored_messages(ctx, "read state")
    key, name, chat = await _conversation(ctx, user, "ReadRequest", request.chatname, request.user)
    if request.id < 1:
        raise BadRequest("ReadRequest: 'id' must be at least 1")
    move = await ctx.store.reading.mark_read(user, chat, request.id)
    if move.moved:
        tell_readers(ctx, conn, user, key, name, chat, move.after)
    return messages.read_response(key, name, move.after)


def tell_readers(
    ctx: Services, conn: Connection | None, user: str, key: str, name: str, chat: str,
    marker: int,
) -> None:
    """The reader's other connections at once; the others of the conversation, paced."""
    ctx.delivery.deliver([user], messages.read_recv(key, name, user, marker), skip=conn)
    if not ctx.registry.settings(user).read_receipts:
        return
    if key == "user":
        if name != user:
            ctx.receipts.send(user, chat, [name], messages.read_recv("user", user, user, marker))
        return
    group = ctx.registry.group(name)
    if group is None or len(group.members) > ctx.config.chat.read_receipts_max_group:
        return
    others = sorted(member for member in group.members if member != user)
    if others:
        ctx.receipts.send(user, chat, others, messages.read_recv("chatname", name, user, marker))


async def unread_total(ctx: Services, username: str) -> int | None:
    """The sum of *username*'s unread (each conversation capped); None without stored messages."""
    if not ctx.stores_messages:
        return None
    return await ctx.store.reading.unread_total(username)


def peer_of(chat: str, user: str) -> str:
    """The other person of direct chat *chat* ("@a:b"), as *user* names them."""
    first, _, second = chat[1:].partition(":")
    if first == user:
        return second
    return first


def conversation_entry(ctx: Services, user: str, row: ConversationRow) -> dict[str, Any]:
    """One conversation of a ConversationsResponse (docs/protocol.md)."""
    entry: dict[str, Any]
    if row.kind == DIRECT:
        entry = {"user": peer_of(row.chat, user)}
    else:
        entry = {"chatname": row.chat}
    last: dict[str, Any] | None = None
    if row.last_message is not None:
        last = row.last_message.history_entry()
        if row.last_mentions and not row.last_message.hidden:
            last["mentions"] = row.last_mentions
    entry.update(activity=row.activity, last_message=last, unread=row.unread,
                 mentions=row.mentions, read=row.read)
    if row.kind == DIRECT:
        peer = entry["user"]
        if ctx.registry.settings(peer).read_receipts:
            entry["peer_read"] = row.peer_read or 0
    else:
        group = ctx.registry.group(row.chat)
        entry["members"] = len(group.members) if group is not None else 0
    return entry


async def conversations(ctx: Services, conn: Connection, request: ConversationsRequest) -> Reply:
    user = conn.username
    assert user is not None
    require_stored_messages(ctx, "the conversation list")
    if not 1 <= request.limit <= MAX_CONVERSATIONS:
        raise BadRequest(
            f"ConversationsRequest: 'limit' must be between 1 and {MAX_CONVERSATIONS}"
        )
    if request.before is not None and request.before < 1:
        raise BadRequest("ConversationsRequest: 'before' must be at least 1")
    rows, more = await ctx.store.reading.conversations(user, request.limit, request.before)
    page = messages.conversations_response([], more)
    return fill_page(
        page, "conversations", (conversation_entry(ctx, user, row) for row in rows),
        request.msg_id, ctx.config.server.max_message_size,
    )
