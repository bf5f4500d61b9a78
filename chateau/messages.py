"""The wire format: JSON text frames to typed requests, and replies back to JSON.

One concern: what goes over the wire and what it costs there.

Each request type is a frozen dataclass whose annotated fields are the JSON
fields it takes. :func:`decode_request` checks every field's presence and
type, so handlers receive well-formed objects and never look at raw JSON.
Replies are plain dicts built by the small functions at the bottom; they are
encoded once (:func:`encode`) however many peers receive them.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import orjson

from chateau.errors import BadRequest

MISSING: Any = dataclasses.MISSING


class _Absent:
    """The value of an optional field a request did not carry, where null means something."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


# The default of a field whose null is a value of its own (GroupUpdateRequest's
# retention_days: null gives the group the server's retention back).
ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Request:
    """Base of every request; ``msg_id`` is any JSON value, echoed back."""

    msg_id: Any = field(default=None, kw_only=True)
    # Whether the request needs a signed-in connection.
    needs_user: ClassVar[bool] = True


@dataclass(frozen=True)
class RegisterRequest(Request):
    username: str
    password: str
    auth: bool = False
    # An invite code (``[auth] registration = invite``): may create the account.
    invite: str | None = None
    # What the client calls itself ("Firefox on Linux"), kept with the key.
    client: str | None = None
    needs_user: ClassVar[bool] = False


@dataclass(frozen=True)
class GroupMessageInitRequest(Request):
    recipients: list[str]
    chatname: str


@dataclass(frozen=True)
class GroupMessageRequest(Request):
    recipient: str
    content: str


@dataclass(frozen=True)
class ClientListRequest(Request):
    pass


@dataclass(frozen=True)
class RandomMessageRequest(Request):
    content: str


@dataclass(frozen=True)
class GroupLeaveRequest(Request):
    chatname: str


@dataclass(frozen=True)
class ResumeRequest(Request):
    session_key: str
    client: str | None = None
    needs_user: ClassVar[bool] = False


@dataclass(frozen=True)
class LogoutRequest(Request):
    pass


@dataclass(frozen=True)
class HistoryRequest(Request):
    chatname: str | None = None
    user: str | None = None
    before: int | None = None
    limit: int = 50
    # At most one of before, before_time, after, after_time (ISO 8601 UTC).
    before_time: str | None = None
    after: int | None = None
    after_time: str | None = None


@dataclass(frozen=True)
class SyncRequest(Request):
    """Everything after *since* the user may see (None: this key's sync position)."""

    since: int | None = None
    limit: int = 100


@dataclass(frozen=True)
class TypingRequest(Request):
    """Whether the user is typing in a conversation (``chatname`` or ``user``)."""

    typing: bool
    chatname: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class SearchRequest(Request):
    query: str
    chatname: str | None = None
    user: str | None = None
    before: int | None = None
    limit: int = 20


@dataclass(frozen=True)
class ContactRequest(Request):
    username: str


@dataclass(frozen=True)
class ContactAccept(Request):
    username: str


@dataclass(frozen=True)
class ContactDeny(Request):
    username: str


@dataclass(frozen=True)
class ContactRemove(Request):
    username: str


@dataclass(frozen=True)
class ContactListRequest(Request):
    pass


@dataclass(frozen=True)
class MessageEditRequest(Request):
    id: int
    content: str


@dataclass(frozen=True)
class MessageDeleteRequest(Request):
    id: int


@dataclass(frozen=True)
class HeartbeatRequest(Request):
    payload: Any = None
    needs_user: ClassVar[bool] = False


@dataclass(frozen=True)
class GroupMembersRequest(Request):
    chatname: str


@dataclass(frozen=True)
class GroupInfoRequest(Request):
    chatname: str


@dataclass(frozen=True)
class GroupRoleRequest(Request):
    chatname: str
    user: str
    role: str


@dataclass(frozen=True)
class ReportRequest(Request):
    reason: str
    message_id: int | None = None
    username: str | None = None
    chatname: str | None = None


