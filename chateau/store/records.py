"""What the store hands back: plain records and the helpers that make them.

Nothing here touches SQLAlchemy, so the layers above the store (the chat,
the handlers, the checkers) import their data types from here and never
see a row or a connection.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any


class _AnyOrigin:
    """Sentinel: messages of every origin (a server running alone)."""

    def __repr__(self) -> str:
        return "ANY_ORIGIN"


ANY_ORIGIN: Any = _AnyOrigin()


def direct_chat(first: str, second: str) -> str:
    """The stored chat key of the direct conversation between two users."""
    low, high = sorted((first, second))
    return f"@{low}:{high}"


def hash_session_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_session_id() -> str:
    """A session key's public name (16 hex characters): random, never derived from the key."""
    return secrets.token_hex(8)


def iso_timestamp(millis: int) -> str:
    """Milliseconds since the epoch as the wire's ISO 8601 UTC timestamp."""
    moment = datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_millis() -> int:
    return int(time.time() * 1000)


# names.kind of a name nobody may take until names.held_until: a renamed
# directory user's old name ([ldap] rename_hold_days).
HELD = "held"

# users.banned_until of a ban "until unbanned": the largest 64-bit integer.
BAN_FOREVER = 2**63 - 1


@dataclass(frozen=True)
class UserRecord:
    username: str
    password_hash: str | None
    auth_method: str
    display_name: str | None
    disabled: bool
    delivered_until: int = 0
    is_admin: bool = False
    # A server-wide ban: until when (ms; BAN_FOREVER until unbanned), and why.
    banned_until: int | None = None
    ban_reason: str | None = None
    # What the user shows next to their name (ProfileRequest).
    status_text: str | None = None

    def ban_refusal(self, now: int | None = None) -> str | None:
        """Why a sign-in is refused now ("banned until ...: reason"), or None.

        A timed ban ends by itself: past *banned_until* (compared with
        *now*, this host's clock by default) the account signs in again.
        """
        if self.banned_until is None:
            return None
        if self.banned_until <= (now_millis() if now is None else now):
            return None
        return f"banned until {ban_end(self.banned_until)}: {self.ban_reason or ''}"


def ban_end(banned_until: int) -> str:
    """How a ban's end is written on the wire: an ISO timestamp, or "unbanned"."""
    return "unbanned" if banned_until >= BAN_FOREVER else iso_timestamp(banned_until)


@dataclass(frozen=True)
class NameClaim:
    """What taking *name* in the shared namespace came to.

    True when the name was taken; otherwise ``blocked_by`` is the existing
    name in the way: the same name, or one that looks like it (equal UTS #39
    skeletons, :attr:`confusable`).
    """

    name: str
    blocked_by: str | None = None
    # When blocked_by is a held name (names.kind "held"): until when (ms).
    held_until: int | None = None

    def __bool__(self) -> bool:
        return self.blocked_by is None

    @property
    def confusable(self) -> bool:
        return self.blocked_by is not None and self.blocked_by != self.name


@dataclass(frozen=True)
class NameCollision:
    """An existing name flagged for the operator: it looks like an older one."""

    name: str
    kind: str
    confusable_with: str
    other_kind: str
    flagged_at: int


@dataclass(frozen=True)
class GroupRecord:
    chatname: str
    creator: str
    members: frozenset[str]
    started: bool
    # What the send check needs without the database (registry.Group): the
    # roles above member, members muted (until, in ms), and who may send.
    roles: tuple[tuple[str, str], ...] = ()
    muted: tuple[tuple[str, int], ...] = ()
    who_can_send: str = "everyone"


@dataclass(frozen=True)
class BanRecord:
    username: str
    by: str
    reason: str
    at: int


@dataclass(frozen=True)
class AddOutcome:
    """What adding people to a group came to, in one transaction.

    *refusal* names why nobody was added: "no_group", "missing" (*who* is no
    user), "banned" (*who*), "full" (the group would pass its limit),
    "too_many_groups" (*who* is in the most groups allowed), "closed" (not
    public and open), "no_code", "synced" (its membership follows the
    directory); else *added* and *already* (members before).
    """

    chatname: str
    added: tuple[str, ...] = ()
    already: tuple[str, ...] = ()
    refusal: str | None = None
    who: str | None = None
    creator: str = ""
    members: tuple[str, ...] = ()


# A member's role in a group: owners set roles, admins govern members.
OWNER = "owner"
ADMIN = "admin"
MEMBER = "member"
ROLES = (OWNER, ADMIN, MEMBER)


@dataclass(frozen=True)
class MemberRecord:
    username: str
    role: str
    joined_at: int
    # Until when (ms) the member may not send; None when not muted.
    muted_until: int | None
    # Their profile (ProfileRequest), shown in member lists.
    display_name: str | None = None
    status_text: str | None = None


