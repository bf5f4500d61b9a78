"""What may come from Redis: the shape of every cluster message, checked before use.

Anyone who can write to the cluster's Redis can publish on its channels, so
what arrives there is data, not trusted input: a node checks every event and
every forwarded message against the shapes below before it touches the
registry or a connection. Something that does not fit raises
:class:`BadClusterMessage`, which names the reason, the event's kind and the
field at fault (never the payload), and the backplane logs, counts and drops
it. The limits are documented in docs/cluster.md and docs/security.md.

Adding an event kind is one line in :data:`EVENT_FIELDS`: its name and the
check of each required field (the checks are the small functions here).
Fields an event carries beyond those are ignored. A kind this node does not
know is refused, so in a rolling upgrade the older nodes count the newer
kinds as rejected until they are upgraded too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from chateau.names import MAX_CHATNAME_LENGTH, MAX_USERNAME_LENGTH
from chateau.safety import CHOICES

# A node's name, as [cluster] node_name allows it.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

# An event (a JSON object on the events channel or a node's channel).
MAX_EVENT_BYTES = 4 * 1024 * 1024
# Users in a hello, members of a group, recipients of one forwarded message.
MAX_NAMES = 100_000
# A fence token (16 hex digits today).
MAX_TOKEN_LENGTH = 64

# The reasons a message is refused, the label values of the rejection metric.
REASONS = ("size", "encoding", "json", "shape", "kind", "field")


class BadClusterMessage(ValueError):
    """A message from Redis that does not fit; it is dropped."""

    def __init__(self, reason: str, detail: str, kind: str = "-", field: str = "-") -> None:
        super().__init__(f"{reason}: {detail} (kind {kind}, field {field})")
        self.reason = reason
        self.detail = detail
        self.kind = kind
        self.field = field


# -- field checks: each returns what is wrong with a value, or None ------------

Check = Callable[[Any], "str | None"]


class _Name:
    """A name (user, group, token): a printable string of 1 to *limit* characters."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"not a string but {type(value).__name__}"
        if not 0 < len(value) <= self.limit:
            return f"length {len(value)} outside 1-{self.limit}"
        if not value.isprintable():
            return "control characters"
        return None

    def all_fit(self, values: list[Any]) -> bool:
        """Whether every item of a non-empty list fits, checked in C loops.

        A forward names hundreds of users, once per message: one Python
        call per name would cost more than the rest of parsing it.
        """
        try:
            joined = "".join(values)
        except TypeError:
            return False  # not all strings: the item-by-item check says which
        return (
            joined.isprintable() and min(map(len, values)) > 0
            and max(map(len, values)) <= self.limit
        )


def _name(limit: int) -> _Name:
    return _Name(limit)


username = _name(MAX_USERNAME_LENGTH)
chatname = _name(MAX_CHATNAME_LENGTH)


def node_name(value: Any) -> str | None:
    if not isinstance(value, str) or not NODE_NAME.fullmatch(value):
        return "not a node name"
    return None


def token(value: Any) -> str | None:
    return _name(MAX_TOKEN_LENGTH)(value)


def message_id(value: Any) -> str | None:
    # bool is an int to Python, never to us.
    if isinstance(value, bool) or not isinstance(value, int):
        return f"not an integer but {type(value).__name__}"
    if not 0 <= value < 2 ** 63:
        return "out of range"
    return None


def flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"not true/false but {type(value).__name__}"


