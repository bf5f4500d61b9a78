"""Who is in a group: GroupAddRequest, GroupRemoveRequest (and bans),
GroupUnbanRequest, GroupMuteRequest, GroupInviteRequest and GroupJoinRequest.

Every request asks the permission table (:mod:`chateau.permissions`, through
:func:`~chateau.handlers.context.require_permission`, so a server admin acts
as an owner, member or not). The roles come from the registry, which every
change on every node keeps current; the store's transaction checks the
target's role, the bans and the limits again as it writes
(:mod:`chateau.store.membership`), so a race cannot pass them. Each change
updates the registry here, tells the other nodes (``members_added``,
``member_left``, ``member_role``, ``member_muted``), and is stored in the
group's history as a system event pushed to its members.
"""

from __future__ import annotations

import secrets

from twisted.internet.defer import FirstError, gatherResults

from chateau import messages, permissions
from chateau.connection import Connection
from chateau.errors import BAD_REQUEST, CONFLICT, FORBIDDEN, NOT_FOUND, TOO_LARGE, ChateauError
from chateau.handlers.context import Reply, Services, group_event, lookup, require_permission
from chateau.handlers.synced_groups import refuse_synced, synced_refusal
from chateau.messages import (
    GroupAddRequest,
    GroupInviteRequest,
    GroupJoinRequest,
    GroupMuteRequest,
    GroupRemoveRequest,
    GroupUnbanRequest,
)
from chateau.registry import Group
from chateau.store.records import MEMBER, OWNER, ROLES, AddOutcome, iso_timestamp, now_millis

# A mute lasts at most a year; an invite code at most a year too.
MAX_MUTE_MINUTES = 525_600
MAX_INVITE_HOURS = 8_760
DEFAULT_INVITE_HOURS = 168
MAX_INVITE_USES = 1_000_000
MAX_REASON_LENGTH = 500
# Longer than any code this server makes (token_urlsafe(12) is 16 characters).
MAX_CODE_LENGTH = 128
NO_CODE = "no such invite code (or it has expired or been used up)"


def _group(ctx: Services, raw: str) -> tuple[str, Group]:
    chatname = lookup(raw)
    group = ctx.registry.group(chatname)
    if group is None:
        raise ChateauError(NOT_FOUND, f"no such group: {raw!r}")
    return chatname, group


def _may_act_on(action: str, role: str) -> frozenset[str]:
    """The target roles someone acting as *role* may *action*."""
    return frozenset(target for target in ROLES if permissions.may(action, role, target=target))


def _refuse_add(outcome: AddOutcome, ctx: Services, joiner: str | None = None) -> None:
    """The ErrorResponse for an add or a join that added nobody."""
    refusal, who, chatname = outcome.refusal, outcome.who, outcome.chatname
    if refusal is None:
        return
    if refusal == "no_group":
        raise ChateauError(NOT_FOUND, f"no such group: {chatname!r}")
    if refusal == "synced":
        raise synced_refusal(chatname)
    if refusal == "no_code":
        raise ChateauError(NOT_FOUND, NO_CODE)
    if refusal == "closed":
        raise ChateauError(
            FORBIDDEN, f"{chatname!r} is not a public, open group: ask for an invite code"
        )
    if refusal == "missing":
        raise ChateauError(NOT_FOUND, f"no such user: {who!r}")
    if refusal == "banned":
        if who == joiner:
            raise ChateauError(FORBIDDEN, f"you are banned from {chatname!r}")
        raise ChateauError(CONFLICT, f"{who!r} is banned from {chatname!r}")
    if refusal == "full":
        limit = ctx.config.chat.max_group_members
        raise ChateauError(TOO_LARGE, f"a group has at most {limit} members")
    if refusal == "too_many_groups":
        most = ctx.config.limits.max_groups_per_user
        whom = "you are" if who == joiner else f"{who!r} is"
        raise ChateauError(TOO_LARGE, f"{whom} already in {most} groups, the most allowed")
    raise AssertionError(refusal)


async def _welcome(
    ctx: Services, conn: Connection, outcome: AddOutcome, old_members: list[str], by: str,
    event: str, skip_notice: Connection | None = None,
) -> None:
    """After *outcome* added people: registry, other nodes, the 201, the events."""
    chatname = outcome.chatname
    added = list(outcome.added)
    ctx.registry.add_members(chatname, added)
    ctx.delivery.announce({"t": "members_added", "chatname": chatname, "users": added})
    ctx.delivery.deliver(
        added, messages.group_init_notice(chatname, outcome.creator, list(outcome.members)),
        skip=skip_notice,
    )
    # All handed to the message writer at once: it commits them in this order.
    try:
        await gatherResults([
            group_event(ctx, chatname, old_members, event, name, by, skip=conn) for name in added
        ], consumeErrors=True)
    except FirstError as error:
        error.subFailure.raiseException()


