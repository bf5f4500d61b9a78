"""What every handler is given, and the checks several handlers share."""

from __future__ import annotations

from dataclasses import dataclass
import json
import unicodedata
from typing import Any, Awaitable, Callable, Iterable

from twisted.internet.defer import Deferred, succeed

from chateau import messages, permissions
from chateau.announcements import Announcer
from chateau.auth import Authenticator
from chateau.catchup import CatchUp
from chateau.config import Config
from chateau.connection import Connection
from chateau.delivery import Delivery
from chateau.errors import FORBIDDEN, NOT_FOUND, NOT_IMPLEMENTED, TOO_LARGE, BadRequest, ChateauError
from chateau.metrics import Metrics
from chateau.receipts import ReadReceipts
from chateau.names import canonical
from chateau.registry import Registry
from chateau.store import Store
from chateau.store.records import OWNER, StoredMessage, iso_timestamp, now_millis

Reply = dict[str, Any] | None

# A coroutine, or (the message send) a function returning a Deferred; either
# may raise ChateauError to refuse (see chateau.handlers.dispatch).
Handler = Callable[["Services", Connection, Any], "Awaitable[Reply] | Deferred[Reply]"]


@dataclass(frozen=True)
class Services:
    """The collaborators of every handler, built once when the server is."""

    config: Config
    registry: Registry
    store: Store
    auth: Authenticator
    delivery: Delivery
    catch_up: CatchUp
    metrics: Metrics
    # Announcements to users online here, and at sign-in (chateau.announcements).
    announcer: Announcer
    # Read receipts to others, one per reader and conversation per 2 s (chateau.receipts).
    receipts: ReadReceipts
    # Whether the campus directory has a user of this name (on its pool, with
    # its timeout); None when directory sign-in is off. Users and groups share
    # one namespace, so a group may not take a name the directory may give.
    directory_has: Callable[[str], Deferred[bool]] | None = None
    # Before a directory account resumes: whether the directory still lets it in
    # (chateau.deprovisioning; looks only when the last check is an interval
    # old). None when directory sign-in is off.
    directory_recheck: Callable[[str], Awaitable[bool]] | None = None

    @property
    def stores_messages(self) -> bool:
        return self.config.chat.store_messages


def record_message(
    ctx: Services, chat: str, sender: str, content: str, recipient: str | None = None,
    event: str | None = None,
) -> Deferred[StoredMessage]:
    """Commit a message (or, with storage off, just number it)."""
    if ctx.stores_messages:
        return ctx.store.messages.add_message(chat, sender, content, recipient, event)
    return succeed(StoredMessage(ctx.delivery.next_unstored_id(), iso_timestamp(now_millis())))


def group_event(
    ctx: Services, chatname: str, members: Iterable[str], event: str, user: str, by: str,
    skip: Connection | None = None, **detail: Any,
) -> Deferred[dict[str, Any]]:
    """Store a group's system event in its history and push it to *members*.

    The event is a message of the group (sender *by*, its words as content,
    its fields in ``messages.event``), committed through the message writer
    like any other, so members who were offline get it at catch-up, history
    shows it in its place, and ids stay in routing order. *members* is
    taken as it is now: pass a list, not the registry's live set. Fires
    with the ``GroupEventRecv`` pushed.
    """
    recipients = list(members)
    words = messages.event_words(event, user, by, detail)
    body = json.dumps({"event": event, "user": user, "by": by, **detail})

    def route(stored: StoredMessage) -> dict[str, Any]:
        push = messages.group_event(
            chatname, event, user, by, **detail, id=stored.id, timestamp=stored.timestamp
        )
        ctx.delivery.deliver(recipients, push, skip=skip, message_id=stored.id)
        ctx.delivery.routed(stored.id)
        return push

    return record_message(ctx, chatname, by, words, event=body).addCallback(route)


def require_stored_messages(ctx: Services, feature: str) -> None:
    if not ctx.stores_messages:
        raise ChateauError(
            NOT_IMPLEMENTED,
            f"{feature} is off: this server keeps no messages ([chat] store_messages = false)",
        )


def has_control_characters(text: str) -> bool:
    """Whether *text* holds a control character (Unicode Cc: NUL, tab, newline, escape...)."""
    return any(unicodedata.category(char) == "Cc" for char in text)