@dataclass(frozen=True)
class ReportListRequest(Request):
    status: str = "open"
    limit: int = 50
    before: int | None = None


@dataclass(frozen=True)
class ReportResolveRequest(Request):
    report_id: int
    action: str
    note: str


@dataclass(frozen=True)
class GroupUpdateRequest(Request):
    """Change a group's topic, name or settings (at least one); admins and owners."""

    chatname: str
    topic: str | None = None
    name: str | None = None
    join: str | None = None
    visibility: str | None = None
    who_can_add: str | None = None
    who_can_send: str | None = None
    # Days the group's messages are kept (0: forever); null: the server's
    # [chat] retention_days again; ABSENT when not given.
    retention_days: int | None = ABSENT


@dataclass(frozen=True)
class GroupDirectoryRequest(Request):
    """The public groups, with their topics and member counts."""

    query: str | None = None
    limit: int = 50


@dataclass(frozen=True)
class GroupAddRequest(Request):
    chatname: str
    users: list[str]


@dataclass(frozen=True)
class GroupRemoveRequest(Request):
    chatname: str
    user: str
    ban: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class GroupUnbanRequest(Request):
    chatname: str
    user: str


@dataclass(frozen=True)
class GroupMuteRequest(Request):
    chatname: str
    user: str
    minutes: int


@dataclass(frozen=True)
class GroupInviteRequest(Request):
    chatname: str
    max_uses: int | None = None
    hours: int | None = None


@dataclass(frozen=True)
class GroupJoinRequest(Request):
    code: str | None = None
    chatname: str | None = None


@dataclass(frozen=True)
class BlockRequest(Request):
    username: str


@dataclass(frozen=True)
class UnblockRequest(Request):
    username: str


@dataclass(frozen=True)
class BlockListRequest(Request):
    pass


@dataclass(frozen=True)
class SettingsRequest(Request):
    """Reads the settings (no fields) or changes those given (chateau.safety)."""

    direct_messages: str | None = None
    presence: str | None = None
    random_chat: bool | None = None
    read_receipts: bool | None = None


@dataclass(frozen=True)
class AnnounceRequest(Request):
    content: str


@dataclass(frozen=True)
class UserBanRequest(Request):
    username: str
    reason: str
    # None: until unbanned.
    hours: int | None = None


@dataclass(frozen=True)
class UserUnbanRequest(Request):
    username: str


@dataclass(frozen=True)
class PasswordChangeRequest(Request):
    old_password: str
    new_password: str


@dataclass(frozen=True)
class SessionListRequest(Request):
    pass


@dataclass(frozen=True)
class SessionRevokeRequest(Request):
    id: str


@dataclass(frozen=True)
class ProfileRequest(Request):
    """Reads the profile (no fields) or changes those given ("" clears)."""

    display_name: str | None = None
    status_text: str | None = None


@dataclass(frozen=True)
class AccountDeleteRequest(Request):
    """Erase one's own (local) account; the password says it is really them."""

    password: str


@dataclass(frozen=True)
class ReadRequest(Request):
    """Move one's read marker in a conversation up to message ``id``."""

    id: int
    chatname: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class ConversationsRequest(Request):
    """One's groups and direct chats by activity, with unread counts."""

    limit: int = 50
    before: int | None = None


