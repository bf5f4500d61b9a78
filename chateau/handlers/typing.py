"""TypingRequest: who may say they are typing where (chateau.typing does the rest)."""

from __future__ import annotations

from chateau import messages
from chateau.connection import Connection
from chateau.errors import FORBIDDEN, NOT_FOUND, BadRequest, ChateauError
from chateau.handlers.context import Reply, Services, lookup, require_membership
from chateau.messages import TypingRequest


async def typing(ctx: Services, conn: Connection, request: TypingRequest) -> Reply:
    """Check the typer may talk in the conversation, then hand it to the Typing service.

    Answered 200 whether or not anybody is told (a block, the typer's
    presence setting, the rate): the answer reveals nothing of the others.
    """
    typer = conn.username
    assert typer is not None
    if (request.chatname is None) == (request.user is None):
        raise BadRequest("TypingRequest: give exactly one of 'chatname' or 'user'")
    if request.user is not None:
        other = lookup(request.user)
        await _check_direct(ctx, typer, other, request.user)
        conversation = ("user", other)
    else:
        chatname = lookup(request.chatname or "")
        require_membership(ctx, typer, chatname)
        conversation = ("chatname", chatname)
    if conn.username == typer:  # not signed off while the database was asked
        ctx.typing.say(typer, conversation, request.typing)
    return messages.typing_response()


async def _check_direct(ctx: Services, typer: str, other: str, raw: str) -> None:
    """404 for no such user; 403 when their direct_messages setting refuses the typer.

    As a send is refused (handlers/sending.py), with the same details.
    """
    registry = ctx.registry
    if not registry.is_online(other) and not await ctx.store.accounts.user_exists(other):
        raise ChateauError(NOT_FOUND, f"no such user: {raw!r}")
    if other == typer or registry.settings(other).direct_messages == "everyone":
        return
    contact = registry.contact_of(typer, other)
    if contact is None:
        contact = registry.contact_of(other, typer)
    if contact is None:
        contact = await ctx.store.contacts.are_contacts(other, typer)
    if not contact:
        raise ChateauError(FORBIDDEN, f"{other!r} accepts direct messages from contacts only")