def one_of(*values: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in values else "not one of " + ", ".join(values)

    return check
# The last millisecond of the year 9999: the latest moment a timestamp can show.
MAX_MILLIS = 253_402_300_799_999


def millis(value: Any) -> str | None:
    """A moment in ms since the epoch (0 for none)."""
    problem = message_id(value)
    if problem is None and value > MAX_MILLIS:
        return "past the year 9999"
    return problem


def role(value: Any) -> str | None:
    return None if value in ("owner", "admin", "member") else "not a role"


def names_of(check: Check, least: int = 0, most: int = MAX_NAMES) -> Check:
    def names(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"not a list but {type(value).__name__}"
        if not least <= len(value) <= most:
            return f"{len(value)} items, outside {least}-{most}"
        if value and isinstance(check, _Name) and check.all_fit(value):
            return None
        for item in value:
            problem = check(item)
            if problem is not None:
                return f"an item: {problem}"
        return None

    return names


def settings_of(value: Any) -> str | None:
    """A user's whole settings (chateau.safety.CHOICES)."""
    if not isinstance(value, dict):
        return f"not an object but {type(value).__name__}"
    for name, choices in CHOICES.items():
        item = value.get(name)
        if choices is bool:
            if not isinstance(item, bool):
                return f"{name} is not true/false"
        elif item not in choices:  # type: ignore[operator]
            return f"{name} is not one of its values"
    return None


# kind -> {field: check}; every event also has "t" and "node", and may have "fence".
EVENT_FIELDS: dict[str, dict[str, Check]] = {
    "hello": {"users": names_of(username)},
    "join": {"user": username},
    "leave": {"user": username},
    "reset": {},
    "refence": {"fence": token},
    "fence": {"token": token, "last": message_id},
    "group": {"chatname": chatname, "creator": username,
              "members": names_of(username, least=1)},
    "group_started": {"chatname": chatname},
    "member_left": {"chatname": chatname, "user": username},
    "group_renamed": {"chatname": chatname, "new_name": chatname},
    "group_settings": {"chatname": chatname, "who_can_send": one_of("everyone", "admins")},
    "members_added": {"chatname": chatname, "users": names_of(username, least=1)},
    "member_role": {"chatname": chatname, "user": username, "role": role},
    # until: ms since the epoch; 0 lifts the mute.
    "member_muted": {"chatname": chatname, "user": username, "until": millis},
    "pair": {"chatname": chatname, "members": names_of(username, least=2, most=2)},
    "pair_end": {"chatname": chatname},
    "contacts": {"first": username, "second": username, "linked": flag},
    "block": {"blocker": username, "blocked": username, "on": flag},
    "apart": {"first": username, "second": username},
    "settings": {"user": username, "settings": settings_of},
}


def _field(event: dict[str, Any], kind: str, name: str, check: Check) -> None:
    if name not in event:
        raise BadClusterMessage("field", "missing", kind, name)
    problem = check(event[name])
    if problem is not None:
        raise BadClusterMessage("field", problem, kind, name)


def _json(raw: bytes, what: str, kind: str = "-", field: str = "-") -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadClusterMessage("encoding", f"{what} is not UTF-8", kind, field) from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadClusterMessage("json", f"{what} is not JSON", kind, field) from None


def parse_event(raw: bytes) -> dict[str, Any]:
    """The event in *raw*, checked against :data:`EVENT_FIELDS`."""
    if len(raw) > MAX_EVENT_BYTES:
        raise BadClusterMessage("size", f"{len(raw)} bytes, over {MAX_EVENT_BYTES}")
    event = _json(raw, "the event")
    if not isinstance(event, dict):
        raise BadClusterMessage("shape", f"not an object but {type(event).__name__}")
    kind = event.get("t")
    if not isinstance(kind, str):
        raise BadClusterMessage("kind", f"the kind is not a string but {type(kind).__name__}")
    if kind not in EVENT_FIELDS:
        raise BadClusterMessage("kind", f"unknown kind {kind[:32]!r}")
    _field(event, kind, "node", node_name)
    if "fence" in event:
        _field(event, kind, "fence", token)
    for name, check in EVENT_FIELDS[kind].items():
        _field(event, kind, name, check)
    return event


@dataclass(frozen=True)
class Forward:
    """A message another node routed to users here (``M`` header ``\\n`` payload)."""

    origin: str
    usernames: list[str]
    payload: bytes
    message_id: int | None
    # Whose words it carries: users here who block them do not get it.
    sender: str | None = None


def parse_forward(raw: bytes, max_payload: int) -> Forward:
    """The forwarded message in *raw* (without its leading ``M``), checked."""
    header, newline, payload = raw.partition(b"\n")
    if not newline:
        raise BadClusterMessage("shape", "no header line", "forward")
    if len(header) > MAX_EVENT_BYTES:
        raise BadClusterMessage("size", f"header of {len(header)} bytes", "forward", "header")
    if len(payload) > max_payload:
        raise BadClusterMessage(
            "size", f"{len(payload)} bytes, over {max_payload}", "forward", "payload"
        )
    route = _json(header, "the header", "forward", "header")
    if not isinstance(route, dict):
        raise BadClusterMessage("shape", "the header is not an object", "forward", "header")
    _field(route, "forward", "o", node_name)
    _field(route, "forward", "u", names_of(username, least=1))
    identifier = route.get("i")
    if identifier is not None:
        _field(route, "forward", "i", message_id)
    sender = route.get("s")
    if sender is not None:
        _field(route, "forward", "s", username)
    # The payload goes to clients as a text frame: it must be one JSON object.
    body = _json(payload, "the payload", "forward", "payload")
    if not isinstance(body, dict):
        raise BadClusterMessage("shape", "the payload is not an object", "forward", "payload")
    return Forward(route["o"], route["u"], payload, identifier, sender)
