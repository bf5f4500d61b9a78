"""SyncRequest: every device keeps up, whatever the user's other devices read.

Each session key has its own position (``sessions.sync_position``): a
laptop that was offline asks without ``since`` and gets every message,
group event, edit and deletion after it, in pages split by bytes, each
page moving the position to its ``until``.
"""

from __future__ import annotations

from typing import Any

from chateau import messages
from chateau.connection import Connection
from chateau.errors import BadRequest
from chateau.handlers.context import Reply, Services, fill_page, require_stored_messages
from chateau.messages import SyncRequest
from chateau.store.sync import SyncItem

MAX_SYNC = 500


async def sync(ctx: Services, conn: Connection, request: SyncRequest) -> Reply:
    user = conn.username
    assert user is not None
    require_stored_messages(ctx, "sync")
    if request.since is not None and request.since < 0:
        raise BadRequest("SyncRequest: 'since' must be 0 or more")
    if not 1 <= request.limit <= MAX_SYNC:
        raise BadRequest(f"SyncRequest: 'limit' must be between 1 and {MAX_SYNC}")
    frame_limit = ctx.config.server.max_message_size
    key_hash = conn.session_key_hash
    page = await ctx.store.sync.page(
        user, key_hash, request.since, request.limit, max_bytes=frame_limit
    )
    reply = messages.sync_response(page.since, page.since, page.more, [])
    # The groups go on the last page only: room is made for them before the
    # entries are added, and they are dropped again if the page stops early.
    if not page.more:
        reply["groups"] = page.groups
    fill_page(reply, "messages", (sync_entry(user, item) for item in page.items),
              request.msg_id, frame_limit)
    if reply["more"]:
        reply.pop("groups", None)
    if reply["messages"]:
        reply["until"] = reply["messages"][-1]["id"]
    if key_hash is not None:
        await ctx.store.sync.set_position(key_hash, reply["until"])
    return reply


def _conversation(user: str, item: SyncItem) -> tuple[str, str]:
    """``("chatname", group)`` or ``("user", the other person)`` of *item*'s chat."""
    record = item.record
    if record.recipient is None:
        return "chatname", record.chat
    first, _, second = record.chat[1:].partition(":")
    return "user", second if first == user else first


def sync_entry(user: str, item: SyncItem) -> dict[str, Any]:
    """One SyncResponse entry: a message entry, a change entry, or a hidden one."""
    record = item.record
    key, name = _conversation(user, item)
    if record.hidden:
        return {"id": record.id, key: name, "timestamp": record.timestamp, "hidden": True}
    if record.changes is None:
        return {**record.history_entry(), key: name}
    kind = (record.event or {}).get("change")
    entry: dict[str, Any] = {"id": record.id, "change": kind, "message": record.changes,
                             key: name, "sender": item.author,
                             "timestamp": record.timestamp}
    if kind == "edited":
        entry["content"] = item.content
        if item.mentions:
            entry["mentions"] = item.mentions
    return entry
