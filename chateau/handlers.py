"""One handler per request type; :data:`HANDLERS` at the bottom maps them.

A handler takes the :class:`~chateau.chat.Chat`, the requesting connection
and the typed request. It returns the direct response (the dispatcher adds
``msg_id``), delivers anything others should receive through the registry,
and raises :class:`~chateau.errors.ChateauError` to refuse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from chateau import messages
from chateau.errors import (
    ALREADY_SIGNED_IN,
    FORBIDDEN,
    NOT_AUTHENTICATED,
    NOT_FOUND,
    TOO_LARGE,
    BadRequest,
    ChateauError,
)
from chateau.messages import (
    ClientListRequest,
    GroupLeaveRequest,
    GroupMessageInitRequest,
    GroupMessageRequest,
    RandomMessageRequest,
    RegisterRequest,
    Request,
)
from chateau.names import CHATNAME_RULE, canonical, check_chatname, check_username
from chateau.store import direct_chat

if TYPE_CHECKING:
    from chateau.chat import Chat, Connection

Reply = dict[str, Any] | None


async def register(chat: Chat, conn: Connection, request: RegisterRequest) -> Reply:
    if conn.username is not None:
        raise ChateauError(
            ALREADY_SIGNED_IN, f"this connection is already signed in as {conn.username!r}"
        )
    if conn.signing_in:
        raise ChateauError(ALREADY_SIGNED_IN, "a sign-in is already in progress on this connection")
    conn.signing_in = True
    try:
        account = await chat.auth.sign_in(request.username, request.password, request.auth)
    finally:
        conn.signing_in = False
    if not conn.live:
        return None
    chat.sign_on(conn, account.username)
    reply = messages.register_response(account.username)
    if account.display_name:
        reply["display_name"] = account.display_name
    return reply


async def group_init(chat: Chat, conn: Connection, request: GroupMessageInitRequest) -> Reply:
    creator = conn.username
    assert creator is not None
    chatname = check_chatname(request.chatname)
    if chatname is None:
        raise BadRequest(f"invalid chatname {request.chatname!r}: {CHATNAME_RULE}")
    limit = chat.config.chat.max_group_members
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
    if chat.registry.group(chatname) is not None or chat.registry.pair(chatname) is not None:
        raise ChateauError(NOT_AUTHENTICATED, f"chatname {chatname!r} is taken")
    missing = await chat.store.missing_users(recipients)
    if missing:
        raise ChateauError(NOT_FOUND, f"unknown recipient {missing[0]!r}")
    members = [creator, *recipients]
    if not await chat.store.create_group(chatname, creator, members):
        raise ChateauError(
            NOT_AUTHENTICATED, f"chatname {chatname!r} is taken (by a user or a group)"
        )
    chat.registry.add_group(chatname, creator, members)
    chat.deliver(
        members,
        messages.group_init_notice(chatname, creator, sorted(members)),
        skip=conn,
    )
    return messages.group_init_response(chatname)


def _check_content(chat: Chat, content: str) -> None:
    if not content:
        raise BadRequest("content must not be empty")
    limit = chat.config.chat.max_content_length
    if len(content) > limit:
        raise ChateauError(TOO_LARGE, f"content is longer than {limit} characters")


async def send_message(chat: Chat, conn: Connection, request: GroupMessageRequest) -> Reply:
    sender = conn.username
    assert sender is not None
    _check_content(chat, request.content)
    target = canonical(request.recipient)
    registry = chat.registry

    pair = registry.pair(target)
    if pair is not None:
        if sender not in pair.members:
            raise ChateauError(FORBIDDEN, f"you are not in the random chat {target!r}")
        stored = await chat.store.add_message(target, sender, request.content)
        chat.deliver(
            pair.members,
            messages.group_message_recv(
                first=False, sender=sender, chatname=target, content=request.content,
                message_id=stored.id, timestamp=stored.timestamp,
            ),
            skip=conn,
        )
        return messages.message_send_response(stored.id, stored.timestamp)

    group = registry.group(target)
    if group is not None:
        if sender not in group.members:
            raise ChateauError(FORBIDDEN, f"you are not a member of {target!r}")
        stored = await chat.store.add_message(target, sender, request.content)
        first, group.started = not group.started, True
        chat.deliver(
            group.members,
            messages.group_message_recv(
                first=first, sender=sender, chatname=target, content=request.content,
                message_id=stored.id, timestamp=stored.timestamp,
            ),
            skip=conn,
        )
        return messages.message_send_response(stored.id, stored.timestamp)

    if not registry.is_online(target) and not await chat.store.user_exists(target):
        raise ChateauError(NOT_FOUND, f"no such user or group: {request.recipient!r}")
    stored = await chat.store.add_message(direct_chat(sender, target), sender, request.content)
    chat.deliver(
        [target],
        messages.message_recv(
            sender=sender, chatname=sender, content=request.content,
            message_id=stored.id, timestamp=stored.timestamp,
        ),
        skip=conn,
    )
    return messages.message_send_response(stored.id, stored.timestamp)


async def client_list(chat: Chat, conn: Connection, request: ClientListRequest) -> Reply:
    return messages.client_list_response(chat.registry.online_users(exclude=conn.username))


async def random_message(chat: Chat, conn: Connection, request: RandomMessageRequest) -> Reply:
    sender = conn.username
    assert sender is not None
    _check_content(chat, request.content)
    pair = chat.registry.pair_randomly(sender)
    if pair is None:
        raise ChateauError(NOT_FOUND, "not enough people online: nobody else is signed in")
    partner = pair.other(sender)
    stored = await chat.store.add_message(pair.chatname, sender, request.content)
    chat.deliver(
        [partner],
        messages.message_recv(
            sender=sender, chatname=pair.chatname, content=request.content,
            message_id=stored.id, timestamp=stored.timestamp, random=True,
        ),
    )
    return messages.random_message_response(partner, pair.chatname, stored.id, stored.timestamp)


async def group_leave(chat: Chat, conn: Connection, request: GroupLeaveRequest) -> Reply:
    user = conn.username
    assert user is not None
    target = canonical(request.chatname)
    registry = chat.registry

    pair = registry.pair(target)
    if pair is not None:
        if user not in pair.members:
            raise ChateauError(FORBIDDEN, f"you are not in the random chat {target!r}")
        registry.end_pair(target)
        chat.deliver([pair.other(user)], messages.random_chat_ended(target, user, "left"))
        return messages.group_leave_response(target)

    group = registry.group(target)
    if group is None:
        raise ChateauError(NOT_FOUND, f"no such group: {request.chatname!r}")
    if user not in group.members:
        raise ChateauError(FORBIDDEN, f"you are not a member of {target!r}")
    await chat.store.remove_group_member(target, user)
    registry.remove_member(target, user)
    chat.deliver(group.members, messages.group_member_left(target, user))
    return messages.group_leave_response(target)


Handler = Callable[["Chat", "Connection", Any], Awaitable[Reply]]

# Request class -> handler. The wire names (including the MessageRequest
# alias) are in chateau.messages.REQUEST_TYPES.
HANDLERS: dict[type[Request], Handler] = {
    RegisterRequest: register,
    GroupMessageInitRequest: group_init,
    GroupMessageRequest: send_message,
    ClientListRequest: client_list,
    RandomMessageRequest: random_message,
    GroupLeaveRequest: group_leave,
}