async def group_add(ctx: Services, conn: Connection, request: GroupAddRequest) -> Reply:
    user = conn.username
    assert user is not None
    chatname, group = _group(ctx, request.chatname)
    await refuse_synced(ctx, chatname)
    who_can_add = await ctx.store.membership.who_can_add(chatname) or "admins"
    await require_permission(
        ctx, user, permissions.ADD, group.role_of(user),
        f"only admins and owners add members to {chatname!r}"
        if who_can_add == "admins" else f"only members of {chatname!r} add members",
        who_can_add=who_can_add,
    )
    names: list[str] = []
    for raw in request.users:
        name = lookup(raw)
        if not name:
            raise ChateauError(NOT_FOUND, f"no such user: {raw!r}")
        if name not in names:
            names.append(name)
    if not names:
        raise ChateauError(BAD_REQUEST, "users must name at least one user")
    limit = ctx.config.chat.max_group_members
    if len(names) > limit:
        raise ChateauError(TOO_LARGE, f"a group has at most {limit} members")
    old_members = sorted(group.members)
    ctx.delivery.check_reachable([*old_members, *names])
    online = [name for name in names if ctx.registry.is_online(name)]
    outcome = await ctx.store.membership.add_members(
        chatname, names, online, limit, ctx.config.limits.max_groups_per_user
    )
    _refuse_add(outcome, ctx)
    if outcome.added:
        await _welcome(ctx, conn, outcome, old_members, user, "added")
    return messages.group_add_response(chatname, list(outcome.added), list(outcome.already))


async def group_remove(ctx: Services, conn: Connection, request: GroupRemoveRequest) -> Reply:
    user = conn.username
    assert user is not None
    chatname, group = _group(ctx, request.chatname)
    await refuse_synced(ctx, chatname)
    target = lookup(request.user)
    if target == user:
        raise ChateauError(BAD_REQUEST, "you cannot remove yourself: use GroupLeaveRequest")
    reason = (request.reason or "").strip()
    if len(reason) > MAX_REASON_LENGTH or "\x00" in reason:
        raise ChateauError(
            BAD_REQUEST, f"reason must be at most {MAX_REASON_LENGTH} characters, without NUL"
        )
    target_role = group.role_of(target)
    if target_role is None:
        if not request.ban:
            raise ChateauError(NOT_FOUND, f"{request.user!r} is not a member of {chatname!r}")
        if not target or not await ctx.store.accounts.user_exists(target):
            raise ChateauError(NOT_FOUND, f"no such user: {request.user!r}")
    what = "ban" if request.ban else "remove"
    acting = await require_permission(
        ctx, user, permissions.REMOVE, group.role_of(user),
        f"only owners {what} admins, and owners and admins {what} members, in {chatname!r}",
        target=target_role or MEMBER,
    )
    ctx.delivery.check_reachable([*group.members, target])
    outcome, role, heir = await ctx.store.membership.remove(
        chatname, user, target, request.ban, reason,
        _may_act_on(permissions.REMOVE, acting),
        # Offline everywhere: told at the next sign-in instead.
        tell_later=not ctx.registry.is_online(target),
    )
    if outcome == "no_group":
        raise ChateauError(NOT_FOUND, f"no such group: {chatname!r}")
    if outcome == "synced":
        raise synced_refusal(chatname)
    if outcome == "not_member":
        raise ChateauError(NOT_FOUND, f"{request.user!r} is not a member of {chatname!r}")
    if outcome == "forbidden":
        raise ChateauError(FORBIDDEN, f"you may not {what} {target!r} ({role}) in {chatname!r}")
    if role is not None:
        ctx.registry.remove_member(chatname, target)
        ctx.delivery.announce({"t": "member_left", "chatname": chatname, "user": target})
        ctx.delivery.deliver(
            [target], messages.group_removed(chatname, user, reason, request.ban)
        )
    if heir is not None:
        _role_changed(ctx, chatname, heir, OWNER)
    detail = {"reason": reason} if reason else {}
    await group_event(ctx, chatname, sorted(group.members), outcome, target, user, skip=conn,
                      **detail)
    return messages.group_remove_response(chatname, target, request.ban)


def _role_changed(ctx: Services, chatname: str, username: str, role: str) -> None:
    ctx.registry.set_role(chatname, username, role)
    ctx.delivery.announce(
        {"t": "member_role", "chatname": chatname, "user": username, "role": role}
    )


async def group_unban(ctx: Services, conn: Connection, request: GroupUnbanRequest) -> Reply:
    user = conn.username
    assert user is not None
    chatname, group = _group(ctx, request.chatname)
    await require_permission(
        ctx, user, permissions.UNBAN, group.role_of(user),
        f"only admins and owners of {chatname!r} unban",
    )
    target = lookup(request.user)
    if not target or not await ctx.store.membership.unban(chatname, user, target):
        raise ChateauError(NOT_FOUND, f"{request.user!r} is not banned from {chatname!r}")
    await group_event(ctx, chatname, sorted(group.members), "unbanned", target, user, skip=conn)
    return messages.group_unban_response(chatname, target)


