"""What server admins do over the protocol: AnnounceRequest, UserBanRequest,
UserUnbanRequest; and the appliers of the notices every node acts on
(chateau.notices): announcements, messages and groups changed by an operator,
and users renamed (chateau.handlers.identity).

Whether a user is a server admin is asked of the database on each request
(``store.accounts.is_admin``), so ``chateau-admin user admin|unadmin`` holds
at once on every node.
"""

from __future__ import annotations

from typing import Any

from chateau import messages
from chateau.connection import Connection
from chateau.errors import FORBIDDEN, NOT_FOUND, BadRequest, ChateauError
from chateau.handlers.context import Reply, Services, check_content, lookup
from chateau.handlers.history import change_pushes, deleted_push
from chateau.handlers.identity import apply_user_renamed
from chateau.messages import AnnounceRequest, UserBanRequest, UserUnbanRequest
from chateau.notices import Applier
from chateau.signout import BANNED, BANNED_REASON
from chateau.store import records
from chateau.store.records import BAN_FOREVER, MEMBER, MessageRecord, ban_end

# The longest ban in hours (ten years); longer is "until unbanned" (no hours).
MAX_BAN_HOURS = 87600
# The longest reason of a ban, in characters.
MAX_REASON_LENGTH = 500


async def _require_admin(ctx: Services, user: str, what: str) -> None:
    if not await ctx.store.accounts.is_admin(user):
        raise ChateauError(FORBIDDEN, f"only server admins may {what}")


async def announce(ctx: Services, conn: Connection, request: AnnounceRequest) -> Reply:
    user = conn.username
    assert user is not None
    await _require_admin(ctx, user, "announce")
    check_content(ctx, request.content)
    announcement = await ctx.store.announcements.announce(user, request.content)
    # Users here at once; every node (this one too, which then skips it)
    # when it polls the notice written with it.
    await ctx.announcer.deliver(
        announcement.id, announcement.at, announcement.by, announcement.content
    )
    return messages.announce_response(announcement.id)


async def ban_user(
    ctx: Services, actor: str, username: str, hours: int | None, reason: str
) -> dict[str, Any]:
    """Ban *username* server-wide for *hours* (None: until unbanned); the UserBanResponse.

    Their session keys are revoked and the ban recorded in the moderation
    log, in one transaction; their connections here are closed now (4003),
    those on other nodes within ``[chat] revocation_check_interval``
    (chateau.signout). 400 for a bad field or oneself, 404 for nobody.
    """
    target = lookup(username)
    if target == actor:
        raise BadRequest("you cannot ban yourself")
    if hours is not None and not 1 <= hours <= MAX_BAN_HOURS:
        raise BadRequest(
            f"'hours' must be between 1 and {MAX_BAN_HOURS} (leave it out to ban until unbanned)"
        )
    reason = reason.strip()
    if not reason:
        raise BadRequest("a ban needs a reason")
    if len(reason) > MAX_REASON_LENGTH or "\x00" in reason:
        raise BadRequest(f"the reason must be at most {MAX_REASON_LENGTH} characters, without NUL")
    until = BAN_FOREVER if hours is None else records.now_millis() + hours * 3_600_000
    revoked = await ctx.store.accounts.ban(actor, target, until, reason)
    if revoked is None:
        raise ChateauError(NOT_FOUND, f"no such user: {username!r}")
    for connection in ctx.registry.connections(target):
        connection.close_for(BANNED, BANNED_REASON)
    return messages.user_ban_response(target, None if hours is None else ban_end(until))


async def user_ban(ctx: Services, conn: Connection, request: UserBanRequest) -> Reply:
    user = conn.username
    assert user is not None
    await _require_admin(ctx, user, "ban users")
    return await ban_user(ctx, user, request.username, request.hours, request.reason)


