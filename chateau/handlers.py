"""One handler per request type; :data:`HANDLERS` at the bottom maps them.

A handler takes the :class:`~chateau.chat.Chat`, the requesting connection
and the typed request. It returns the direct response (the dispatcher adds
``msg_id``), delivers anything others should receive through the registry,
and raises :class:`~chateau.errors.ChateauError` to refuse. Handlers are
coroutines, except the message send (:func:`send_message`), which returns
a Deferred.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from twisted.internet.defer import Deferred

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
from chateau.auth import Account
from chateau.messages import (
    ClientListRequest,
    ContactAccept,
    ContactDeny,
    ContactListRequest,
    ContactRemove,
    ContactRequest,
    GroupMembersRequest,
    HeartbeatRequest,
    HistoryRequest,
    LogoutRequest,
    MessageDeleteRequest,
    MessageEditRequest,
    ResumeRequest,
    GroupLeaveRequest,
    GroupMessageInitRequest,
    GroupMessageRequest,
    RandomMessageRequest,
    RegisterRequest,
    Request,
)
from chateau.names import CHATNAME_RULE, canonical, check_chatname, check_username
from chateau.store.records import StoredMessage, direct_chat, hash_session_key

if TYPE_CHECKING:
    from chateau.chat import Chat, Connection
    from chateau.registry import Group

Reply = dict[str, Any] | None


async def register(chat: Chat, conn: Connection, request: RegisterRequest) -> Reply:
    if conn.username is not None:
        raise ChateauError(
            ALREADY_SIGNED_IN, f"this connection is already signed in as {conn.username!r}"
        )
    if conn.signing_in:
        raise ChateauError(ALREADY_SIGNED_IN, "a sign-in is already in progress on this connection")
    conn.signing_in = True
    method = "ldap" if request.auth else "local"
    try:
        account = await chat.auth.sign_in(
            request.username, request.password, request.auth, conn.address
        )
    except ChateauError as refusal:
        result = {429: "throttled", 503: "busy"}.get(refusal.status, "refused")
        chat.metrics.signins.labels(method, result).inc()
        raise
    finally:
        conn.signing_in = False
    chat.metrics.signins.labels(method, "ok").inc()
    if not conn.live:
        return None
    key = await chat.new_session_key(conn, account.username)
    if not conn.live:
        return None
    reply = messages.register_response_with_key(account.username, key, account.display_name)
    reply["msg_id"] = request.msg_id
    await chat.sign_on(conn, account, reply)
    return None


async def resume(chat: Chat, conn: Connection, request: ResumeRequest) -> Reply:
    if conn.username is not None or conn.signing_in:
        raise ChateauError(
            ALREADY_SIGNED_IN, "this connection is already signed in or signing in"
        )
    conn.signing_in = True
    try:
        key_hash = hash_session_key(request.session_key)
        user = await chat.store.sessions.resume_session(key_hash)
    finally:
        conn.signing_in = False
    if user is None:
        raise ChateauError(
            NOT_AUTHENTICATED, "session key is invalid, expired or revoked: sign in again"
        )
    if not conn.live:
        return None
    conn.session_key_hash = key_hash
    account = Account(user.username, user.auth_method, user.display_name)
    reply = messages.resume_response(user.username, user.display_name)
    reply["msg_id"] = request.msg_id
    await chat.sign_on(conn, account, reply)
    return None


async def logout(chat: Chat, conn: Connection, request: LogoutRequest) -> Reply:
    key_hash = conn.session_key_hash
    chat.sign_off(conn)
    if key_hash is not None:
        await chat.store.sessions.revoke_session(key_hash)
    return messages.logout_response()


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
    missing = await chat.store.accounts.missing_users(recipients)
    if missing:
        raise ChateauError(NOT_FOUND, f"unknown recipient {missing[0]!r}")
    members = [creator, *recipients]
    most = chat.config.limits.max_groups_per_user
    for member in members:
        if chat.registry.group_count(member) >= most:
            who = "you are" if member == creator else f"{member!r} is"
            raise ChateauError(TOO_LARGE, f"{who} already in {most} groups, the most allowed")
    chat.check_reachable(members)
    online = [m for m in members if chat.registry.is_online(m)]
    if not await chat.store.groups.create_group(chatname, creator, members, online):
        raise ChateauError(
            NOT_AUTHENTICATED, f"chatname {chatname!r} is taken (by a user or a group)"
        )
    chat.registry.add_group(chatname, creator, members)
    chat.announce({"t": "group", "chatname": chatname, "creator": creator, "members": members})
    chat.deliver(
        members,
        messages.group_init_notice(chatname, creator, sorted(members)),
        skip=conn,
    )
    return messages.group_init_response(chatname)


def _check_content(chat: Chat, content: str) -> None:
    if not content:
        raise BadRequest("content must not be empty")
    if "\x00" in content:
        raise BadRequest("content must not contain NUL characters")
    limit = chat.config.chat.max_content_length
    if len(content) > limit:
        raise ChateauError(TOO_LARGE, f"content is longer than {limit} characters")


def send_message(chat: Chat, conn: Connection, request: GroupMessageRequest) -> Deferred[Reply]:
    """Commit a message, then route it and answer the sender.

    Not a coroutine: a send's one wait is usually its commit, and the rest
    runs as that Deferred's callback. Resuming a coroutine from the message
    writer instead, once per message, is Twisted's inline-callbacks machinery
    on the reactor thread every time (bench/RESULTS.md, change 12). Only a
    direct message to someone offline awaits the database first
    (:func:`_send_to_offline`).
    """
    sender = conn.username
    assert sender is not None
    _check_content(chat, request.content)
    target = _lookup(request.recipient)
    registry = chat.registry

    pair = registry.pair(target)
    if pair is not None:
        if sender not in pair.members:
            raise ChateauError(FORBIDDEN, f"you are not in the random chat {target!r}")
        chat.check_reachable(pair.members)
        return chat.record_message(target, sender, request.content).addCallback(
            _route_to_chat, chat, conn, sender, request, target, pair.members, None
        )

    group = registry.group(target)
    if group is not None:
        if sender not in group.members:
            raise ChateauError(FORBIDDEN, f"you are not a member of {target!r}")
        chat.check_reachable(group.members)
        return chat.record_message(target, sender, request.content).addCallback(
            _route_to_chat, chat, conn, sender, request, target, group.members, group
        )

    if not registry.is_online(target):
        return Deferred.fromCoroutine(_send_to_offline(chat, conn, sender, request, target))
    return _send_direct(chat, conn, sender, request, target)


async def _send_to_offline(
    chat: Chat, conn: Connection, sender: str, request: GroupMessageRequest, target: str
) -> Reply:
    """A direct message to a user not online here: only an account can get one."""
    if not await chat.store.accounts.user_exists(target):
        raise ChateauError(NOT_FOUND, f"no such user or group: {request.recipient!r}")
    return await _send_direct(chat, conn, sender, request, target)


def _send_direct(
    chat: Chat, conn: Connection, sender: str, request: GroupMessageRequest, target: str
) -> Deferred[Reply]:
    chat.check_reachable([sender, target])
    if not chat.stores_messages and not chat.registry.is_online(target):
        raise ChateauError(
            NOT_FOUND,
            f"{target!r} is offline and this server keeps no messages to deliver later",
        )
    return chat.record_message(
        direct_chat(sender, target), sender, request.content, recipient=target
    ).addCallback(_route_direct, chat, conn, sender, request, target)


def _route_direct(
    stored: StoredMessage, chat: Chat, conn: Connection, sender: str,
    request: GroupMessageRequest, target: str,
) -> Reply:
    chat.metrics.messages_of["direct"].inc()
    chat.deliver(
        [target],
        messages.message_recv(
            sender=sender, chatname=sender, content=request.content,
            message_id=stored.id, timestamp=stored.timestamp,
        ),
        skip=conn, message_id=stored.id,
    )
    chat.routed(stored.id)
    return messages.message_send_response(stored.id, stored.timestamp)


def _route_to_chat(
    stored: StoredMessage, chat: Chat, conn: Connection, sender: str,
    request: GroupMessageRequest, target: str, members: Iterable[str], group: Group | None,
) -> Reply:
    """Route a committed message to a random chat's pair, or to a group (*group* set)."""
    if group is None:
        chat.metrics.messages_of["random"].inc()
        first = False
    else:
        chat.metrics.messages_of["group"].inc()
        first, group.started = not group.started, True
        if first:
            chat.announce({"t": "group_started", "chatname": target})
    chat.deliver(
        members,
        messages.group_message_recv(
            first=first, sender=sender, chatname=target, content=request.content,
            message_id=stored.id, timestamp=stored.timestamp,
        ),
        skip=conn, message_id=stored.id,
    )
    chat.routed(stored.id)
    return messages.message_send_response(stored.id, stored.timestamp)


