"""Groups whose membership follows the directory ([ldap] sync_base).

The membership requests refuse to change such a group's members
(:func:`refuse_synced`, 403 naming the directory), and what a sync
changed reaches the members as the governance requests tell them
(chateau.handlers.membership): the members added get the 201
``GroupMessageInitResponse`` (or it waits for their next sign-in), the
members removed ``GroupRemovedRecv``, and the others one ``GroupEventRecv``
per change, by ``directory``.

:func:`apply_sync` is for the node that ran the sync (chateau.group_sync):
it updates the registry, tells the other nodes as the handlers do, and
stores the events in the group's history. :func:`apply_synced_notice` is
the applier of the ``group_synced`` notice ``chateau-admin ldap-sync``
writes (chateau.notices): each node reloads the group and tells its own
users, taking the sign-in notices of those online here so nobody is told
twice.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import FirstError, gatherResults

from chateau import messages
from chateau.errors import FORBIDDEN, ChateauError
from chateau.handlers.context import Services, group_event
from chateau.handlers.operators import reload_group
from chateau.store.group_sync import DIRECTORY_ACTOR, SyncOutcome


def synced_refusal(chatname: str) -> ChateauError:
    return ChateauError(
        FORBIDDEN,
        f"the membership of {chatname!r} follows the campus directory; change it there",
    )


async def refuse_synced(ctx: Services, chatname: str) -> None:
    """403 when *chatname* is a group synced from the directory."""
    if await ctx.store.group_sync.is_synced(chatname):
        raise synced_refusal(chatname)


async def _events(
    ctx: Services, chatname: str, members: list[str], event: str, users: tuple[str, ...],
) -> None:
    # All handed to the message writer at once: it commits them in this order.
    try:
        await gatherResults([
            group_event(ctx, chatname, members, event, name, DIRECTORY_ACTOR) for name in users
        ], consumeErrors=True)
    except FirstError as error:
        error.subFailure.raiseException()


async def apply_sync(ctx: Services, outcome: SyncOutcome) -> None:
    """Tell the registry, the other nodes and the members what a sync changed."""
    chatname, by = outcome.chatname, DIRECTORY_ACTOR
    registry, delivery = ctx.registry, ctx.delivery
    if outcome.created:
        members = list(outcome.members)
        registry.add_group(chatname, by, members, roles={})
        delivery.announce({"t": "group", "chatname": chatname, "creator": by,
                           "members": members})
        delivery.deliver(members, messages.group_init_notice(chatname, by, members))
        return
    remaining = sorted(set(outcome.before) - set(outcome.removed))
    for name in outcome.removed:
        registry.remove_member(chatname, name)
        delivery.announce({"t": "member_left", "chatname": chatname, "user": name})
    if outcome.removed:
        delivery.deliver(list(outcome.removed), messages.group_removed(chatname, by, "", False))
        await _events(ctx, chatname, remaining, "removed", outcome.removed)
    if outcome.added:
        added = list(outcome.added)
        if registry.group(chatname) is None:
            await reload_group(ctx, chatname)
        else:
            registry.add_members(chatname, added)
        delivery.announce({"t": "members_added", "chatname": chatname, "users": added})
        group = registry.group(chatname)
        creator = group.creator if group is not None else by
        delivery.deliver(added, messages.group_init_notice(chatname, creator,
                                                           list(outcome.members)))
        await _events(ctx, chatname, remaining, "added", outcome.added)


async def apply_synced_notice(ctx: Services, body: dict[str, Any]) -> None:
    """A sync chateau-admin ran: reload the group, tell the users here.

    As for the other notices, the events are not stored in the group's
    history (chateau-admin routes no messages).
    """
    chatname = str(body["chatname"])
    by = str(body.get("by") or DIRECTORY_ACTOR)
    added = [str(name) for name in body.get("added") or ()]
    removed = [str(name) for name in body.get("removed") or ()]
    members = [str(name) for name in body.get("members") or ()]
    await reload_group(ctx, chatname)
    deliver = ctx.delivery.deliver_here
    for username in added:
        if ctx.registry.is_local(username):
            # The same notice as at sign-in, taken (so it is not told twice).
            for group in await ctx.store.groups.take_group_notices(username):
                deliver([username], messages.group_init_notice(
                    group.chatname, group.creator, sorted(group.members)))
    for username in removed:
        if ctx.registry.is_local(username):
            for removal in await ctx.store.membership.take_removal_notices(username):
                deliver([username], messages.group_removed(
                    removal.chatname, removal.by, removal.reason, removal.banned))
    if body.get("created"):
        return
    others = [name for name in members if name not in added]
    for username in removed:
        deliver(others, messages.group_event(chatname, "removed", username, by))
    for username in added:
        deliver(others, messages.group_event(chatname, "added", username, by))