async def group_mute(ctx: Services, conn: Connection, request: GroupMuteRequest) -> Reply:
    user = conn.username
    assert user is not None
    chatname, group = _group(ctx, request.chatname)
    if not 0 <= request.minutes <= MAX_MUTE_MINUTES:
        raise ChateauError(
            BAD_REQUEST, f"minutes must be 0 (to lift a mute) to {MAX_MUTE_MINUTES}"
        )
    target = lookup(request.user)
    target_role = group.role_of(target)
    if target_role is None:
        raise ChateauError(NOT_FOUND, f"{request.user!r} is not a member of {chatname!r}")
    acting = await require_permission(
        ctx, user, permissions.MUTE, group.role_of(user),
        f"only owners mute admins, and owners and admins mute members, in {chatname!r}",
        target=target_role,
    )
    ctx.delivery.check_reachable(group.members)
    until = now_millis() + request.minutes * 60_000 if request.minutes else None
    outcome = await ctx.store.membership.mute(
        chatname, user, target, until, _may_act_on(permissions.MUTE, acting)
    )
    if outcome == "not_member":
        raise ChateauError(NOT_FOUND, f"{request.user!r} is not a member of {chatname!r}")
    if outcome == "forbidden":
        raise ChateauError(FORBIDDEN, f"you may not mute {target!r} in {chatname!r}")
    ctx.registry.set_muted(chatname, target, until)
    ctx.delivery.announce(
        {"t": "member_muted", "chatname": chatname, "user": target, "until": until or 0}
    )
    stamp = None if until is None else iso_timestamp(until)
    if stamp is None:
        await group_event(ctx, chatname, sorted(group.members), "unmuted", target, user,
                          skip=conn)
    else:
        await group_event(ctx, chatname, sorted(group.members), "muted", target, user,
                          skip=conn, until=stamp)
    return messages.group_mute_response(chatname, target, stamp)


async def group_invite(ctx: Services, conn: Connection, request: GroupInviteRequest) -> Reply:
    user = conn.username
    assert user is not None
    chatname, group = _group(ctx, request.chatname)
    await refuse_synced(ctx, chatname)
    who_can_add = await ctx.store.membership.who_can_add(chatname) or "admins"
    await require_permission(
        ctx, user, permissions.INVITE, group.role_of(user),
        f"only admins and owners make invite codes for {chatname!r}"
        if who_can_add == "admins" else f"only members of {chatname!r} make invite codes",
        who_can_add=who_can_add,
    )
    if request.max_uses is not None and not 1 <= request.max_uses <= MAX_INVITE_USES:
        raise ChateauError(BAD_REQUEST, f"max_uses must be 1 to {MAX_INVITE_USES}")
    hours = DEFAULT_INVITE_HOURS if request.hours is None else request.hours
    if not 1 <= hours <= MAX_INVITE_HOURS:
        raise ChateauError(BAD_REQUEST, f"hours must be 1 to {MAX_INVITE_HOURS}")
    code = secrets.token_urlsafe(12)
    while code.startswith("-"):  # a command line would read it as an option
        code = secrets.token_urlsafe(12)
    expires = now_millis() + hours * 3_600_000
    await ctx.store.membership.create_invite(code, chatname, user, request.max_uses, expires)
    return messages.group_invite_response(chatname, code, request.max_uses, iso_timestamp(expires))


async def group_join(ctx: Services, conn: Connection, request: GroupJoinRequest) -> Reply:
    user = conn.username
    assert user is not None
    if (request.code is None) == (request.chatname is None):
        raise ChateauError(BAD_REQUEST, "give either code or chatname")
    limit = ctx.config.chat.max_group_members
    most = ctx.config.limits.max_groups_per_user
    online = True
    if request.code is not None:
        code = request.code.strip()
        if not code or len(code) > MAX_CODE_LENGTH or "\x00" in code:
            raise ChateauError(NOT_FOUND, NO_CODE)
        ctx.delivery.check_reachable([user])
        outcome = await ctx.store.membership.join_by_code(code, user, online, limit, most)
    else:
        chatname, group = _group(ctx, request.chatname or "")
        await refuse_synced(ctx, chatname)
        ctx.delivery.check_reachable([*group.members, user])
        outcome = await ctx.store.membership.join_public(chatname, user, online, limit, most)
    _refuse_add(outcome, ctx, joiner=user)
    group = ctx.registry.group(outcome.chatname)
    if not outcome.added or group is None:
        return messages.group_join_response(outcome.chatname, already=True)
    old_members = sorted(group.members - {user})
    await _welcome(ctx, conn, outcome, old_members, user, "joined", skip_notice=conn)
    return messages.group_join_response(outcome.chatname)