async def client_list(chat: Chat, conn: Connection, request: ClientListRequest) -> Reply:
    return messages.client_list_response(chat.registry.online_users(exclude=conn.username))


async def random_message(chat: Chat, conn: Connection, request: RandomMessageRequest) -> Reply:
    sender = conn.username
    assert sender is not None
    _check_content(chat, request.content)
    pair = chat.registry.pair_randomly(sender, local_only=chat.cluster_link_down)
    if pair is None:
        raise ChateauError(NOT_FOUND, "not enough people online: nobody else is signed in")
    partner = pair.other(sender)
    chat.announce({"t": "pair", "chatname": pair.chatname, "members": list(pair.members)})
    stored = await chat.record_message(pair.chatname, sender, request.content)
    chat.metrics.messages_of["random"].inc()
    chat.deliver(
        [partner],
        messages.message_recv(
            sender=sender, chatname=pair.chatname, content=request.content,
            message_id=stored.id, timestamp=stored.timestamp, random=True,
        ),
        message_id=stored.id,
    )
    chat.routed(stored.id)
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
        chat.check_reachable(pair.members)
        registry.end_pair(target)
        chat.announce({"t": "pair_end", "chatname": target})
        chat.deliver([pair.other(user)], messages.random_chat_ended(target, user, "left"))
        return messages.group_leave_response(target)

    group = registry.group(target)
    if group is None:
        raise ChateauError(NOT_FOUND, f"no such group: {request.chatname!r}")
    if user not in group.members:
        raise ChateauError(FORBIDDEN, f"you are not a member of {target!r}")
    chat.check_reachable(group.members)
    await chat.store.groups.remove_group_member(target, user)
    registry.remove_member(target, user)
    chat.announce({"t": "member_left", "chatname": target, "user": user})
    chat.deliver(group.members, messages.group_member_left(target, user))
    return messages.group_leave_response(target)


