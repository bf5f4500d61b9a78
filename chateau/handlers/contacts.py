"""Contacts: ContactRequest, ContactAccept, ContactDeny, ContactRemove,
ContactListRequest."""

from __future__ import annotations

from chateau import messages
from chateau.connection import Connection
from chateau.errors import NOT_FOUND, TOO_LARGE, ChateauError
from chateau.handlers.context import Reply, Services, existing_other_user, lookup
from chateau.messages import (
    ContactAccept,
    ContactDeny,
    ContactListRequest,
    ContactRemove,
    ContactRequest,
)


async def contact_request(ctx: Services, conn: Connection, request: ContactRequest) -> Reply:
    me = conn.username
    assert me is not None
    other = await existing_other_user(ctx, me, request.username)
    ctx.delivery.check_reachable([other])
    if await ctx.store.safety.is_blocked(other, me):
        # Dropped, and answered as a request sent: nothing reveals the block.
        return messages.contact_response("ContactRequest", other, state="pending")
    most = ctx.config.limits.max_pending_contact_requests
    outcome = await ctx.store.contacts.request_contact(me, other, most)
    if outcome == "too_many_sent":
        raise ChateauError(
            TOO_LARGE,
            f"you have {most} contact requests waiting for an answer, the most allowed",
        )
    if outcome == "too_many_received":
        raise ChateauError(
            TOO_LARGE, f"{other!r} has {most} contact requests waiting, the most allowed"
        )
    if outcome == "requested":
        ctx.delivery.deliver([other], messages.contact_request_recv(me))
    elif outcome == "accepted":
        _contacts_linked(ctx, me, other)
    return messages.contact_response(
        "ContactRequest", other, state="contact" if outcome in ("accepted", "already") else "pending"
    )


def _contacts_linked(ctx: Services, me: str, other: str) -> None:
    ctx.registry.link_contacts(me, other)
    ctx.delivery.announce({"t": "contacts", "first": me, "second": other, "linked": True})
    ctx.delivery.deliver([other], messages.contact_accept_recv(me, ctx.registry.online_to_contacts(me)))


async def contact_accept(ctx: Services, conn: Connection, request: ContactAccept) -> Reply:
    me = conn.username
    assert me is not None
    other = lookup(request.username)
    ctx.delivery.check_reachable([other])
    if not await ctx.store.contacts.accept_contact(me, other):
        raise ChateauError(NOT_FOUND, f"no contact request from {request.username!r}")
    _contacts_linked(ctx, me, other)
    return messages.contact_response(
        "ContactAccept", other, online=ctx.registry.online_to_contacts(other)
    )


async def contact_deny(ctx: Services, conn: Connection, request: ContactDeny) -> Reply:
    me = conn.username
    assert me is not None
    other = lookup(request.username)
    if not await ctx.store.contacts.deny_contact(me, other):
        raise ChateauError(NOT_FOUND, f"no contact request from {request.username!r}")
    return messages.contact_response("ContactDeny", other)


async def contact_remove(ctx: Services, conn: Connection, request: ContactRemove) -> Reply:
    me = conn.username
    assert me is not None
    other = lookup(request.username)
    ctx.delivery.check_reachable([other])
    if not await ctx.store.contacts.remove_contact(me, other):
        raise ChateauError(NOT_FOUND, f"{request.username!r} is not in your contacts")
    ctx.registry.unlink_contacts(me, other)
    ctx.delivery.announce({"t": "contacts", "first": me, "second": other, "linked": False})
    ctx.delivery.deliver([other], messages.contact_remove_recv(me))
    return messages.contact_response("ContactRemove", other)


async def contact_list(ctx: Services, conn: Connection, request: ContactListRequest) -> Reply:
    me = conn.username
    assert me is not None
    book = await ctx.store.contacts.contact_book(me)
    online = ctx.registry.online_to_contacts
    return messages.contact_list_response(
        [{"username": name, "online": online(name)} for name in book.contacts],
        [{"username": name, "direction": direction} for name, direction, _ in book.pending],
    )