# Wire name -> request class. ``MessageRequest`` is what the original server
# and its Android app really sent for a chat message.
REQUEST_TYPES: dict[str, type[Request]] = {
    "RegisterRequest": RegisterRequest,
    "GroupMessageInitRequest": GroupMessageInitRequest,
    "GroupMessageRequest": GroupMessageRequest,
    "MessageRequest": GroupMessageRequest,
    "ClientListRequest": ClientListRequest,
    "RandomMessageRequest": RandomMessageRequest,
    "GroupLeaveRequest": GroupLeaveRequest,
    "ResumeRequest": ResumeRequest,
    "LogoutRequest": LogoutRequest,
    "HistoryRequest": HistoryRequest,
    "TypingRequest": TypingRequest,
    "SyncRequest": SyncRequest,
    "SearchRequest": SearchRequest,
    "ContactRequest": ContactRequest,
    "ContactAccept": ContactAccept,
    "ContactDeny": ContactDeny,
    "ContactRemove": ContactRemove,
    "ContactListRequest": ContactListRequest,
    "MessageEditRequest": MessageEditRequest,
    "MessageDeleteRequest": MessageDeleteRequest,
    "HeartbeatRequest": HeartbeatRequest,
    "GroupMembersRequest": GroupMembersRequest,
    "GroupInfoRequest": GroupInfoRequest,
    "GroupRoleRequest": GroupRoleRequest,
    "ReportRequest": ReportRequest,
    "ReportListRequest": ReportListRequest,
    "ReportResolveRequest": ReportResolveRequest,
    "GroupUpdateRequest": GroupUpdateRequest,
    "GroupDirectoryRequest": GroupDirectoryRequest,
    "GroupAddRequest": GroupAddRequest,
    "GroupRemoveRequest": GroupRemoveRequest,
    "GroupUnbanRequest": GroupUnbanRequest,
    "GroupMuteRequest": GroupMuteRequest,
    "GroupInviteRequest": GroupInviteRequest,
    "GroupJoinRequest": GroupJoinRequest,
    "BlockRequest": BlockRequest,
    "UnblockRequest": UnblockRequest,
    "BlockListRequest": BlockListRequest,
    "SettingsRequest": SettingsRequest,
    "AnnounceRequest": AnnounceRequest,
    "UserBanRequest": UserBanRequest,
    "UserUnbanRequest": UserUnbanRequest,
    "PasswordChangeRequest": PasswordChangeRequest,
    "SessionListRequest": SessionListRequest,
    "SessionRevokeRequest": SessionRevokeRequest,
    "ProfileRequest": ProfileRequest,
    "AccountDeleteRequest": AccountDeleteRequest,
    "ReadRequest": ReadRequest,
    "ConversationsRequest": ConversationsRequest,
}

_JSON_NAMES = {str: "a string", bool: "true or false", int: "an integer (64-bit)"}


