"""Reports: ReportRequest (anyone), ReportListRequest and ReportResolveRequest (server admins).

A report names a message, a user, a chat, or several of these, and keeps a
snapshot of what was reported as it was then: the message, and for a
random chat its last :data:`RANDOM_CHAT_MESSAGES` messages. A deletion
afterwards hides nothing from moderators. A user reports only what they can
see; anything else is answered as if it did not exist, so reporting reveals
no other chat. Server admins (``users.is_admin``) read and resolve reports;
each resolution is recorded in the moderation log in the same transaction.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.logger import Logger

from chateau import messages
from chateau.connection import Connection
from chateau.errors import (
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    TOO_MANY_REQUESTS,
    BadRequest,
    ChateauError,
)
from chateau.handlers.context import (
    Reply,
    Services,
    existing_other_user,
    fill_page,
    lookup,
    require_stored_messages,
)
from chateau.handlers.history import announce_deletion, message_audience
from chateau.handlers.operators import MAX_REASON_LENGTH as MAX_BAN_REASON, ban_user
from chateau.handlers.safety import keep_apart
from chateau.messages import ReportListRequest, ReportRequest, ReportResolveRequest
from chateau.names import RANDOM_PREFIX
from chateau.store.records import REPORT_OPEN, MessageRecord, ReportRecord, now_millis

log = Logger()

MAX_REASON = 1000
MAX_NOTE = 1000
# The messages of a random chat a report keeps: random partners are strangers,
# and the chat's context is what a moderator needs.
RANDOM_CHAT_MESSAGES = 20
MAX_REPORT_LIST = 200
HOUR_MS = 3_600_000
STATUSES = ("open", "closed", "all")
DISMISS, WARN, DELETE_MESSAGE, BAN_USER = "dismiss", "warn", "delete_message", "ban_user"
ACTIONS = (DISMISS, WARN, DELETE_MESSAGE, BAN_USER)


def text_problem(field: str, value: str, most: int, empty_ok: bool) -> str | None:
    """What is wrong with a reason or note (None: nothing)."""
    if not empty_ok and not value.strip():
        return f"{field!r} must not be empty"
    if "\x00" in value:
        return f"{field!r} must not contain NUL characters"
    if len(value) > most:
        return f"{field!r} is longer than {most} characters"
    return None


def _check_text(kind: str, field: str, value: str, most: int, empty_ok: bool) -> None:
    problem = text_problem(field, value, most, empty_ok)
    if problem is not None:
        raise BadRequest(f"{kind}: {problem}")


def action_problem(found: ReportRecord, action: str) -> str | None:
    """Why the open report *found* cannot be resolved with a known *action* (None: it can)."""
    if action in (WARN, BAN_USER) and found.username is None:
        return f"report {found.id} names no user to {action.replace('_', ' ')}"
    if action == DELETE_MESSAGE and found.message_id is None:
        return f"report {found.id} names no message to delete"
    return None


# Server-wide bans come with UserBanRequest; until this server has them,
def ban_reason(found: ReportRecord, note: str) -> str:
    """The reason a ban resolving *found* gives: the note, else the report."""
    return note.strip() or f"report {found.id}: {found.reason}"[:MAX_BAN_REASON]


def already_resolved(record: ReportRecord) -> str:
    return f"report {record.id} is already resolved ({record.action} by {record.resolved_by})"


def _is_random(chat: str) -> bool:
    return chat.startswith(RANDOM_PREFIX)


async def _can_see(ctx: Services, user: str, record: MessageRecord) -> bool:
    """Whether *user* sees *record*: sent or received it, or is in its chat.

    A random chat that has ended is known only from its messages: who
    wrote in it took part.
    """
    if record.recipient is not None:
        return user in (record.sender, record.recipient)
    pair = ctx.registry.pair(record.chat)
    if pair is not None:
        return user in pair.members
    group = ctx.registry.group(record.chat)
    if group is not None:
        return user in group.members
    if _is_random(record.chat):
        return bool(await ctx.store.messages.has_written(record.chat, user))
    return False


async def _visible_message(ctx: Services, user: str, message_id: int) -> MessageRecord:
    require_stored_messages(ctx, "reporting a message")
    record = await ctx.store.messages.get_message(message_id)
    if record is None or record.deleted or not await _can_see(ctx, user, record):
        raise ChateauError(NOT_FOUND, f"no message with id {message_id} that you can see")
    if record.event is not None:
        raise BadRequest("a group's system event cannot be reported: report the user or the group")
    if record.sender == user:
        raise BadRequest("that is your own message")
    return record


async def _visible_chat(ctx: Services, user: str, chatname: str, raw: str) -> None:
    """A group *user* is in (404 unknown, 403 not a member) or a random chat they are or were in.

    A random chat *user* is not in is answered 404 like one that never was:
    its name is known only to its two members.
    """
    pair = ctx.registry.pair(chatname)
    if pair is not None:
        if user in pair.members:
            return
    elif _is_random(chatname) and ctx.stores_messages:
        if await ctx.store.messages.has_written(chatname, user):
            return
    elif not _is_random(chatname):
        group = ctx.registry.group(chatname)
        if group is None:
            raise ChateauError(NOT_FOUND, f"no such group: {raw!r}")
        if user not in group.members:
            raise ChateauError(FORBIDDEN, f"you are not a member of {raw!r}")
        return
    raise ChateauError(NOT_FOUND, f"no such chat: {raw!r}")


def _message_snapshot(record: MessageRecord) -> dict[str, Any]:
    snapshot = {"id": record.id, "chat": record.chat, "sender": record.sender,
                "content": record.content, "timestamp": record.timestamp,
                "edited": record.edited}
    if record.recipient is not None:
        snapshot["recipient"] = record.recipient
    return snapshot


async def _random_chat_snapshot(ctx: Services, chatname: str) -> list[dict[str, Any]]:
    """The chat's last messages, oldest first (none when the server keeps no messages)."""
    if not ctx.stores_messages:
        return []
    records, _ = await ctx.store.messages.history(chatname, None, RANDOM_CHAT_MESSAGES)
    return [record.history_entry() for record in reversed(records)]


