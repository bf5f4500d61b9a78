"""Sending messages: GroupMessageRequest (alias MessageRequest) to a group, a
random chat or one person, and RandomMessageRequest.

The send is the hot path. It is not a coroutine: a send's one wait is
usually its commit, and the rest runs as that Deferred's callback, since
resuming a coroutine from the message writer, once per message, would run
Twisted's inline-callbacks machinery on the reactor thread every time
(docs/performance.md). Only a direct message to someone offline awaits the
database first (:func:`_send_to_offline`).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from twisted.internet.defer import Deferred

from chateau import messages, permissions
from chateau.connection import Connection
from chateau.errors import FORBIDDEN, NOT_FOUND, TOO_LARGE, ChateauError
from chateau.handlers.context import (
    Reply,
    Services,
    check_content,
    check_wire_size,
    lookup,
    record_message,
    require_permission,
)
from chateau.mentions import ALL, ALL_REFUSAL, find_mentions
from chateau.messages import GroupMessageRequest, RandomMessageRequest
from chateau.registry import Group
from chateau.store.records import StoredMessage, direct_chat, iso_timestamp, now_millis


def send_message(ctx: Services, conn: Connection, request: GroupMessageRequest) -> Deferred[Reply]:
    """Commit a message, then route it and answer the sender."""
    sender = conn.username
    assert sender is not None
    check_content(ctx, request.content)
    target = lookup(request.recipient)
    registry = ctx.registry

    pair = registry.pair(target)
    if pair is not None:
        if sender not in pair.members:
            raise ChateauError(FORBIDDEN, f"you are not in the random chat {target!r}")
        ctx.delivery.check_reachable(pair.members)
        return record_message(ctx, target, sender, request.content).addCallback(
            _route_to_chat, ctx, conn, sender, request, target, pair.members, None
        )

    group = registry.group(target)
    if group is not None:
        if sender not in group.members:
            raise ChateauError(FORBIDDEN, f"you are not a member of {target!r}")
        mentions = find_mentions(request.content, group.members)
        if mentions:
            check_wire_size(ctx, request.content, mentions)
        if group.muted_until or group.who_can_send != "everyone" or ALL in mentions:
            refused = _refuse_send(ctx, conn, sender, request, target, group, mentions)
            if refused is not None:
                return refused
        ctx.delivery.check_reachable(group.members)
        return record_message(ctx, target, sender, request.content, mentions=mentions).addCallback(
            _route_to_chat, ctx, conn, sender, request, target, group.members, group, mentions
        )

    if not registry.is_online(target):
        return Deferred.fromCoroutine(_send_to_offline(ctx, conn, sender, request, target))
    return _send_direct(ctx, conn, sender, request, target)


def _refuse_send(
    ctx: Services, conn: Connection, sender: str, request: GroupMessageRequest, target: str,
    group: Group, mentions: list[str],
) -> Deferred[Reply] | None:
    """403 for a muted member, a member where only admins send, or a member's
    ``@all``; None to go on.

    Read from the registry (kept current on every node), never the
    database: a plain member of an admins-only group, and one writing
    ``@all``, are the only senders asked about (whether they are a server
    admin), and only then.
    """
    until = group.muted_until.get(sender)
    if until is not None:
        if until > now_millis():
            raise ChateauError(
                FORBIDDEN, f"you are muted in {target!r} until {iso_timestamp(until)}"
            )
        del group.muted_until[sender]
    role = group.role_of(sender)
    if permissions.may(permissions.SEND, role, who_can_send=group.who_can_send) and (
        ALL not in mentions or permissions.may(permissions.MENTION_ALL, role)
    ):
        return None

    async def as_server_admin() -> Reply:
        await require_permission(
            ctx, sender, permissions.SEND, role,
            f"only admins send in {target!r}", who_can_send=group.who_can_send,
        )
        if ALL in mentions:
            await require_permission(ctx, sender, permissions.MENTION_ALL, role, ALL_REFUSAL)
        if sender not in group.members:  # removed while the database was asked
            raise ChateauError(FORBIDDEN, f"you are not a member of {target!r}")
        ctx.delivery.check_reachable(group.members)
        return await record_message(
            ctx, target, sender, request.content, mentions=mentions
        ).addCallback(
            _route_to_chat, ctx, conn, sender, request, target, group.members, group, mentions
        )

    return Deferred.fromCoroutine(as_server_admin())


def pipelines(ctx: Services, request: GroupMessageRequest, sender: str | None = None) -> bool:
    """Whether a send's recipient is known without asking the database.

    Then its one wait is the message writer, which commits in arrival order,
    so several such sends of one connection may be in flight together. (A
    plain member's send where only admins send is not: it asks whether the
    sender is a server admin first.)
    """
    target = lookup(request.recipient)
    registry = ctx.registry
    group = registry.group(target)
    if group is not None:
        role = group.role_of(sender or "")
        if not (group.who_can_send == "everyone" or permissions.may(
            permissions.SEND, role, who_can_send=group.who_can_send
        )):
            return False
        # A plain member's @all asks too (refused unless a server admin).
        return "@" not in request.content or permissions.may(permissions.MENTION_ALL, role) \
            or ALL not in find_mentions(request.content, group.members)
    return registry.pair(target) is not None or registry.is_online(target) and (
        # Asking the database whether the two are contacts is a wait too.
        registry.settings(target).direct_messages == "everyone" or registry.is_local(target)
    )


async def _send_to_offline(
    ctx: Services, conn: Connection, sender: str, request: GroupMessageRequest, target: str
) -> Reply:
    """A direct message to a user not online here: only an account can get one."""
    if not await ctx.store.accounts.user_exists(target):
        raise ChateauError(NOT_FOUND, f"no such user or group: {request.recipient!r}")
    return await _send_direct(ctx, conn, sender, request, target)


def _send_direct(
    ctx: Services, conn: Connection, sender: str, request: GroupMessageRequest, target: str
) -> Deferred[Reply]:
    ctx.delivery.check_reachable([sender, target])
    if not ctx.stores_messages and not ctx.registry.is_online(target):
        raise ChateauError(
            NOT_FOUND,
            f"{target!r} is offline and this server keeps no messages to deliver later",
        )
    if ctx.registry.settings(target).direct_messages == "everyone":
        return _record_direct(ctx, conn, sender, request, target)
    known = ctx.registry.contact_of(target, sender)
    if known is not None:
        return _record_direct_from_contact(known, ctx, conn, sender, request, target)
    return ctx.store.contacts.are_contacts(target, sender).addCallback(
        _record_direct_from_contact, ctx, conn, sender, request, target
    )


def _record_direct_from_contact(
    contact: bool, ctx: Services, conn: Connection, sender: str, request: GroupMessageRequest,
    target: str,
) -> Deferred[Reply]:
    """The recipient takes direct messages from contacts only: 403 for anyone else."""
    if not contact:
        raise ChateauError(FORBIDDEN, f"{target!r} accepts direct messages from contacts only")
    return _record_direct(ctx, conn, sender, request, target)


def _record_direct(
    ctx: Services, conn: Connection, sender: str, request: GroupMessageRequest, target: str
) -> Deferred[Reply]:
    # A message to someone who blocks the sender is stored and answered as
    # any other (nothing reveals the block); it just never reaches them.
    return record_message(
        ctx, direct_chat(sender, target), sender, request.content, recipient=target
    ).addCallback(_route_direct, ctx, conn, sender, request, target)


def _route_direct(
    stored: StoredMessage, ctx: Services, conn: Connection, sender: str,
    request: GroupMessageRequest, target: str,
) -> Reply:
    ctx.metrics.messages_of["direct"].inc()
    ctx.delivery.deliver(
        [target],
        messages.message_recv(
            sender=sender, chatname=sender, content=request.content,
            message_id=stored.id, timestamp=stored.timestamp,
        ),
        skip=conn, message_id=stored.id, sender=sender,
    )
    ctx.delivery.routed(stored.id)
    # The message ends the sender's typing there (clients clear it on the message).
    ctx.typing.message_sent(sender, "user", target)
    return messages.message_send_response(stored.id, stored.timestamp)


def _route_to_chat(
    stored: StoredMessage, ctx: Services, conn: Connection, sender: str,
    request: GroupMessageRequest, target: str, members: Iterable[str], group: Group | None,
    mentions: Sequence[str] = (),
) -> Reply:
    """Route a committed message to a random chat's pair, or to a group (*group* set).

    *mentions* are the same for every member, so the push is still encoded once.
    """
    if group is None:
        ctx.metrics.messages_of["random"].inc()
        first = False
    else:
        ctx.metrics.messages_of["group"].inc()
        first, group.started = not group.started, True
        if first:
            ctx.delivery.announce({"t": "group_started", "chatname": target})
    ctx.delivery.deliver(
        members,
        messages.group_message_recv(
            first=first, sender=sender, chatname=target, content=request.content,
            message_id=stored.id, timestamp=stored.timestamp, mentions=mentions,
        ),
        skip=conn, message_id=stored.id, sender=sender,
    )
    ctx.delivery.routed(stored.id)
    ctx.typing.message_sent(sender, "chatname", target)
    return messages.message_send_response(stored.id, stored.timestamp, mentions)


async def random_message(ctx: Services, conn: Connection, request: RandomMessageRequest) -> Reply:
    sender = conn.username
    assert sender is not None
    check_content(ctx, request.content)
    if not ctx.registry.settings(sender).random_chat:
        raise ChateauError(
            FORBIDDEN,
            "you have opted out of random chats: send SettingsRequest with random_chat true "
            "to take part",
        )
    most = ctx.config.limits.max_random_chats_per_user
    if ctx.registry.pair_count(sender) >= most:
        raise ChateauError(
            TOO_LARGE, f"you are already in {most} random chats, the most allowed: leave one first"
        )
    pair = ctx.registry.pair_randomly(sender, local_only=ctx.delivery.link_down)
    if pair is None:
        raise ChateauError(NOT_FOUND, "not enough people online: nobody else is signed in")
    partner = pair.other(sender)
    ctx.delivery.announce({"t": "pair", "chatname": pair.chatname, "members": list(pair.members)})
    stored = await record_message(ctx, pair.chatname, sender, request.content)
    ctx.metrics.messages_of["random"].inc()
    ctx.delivery.deliver(
        [partner],
        messages.message_recv(
            sender=sender, chatname=pair.chatname, content=request.content,
            message_id=stored.id, timestamp=stored.timestamp, random=True,
        ),
        message_id=stored.id, sender=sender,
    )
    ctx.delivery.routed(stored.id)
    return messages.random_message_response(partner, pair.chatname, stored.id, stored.timestamp)
