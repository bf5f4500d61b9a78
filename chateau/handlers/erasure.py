"""Erasing an account: AccountDeleteRequest, and the notice every node acts on
when an account is erased (here, or by ``chateau-admin user erase``).

The erasure itself is one transaction (chateau.store.erasure). Every node
then closes the account's connections with :data:`ACCOUNT_DELETED` and
forgets it: its groups are read again (a new owner where it was the last),
their members here are told it left, and nobody here keeps it as a contact
or a block. The node that erased it does so at once; the others when they
poll the ``account_erased`` notice (``[chat] revocation_check_interval``).
"""

from __future__ import annotations

from typing import Any

from chateau import messages
from chateau.auth import LOCAL
from chateau.connection import Connection
from chateau.errors import (
    NOT_AUTHENTICATED, NOT_FOUND, WRONG_PASSWORD, BadRequest, ChateauError,
)
from chateau.handlers.context import Reply, Services
from chateau.handlers.operators import reload_group
from chateau.messages import AccountDeleteRequest
from chateau.names import DELETED_USER
from chateau.notices import Applier
from chateau.safety import Settings
from chateau.signout import ACCOUNT_DELETED, ACCOUNT_DELETED_REASON
from chateau.store.records import now_millis


def held_until(ctx: Services, now: int | None = None) -> int:
    """Until when an erased account's name stays taken: [ldap] rename_hold_days,
    the one hold of every name given up (renamed or erased)."""
    days = ctx.config.ldap.rename_hold_days
    return (now_millis() if now is None else now) + int(days * 86_400_000)


async def account_delete(ctx: Services, conn: Connection, request: AccountDeleteRequest) -> Reply:
    user = conn.username
    assert user is not None
    account = await ctx.store.accounts.get_user(user)
    if account is None:
        raise ChateauError(NOT_FOUND, "your account no longer exists")
    if account.auth_method != LOCAL:
        raise BadRequest(
            "your account comes from the campus directory: ask the server administrator "
            "to delete it"
        )
    # The password goes through the sign-in's own checks and throttle
    # (keyed on this name and address), so guessing it here is no easier.
    try:
        await ctx.auth.sign_in(user, request.password, False, conn.address)
    except ChateauError as refusal:
        if refusal.status == NOT_AUTHENTICATED:
            raise ChateauError(WRONG_PASSWORD, "wrong password: the account was not deleted") \
                from None
        raise
    erased = await ctx.store.erasure.erase(
        user, user, ctx.config.chat.erase_messages, held_until(ctx), conn.address
    )
    if erased is None:
        raise ChateauError(NOT_FOUND, "your account no longer exists")
    reply = messages.account_delete_response()
    reply["msg_id"] = request.msg_id
    conn.send_message(reply)
    await apply_account_erased(
        ctx, {"username": user, "groups": [list(pair) for pair in erased.groups]}
    )
    return None


async def apply_account_erased(ctx: Services, body: dict[str, Any]) -> None:
    """Forget an erased account on this node (twice is harmless)."""
    username = str(body["username"])
    connections = ctx.registry.connections(username)
    for connection in connections:
        connection.close_for(ACCOUNT_DELETED, ACCOUNT_DELETED_REASON)
    if connections and ctx.stores_messages:
        # A message they sent here just before may have been committed after
        # the erasure: once the writer has committed it, it goes the same way.
        await ctx.store.writer.drain()
        await ctx.store.erasure.erase_leftovers(username, ctx.config.chat.erase_messages)
    registry = ctx.registry
    for other in registry.local_users():
        registry.unlink_contacts(other, username)
        registry.unblock(other, username)
    registry.set_settings(username, Settings())
    for chatname, _heir in body.get("groups") or ():
        group = registry.group(str(chatname))
        if group is None or username not in group.members:
            continue
        await reload_group(ctx, str(chatname))
        reloaded = registry.group(str(chatname))
        if reloaded is not None:
            ctx.delivery.deliver_here(
                sorted(reloaded.members),
                messages.group_event(str(chatname), "left", DELETED_USER, DELETED_USER),
            )


def notice_appliers(ctx: Services) -> dict[str, Applier]:
    return {"account_erased": lambda body: apply_account_erased(ctx, body)}