def _partner(ctx: Services, user: str, chatname: str, recent: list[dict[str, Any]]) -> str | None:
    """The other member of a random chat: from the live pair, else from who wrote in it."""
    pair = ctx.registry.pair(chatname)
    if pair is not None:
        return pair.other(user)
    others = {entry["sender"] for entry in recent if entry["sender"] != user}
    return others.pop() if len(others) == 1 else None


async def report(ctx: Services, conn: Connection, request: ReportRequest) -> Reply:
    user = conn.username
    assert user is not None
    _check_text("ReportRequest", "reason", request.reason, MAX_REASON, empty_ok=False)
    if request.message_id is None and request.username is None and request.chatname is None:
        raise BadRequest("ReportRequest: give at least one of 'message_id', 'username' or "
                         "'chatname'")
    snapshot: dict[str, Any] = {}
    reported: str | None = None
    chatname: str | None = None
    record: MessageRecord | None = None
    if request.message_id is not None:
        record = await _visible_message(ctx, user, request.message_id)
        snapshot["message"] = _message_snapshot(record)
        reported = record.sender
        if record.recipient is None:
            chatname = record.chat
    if request.username is not None:
        named = await existing_other_user(ctx, user, request.username)
        if reported is not None and named != reported:
            raise BadRequest(f"message {request.message_id} was not sent by {request.username!r}")
        reported = named
    if request.chatname is not None:
        named_chat = lookup(request.chatname)
        if record is not None:
            # A direct message's chat is, to its reader, the other person.
            direct_name = record.sender if record.recipient == user else record.recipient
            if named_chat not in (record.chat, direct_name):
                raise BadRequest(
                    f"message {request.message_id} is not in {request.chatname!r}"
                )
        else:
            await _visible_chat(ctx, user, named_chat, request.chatname)
            chatname = named_chat
    if chatname is not None and _is_random(chatname):
        recent = await _random_chat_snapshot(ctx, chatname)
        snapshot["chat"] = {"chatname": chatname, "messages": recent}
        if reported is None:
            reported = _partner(ctx, user, chatname, recent)
    report_id = await _store_report(
        ctx, user, request.reason, reported, chatname,
        None if record is None else record.id, snapshot,
    )
    if reported is not None:
        await keep_apart(ctx, user, reported)
    log.info("report {report_id} made by {reporter}", report_id=report_id, reporter=user)
    return messages.report_response(report_id)