MAX_HISTORY = 100


def _lookup(raw: str) -> str:
    """The canonical form of a user or chat name to look up.

    No name holds NUL (the name rules forbid it, and PostgreSQL could not
    even be asked), so such a name is unknown without asking.
    """
    if "\x00" in raw:
        return ""
    return canonical(raw)


async def history(chat: Chat, conn: Connection, request: HistoryRequest) -> Reply:
    user = conn.username
    assert user is not None
    chat.require_stored_messages("message history")
    if (request.chatname is None) == (request.user is None):
        raise BadRequest("HistoryRequest: give exactly one of 'chatname' or 'user'")
    if not 1 <= request.limit <= MAX_HISTORY:
        raise BadRequest(f"HistoryRequest: 'limit' must be between 1 and {MAX_HISTORY}")
    if request.user is not None:
        other = _lookup(request.user)
        if not chat.registry.is_online(other) and not await chat.store.accounts.user_exists(other):
            raise ChateauError(NOT_FOUND, f"no such user: {request.user!r}")
        key, name, chat_key = "user", other, direct_chat(user, other)
    else:
        name = canonical(request.chatname or "")
        _require_membership(chat, user, name)
        key, chat_key = "chatname", name
    records, more = await chat.store.messages.history(chat_key, request.before, request.limit)
    return messages.history_response(key, name, [r.history_entry() for r in records], more)