def _optional(annotation: Any) -> Any:
    """``X | None`` -> X (None is accepted for optional fields)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _type_name(annotation: Any) -> str:
    annotation = _optional(annotation)
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return f"a list of {_JSON_NAMES[item].split(' ', 1)[1]}s"
    return _JSON_NAMES[annotation]


def _matches(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    if _optional(annotation) is not annotation:
        return value is None or _matches(value, _optional(annotation))
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool) and INT_MIN <= value <= INT_MAX
    return isinstance(value, annotation)


def _build_schemas() -> dict[type[Request], list[tuple[str, Any, bool]]]:
    schemas = {}
    for cls in set(REQUEST_TYPES.values()):
        hints = typing.get_type_hints(cls)
        fields = []
        for f in dataclasses.fields(cls):
            if f.name == "msg_id":
                continue
            required = f.default is MISSING and f.default_factory is MISSING
            fields.append((f.name, hints[f.name], required))
        schemas[cls] = fields
    return schemas


_SCHEMAS = _build_schemas()


def request_fields(cls: type[Request]) -> dict[str, Any]:
    """The JSON fields *cls* takes, each with its type (``X | None`` as X).

    For building a request from something other than a frame: the HTTP
    API's query strings (chateau/web_api.py).
    """
    return {name: _optional(annotation) for name, annotation, _ in _SCHEMAS[cls]}


def peek_msg_id(payload: Any) -> Any:
    """The ``msg_id`` of a frame that may be malformed, for echoing in errors."""
    return payload.get("msg_id") if isinstance(payload, dict) else None


# Deepest nesting of arrays and objects accepted in a request; deeper input
# could not be echoed back (json.dumps recurses).
MAX_DEPTH = 32
# Integers are stored in 64-bit columns.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if any("\ud800" <= char <= "\udfff" for char in node):
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _loads(payload: bytes) -> Any:
    """Parse JSON with ``orjson``: a tenth of ``json.loads``'s time on a typical frame.

    What ``orjson`` refuses, or reads differently, is parsed again by
    ``json.loads``, so what is accepted and every error's detail stay as they
    were: a lone surrogate escape, ``NaN`` and nesting past its limit (it
    refuses them), and an integer past 64 bits (it reads a float; a request's
    numbers are at its top level, so a float there is read again).
    """
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)
    if type(data) is dict and any(type(value) is float for value in data.values()):
        return json.loads(payload)
    return data


def parse_json(payload: bytes, what: str = "frame") -> Any:
    """Decode a text frame's payload (or an HTTP body: *what* names it), or raise
    :class:`BadRequest`.

    Besides JSON syntax, refuses what could not be sent back or stored: a
    lone UTF-16 surrogate escape (``"\\ud800"``), which is no character, and
    nesting deeper than :data:`MAX_DEPTH`. (NUL, which PostgreSQL cannot store,
    is refused where names and content are checked.) Both checks walk the value only
    when the raw bytes make them possible, so ordinary frames cost nothing.
    """
    try:
        data = _loads(payload)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    if (payload.count(b"[") + payload.count(b"{") > MAX_DEPTH
            and _depth_exceeds(data, MAX_DEPTH)):
        raise BadRequest(f"{what} is nested deeper than {MAX_DEPTH} levels")
    if b"\\ud" in payload.lower() and _has_lone_surrogate(data):
        raise BadRequest(f"{what} holds a lone UTF-16 surrogate escape, which is not a character")
    return data


def decode_request(data: Any) -> Request:
    """Turn parsed JSON into a typed request, or raise :class:`BadRequest`."""
    if not isinstance(data, dict):
        raise BadRequest("a request must be a JSON object")
    kind = data.get("type")
    if kind is None:
        raise BadRequest("missing field 'type'")
    if not isinstance(kind, str):
        raise BadRequest("field 'type' must be a string")
    cls = REQUEST_TYPES.get(kind)
    if cls is None:
        raise BadRequest(f"unknown request type {kind!r}")
    kwargs: dict[str, Any] = {"msg_id": data.get("msg_id")}
    for name, annotation, required in _SCHEMAS[cls]:
        if name not in data:
            if required:
                raise BadRequest(f"{kind}: missing field {name!r}")
            continue
        value = data[name]
        if not _matches(value, annotation):
            raise BadRequest(
                f"{kind}: field {name!r} must be {_type_name(annotation)}"
            )
        kwargs[name] = value
    return cls(**kwargs)


def encode(message: dict[str, Any]) -> bytes:
    """Encode one outgoing message; callers fan the bytes out unchanged."""
    try:
        return orjson.dumps(message)
    except TypeError:
        # Past what orjson writes (an integer over 64 bits): the standard
        # encoder's output, or its error.
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


# -- what a stored message costs on the wire ----------------------------------
#
# Every frame that carries a stored message (its live push, its push at
# catch-up, the push of an edit, a history page holding only it) is the
# message's content, JSON-escaped as :func:`encode` does it, inside an
# envelope of other fields. Content is accepted only when the largest of
# those frames fits in ``[server] max_message_size``, so a client may apply
# the same limit to what it reads.

# The most bytes one character of content takes in :func:`encode`'s output:
# a control character is escaped as ``\u001f``.
MAX_CHARACTER_BYTES = 6


def _largest_envelope() -> int:
    """The bytes of the largest frame around a stored message, content aside.

    Built with the longest names (every character four bytes of UTF-8), a
    19-digit id, a full timestamp, every flag, and, for a history page,
    ``msg_id`` null and ``more`` set; the empty content's quotes are not counted.
    """
    user = "\U00010400" * 32  # MAX_USERNAME_LENGTH characters of four bytes
    chat = "\U00010400" * 64  # MAX_CHATNAME_LENGTH
    big_id = 2**63 - 1
    stamp = "2000-01-01T00:00:00.000Z"
    direct = message_recv(sender=user, chatname=chat, content="", message_id=big_id,
                          timestamp=stamp, random=True)
    group = group_message_recv(first=True, sender=user, chatname=chat, content="",
                               message_id=big_id, timestamp=stamp)
    for push in (direct, group):
        push.update(offline=True, edited=True)
    entry = {"id": big_id, "sender": user, "content": "", "timestamp": stamp,
             "edited": False, "deleted": False}
    page = history_response("chatname", chat, [entry], True)
    page["msg_id"] = None
    edited = message_edited(big_id, chat, user, "")
    return max(len(encode(frame)) for frame in (direct, group, page, edited)) - 2


def content_wire_size(content: str) -> int:
    """The bytes *content* takes inside a frame (escaped UTF-8, without its quotes)."""
    return len(json.dumps(content, ensure_ascii=False).encode()) - 2


def mentions_wire_size(mentions: Sequence[str]) -> int:
    """The bytes a message's ``mentions`` field adds to a frame (0 for none)."""
    return len(encode({"mentions": list(mentions)})) - 1 if mentions else 0


