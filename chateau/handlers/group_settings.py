"""A group's topic, name and settings (GroupUpdateRequest), and the public
directory (GroupDirectoryRequest)."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from chateau import messages, permissions
from chateau.connection import Connection
from chateau.errors import CONFLICT, NOT_FOUND, BadRequest, ChateauError
from chateau.handlers.context import Reply, Services, group_event, lookup, require_permission
from chateau.handlers.groups import _refuse_directory_names
from chateau.messages import ABSENT, GroupDirectoryRequest, GroupUpdateRequest
from chateau.names import CHATNAME_RULE, check_new_chatname
from chateau.store.group_settings import RETENTION, SETTINGS

# The longest topic, in characters.
MAX_TOPIC_LENGTH = 500
# The longest directory search, in characters, and the most groups a page lists.
MAX_QUERY_LENGTH = 100
MAX_DIRECTORY_LIMIT = 200
# The longest retention a group may set, in days (a hundred years); 0 keeps forever.
MAX_RETENTION_DAYS = 36500

log = Logger()


def _settings_asked(request: GroupUpdateRequest) -> dict[str, Any]:
    """The settings the request sets, each checked against the values it may take."""
    asked: dict[str, Any] = {}
    for key, (_, allowed) in SETTINGS.items():
        value = getattr(request, key)
        if value is None:
            continue
        if value not in allowed:
            raise BadRequest(
                f"{key} must be one of {', '.join(repr(v) for v in allowed)}, not {value!r}"
            )
        asked[key] = value
    days = request.retention_days
    if days is not ABSENT:
        if days is not None and not 0 <= days <= MAX_RETENTION_DAYS:
            raise BadRequest(
                f"retention_days must be between 0 (keep forever) and {MAX_RETENTION_DAYS}, "
                f"or null (the server's), not {days}"
            )
        asked[RETENTION] = days
    return asked


def _topic_asked(topic: str | None) -> str | None:
    if topic is None:
        return None
    if len(topic) > MAX_TOPIC_LENGTH:
        raise BadRequest(f"a topic is at most {MAX_TOPIC_LENGTH} characters, not {len(topic)}")
    if "\x00" in topic:
        raise BadRequest("a topic must not contain NUL characters")
    return topic


async def group_update(ctx: Services, conn: Connection, request: GroupUpdateRequest) -> Reply:
    """Admins and owners change a group's topic, name and settings, all or nothing.

    A rename moves the group whole (history, members, roles, bans) in one
    transaction, then in the registry of every node; the old name finds
    nothing afterwards. Members are told by stored events: ``renamed``,
    ``topic``, ``settings`` (the changed keys only). A group's
    ``retention_days`` lives only in the database, which the purge of
    whichever node runs it reads (chateau.retention): no node keeps it.
    """
    user = conn.username
    assert user is not None
    chatname = lookup(request.chatname)
    settings = _settings_asked(request)
    topic = _topic_asked(request.topic)
    new_name = None
    if request.name is not None:
        new_name = check_new_chatname(request.name)
        if new_name is None:
            raise BadRequest(f"invalid name {request.name!r}: {CHATNAME_RULE}")
    if topic is None and new_name is None and not settings:
        raise BadRequest(
            "GroupUpdateRequest: give at least one of 'topic', 'name', "
            + ", ".join(repr(key) for key in (*SETTINGS, RETENTION))
        )
    group = ctx.registry.group(chatname)
    if group is None:
        raise ChateauError(NOT_FOUND, f"no such group: {request.chatname!r}")
    role = await ctx.store.group_settings.role_of(chatname, user)
    refusal = (
        f"you are not a member of {chatname!r}" if role is None
        else f"only admins and owners of {chatname!r} change its topic, name or settings"
    )
    await require_permission(ctx, user, permissions.UPDATE, role, refusal)
    if new_name == chatname:
        new_name = None
    if new_name is not None:
        await _refuse_directory_names(ctx, new_name, "rename a group to")
    ctx.delivery.check_reachable(list(group.members))
    outcome = await ctx.store.group_settings.update_group(
        chatname, user, new_name, topic, settings
    )
    if outcome.outcome == "gone":
        raise ChateauError(NOT_FOUND, f"no such group: {request.chatname!r}")
    if outcome.outcome == "name_taken":
        claim = outcome.claim
        assert claim is not None
        if claim.confusable:
            raise ChateauError(
                CONFLICT,
                f"chatname {claim.name!r} looks like the existing name {claim.blocked_by!r}; "
                "choose another name",
            )
        raise ChateauError(CONFLICT, f"chatname {claim.name!r} is taken (by a user or a group)")
    final = outcome.chatname
    changed = outcome.changed or {}
    if outcome.renamed:
        ctx.registry.rename_group(chatname, final)
        ctx.delivery.announce({"t": "group_renamed", "chatname": chatname, "new_name": final})
    if "who_can_send" in changed:
        group.who_can_send = changed["who_can_send"]
        ctx.delivery.announce(
            {"t": "group_settings", "chatname": final, "who_can_send": changed["who_can_send"]}
        )
    members = sorted(group.members)
    if outcome.renamed:
        await group_event(ctx, final, members, "renamed", user, user, skip=conn,
                          old_name=chatname, new_name=final)
        await _move_stragglers(ctx, chatname, final)
    if outcome.topic_changed:
        await group_event(ctx, final, members, "topic", user, user, skip=conn,
                          topic=outcome.topic)
    if changed:
        await group_event(ctx, final, members, "settings", user, user, skip=conn,
                          settings=changed)
    assert outcome.settings is not None
    return messages.group_update_response(final, outcome.topic, outcome.settings)


async def _move_stragglers(ctx: Services, old_name: str, new_name: str) -> None:
    """Sends that passed their check under the old name join the moved history.

    The rename is done and told: a failure here is logged, not the
    request's.
    """
    try:
        await ctx.store.group_settings.move_stragglers(old_name, new_name)
    except Exception as exc:
        log.warn("could not move late messages of {old_name} to {new_name}: {reason}",
                 old_name=old_name, new_name=new_name, reason=str(exc).split("\n")[0])


async def group_directory(ctx: Services, conn: Connection, request: GroupDirectoryRequest) -> Reply:
    """Public groups whose name or topic holds the query, biggest first."""
    query = request.query or ""
    if len(query) > MAX_QUERY_LENGTH:
        raise BadRequest(f"a query is at most {MAX_QUERY_LENGTH} characters")
    if "\x00" in query:
        raise BadRequest("a query must not contain NUL characters")
    if not 1 <= request.limit <= MAX_DIRECTORY_LIMIT:
        raise BadRequest(f"GroupDirectoryRequest: 'limit' must be between 1 and "
                         f"{MAX_DIRECTORY_LIMIT}")
    entries = await ctx.store.group_settings.directory(query, request.limit)
    groups: list[dict[str, Any]] = [
        {"chatname": e.chatname, "topic": e.topic, "members": e.members, "join": e.join}
        for e in entries
    ]
    return messages.group_directory_response(groups)