def _require_membership(chat: Chat, user: str, chatname: str) -> set[str] | tuple[str, str]:
    """The members of a group or random chat *user* is in; 403 or 404 otherwise."""
    pair = chat.registry.pair(chatname)
    if pair is not None:
        if user not in pair.members:
            raise ChateauError(FORBIDDEN, f"you are not in the random chat {chatname!r}")
        return pair.members
    group = chat.registry.group(chatname)
    if group is None:
        raise ChateauError(NOT_FOUND, f"no such group: {chatname!r}")
    if user not in group.members:
        raise ChateauError(FORBIDDEN, f"you are not a member of {chatname!r}")
    return group.members


async def _existing_other_user(chat: Chat, me: str, raw: str) -> str:
    other = _lookup(raw)
    if other == me:
        raise BadRequest("that is your own name")
    if not chat.registry.is_online(other) and not await chat.store.accounts.user_exists(other):
        raise ChateauError(NOT_FOUND, f"no such user: {raw!r}")
    return other


async def contact_request(chat: Chat, conn: Connection, request: ContactRequest) -> Reply:
    me = conn.username
    assert me is not None
    other = await _existing_other_user(chat, me, request.username)
    chat.check_reachable([other])
    outcome = await chat.store.contacts.request_contact(me, other)
    if outcome == "requested":
        chat.deliver([other], messages.contact_request_recv(me))
    elif outcome == "accepted":
        _contacts_linked(chat, me, other)
    return messages.contact_response(
        "ContactRequest", other, state="contact" if outcome in ("accepted", "already") else "pending"
    )


def _contacts_linked(chat: Chat, me: str, other: str) -> None:
    chat.registry.link_contacts(me, other)
    chat.announce({"t": "contacts", "first": me, "second": other, "linked": True})
    chat.deliver([other], messages.contact_accept_recv(me, chat.registry.is_online(me)))


async def contact_accept(chat: Chat, conn: Connection, request: ContactAccept) -> Reply:
    me = conn.username
    assert me is not None
    other = _lookup(request.username)
    chat.check_reachable([other])
    if not await chat.store.contacts.accept_contact(me, other):
        raise ChateauError(NOT_FOUND, f"no contact request from {request.username!r}")
    _contacts_linked(chat, me, other)
    return messages.contact_response(
        "ContactAccept", other, online=chat.registry.is_online(other)
    )


async def contact_deny(chat: Chat, conn: Connection, request: ContactDeny) -> Reply:
    me = conn.username
    assert me is not None
    other = _lookup(request.username)
    if not await chat.store.contacts.deny_contact(me, other):
        raise ChateauError(NOT_FOUND, f"no contact request from {request.username!r}")
    return messages.contact_response("ContactDeny", other)


async def contact_remove(chat: Chat, conn: Connection, request: ContactRemove) -> Reply:
    me = conn.username
    assert me is not None
    other = _lookup(request.username)
    chat.check_reachable([other])
    if not await chat.store.contacts.remove_contact(me, other):
        raise ChateauError(NOT_FOUND, f"{request.username!r} is not in your contacts")
    chat.registry.unlink_contacts(me, other)
    chat.announce({"t": "contacts", "first": me, "second": other, "linked": False})
    chat.deliver([other], messages.contact_remove_recv(me))
    return messages.contact_response("ContactRemove", other)


async def contact_list(chat: Chat, conn: Connection, request: ContactListRequest) -> Reply:
    me = conn.username
    assert me is not None
    book = await chat.store.contacts.contact_book(me)
    online = chat.registry.is_online
    return messages.contact_list_response(
        [{"username": name, "online": online(name)} for name in book.contacts],
        [{"username": name, "direction": direction} for name, direction, _ in book.pending],
    )


