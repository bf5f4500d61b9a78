"""Groups and random chats: GroupMessageInitRequest, GroupLeaveRequest,
GroupMembersRequest, GroupInfoRequest,
GroupRoleRequest. (Adding, removing, banning, muting and joining are in
chateau.handlers.membership.)"""

from __future__ import annotations

import math
from typing import Any

from chateau import messages, permissions
from chateau.connection import Connection
from twisted.logger import Logger

from chateau.errors import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    NOT_AUTHENTICATED,
    NOT_FOUND,
    TOO_LARGE,
    TOO_MANY_REQUESTS,
    UNAVAILABLE,
    BadRequest,
    ChateauError,
)
from chateau.handlers.context import (
    Reply,
    Services,
    group_event,
    require_membership,
    require_permission,
)
from chateau.handlers.safety import keep_apart
from chateau.handlers.synced_groups import refuse_synced
from chateau.messages import (
    GroupInfoRequest,
    GroupLeaveRequest,
    GroupMembersRequest,
    GroupMessageInitRequest,
    GroupRoleRequest,
)
from chateau.names import CHATNAME_RULE, canonical, check_new_chatname, check_username
from chateau.store.records import OWNER, ROLES, iso_timestamp, now_millis

HOUR_MS = 3_600_000

log = Logger()


async def group_init(ctx: Services, conn: Connection, request: GroupMessageInitRequest) -> Reply:
    creator = conn.username
    assert creator is not None
    chatname = check_new_chatname(request.chatname)
    if chatname is None:
        raise BadRequest(f"invalid chatname {request.chatname!r}: {CHATNAME_RULE}")
    limit = ctx.config.chat.max_group_members
    if len(request.recipients) + 1 > limit:
        raise ChateauError(TOO_LARGE, f"a group has at most {limit} members")
    recipients: list[str] = []
    for raw in request.recipients:
        name = check_username(raw)
        if name is None:
            raise ChateauError(NOT_FOUND, f"unknown recipient {raw!r}")
        if name != creator and name not in recipients:
            recipients.append(name)
    if not recipients:
        raise BadRequest("recipients must name at least one other user")
    registry = ctx.registry
    if registry.group(chatname) is not None or registry.pair(chatname) is not None:
        raise ChateauError(NOT_AUTHENTICATED, f"chatname {chatname!r} is taken")
    missing = await ctx.store.accounts.missing_users(recipients)
    if missing:
        raise ChateauError(NOT_FOUND, f"unknown recipient {missing[0]!r}")
    members = [creator, *recipients]
    most = ctx.config.limits.max_groups_per_user
    for member in members:
        if registry.group_count(member) >= most:
            who = "you are" if member == creator else f"{member!r} is"
            raise ChateauError(TOO_LARGE, f"{who} already in {most} groups, the most allowed")
    await _refuse_churn(ctx, creator)
    await _refuse_directory_names(ctx, chatname)
    ctx.delivery.check_reachable(members)
    online = [m for m in members if registry.is_online(m)]
    claim = await ctx.store.groups.create_group(chatname, creator, members, online)
    if claim.confusable:
        raise ChateauError(
            CONFLICT,
            f"chatname {chatname!r} looks like the existing name {claim.blocked_by!r}; "
            "choose another name",
        )
    if not claim:
        raise ChateauError(
            NOT_AUTHENTICATED, f"chatname {chatname!r} is taken (by a user or a group)"
        )
    registry.add_group(chatname, creator, members)
    ctx.delivery.announce(
        {"t": "group", "chatname": chatname, "creator": creator, "members": members}
    )
    ctx.delivery.deliver(
        members,
        messages.group_init_notice(chatname, creator, sorted(members)),
        skip=conn,
    )
    return messages.group_init_response(chatname)


async def _refuse_churn(ctx: Services, creator: str) -> None:
    """429 past ``[limits] groups_created_per_hour``, counted from the database.

    Groups are never deleted, so leaving groups and creating new ones counts
    too, on every node and across restarts. (Two creations racing on two
    connections may both pass: the count is of committed groups.)
    """
    most = ctx.config.limits.groups_created_per_hour
    now = now_millis()
    times = await ctx.store.groups.creation_times(creator, now - HOUR_MS)
    if len(times) >= most:
        wait = max(0.001, (times[len(times) - most] + HOUR_MS - now) / 1000)
        raise ChateauError(
            TOO_MANY_REQUESTS,
            f"you created {len(times)} groups in the last hour, the most allowed: wait "
            f"{math.ceil(wait)} s",
            retry_after=round(wait, 3),
        )


async def _refuse_directory_names(
    ctx: Services, chatname: str, doing: str = "create the group",
) -> None:
    """409 when the directory has a user called *chatname*; 503 when it cannot say.

    Fails closed: a name the directory might give a student who has not
    signed in yet is never taken by a group (created or renamed: *doing*
    says which, for the refusal).
    """
    if ctx.directory_has is None or check_username(chatname) is None:
        return
    try:
        taken = await ctx.directory_has(chatname)
    except Exception as exc:
        log.warn(
            "cannot {doing} {chatname}: cannot ask the directory whether it has that "
            "name: {reason}",
            doing=doing, chatname=chatname, reason=getattr(exc, "reason", None) or repr(exc),
        )
        raise ChateauError(
            UNAVAILABLE,
            f"cannot {doing} {chatname!r} now: the directory could not be asked "
            "whether the name is taken; try again later",
        ) from None
    if taken:
        raise ChateauError(
            CONFLICT, f"chatname {chatname!r} is taken by a user of the campus directory"
        )