@dataclass(frozen=True)
class DeviceRecord:
    """One live session key of a user, as SessionListResponse shows it (never the key)."""

    id: str
    created_at: int
    last_used_at: int | None
    address: str | None
    client_name: str | None
    # Whether it is the key of the connection that asked.
    current: bool


@dataclass(frozen=True)
class ProfileRecord:
    username: str
    auth_method: str
    display_name: str | None
    status_text: str | None


@dataclass(frozen=True)
class GroupInfoRecord:
    chatname: str
    creator: str
    created_at: int
    topic: str
    join_rule: str
    visibility: str
    who_can_add: str
    who_can_send: str
    # Oldest member first.
    members: tuple[MemberRecord, ...]
    # The directory group it follows ([ldap] sync_base); None for others.
    directory_dn: str | None = None
    # Days its messages are kept (0: forever); None: the server's retention.
    retention_days: int | None = None


@dataclass(frozen=True)
class RemovalNotice:
    """A removal from a group its member has not been told of (GroupRemovedRecv)."""

    chatname: str
    by: str
    reason: str
    banned: bool


@dataclass(frozen=True)
class StoredMessage:
    id: int
    timestamp: str


@dataclass(frozen=True)
class MessageRecord:
    """One stored message, as history and offline delivery see it."""

    id: int
    chat: str
    recipient: str | None
    sender: str
    content: str | None
    timestamp: str
    edited: bool
    deleted: bool
    origin: str | None = None
    # A group's system event ({"event", "user", "by", ...}); None for what
    # people wrote.
    event: dict[str, Any] | None = None
    # Written by someone the reader of history blocks: shown as a gap only.
    hidden: bool = False
    # Who a group message mentions (messages.mentions; chateau.mentions).
    mentions: tuple[str, ...] = ()
    # A change row's target (the message edited or deleted); None otherwise.
    changes: int | None = None

    def history_entry(self) -> dict[str, Any]:
        if self.hidden:
            return {"id": self.id, "timestamp": self.timestamp, "hidden": True}
        entry = {
            "id": self.id,
            "sender": self.sender,
            "content": None if self.deleted else self.content,
            "timestamp": self.timestamp,
            "edited": self.edited,
            "deleted": self.deleted,
        }
        if self.event is not None:
            entry["event"] = self.event
        if self.mentions and not self.deleted:
            entry["mentions"] = list(self.mentions)
        return entry


@dataclass(frozen=True)
class ContactBook:
    """A user's accepted contacts and pending requests (name, "incoming"/"outgoing", when)."""

    contacts: list[str]
    pending: list[tuple[str, str, int]]


@dataclass(frozen=True)
class InviteRecord:
    """An invite code as ``chateau-admin invite list`` shows it (never the code)."""

    id: int
    uses: int
    created_at: int
    expires_at: int | None


# A report's state: open until a server admin resolves it.
REPORT_OPEN = "open"
REPORT_CLOSED = "closed"


@dataclass(frozen=True)
class ReportRecord:
    """One report, as moderators read it (times in ms; snapshot decoded)."""

    id: int
    reporter: str
    reason: str
    username: str | None
    chatname: str | None
    message_id: int | None
    snapshot: dict[str, Any]
    created_at: int
    status: str
    resolved_by: str | None
    resolved_at: int | None
    action: str | None
    note: str | None

    def entry(self) -> dict[str, Any]:
        """The report as ReportListResponse and ``chateau-admin reports show`` give it."""
        return {
            "report_id": self.id, "reporter": self.reporter, "reason": self.reason,
            "username": self.username, "chatname": self.chatname,
            "message_id": self.message_id, "snapshot": self.snapshot,
            "created": iso_timestamp(self.created_at), "status": self.status,
            "resolved_by": self.resolved_by,
            "resolved": None if self.resolved_at is None else iso_timestamp(self.resolved_at),
            "action": self.action, "note": self.note,
        }


# Names bound into one ``IN (...)`` at most. SQLite refuses a statement with
# more than 32,766 parameters, and every statement of a new length is
# prepared and cached anew (each as large as its list), so a list of every
# user online would fail at that many and, below it, fill the statement
# cache with ever longer statements (docs/performance.md).
IN_SLICE = 512


def in_slices(names: list[str]) -> list[list[str]]:
    """*names* cut into lists of at most :data:`IN_SLICE`, each padded (by
    repeating its last name, which ``IN`` ignores) to a power of two, so that
    ten statement shapes serve every length."""
    slices = []
    for start in range(0, len(names), IN_SLICE):
        part = names[start:start + IN_SLICE]
        size = 1
        while size < len(part):
            size *= 2
        slices.append(part + [part[-1]] * (size - len(part)))
    return slices
