"""Personal safety: BlockRequest, UnblockRequest, BlockListRequest, SettingsRequest;
and keeping two people apart in random chat.

What a block means (docs/protocol.md, docs/security.md): the blocker
receives nothing from the blocked person any more (direct messages, contact
requests, random pairing, their messages in shared groups), and the blocked
person is told nothing that reveals it: their messages are answered as
usual, an accepted contact ends as if removed, a random chat ends as if
left. Live delivery filters in ``Registry.fan_out`` (and, for users on
other nodes, on their node), catch-up and history in SQL.
"""

from __future__ import annotations

from typing import Any

from chateau import messages
from chateau.connection import Connection
from chateau.errors import NOT_FOUND, UNAVAILABLE, BadRequest, ChateauError
from chateau.handlers.context import Reply, Services, existing_other_user
from chateau.messages import BlockListRequest, BlockRequest, SettingsRequest, UnblockRequest
from chateau.safety import CHOICES
from chateau.store.records import iso_timestamp


def _check_cluster(ctx: Services, *usernames: str) -> None:
    """503 while other nodes that must hear of a block cannot be told."""
    if not ctx.delivery.link_down:
        return
    for name in usernames:
        if ctx.registry.nodes_of(name):
            raise ChateauError(
                UNAVAILABLE,
                f"{name!r} is connected to another Chateau node and the link between nodes "
                "(Redis) is down: try again shortly",
            )


async def block(ctx: Services, conn: Connection, request: BlockRequest) -> Reply:
    me = conn.username
    assert me is not None
    other = await existing_other_user(ctx, me, request.username)
    registry = ctx.registry
    delivery = ctx.delivery
    _check_cluster(ctx, me, other)
    outcome = await ctx.store.safety.block(me, other)
    registry.block(me, other)
    delivery.announce({"t": "block", "blocker": me, "blocked": other, "on": True})
    if outcome.was_contact:
        # As a ContactRemove: the other side sees the contact end, nothing more.
        registry.unlink_contacts(me, other)
        delivery.announce({"t": "contacts", "first": me, "second": other, "linked": False})
        delivery.deliver([other], messages.contact_remove_recv(me))
        delivery.deliver([me], messages.contact_remove_recv(other), skip=conn)
    for pair in registry.pairs_between(me, other):
        # As a GroupLeaveRequest: the partner sees the blocker leave.
        registry.end_pair(pair.chatname)
        delivery.announce({"t": "pair_end", "chatname": pair.chatname})
        delivery.deliver([other], messages.random_chat_ended(pair.chatname, me, "left"))
        delivery.deliver([me], messages.random_chat_ended(pair.chatname, me, "blocked"))
    return messages.block_response("Block", other)


async def unblock(ctx: Services, conn: Connection, request: UnblockRequest) -> Reply:
    me = conn.username
    assert me is not None
    other = await existing_other_user(ctx, me, request.username)
    _check_cluster(ctx, me)
    if not await ctx.store.safety.unblock(me, other):
        raise ChateauError(NOT_FOUND, f"you do not block {request.username!r}")
    ctx.registry.unblock(me, other)
    ctx.delivery.announce({"t": "block", "blocker": me, "blocked": other, "on": False})
    return messages.block_response("Unblock", other)


async def block_list(ctx: Services, conn: Connection, request: BlockListRequest) -> Reply:
    me = conn.username
    assert me is not None
    rows = await ctx.store.safety.block_list(me)
    return messages.block_list_response(
        [{"username": name, "since": iso_timestamp(since)} for name, since in rows]
    )


async def settings(ctx: Services, conn: Connection, request: SettingsRequest) -> Reply:
    """Read the settings (no fields), or change those given; the whole settings either way."""
    me = conn.username
    assert me is not None
    changes: dict[str, Any] = {}
    for name, choices in CHOICES.items():
        value = getattr(request, name)
        if value is None:
            continue
        if choices is not bool and value not in choices:  # type: ignore[operator]
            allowed = ", ".join(repr(c) for c in choices)  # type: ignore[union-attr]
            raise BadRequest(f"SettingsRequest: {name!r} must be one of {allowed}")
        changes[name] = value
    if not changes:
        current = await ctx.store.safety.settings(me)
        return messages.settings_response(current.as_wire())
    new = await ctx.store.safety.change_settings(me, changes)
    registry = ctx.registry
    old = registry.settings(me)
    registry.set_settings(me, new)
    ctx.delivery.announce({"t": "settings", "user": me, "settings": new.as_wire()})
    if (new.presence == "nobody") != (old.presence == "nobody"):
        ctx.delivery.presence_changed(me)
    return messages.settings_response(new.as_wire())


async def keep_apart(ctx: Services, first: str, second: str) -> None:
    """Never pair these two in a random chat again, on every node and after a restart.

    Leaving a random chat calls it; so may a report that names a user (sign-on
    reads reports as well, so the stored row only makes it doubly sure).
    """
    await ctx.store.safety.keep_apart(first, second)
    ctx.registry.keep_apart(first, second)
    ctx.delivery.announce({"t": "apart", "first": first, "second": second})