async def _own_message(chat: Chat, user: str, message_id: int) -> Any:
    chat.require_stored_messages("editing and deleting messages")
    record = await chat.store.messages.get_message(message_id)
    if record is None or record.deleted:
        raise ChateauError(NOT_FOUND, f"no message with id {message_id}")
    if record.sender != user:
        raise ChateauError(FORBIDDEN, "only the author may edit or delete a message")
    return record


def _audience(chat: Chat, record: Any) -> Iterable[str]:
    """Who hears of an edit or deletion of *record*."""
    if record.recipient is not None:
        return [record.recipient, record.sender]
    group = chat.registry.group(record.chat)
    pair = chat.registry.pair(record.chat)
    return group.members if group is not None else pair.members if pair is not None else ()


def _announce_change(chat: Chat, conn: Connection, record: Any, build: Any) -> None:
    """Tell everyone in the message's chat (and the author's other devices)."""
    if record.recipient is not None:
        chat.deliver([record.recipient], build(record.sender))
        chat.deliver([record.sender], build(record.recipient), skip=conn)
        return
    group = chat.registry.group(record.chat)
    pair = chat.registry.pair(record.chat)
    members = group.members if group is not None else pair.members if pair is not None else ()
    chat.deliver(members, build(record.chat), skip=conn)


async def message_edit(chat: Chat, conn: Connection, request: MessageEditRequest) -> Reply:
    user = conn.username
    assert user is not None
    _check_content(chat, request.content)
    record = await _own_message(chat, user, request.id)
    chat.check_reachable(_audience(chat, record))
    await chat.store.messages.edit_message(record.id, request.content)
    _announce_change(
        chat, conn, record,
        lambda chatname: messages.message_edited(record.id, chatname, user, request.content),
    )
    return messages.message_edit_response(record.id)


async def message_delete(chat: Chat, conn: Connection, request: MessageDeleteRequest) -> Reply:
    user = conn.username
    assert user is not None
    record = await _own_message(chat, user, request.id)
    chat.check_reachable(_audience(chat, record))
    await chat.store.messages.delete_message(record.id)
    _announce_change(
        chat, conn, record, lambda chatname: messages.message_deleted(record.id, chatname, user)
    )
    return messages.message_delete_response(record.id)


async def heartbeat(chat: Chat, conn: Connection, request: HeartbeatRequest) -> Reply:
    return messages.heartbeat_response(request.payload)


async def group_members(chat: Chat, conn: Connection, request: GroupMembersRequest) -> Reply:
    user = conn.username
    assert user is not None
    chatname = canonical(request.chatname)
    members = _require_membership(chat, user, chatname)
    online = chat.registry.is_online
    return messages.group_members_response(
        chatname, [{"username": name, "online": online(name)} for name in sorted(members)]
    )


# A coroutine, or (the message send) a function returning a Deferred; either
# may raise ChateauError to refuse (see Chat.dispatch).
Handler = Callable[["Chat", "Connection", Any], "Awaitable[Reply] | Deferred[Reply]"]

# Request class -> handler. The wire names (including the MessageRequest
# alias) are in chateau.messages.REQUEST_TYPES.
HANDLERS: dict[type[Request], Handler] = {
    RegisterRequest: register,
    GroupMessageInitRequest: group_init,
    GroupMessageRequest: send_message,
    ClientListRequest: client_list,
    RandomMessageRequest: random_message,
    GroupLeaveRequest: group_leave,
    ResumeRequest: resume,
    LogoutRequest: logout,
    HistoryRequest: history,
    ContactRequest: contact_request,
    ContactAccept: contact_accept,
    ContactDeny: contact_deny,
    ContactRemove: contact_remove,
    ContactListRequest: contact_list,
    MessageEditRequest: message_edit,
    MessageDeleteRequest: message_delete,
    HeartbeatRequest: heartbeat,
    GroupMembersRequest: group_members,
}