async def _store_report(
    ctx: Services, user: str, reason: str, username: str | None, chatname: str | None,
    message_id: int | None, snapshot: dict[str, Any],
) -> int:
    """Store the report; 429 past ``[limits] reports_per_hour`` open reports of the last hour."""
    most = ctx.config.limits.reports_per_hour
    now = now_millis()
    report_id, times = await ctx.store.reports.add_report(
        user, reason, username, chatname, message_id, snapshot, now - HOUR_MS, most
    )
    if report_id is None:
        wait = max(0.001, (times[len(times) - most] + HOUR_MS - now) / 1000)
        raise ChateauError(
            TOO_MANY_REQUESTS,
            f"you have {len(times)} open reports from the last hour, the most allowed: wait "
            f"{math.ceil(wait)} s",
            retry_after=round(wait, 3),
        )
    return report_id


async def _require_server_admin(ctx: Services, user: str, refusal: str) -> None:
    if not await ctx.store.accounts.is_admin(user):
        raise ChateauError(FORBIDDEN, refusal)


async def report_list(ctx: Services, conn: Connection, request: ReportListRequest) -> Reply:
    user = conn.username
    assert user is not None
    await _require_server_admin(ctx, user, "only server admins may read reports")
    if request.status not in STATUSES:
        raise BadRequest(f"ReportListRequest: 'status' must be one of {', '.join(STATUSES)}")
    if not 1 <= request.limit <= MAX_REPORT_LIST:
        raise BadRequest(f"ReportListRequest: 'limit' must be between 1 and {MAX_REPORT_LIST}")
    records, more = await ctx.store.reports.reports(request.status, request.limit, request.before)
    return report_page(records, more, request.msg_id, ctx.config.server.max_message_size)


def report_page(
    records: list[ReportRecord], more: bool, msg_id: Any, frame_limit: int
) -> dict[str, Any]:
    """A ReportListResponse of the newest *records* whose frame fits in *frame_limit* bytes.

    As a history page (:func:`fill_page`): one that stops early says
    ``more: true``, and a page always holds at least one report, however
    large its snapshot.
    """
    page = messages.report_list_response([], more)
    return fill_page(page, "reports", (record.entry() for record in records), msg_id, frame_limit)


async def report_resolve(ctx: Services, conn: Connection, request: ReportResolveRequest) -> Reply:
    user = conn.username
    assert user is not None
    await _require_server_admin(ctx, user, "only server admins may resolve reports")
    if request.action not in ACTIONS:
        raise BadRequest(
            f"ReportResolveRequest: unknown action {request.action!r}: one of {', '.join(ACTIONS)}"
        )
    _check_text("ReportResolveRequest", "note", request.note, MAX_NOTE, empty_ok=True)
    found = await ctx.store.reports.get_report(request.report_id)
    if found is None:
        raise ChateauError(NOT_FOUND, f"no report with id {request.report_id}")
    if found.status != REPORT_OPEN:
        raise ChateauError(CONFLICT, already_resolved(found))
    problem = action_problem(found, request.action)
    if problem is not None:
        raise BadRequest(problem)
    message: MessageRecord | None = None
    if request.action == DELETE_MESSAGE:
        assert found.message_id is not None
        require_stored_messages(ctx, "deleting messages")
        message = await ctx.store.messages.get_message(found.message_id)
        if message is not None and message.deleted:
            message = None  # already gone: the report is closed, nobody is told again
        if message is not None:
            ctx.delivery.check_reachable(message_audience(ctx, message))
    if request.action == BAN_USER:
        # Until unbanned, as UserBanRequest without hours: the ban and its
        # own moderation-log entry first, then the report's resolution.
        assert found.username is not None
        await ban_user(ctx, user, found.username, None, ban_reason(found, request.note))
    resolved = await ctx.store.reports.resolve(
        found.id, user, request.action, request.note, delete_message=message is not None
    )
    if resolved is None or resolved.status != REPORT_OPEN:
        # Another admin closed it meanwhile; nothing was changed here.
        raise ChateauError(CONFLICT, already_resolved(resolved or found))
    if request.action == WARN:
        assert found.username is not None
        ctx.delivery.deliver([found.username], messages.moderation_warning(found.id, request.note))
    if message is not None:
        announce_deletion(ctx, message, None)
    log.info("report {report_id} resolved by {admin}: {action}",
             report_id=found.id, admin=user, action=request.action)
    return messages.report_resolve_response(found.id, request.action)