async def group_leave(ctx: Services, conn: Connection, request: GroupLeaveRequest) -> Reply:
    user = conn.username
    assert user is not None
    target = canonical(request.chatname)
    registry = ctx.registry
    delivery = ctx.delivery

    pair = registry.pair(target)
    if pair is not None:
        if user not in pair.members:
            raise ChateauError(FORBIDDEN, f"you are not in the random chat {target!r}")
        delivery.check_reachable(pair.members)
        # Whoever leaves is never paired with that partner again.
        await keep_apart(ctx, user, pair.other(user))
        if registry.pair(target) is None:
            return messages.group_leave_response(target)  # ended meanwhile
        registry.end_pair(target)
        delivery.announce({"t": "pair_end", "chatname": target})
        delivery.deliver([pair.other(user)], messages.random_chat_ended(target, user, "left"))
        return messages.group_leave_response(target)

    group = registry.group(target)
    if group is None:
        raise ChateauError(NOT_FOUND, f"no such group: {request.chatname!r}")
    if user not in group.members:
        raise ChateauError(FORBIDDEN, f"you are not a member of {target!r}")
    await refuse_synced(ctx, target)
    delivery.check_reachable(group.members)
    heir = await ctx.store.groups.remove_group_member(target, user)
    registry.remove_member(target, user)
    delivery.announce({"t": "member_left", "chatname": target, "user": user})
    if heir is not None:
        registry.set_role(target, heir, OWNER)
        delivery.announce({"t": "member_role", "chatname": target, "user": heir, "role": OWNER})
    remaining = sorted(group.members)
    delivery.deliver(remaining, messages.group_member_left(target, user))
    await group_event(ctx, target, remaining, "left", user, user)
    return messages.group_leave_response(target)


async def group_members(ctx: Services, conn: Connection, request: GroupMembersRequest) -> Reply:
    user = conn.username
    assert user is not None
    chatname = canonical(request.chatname)
    members = sorted(require_membership(ctx, user, chatname))
    seen = ctx.registry.seen_online
    profiles = await ctx.store.devices.profiles(members)
    entries = []
    for name in members:
        found = profiles.get(name)
        entries.append({
            "username": name, "online": seen(name, user),
            "display_name": found.display_name if found else None,
            "status_text": found.status_text if found else None,
        })
    return messages.group_members_response(chatname, entries)


async def group_info(ctx: Services, conn: Connection, request: GroupInfoRequest) -> Reply:
    """A group's topic, settings and members with roles, for its members."""
    user = conn.username
    assert user is not None
    chatname = canonical(request.chatname)
    group = ctx.registry.group(chatname)
    if group is None:
        raise ChateauError(NOT_FOUND, f"no such group: {chatname!r}")
    if user not in group.members:
        raise ChateauError(FORBIDDEN, f"you are not a member of {chatname!r}")
    info = await ctx.store.groups.group_info(chatname)
    if info is None:
        raise ChateauError(NOT_FOUND, f"no such group: {chatname!r}")
    now = now_millis()
    seen = ctx.registry.seen_online
    members = []
    for member in info.members:
        muted = member.muted_until is not None and member.muted_until > now
        entry: dict[str, Any] = {
            "username": member.username, "role": member.role,
            "online": seen(member.username, user), "muted": muted,
            "display_name": member.display_name, "status_text": member.status_text,
        }
        if muted:
            entry["muted_until"] = iso_timestamp(member.muted_until)
        members.append(entry)
    settings = {
        "join": info.join_rule, "visibility": info.visibility,
        "who_can_add": info.who_can_add, "who_can_send": info.who_can_send,
        "retention_days": info.retention_days,
    }
    reply = messages.group_info_response(
        info.chatname, info.creator, iso_timestamp(info.created_at), info.topic, settings, members,
        directory=info.directory_dn is not None,
    )
    # Who is banned, and why, is for those who may unban.
    role = next((m.role for m in info.members if m.username == user), None)
    if permissions.may(permissions.UNBAN, role) or await ctx.store.accounts.is_admin(user):
        reply["bans"] = [
            {"username": ban.username, "by": ban.by, "reason": ban.reason,
             "at": iso_timestamp(ban.at)}
            for ban in await ctx.store.membership.bans(info.chatname)
        ]
    return reply


async def group_role(ctx: Services, conn: Connection, request: GroupRoleRequest) -> Reply:
    """Owners set members' roles; a group always keeps at least one owner."""
    user = conn.username
    assert user is not None
    chatname = canonical(request.chatname)
    if request.role not in ROLES:
        raise ChateauError(BAD_REQUEST, f"role must be one of {', '.join(ROLES)}")
    target = canonical(request.user)
    group = ctx.registry.group(chatname)
    if group is None:
        raise ChateauError(NOT_FOUND, f"no such group: {chatname!r}")
    role = group.role_of(user)
    acting = await require_permission(
        ctx, user, permissions.ROLE, role, f"only an owner of {chatname!r} sets roles"
    )
    outcome = await ctx.store.groups.set_role(
        chatname, user, target, request.role, as_owner=acting == OWNER and role != OWNER
    )
    if outcome == "not_owner":
        raise ChateauError(FORBIDDEN, f"only an owner of {chatname!r} sets roles")
    if outcome == "not_member":
        raise ChateauError(NOT_FOUND, f"{target!r} is not a member of {chatname!r}")
    if outcome == "last_owner":
        raise ChateauError(
            CONFLICT, f"{chatname!r} must keep an owner: make another member owner first"
        )
    if outcome == "set":
        ctx.registry.set_role(chatname, target, request.role)
        ctx.delivery.announce(
            {"t": "member_role", "chatname": chatname, "user": target, "role": request.role}
        )
        await group_event(ctx, chatname, group.members, "role", target, user, skip=conn,
                          role=request.role)
    return messages.group_role_response(chatname, target, request.role)