async def user_unban(ctx: Services, conn: Connection, request: UserUnbanRequest) -> Reply:
    user = conn.username
    assert user is not None
    await _require_admin(ctx, user, "unban users")
    target = lookup(request.username)
    lifted = await ctx.store.accounts.unban(user, target)
    if lifted is None:
        raise ChateauError(NOT_FOUND, f"no such user: {request.username!r}")
    if not lifted:
        raise ChateauError(NOT_FOUND, f"{target!r} is not banned")
    return messages.user_unban_response(target)


# -- notices: what an operator changed, applied on this node ------------------

async def apply_announcement(ctx: Services, body: dict[str, Any]) -> None:
    await ctx.announcer.deliver(
        int(body["id"]), int(body["at"]), str(body["by"]), str(body["content"])
    )


def apply_message_deleted(ctx: Services, body: dict[str, Any]) -> None:
    """Tell the chat's members here, as a deletion over the protocol does."""
    record = MessageRecord(
        int(body["id"]), str(body["chat"]), body.get("recipient"), str(body["sender"]),
        None, "", False, True,
    )
    for usernames, push, _ in change_pushes(ctx, record, deleted_push(record)):
        ctx.delivery.deliver_here(usernames, push)


async def apply_group_changed(ctx: Services, body: dict[str, Any]) -> None:
    """A group an operator deleted, or whose members or roles they changed.

    The registry forgets or reloads the group; the members here are told as
    the protocol's own requests tell them (GroupRemovedRecv, the 201 notice
    of a group one was added to, GroupEventRecv), except that the events are
    not stored in the group's history: chateau-admin does not route messages.
    """
    chatname = str(body["chatname"])
    change = body.get("change")
    by = str(body.get("by", ""))
    deliver = ctx.delivery.deliver_here
    if change == "deleted":
        group = ctx.registry.remove_group(chatname)
        members = sorted(set(body.get("members") or ()) | (group.members if group else set()))
        deliver(members, messages.group_removed(chatname, by, str(body.get("reason", "")), False))
        return
    await reload_group(ctx, chatname)
    members = [str(m) for m in body.get("members") or ()]
    if change == "added":
        added = [str(u) for u in body.get("users") or ()]
        for username in added:
            if ctx.registry.is_local(username):
                # The same notice as at sign-in, taken (so it is not told twice).
                for group in await ctx.store.groups.take_group_notices(username):
                    deliver([username], messages.group_init_notice(
                        group.chatname, group.creator, sorted(group.members)))
        others = [m for m in members if m not in added]
        for username in added:
            deliver(others, messages.group_event(chatname, "added", username, by))
    elif change == "removed":
        username = str(body["user"])
        banned = bool(body.get("banned"))
        reason = str(body.get("reason") or "")
        if body.get("was_member"):
            deliver([username], messages.group_removed(chatname, by, reason, banned))
        detail = {"reason": reason} if reason else {}
        deliver(members, messages.group_event(
            chatname, "banned" if banned else "removed", username, by, **detail))
    elif change == "role":
        deliver(members, messages.group_event(
            chatname, "role", str(body["user"]), by, role=str(body["role"])))


async def reload_group(ctx: Services, chatname: str) -> None:
    """Read the group's members, roles and mutes again (after an operator's change)."""
    info = await ctx.store.groups.group_info(chatname)
    if info is None:
        ctx.registry.remove_group(chatname)
        return
    old = ctx.registry.group(chatname)
    now = records.now_millis()
    ctx.registry.add_group(
        chatname, info.creator, [m.username for m in info.members],
        started=old.started if old is not None else False,
        roles={m.username: m.role for m in info.members if m.role != MEMBER},
        muted_until={m.username: m.muted_until for m in info.members
                     if m.muted_until is not None and m.muted_until > now},
        who_can_send=info.who_can_send,
    )


def notice_appliers(ctx: Services) -> dict[str, Applier]:
    """One applier per kind of notice (chateau.notices), acting through *ctx*."""
    return {
        "announcement": lambda body: apply_announcement(ctx, body),
        "message_deleted": lambda body: apply_message_deleted(ctx, body),
        "group_changed": lambda body: apply_group_changed(ctx, body),
        "user_renamed": lambda body: apply_user_renamed(ctx, body),
    }