def largest_message_frame(content: str, mentions: Sequence[str] = ()) -> int:
    """The bytes of the largest frame that will ever carry a message of *content*."""
    return MESSAGE_ENVELOPE + content_wire_size(content) + mentions_wire_size(mentions)


# ---------------------------------------------------------------------------
# Outgoing messages. Each function is one wire type; docs/protocol.md lists
# the same fields.


def error_response(status: int, detail: str, msg_id: Any = None) -> dict[str, Any]:
    return {"type": "ErrorResponse", "status": status, "detail": detail, "msg_id": msg_id}


def register_response(username: str) -> dict[str, Any]:
    return {"type": "RegisterResponse", "status": 200, "username": username}


def group_init_response(chatname: str) -> dict[str, Any]:
    return {"type": "GroupMessageInitResponse", "status": 200, "chatname": chatname}


def group_init_notice(chatname: str, creator: str, members: list[str]) -> dict[str, Any]:
    return {
        "type": "GroupMessageInitResponse",
        "status": 201,
        "chatname": chatname,
        "creator": creator,
        "members": members,
    }


def message_send_response(
    message_id: int, timestamp: str, mentions: Sequence[str] = ()
) -> dict[str, Any]:
    response = {
        "type": "MessageSendResponse",
        "status": 200,
        "id": message_id,
        "timestamp": timestamp,
    }
    if mentions:
        response["mentions"] = list(mentions)
    return response


def group_message_recv(
    *, first: bool, sender: str, chatname: str, content: str, message_id: int, timestamp: str,
    mentions: Sequence[str] = (),
) -> dict[str, Any]:
    """*mentions* (chateau.mentions) is carried only when someone is mentioned."""
    message = {
        "type": "GroupMessageRecv",
        "status": 201 if first else 200,
        "sender": sender,
        "chatname": chatname,
        "content": content,
        "id": message_id,
        "timestamp": timestamp,
    }
    if mentions:
        message["mentions"] = list(mentions)
    return message


def message_recv(
    *, sender: str, chatname: str, content: str, message_id: int, timestamp: str,
    random: bool = False,
) -> dict[str, Any]:
    message = {
        "type": "MessageRecv",
        "status": 200,
        "sender": sender,
        "chatname": chatname,
        "groupchat": False,
        "content": content,
        "id": message_id,
        "timestamp": timestamp,
    }
    if random:
        message["random"] = True
    return message


def client_list_response(clients: list[str]) -> dict[str, Any]:
    return {"type": "ClientListResponse", "status": 200, "clients": clients}


def random_message_response(
    client: str, chatname: str, message_id: int, timestamp: str
) -> dict[str, Any]:
    return {
        "type": "RandomMessageResponse",
        "status": 200,
        "client": client,
        "chatname": chatname,
        "id": message_id,
        "timestamp": timestamp,
    }


