"""Message search: SearchRequest.

What a user may search is what they may read now: the groups they are in
and their direct chats, never a group they left or were removed from, nor
random chats, group events, change rows, deleted messages, or messages of
people they block (chateau.store.search applies it in the query itself).
"""

from __future__ import annotations

from chateau import messages
from chateau.connection import Connection
from chateau.errors import FORBIDDEN, NOT_FOUND, BadRequest, ChateauError
from chateau.handlers.context import Reply, Services, fill_page, lookup, require_stored_messages
from chateau.messages import SearchRequest
from chateau.names import canonical
from chateau.store.records import direct_chat

MAX_RESULTS = 50
MAX_QUERY = 256


async def search(ctx: Services, conn: Connection, request: SearchRequest) -> Reply:
    user = conn.username
    assert user is not None
    require_stored_messages(ctx, "message search")
    if request.chatname is not None and request.user is not None:
        raise BadRequest("SearchRequest: give at most one of 'chatname' or 'user'")
    query = request.query.strip()
    if not 1 <= len(query) <= MAX_QUERY:
        raise BadRequest(f"SearchRequest: 'query' must be 1 to {MAX_QUERY} characters")
    if not 1 <= request.limit <= MAX_RESULTS:
        raise BadRequest(f"SearchRequest: 'limit' must be between 1 and {MAX_RESULTS}")
    if request.before is not None and request.before < 1:
        raise BadRequest("SearchRequest: 'before' must be a message id (1 or more)")
    chat: str | None = None
    if request.user is not None:
        other = lookup(request.user)
        if not ctx.registry.is_online(other) and not await ctx.store.accounts.user_exists(other):
            raise ChateauError(NOT_FOUND, f"no such user: {request.user!r}")
        chat = direct_chat(user, other)
    elif request.chatname is not None:
        name = canonical(request.chatname)
        group = ctx.registry.group(name)
        # Random chats are not searched: to search they are no group.
        if group is None:
            raise ChateauError(NOT_FOUND, f"no such group: {request.chatname!r}")
        if user not in group.members:
            raise ChateauError(FORBIDDEN, f"you are not a member of {request.chatname!r}")
        chat = name
    hits, more = await ctx.store.search.search(user, query, chat, request.before, request.limit)
    frame_limit = ctx.config.server.max_message_size
    page = messages.search_response(query, [], more)
    # A page whose frame would pass the limit stops early, with more: true.
    return fill_page(page, "results", (hit.entry(user) for hit in hits), request.msg_id,
                     frame_limit)