def check_content(ctx: Services, content: str) -> None:
    if not content:
        raise BadRequest("content must not be empty")
    if "\x00" in content:
        raise BadRequest("content must not contain NUL characters")
    limit = ctx.config.chat.max_content_length
    if len(content) > limit:
        raise ChateauError(TOO_LARGE, f"content is longer than {limit} characters")
    check_wire_size(ctx, content)


def check_wire_size(ctx: Services, content: str) -> None:
    """Refuse (413) content some frame carrying it could not fit in ``max_message_size``.

    A stored message is pushed live, pushed again at catch-up (with more
    fields), edited, and paged in history; every one of those frames must
    fit the limit that clients may apply to what they read. Short content
    cannot come near it, so only long content is measured (once, exactly,
    as it will be encoded).
    """
    frame_limit = ctx.config.server.max_message_size
    if len(content) * messages.MAX_CHARACTER_BYTES + messages.MESSAGE_ENVELOPE <= frame_limit:
        return
    size = messages.largest_message_frame(content)
    if size > frame_limit:
        room = frame_limit - messages.MESSAGE_ENVELOPE
        raise ChateauError(
            TOO_LARGE,
            f"content takes {messages.content_wire_size(content)} bytes on the wire (as JSON, "
            f"UTF-8); at most {room} fit in a frame of [server] max_message_size "
            f"({frame_limit} bytes): send it in parts",
        )


async def require_permission(
    ctx: Services, user: str, action: str, role: str | None, refusal: str, *,
    target: str | None = None, who_can_add: str = "admins", who_can_send: str = "everyone",
) -> str:
    """The role *user* acts with for *action* in a group; 403 with *refusal* if none may.

    *role* is their role in the group (None when not a member). The group's
    table (chateau.permissions) decides; a server admin, asked of the
    database only when the table refuses, acts as an owner.
    """
    settings = {"target": target, "who_can_add": who_can_add, "who_can_send": who_can_send}
    if permissions.may(action, role, **settings):
        assert role is not None
        return role
    if permissions.may(action, OWNER, **settings) and await ctx.store.accounts.is_admin(user):
        return OWNER
    raise ChateauError(FORBIDDEN, refusal)


def fill_page(
    page: dict[str, Any], key: str, entries: Iterable[dict[str, Any]], msg_id: Any,
    frame_limit: int,
) -> dict[str, Any]:
    """Add *entries* to ``page[key]`` while the page's frame fits in *frame_limit* bytes.

    The reply is measured as the protocol will send it (with *msg_id*). A
    page that stops early says ``more: true``, so the client asks again; it
    always holds at least one entry, however large (frames the server builds
    are never dropped for their size). History and report lists page so.
    """
    page["msg_id"] = msg_id
    size = len(messages.encode(page))
    filled: list[dict[str, Any]] = page[key]
    for entry in entries:
        # Its bytes, and the comma before it.
        cost = len(messages.encode(entry)) + (1 if filled else 0)
        if filled and size + cost > frame_limit:
            page["more"] = True
            break
        filled.append(entry)
        size += cost
    del page["msg_id"]  # the protocol adds it to every reply
    return page


def lookup(raw: str) -> str:
    """The canonical form of a user or chat name to look up.

    No name holds NUL (the name rules forbid it, and PostgreSQL could not
    even be asked), so such a name is unknown without asking.
    """
    if "\x00" in raw:
        return ""
    return canonical(raw)


def require_membership(ctx: Services, user: str, chatname: str) -> set[str] | tuple[str, str]:
    """The members of a group or random chat *user* is in; 403 or 404 otherwise."""
    pair = ctx.registry.pair(chatname)
    if pair is not None:
        if user not in pair.members:
            raise ChateauError(FORBIDDEN, f"you are not in the random chat {chatname!r}")
        return pair.members
    group = ctx.registry.group(chatname)
    if group is None:
        raise ChateauError(NOT_FOUND, f"no such group: {chatname!r}")
    if user not in group.members:
        raise ChateauError(FORBIDDEN, f"you are not a member of {chatname!r}")
    return group.members


async def existing_other_user(ctx: Services, me: str, raw: str) -> str:
    """Another user's canonical name: 400 for your own, 404 for nobody."""
    other = lookup(raw)
    if other == me:
        raise BadRequest("that is your own name")
    if not ctx.registry.is_online(other) and not await ctx.store.accounts.user_exists(other):
        raise ChateauError(NOT_FOUND, f"no such user: {raw!r}")
    return other