def random_chat_ended(chatname: str, user: str, reason: str) -> dict[str, Any]:
    return {
        "type": "RandomChatEndedRecv",
        "status": 200,
        "chatname": chatname,
        "user": user,
        "reason": reason,
    }


def group_leave_response(chatname: str) -> dict[str, Any]:
    return {"type": "GroupLeaveResponse", "status": 200, "chatname": chatname}


def group_member_left(chatname: str, user: str) -> dict[str, Any]:
    return {"type": "GroupMemberLeftRecv", "status": 200, "chatname": chatname, "user": user}


def register_response_with_key(
    username: str, session_key: str, display_name: str | None, session_id: str | None = None
) -> dict[str, Any]:
    reply = register_response(username)
    reply["session_key"] = session_key
    if session_id is not None:
        reply["session_id"] = session_id
    if display_name:
        reply["display_name"] = display_name
    return reply


def resume_response(
    username: str, display_name: str | None, session_id: str | None = None
) -> dict[str, Any]:
    reply: dict[str, Any] = {"type": "ResumeResponse", "status": 200, "username": username}
    if session_id is not None:
        reply["session_id"] = session_id
    if display_name:
        reply["display_name"] = display_name
    return reply


def logout_response() -> dict[str, Any]:
    return {"type": "LogoutResponse", "status": 200}


def history_response(
    key: str, name: str, entries: list[dict[str, Any]], more: bool
) -> dict[str, Any]:
    return {"type": "HistoryResponse", "status": 200, key: name, "messages": entries, "more": more}


def typing_response() -> dict[str, Any]:
    return {"type": "TypingResponse", "status": 200}


def typing_recv(key: str, name: str, username: str, typing: bool) -> dict[str, Any]:
    """*username* is typing (or stopped) in a group or random chat (*key* "chatname"),
    or in a direct chat with the reader (*key* "user", *name* the typer)."""
    return {"type": "TypingRecv", "status": 200, key: name, "username": username,
            "typing": typing}


def sync_response(
    since: int, until: int, more: bool, entries: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"type": "SyncResponse", "status": 200, "since": since, "until": until,
            "more": more, "messages": entries}


def search_response(query: str, results: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"type": "SearchResponse", "status": 200, "query": query, "results": results,
            "more": more}


def contact_response(kind: str, username: str, **extra: Any) -> dict[str, Any]:
    return {"type": f"{kind}Response", "status": 200, "username": username, **extra}


def contact_request_recv(sender: str) -> dict[str, Any]:
    return {"type": "ContactRequestRecv", "status": 200, "from": sender}


def contact_accept_recv(username: str, online: bool) -> dict[str, Any]:
    return {"type": "ContactAcceptRecv", "status": 200, "username": username, "online": online}


def contact_remove_recv(username: str) -> dict[str, Any]:
    return {"type": "ContactRemoveRecv", "status": 200, "username": username}


def contact_list_response(
    contacts: list[dict[str, Any]], pending: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"type": "ContactListResponse", "status": 200, "contacts": contacts, "pending": pending}


def presence_recv(username: str, online: bool) -> dict[str, Any]:
    return {"type": "PresenceRecv", "status": 200, "username": username, "online": online}


def message_edit_response(message_id: int) -> dict[str, Any]:
    return {"type": "MessageEditResponse", "status": 200, "id": message_id}


def message_delete_response(message_id: int) -> dict[str, Any]:
    return {"type": "MessageDeleteResponse", "status": 200, "id": message_id}


def message_edited(
    message_id: int, chatname: str, sender: str, content: str, mentions: Sequence[str] = ()
) -> dict[str, Any]:
    edited = {"type": "MessageEdited", "status": 200, "id": message_id, "chatname": chatname,
              "sender": sender, "content": content}
    if mentions:
        edited["mentions"] = list(mentions)
    return edited


def message_deleted(message_id: int, chatname: str, sender: str) -> dict[str, Any]:
    return {"type": "MessageDeleted", "status": 200, "id": message_id, "chatname": chatname,
            "sender": sender}


def heartbeat_response(payload: Any) -> dict[str, Any]:
    return {"type": "HeartbeatResponse", "status": 200, "payload": payload}


def group_members_response(chatname: str, members: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "GroupMembersResponse", "status": 200, "chatname": chatname, "members": members}


def group_info_response(
    chatname: str, creator: str, created: str, topic: str, settings: dict[str, Any],
    members: list[dict[str, Any]], directory: bool = False,
) -> dict[str, Any]:
    """*directory*: the group's membership follows the campus directory (group sync)."""
    return {
        "type": "GroupInfoResponse", "status": 200, "chatname": chatname, "creator": creator,
        "created": created, "topic": topic, "settings": settings, "members": members,
        "directory": directory,
    }


def group_role_response(chatname: str, user: str, role: str) -> dict[str, Any]:
    return {"type": "GroupRoleResponse", "status": 200, "chatname": chatname, "user": user,
            "role": role}


def group_update_response(chatname: str, topic: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {"type": "GroupUpdateResponse", "status": 200, "chatname": chatname, "topic": topic,
            "settings": settings}


def group_directory_response(groups: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "GroupDirectoryResponse", "status": 200, "groups": groups}
def group_add_response(chatname: str, added: list[str], already: list[str]) -> dict[str, Any]:
    return {"type": "GroupAddResponse", "status": 200, "chatname": chatname, "added": added,
            "already": already}


def group_remove_response(chatname: str, user: str, banned: bool) -> dict[str, Any]:
    return {"type": "GroupRemoveResponse", "status": 200, "chatname": chatname, "user": user,
            "banned": banned}


def group_removed(chatname: str, by: str, reason: str, banned: bool) -> dict[str, Any]:
    """What a member removed from a group (or whose group an operator deleted) is told
    (GroupRemovedRecv)."""
    return {"type": "GroupRemovedRecv", "status": 200, "chatname": chatname, "by": by,
            "reason": reason, "banned": banned}


def group_unban_response(chatname: str, user: str) -> dict[str, Any]:
    return {"type": "GroupUnbanResponse", "status": 200, "chatname": chatname, "user": user}


def group_mute_response(chatname: str, user: str, muted_until: str | None) -> dict[str, Any]:
    return {"type": "GroupMuteResponse", "status": 200, "chatname": chatname, "user": user,
            "muted_until": muted_until}


def group_invite_response(
    chatname: str, code: str, max_uses: int | None, expires: str
) -> dict[str, Any]:
    return {"type": "GroupInviteResponse", "status": 201, "chatname": chatname, "code": code,
            "max_uses": max_uses, "expires": expires}


def group_join_response(chatname: str, already: bool = False) -> dict[str, Any]:
    reply: dict[str, Any] = {"type": "GroupJoinResponse", "status": 200, "chatname": chatname}
    if already:
        reply["already"] = True
    return reply
def block_response(kind: str, username: str) -> dict[str, Any]:
    """BlockResponse or UnblockResponse."""
    return {"type": f"{kind}Response", "status": 200, "username": username}


def block_list_response(blocked: list[dict[str, str]]) -> dict[str, Any]:
    return {"type": "BlockListResponse", "status": 200, "blocked": blocked}


def settings_response(settings: dict[str, Any]) -> dict[str, Any]:
    return {"type": "SettingsResponse", "status": 200, **settings}


def group_event(chatname: str, event: str, user: str, by: str, **detail: Any) -> dict[str, Any]:
    """What the other members are told of a change to the group (GroupEventRecv).

    A stored event also carries its message ``id`` and ``timestamp`` (in
    *detail*): it has its place in the group's history.
    """
    return {"type": "GroupEventRecv", "status": 200, "chatname": chatname, "event": event,
            "user": user, "by": by, **detail}


def report_response(report_id: int) -> dict[str, Any]:
    return {"type": "ReportResponse", "status": 201, "report_id": report_id}


def report_list_response(reports: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"type": "ReportListResponse", "status": 200, "reports": reports, "more": more}


def report_resolve_response(report_id: int, action: str) -> dict[str, Any]:
    return {"type": "ReportResolveResponse", "status": 200, "report_id": report_id,
            "action": action}


def moderation_warning(report_id: int, note: str) -> dict[str, Any]:
    """What a reported user is told when a server admin resolves the report with a warning."""
    return {"type": "ModerationWarningRecv", "status": 200, "report_id": report_id, "note": note}
def announce_response(announcement_id: int) -> dict[str, Any]:
    return {"type": "AnnounceResponse", "status": 201, "id": announcement_id}


def announcement_recv(
    announcement_id: int, content: str, by: str, timestamp: str, offline: bool = False
) -> dict[str, Any]:
    message = {"type": "AnnouncementRecv", "status": 200, "id": announcement_id,
               "content": content, "by": by, "timestamp": timestamp}
    if offline:
        message["offline"] = True
    return message


def user_ban_response(username: str, until: str | None) -> dict[str, Any]:
    return {"type": "UserBanResponse", "status": 200, "username": username, "until": until}


def password_change_response() -> dict[str, Any]:
    return {"type": "PasswordChangeResponse", "status": 200}


def session_list_response(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "SessionListResponse", "status": 200, "sessions": sessions}


def session_revoke_response(session_id: str) -> dict[str, Any]:
    return {"type": "SessionRevokeResponse", "status": 200, "id": session_id}


def profile_response(
    username: str, display_name: str | None, status_text: str | None
) -> dict[str, Any]:
    return {"type": "ProfileResponse", "status": 200, "username": username,
            "display_name": display_name, "status_text": status_text}


def user_unban_response(username: str) -> dict[str, Any]:
    return {"type": "UserUnbanResponse", "status": 200, "username": username}


def account_delete_response() -> dict[str, Any]:
    return {"type": "AccountDeleteResponse", "status": 200}


def read_response(key: str, name: str, message_id: int) -> dict[str, Any]:
    return {"type": "ReadResponse", "status": 200, key: name, "id": message_id}


def read_recv(key: str, name: str, username: str, message_id: int) -> dict[str, Any]:
    """*username* has read up to *message_id* in the conversation named ``{key: name}``."""
    return {"type": "ReadRecv", "status": 200, key: name, "username": username, "id": message_id}


def conversations_response(conversations: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"type": "ConversationsResponse", "status": 200, "conversations": conversations,
            "more": more}


# A group's system events in words: the content of the stored event, which is
# what history shows to a client that knows nothing of events.
EVENT_WORDS = {
    "added": "{by} added {user}",
    "removed": "{by} removed {user}",
    "banned": "{by} banned {user}",
    "unbanned": "{by} unbanned {user}",
    "left": "{user} left",
    "joined": "{user} joined",
    "role": "{by} made {user} {role}",
    "muted": "{by} muted {user} until {until}",
    "unmuted": "{by} unmuted {user}",
    "renamed": "{by} renamed the group from {old_name} to {new_name}",
    "topic": "{by} set the topic: {topic}",
    "settings": "{by} changed the group's settings",
}


def event_words(event: str, user: str, by: str, detail: dict[str, Any]) -> str:
    """The event in words ("bob added carol"), with its reason when it has one."""
    fields = {key: str(value) for key, value in detail.items()}
    fields.update(user=user, by=by)
    template = EVENT_WORDS.get(event, "{by}: " + event + " {user}")
    try:
        words = template.format_map(fields)
    except KeyError:
        words = f"{by}: {event} {user}"
    reason = detail.get("reason")
    return f"{words} ({reason})" if reason else words


# Computed once, from the builders above (an int, never changed).
MESSAGE_ENVELOPE = _largest_envelope()
