"""Property-based fuzzing: the decoder with pure inputs, the handlers over live connections.

**Decoder level.** ``parse_json`` + ``decode_request`` get arbitrary bytes, arbitrary JSON
values and near-valid requests (a valid request of each type with a field deleted,
mistyped or replaced by any JSON, extra fields, huge integers, deep nesting, any
Unicode). Each input must decode to the class its ``type`` names or raise
``BadRequest`` with a detail: anything else would escape ``onMessage`` instead of
becoming a 400.

**Handler level.** pytest-twisted (1.14 and later) knows hypothesis: for an async test
wrapped in ``@given`` it replaces hypothesis's inner test with one that runs each
example as a Deferred on the reactor greenlet and blocks until it fires
(``blockon``). Hypothesis therefore generates, runs and shrinks examples exactly as
for a synchronous test while the server and its clients run on the real reactor.
``@given`` has to be the outer decorator, ``ensureDeferred`` the inner one.

The ``arena`` fixture starts one server with four clients per test (and database),
and every example of the test reuses them on purpose: state piles up as on a
long-running server, which is what shakes out bugs, so the function-scoped-fixture
health check is suppressed. Each example first restores what its properties rely on
(the fuzzing client signed in, the anonymous one signed out), sends one batch of
frames from each, pipelined, and reads until a sentinel heartbeat comes back.
Every frame, malformed or not, is answered in the order sent, so when the
sentinel's reply arrives every reply must have arrived. Then two bystanders must
still talk to each other.

**Bugs found.** The tests at the end pin down what this fuzzing found, now
fixed: lone surrogate escapes, integers beyond 64 bits, deep nesting and NUL
once got no reply, a 500, a false 503 ("database unavailable"), a dropped
connection, or lost messages.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import sys
import typing
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import pytest_twisted
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from twisted.internet import defer

from chateau.config import Config, documented_keys
from chateau.errors import BadRequest
from chateau.messages import (
    ABSENT,
    REQUEST_TYPES,
    RegisterRequest,
    Request,
    ResumeRequest,
    decode_request,
    encode,
    parse_json,
)
from tests.deferreds import inline
from tests.wsclient import Client

# -- request schemas, read from the dataclasses --------------------------------

@dataclass(frozen=True)
class FieldSpec:
    name: str
    annotation: Any
    required: bool


def request_fields(cls: type[Request]) -> list[FieldSpec]:
    """The JSON fields of a request class (``msg_id`` aside)."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if f.name == "msg_id":
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        specs.append(FieldSpec(f.name, hints[f.name], required))
    return specs


WIRE_NAMES = sorted(REQUEST_TYPES)
FIELDS = {wire: request_fields(REQUEST_TYPES[wire]) for wire in WIRE_NAMES}

# Values of the wrong JSON type for each annotation, chosen from the protocol's
# field tables rather than from the decoder, so the decoder is not its own oracle.
# Integers are 64-bit, as the database stores them.
_WRONG: dict[Any, list[Any]] = {
    str: [None, True, 0, -1, 1.5, [], {}, ["s"], {"s": "s"}],
    bool: [None, 0, 1, 1.0, "true", "", [], {}, [True]],
    int: [None, True, False, 1.5, 1e3, "1", "", [], {}, [1], 2**63, -(2**63) - 1],
    int | None: [True, False, 2.5, "1", [], {}, [None], 2**64],
    str | None: [True, 0, 1.5, [], {}, ["s"]],
    list[str]: [None, "alice", 1, True, {}, [1], ["a", None], [True], [["a"]], [{}]],
}

# -- JSON strategies -------------------------------------------------------------

# Any code point, NUL and lone surrogates included (JSON carries surrogates as
# \ud800 escapes): both must be refused with a 400.
ANY_TEXT = st.characters(codec=None, exclude_categories=())
# What a WebSocket text frame can carry as it is: UTF-8, so no lone surrogates.
FRAME_TEXT = st.characters(codec="utf-8")

INT64_EDGES = st.sampled_from([2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**31, -(2**31) - 1])
# Beyond 64 bits, up to 4000 digits (Python refuses to even print more than 4300;
# test_decoder_refuses_integers_too_long_to_parse covers those).
HUGE_INTS = st.one_of(
    st.sampled_from([2**63, -(2**63) - 1, 2**64, -(2**64)]),
    st.integers(20, 4000).map(lambda digits: int("9" * digits)),
    st.integers(20, 4000).map(lambda digits: -int("9" * digits)),
)

# Deep nesting in the handler-level fuzzing: from nothing special to well past
# what Python's json module can parse.
MAX_DEPTH = 3000


def json_values(
    chars: st.SearchStrategy[str], ints: st.SearchStrategy[int], max_leaves: int = 12
) -> st.SearchStrategy[Any]:
    scalars = (
        st.none() | st.booleans() | ints
        | st.floats(allow_nan=True, allow_infinity=True) | st.text(chars, max_size=20)
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.text(chars, max_size=8), children, max_size=4),
        max_leaves=max_leaves,
    )


ANY_JSON = json_values(ANY_TEXT, st.integers() | HUGE_INTS)
# Text the protocol accepts: any character but NUL (refused: PostgreSQL cannot
# store it); lone surrogates are no characters and are refused too.
WELL_TEXT = st.characters(codec="utf-8", exclude_characters="\x00")
WELL_JSON = json_values(WELL_TEXT, st.integers() | HUGE_INTS)
HANDLER_JSON = json_values(ANY_TEXT, st.integers() | HUGE_INTS | INT64_EDGES)


# Deep nesting travels as a marker string that to_json() expands into raw JSON
# text: nested Python objects that deep would break json.dumps and hypothesis's
# printing of examples.
DEEP = "\x00deep:"
_DEEP_MARKER = re.compile(r'"\\u0000deep:(\d+)"')


def deep(depth: int) -> str:
    return f"{DEEP}{depth}"


def nested_text(depth: int) -> str:
    """*depth* levels of alternating arrays and objects around a 0."""
    opening = "".join("[" if level % 2 else '{"k":' for level in range(depth))
    closing = "".join("]" if level % 2 else "}" for level in reversed(range(depth)))
    return opening + "0" + closing


def to_json(value: Any, ascii: bool = True) -> str:
    text = json.dumps(value, ensure_ascii=ascii)
    return _DEEP_MARKER.sub(lambda match: nested_text(int(match.group(1))), text)


def decoder_value(annotation: Any) -> st.SearchStrategy[Any]:
    """Well-typed values for a field, from the whole range the protocol allows."""
    if annotation is Any:
        return WELL_JSON
    if annotation == int | None:
        return st.none() | decoder_value(int)
    if annotation == str | None:
        return st.none() | decoder_value(str)
    if annotation == bool | None:
        return st.none() | decoder_value(bool)
    if annotation == list[str]:
        return st.lists(st.text(WELL_TEXT, max_size=20), max_size=5)
    if annotation is str:
        return st.text(WELL_TEXT, max_size=40)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(-(2**63), 2**63 - 1)
    raise AssertionError(f"no strategy for {annotation!r}")


@st.composite
def well_typed_requests(
    draw: st.DrawFn, value_for: Callable[[FieldSpec], st.SearchStrategy[Any]],
    wire: str | None = None,
) -> dict[str, Any]:
    """A request that the protocol says is well formed (its fields may be nonsense)."""
    wire = wire or draw(st.sampled_from(WIRE_NAMES))
    data: dict[str, Any] = {"type": wire}
    for spec in FIELDS[wire]:
        if spec.required or draw(st.booleans()):
            data[spec.name] = draw(value_for(spec))
    if wire == "AccountDeleteRequest" and data.get("password") == PASSWORD:
        # The right password would erase whoever the batch signed in as
        # (tests/test_erasure.py tests that); every wrong one is fuzzed.
        data["password"] = PASSWORD + "!"
    return data


def decoder_field_value(spec: FieldSpec) -> st.SearchStrategy[Any]:
    return decoder_value(spec.annotation)


@st.composite
def mutated_requests(
    draw: st.DrawFn, value_for: Callable[[FieldSpec], st.SearchStrategy[Any]],
    any_json: st.SearchStrategy[Any], chars: st.SearchStrategy[str],
    huge_ints: st.SearchStrategy[int], max_depth: int,
) -> dict[str, Any]:
    """A well-typed request with a few random edits: near-valid input."""
    data = draw(well_typed_requests(value_for))
    for _ in range(draw(st.integers(1, 3))):
        keys = sorted(data)
        edit = draw(st.sampled_from(
            ["delete", "mistype", "replace", "extra", "huge", "deep", "type", "unicode"]))
        key = draw(st.sampled_from(keys)) if keys else "type"
        if edit == "delete" and keys:
            del data[key]
        elif edit == "mistype":
            wire = data.get("type")
            specs = FIELDS.get(wire, []) if isinstance(wire, str) else []
            spec = next((s for s in specs if s.name == key), None)
            if spec is not None and spec.annotation in _WRONG:
                data[key] = draw(st.sampled_from(_WRONG[spec.annotation]))
        elif edit == "replace":
            data[key] = draw(any_json)
        elif edit == "extra":
            data[draw(st.text(chars, min_size=1, max_size=12))] = draw(any_json)
        elif edit == "huge":
            data[key] = draw(huge_ints)
        elif edit == "deep":
            data[key] = deep(draw(st.integers(50, max_depth)))
        elif edit == "type":
            data["type"] = draw(any_json | st.sampled_from(WIRE_NAMES).map(str.lower))
        elif edit == "unicode":
            data[key] = draw(st.text(chars, min_size=1, max_size=30))
    return data


# -- decoder level ---------------------------------------------------------------

DECODER = settings(max_examples=300, deadline=None, database=None)


def decode_or_refuse(payload: bytes) -> Request | None:
    """Decode *payload* as the server does: a typed request, or None after a BadRequest."""
    data: Any = None
    try:
        data = parse_json(payload)
        request = decode_request(data)
    except BadRequest as error:
        assert error.status == 400
        assert isinstance(error.detail, str) and error.detail.strip(), error
        return None
    assert isinstance(data, dict)
    assert type(request) is REQUEST_TYPES[data["type"]]
    assert request.msg_id is data.get("msg_id")
    if is_utf8_bytes(payload):  # all a WebSocket text frame can be (Autobahn checks)
        check_usable(request, data["type"])
    return request


def is_utf8_bytes(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def check_usable(request: Request, wire: str) -> None:
    """An accepted request can be echoed back and stored: what the handlers rely on."""
    # A field the request did not carry, where null is a value of its own, is ABSENT: never echoed.
    values = {spec.name: getattr(request, spec.name) for spec in FIELDS[wire]
              if getattr(request, spec.name) is not ABSENT}
    encode({"msg_id": request.msg_id, **values})  # replies echo msg_id, payload, names...
    for spec in FIELDS[wire]:
        value = values.get(spec.name)
        if spec.annotation in (int, int | None) and value is not None:
            assert -(2**63) <= value < 2**63, f"{wire}.{spec.name} = {value} fits no database"


def encode_json(value: Any) -> bytes:
    return to_json(value).encode()


@DECODER
@given(st.binary(max_size=400))
def test_decoder_arbitrary_bytes(payload: bytes) -> None:
    decode_or_refuse(payload)


@DECODER
@given(st.text(ANY_TEXT, max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_decoder_arbitrary_text(payload: bytes) -> None:
    decode_or_refuse(payload)


@DECODER
@given(ANY_JSON)
def test_decoder_arbitrary_json(value: Any) -> None:
    request = decode_or_refuse(encode_json(value))
    if not isinstance(value, dict):
        assert request is None


@DECODER
@given(st.integers(1, 60_000), st.sampled_from(["[", "{\"a\":", "[{\"k\":"]))
def test_decoder_deep_nesting(depth: int, opener: str) -> None:
    closer = {"[": "]", "{\"a\":": "}", "[{\"k\":": "}]"}[opener]
    decode_or_refuse((opener * depth + "0" + closer * depth).encode())
    decode_or_refuse(encode_json({"type": "HeartbeatRequest", "payload": deep(depth)}))


@DECODER
@given(well_typed_requests(decoder_field_value), WELL_JSON)
def test_decoder_accepts_well_typed_requests(data: dict[str, Any], msg_id: Any) -> None:
    data["msg_id"] = msg_id
    request = decode_or_refuse(encode_json(data))
    assert request is not None, data
    for spec in FIELDS[data["type"]]:
        if spec.name in data:
            assert json.dumps(getattr(request, spec.name)) == json.dumps(data[spec.name])


@DECODER
@given(st.data())
def test_decoder_names_a_missing_required_field(data: st.DataObject) -> None:
    wire = data.draw(st.sampled_from([w for w in WIRE_NAMES if any(s.required for s in FIELDS[w])]))
    request = data.draw(well_typed_requests(decoder_field_value, wire=wire))
    missing = data.draw(st.sampled_from([s.name for s in FIELDS[wire] if s.required]))
    del request[missing]
    with pytest.raises(BadRequest) as caught:
        decode_request(parse_json(encode_json(request)))
    assert repr(missing) in caught.value.detail


@DECODER
@given(st.data())
def test_decoder_names_a_mistyped_field(data: st.DataObject) -> None:
    wire = data.draw(st.sampled_from(
        [w for w in WIRE_NAMES if any(s.annotation in _WRONG for s in FIELDS[w])]))
    request = data.draw(well_typed_requests(decoder_field_value, wire=wire))
    spec = data.draw(st.sampled_from([s for s in FIELDS[wire] if s.annotation in _WRONG]))
    request[spec.name] = data.draw(st.sampled_from(_WRONG[spec.annotation]))
    with pytest.raises(BadRequest) as caught:
        decode_request(parse_json(encode_json(request)))
    assert repr(spec.name) in caught.value.detail


@DECODER
@given(mutated_requests(decoder_field_value, ANY_JSON, ANY_TEXT, HUGE_INTS, max_depth=3000))
def test_decoder_near_valid_requests(data: dict[str, Any]) -> None:
    decode_or_refuse(encode_json(data))


# -- handler level: what to send ------------------------------------------------

# Names the server knows (users, groups) and names it must refuse or not find.
USERS = ["fuzzer", "alice", "bob", "carol"]
GROUPS = ["club", "den"]
ODD_NAMES = [
    "", " ", "ALICE", "Ａｌｉｃｅ", "Club", "c l u b", "club ", "~random-0000000000000000",
    "a" * 33,
    "x" * 65, "Ǆ", "ß", "İstanbul", "\u200b", "a  b", "(uid=*)", "a,b=c", "\n", "nobody",
    "🙂", "ア", "é" * 40,
]
PASSWORD = "secret"
KEY_PLACEHOLDER = "\x00session-key:"  # replaced by the user's real key when sending

known_names = st.sampled_from(USERS + GROUPS)
fresh_names = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)
# one_of picks its branches about evenly: known names come up twice as often.
names = st.one_of(
    known_names, known_names, fresh_names, st.sampled_from(ODD_NAMES),
    st.text(ANY_TEXT, max_size=40),
)
contents = st.one_of(
    st.text(ANY_TEXT, min_size=1, max_size=40), st.text(ANY_TEXT, max_size=80),
    st.sampled_from(["", " ", "\n", "x" * 16384, "y" * 16385]),
)
message_ids = st.integers(-2, 40) | st.integers() | INT64_EDGES | HUGE_INTS
limits = st.integers(-3, 120) | st.integers() | INT64_EDGES
session_keys = (
    st.sampled_from([KEY_PLACEHOLDER + user for user in USERS]) | st.text(ANY_TEXT, max_size=60)
)
recipient_lists = (
    st.lists(st.sampled_from(USERS), min_size=1, max_size=4)
    | st.lists(names, max_size=6)
    | st.integers(995, 1005).map(lambda n: [f"user{i}" for i in range(n)])
    | st.just(["alice"] * 50)
)
payloads = HANDLER_JSON | st.integers(1, MAX_DEPTH).map(deep)

_FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "username": names, "recipient": names, "chatname": names, "user": names | st.none(),
    "recipients": recipient_lists, "content": contents,
    "password": st.just(PASSWORD) | st.text(ANY_TEXT, max_size=30) | st.just("é" * 40),
    "session_key": session_keys, "id": message_ids, "before": message_ids | st.none(),
    "limit": limits, "payload": payloads, "auth": st.booleans(),
    "invite": st.none() | st.text(ANY_TEXT, max_size=40),
    "role": st.sampled_from(["owner", "admin", "member", "Owner", "", "king"])
    | st.text(ANY_TEXT, max_size=10),
    "reason": contents | st.just("x" * 501), "note": contents, "message_id": st.none() | message_ids,
    "report_id": message_ids,
    "status": st.sampled_from(["open", "closed", "all", "Open", ""])
    | st.text(ANY_TEXT, max_size=10),
    "action": st.sampled_from(["dismiss", "warn", "delete_message", "ban_user", "smite", ""])
    | st.text(ANY_TEXT, max_size=10),
    "topic": st.none() | st.text(ANY_TEXT, max_size=40)
    | st.sampled_from(["", "x" * 500, "y" * 501, "a\x00b"]),
    "name": st.none() | names,
    "join": st.none() | st.sampled_from(["invite", "open", "Open", ""]),
    "visibility": st.none() | st.sampled_from(["private", "public", "hidden"]),
    "who_can_add": st.none() | st.sampled_from(["admins", "members", "everyone"]),
    "who_can_send": st.none() | st.sampled_from(["everyone", "admins", "members"])
    | st.text(ANY_TEXT, max_size=8),
    "query": st.none() | st.text(ANY_TEXT, max_size=20)
    | st.sampled_from(["%", "_", "club", "x" * 101, "\x00"]),
    "users": recipient_lists, "ban": st.booleans(),
    "minutes": st.integers(-2, 5) | st.sampled_from([525_600, 525_601]) | INT64_EDGES,
    "max_uses": st.none() | st.integers(-1, 3) | INT64_EDGES,
    "hours": st.none() | st.integers(-1, 3) | st.sampled_from([8760, 8761]) | INT64_EDGES,
    "code": st.none() | st.text(ANY_TEXT, max_size=40) | st.just("x" * 200),
    "direct_messages": st.none() | st.sampled_from(["everyone", "contacts", "Contacts", ""])
    | st.text(ANY_TEXT, max_size=10),
    "presence": st.none() | st.sampled_from(["everyone", "contacts", "nobody", "all"])
    | st.text(ANY_TEXT, max_size=10),
    "random_chat": st.none() | st.booleans(),
    "read_receipts": st.none() | st.booleans(),
    "client": st.none() | st.text(ANY_TEXT, max_size=70)
    | st.sampled_from(["Firefox on Linux", "x" * 64, "y" * 65, "a\tb", ""]),
    # Never the fuzzed users' password: a change that succeeded would lock the
    # arena's sign-ins out (its success is tested in tests/test_self_service.py).
    "old_password": st.text(ANY_TEXT, max_size=30).filter(lambda p: p != PASSWORD)
    | st.sampled_from(["", " ", "é" * 40]),
    "new_password": st.just(PASSWORD) | st.text(ANY_TEXT, max_size=30)
    | st.sampled_from(["", "é" * 40, "a\x00b"]),
    "display_name": st.none() | st.text(ANY_TEXT, max_size=70)
    | st.sampled_from(["", " ", "x" * 64, "y" * 65, "new\nline"]),
    "status_text": st.none() | st.text(ANY_TEXT, max_size=150)
    | st.sampled_from(["", "x" * 140, "y" * 141, "\x07"]),
    "retention_days": st.none() | st.integers(-1, 3) | st.sampled_from([36500, 36501])
    | INT64_EDGES,
}
# SessionRevokeRequest's id is a string (a session's public id), unlike the
# message ids of the other requests: random ones are never anybody's.
session_ids = st.text(ANY_TEXT, max_size=20) | st.sampled_from(
    ["", "0123456789abcdef", "x" * 500])


def handler_field_value(spec: FieldSpec) -> st.SearchStrategy[Any]:
    """Well-typed values that aim at the handlers' interesting cases."""
    strategy = _FIELD_STRATEGIES.get(spec.name)
    if strategy is None:
        raise AssertionError(f"no handler strategy for {spec.name!r}: add one")
    if spec.name == "chatname" and spec.annotation == str | None:
        return strategy | st.none()
    if spec.name == "user" and spec.annotation == str:
        return names
    if spec.name == "id" and spec.annotation == str:
        return session_ids
    return strategy


@dataclass(frozen=True)
class Frame:
    """One WebSocket message to send: JSON objects get a unique msg_id on the way."""

    kind: str  # "object" (a dict), "text" or "binary"
    value: Any
    ascii: bool = True  # for objects: \u escapes, or raw UTF-8


def objects(dicts: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Frame]:
    return st.builds(Frame, st.just("object"), dicts, st.booleans())


# Sign-ins that work, so that later frames of a batch run signed in.
sign_ins = st.one_of(
    st.fixed_dictionaries({"type": st.just("RegisterRequest"),
                           "username": known_names | fresh_names, "password": st.just(PASSWORD)}),
    st.fixed_dictionaries({"type": st.just("ResumeRequest"),
                           "session_key": st.sampled_from([KEY_PLACEHOLDER + u for u in USERS])}),
)

frames = st.one_of(
    objects(sign_ins),
    objects(well_typed_requests(handler_field_value)),
    objects(well_typed_requests(handler_field_value)),
    objects(mutated_requests(handler_field_value, HANDLER_JSON, ANY_TEXT, HUGE_INTS, MAX_DEPTH)),
    objects(st.dictionaries(st.text(ANY_TEXT, max_size=8), HANDLER_JSON, max_size=4)),
    HANDLER_JSON.map(lambda v: Frame("text", json.dumps(v))),
    st.text(FRAME_TEXT, max_size=120).map(lambda s: Frame("text", s)),
    st.binary(max_size=80).map(lambda b: Frame("binary", b)),
)
batches = st.lists(frames, min_size=1, max_size=10)

# -- handler level: what may come back ------------------------------------------

SUCCESS = {
    "RegisterRequest": "RegisterResponse",
    "GroupMessageInitRequest": "GroupMessageInitResponse",
    "GroupMessageRequest": "MessageSendResponse",
    "MessageRequest": "MessageSendResponse",
    "ClientListRequest": "ClientListResponse",
    "RandomMessageRequest": "RandomMessageResponse",
    "GroupLeaveRequest": "GroupLeaveResponse",
    "ResumeRequest": "ResumeResponse",
    "LogoutRequest": "LogoutResponse",
    "HistoryRequest": "HistoryResponse",
    "ContactRequest": "ContactRequestResponse",
    "ContactAccept": "ContactAcceptResponse",
    "ContactDeny": "ContactDenyResponse",
    "ContactRemove": "ContactRemoveResponse",
    "ContactListRequest": "ContactListResponse",
    "MessageEditRequest": "MessageEditResponse",
    "MessageDeleteRequest": "MessageDeleteResponse",
    "HeartbeatRequest": "HeartbeatResponse",
    "GroupMembersRequest": "GroupMembersResponse",
    "GroupInfoRequest": "GroupInfoResponse",
    "GroupRoleRequest": "GroupRoleResponse",
    "ReportRequest": "ReportResponse",
    "ReportListRequest": "ReportListResponse",
    "ReportResolveRequest": "ReportResolveResponse",
    "GroupUpdateRequest": "GroupUpdateResponse",
    "GroupDirectoryRequest": "GroupDirectoryResponse",
    "GroupAddRequest": "GroupAddResponse",
    "GroupRemoveRequest": "GroupRemoveResponse",
    "GroupUnbanRequest": "GroupUnbanResponse",
    "GroupMuteRequest": "GroupMuteResponse",
    "GroupInviteRequest": "GroupInviteResponse",
    "GroupJoinRequest": "GroupJoinResponse",
    "BlockRequest": "BlockResponse",
    "UnblockRequest": "UnblockResponse",
    "BlockListRequest": "BlockListResponse",
    "SettingsRequest": "SettingsResponse",
    "AnnounceRequest": "AnnounceResponse",
    "UserBanRequest": "UserBanResponse",
    "UserUnbanRequest": "UserUnbanResponse",
    "PasswordChangeRequest": "PasswordChangeResponse",
    "SessionListRequest": "SessionListResponse",
    "SessionRevokeRequest": "SessionRevokeResponse",
    "ProfileRequest": "ProfileResponse",
    "AccountDeleteRequest": "AccountDeleteResponse",
    "ReadRequest": "ReadResponse",
    "ConversationsRequest": "ConversationsResponse",
}
# Successes that are not 200: a new report or invite code is 201 (created).
SUCCESS_STATUS = {"ReportRequest": 201, "GroupInviteRequest": 201, "AnnounceRequest": 201}
PUSHED = {
    "GroupMessageInitResponse", "GroupMessageRecv", "MessageRecv", "GroupMemberLeftRecv",
    "RandomChatEndedRecv", "MessageEdited", "MessageDeleted", "ContactRequestRecv",
    "ContactAcceptRecv", "ContactRemoveRecv", "PresenceRecv", "GroupEventRecv",
    "ModerationWarningRecv",
    "GroupRemovedRecv",
    "AnnouncementRecv",
    "ReadRecv",
}
# docs/protocol.md's statuses, less those that cannot be right here: 500 never,
# 501 only with store_messages off, 503 only when the server or its database is
# overloaded or down, which one fuzzing client cannot cause.
# 409: a rename to a taken name, or one that looks like one. 401: a wrong
# password for AccountDeleteRequest.
ALLOWED_ERRORS = {301, 302, 400, 401, 403, 404, 409, 413, 429}


def test_every_request_type_has_a_success_type() -> None:
    assert set(SUCCESS) == set(REQUEST_TYPES)


def check_error(reply: dict[str, Any], allowed: set[int]) -> None:
    assert reply["type"] == "ErrorResponse", reply
    status = reply["status"]
    assert isinstance(status, int) and not isinstance(status, bool), reply
    assert status in allowed, reply
    assert isinstance(reply["detail"], str) and reply["detail"].strip(), reply


def check_push(frame: dict[str, Any]) -> None:
    """A frame without msg_id: only the pushed types, never an error."""
    assert frame.get("type") in PUSHED, frame
    assert frame.get("status") in (200, 201), frame


# -- handler level: the arena ----------------------------------------------------

def generous_limits() -> dict[str, dict[str, str]]:
    """[limits] so high that one busy client is never throttled (keys that exist)."""
    wanted = {
        "message_rate": "100000", "message_burst": "100000", "rate_strikes": "100000",
        "signin_free_failures": "1000000", "max_connections_per_address": "10000",
        "handshake_rate": "100000", "handshake_burst": "100000",
        "signups_per_hour_per_address": "1000000", "signins_per_minute_per_address": "1000000",
        # The fuzzer signs the same users in over and over: no key may be pushed out.
        "max_sessions_per_user": "1000000", "groups_created_per_hour": "1000000",
        "max_random_chats_per_user": "1000000", "reports_per_hour": "1000000",
    }
    known = {key for section, key in documented_keys() if section == "limits"}
    present = {key: value for key, value in wanted.items() if key in known}
    return {"limits": present} if present else {}


@dataclass
class Fuzzed:
    """A fuzzed connection and what the test knows of its state."""

    client: Client
    username: str | None  # who it signs back in as; None: keep it signed out
    signed_in: bool


@dataclass
class Arena:
    server: Any
    fuzzer: Fuzzed
    anon: Fuzzed
    alice: Client
    bob: Client
    keys: dict[str, str] = field(default_factory=dict)
    ids: itertools.count = field(default_factory=itertools.count)


async def register(client: Client, username: str) -> dict[str, Any]:
    reply = await client.request(
        {"type": "RegisterRequest", "username": username, "password": PASSWORD, "msg_id": "setup"},
        timeout=30)
    assert reply["type"] == "RegisterResponse", reply
    return reply


async def next_reply(client: Client, msg_id: Any, timeout: float = 30.0) -> dict[str, Any]:
    """The reply carrying *msg_id*; pushed frames on the way are checked and skipped."""
    while True:
        frame = await client.recv(timeout)
        if "msg_id" not in frame:
            check_push(frame)
            continue
        assert frame["msg_id"] == msg_id, f"unexpected reply {frame} while waiting for {msg_id!r}"
        return frame


@pytest_twisted.async_fixture
async def arena(server_factory: Any, config_factory: Callable[..., Config]) -> Arena:
    running = await server_factory(config_factory(**generous_limits()))
    keys: dict[str, str] = {}
    clients: dict[str, Client] = {}
    for username in USERS:
        client = await running.client()
        keys[username] = (await register(client, username))["session_key"]
        clients[username] = client
    await clients.pop("carol").close()  # an account that is offline
    fuzzer, alice, bob = clients["fuzzer"], clients["alice"], clients["bob"]
    for creator, chatname, others in ((fuzzer, "club", ["alice", "bob"]), (alice, "den", ["bob"])):
        creator.send({"type": "GroupMessageInitRequest", "recipients": others,
                      "chatname": chatname, "msg_id": "setup"})
        reply = await next_reply(creator, "setup")
        assert reply["type"] == "GroupMessageInitResponse" and reply["status"] == 200, reply
    for sender, recipient in ((alice, "club"), (fuzzer, "club"), (alice, "bob"), (fuzzer, "carol")):
        sender.send({"type": "MessageRequest", "recipient": recipient, "content": "setup",
                     "msg_id": "setup"})
        reply = await next_reply(sender, "setup")
        assert reply["type"] == "MessageSendResponse", reply
    anon = await running.client()
    return Arena(running, Fuzzed(fuzzer, "fuzzer", True), Fuzzed(anon, None, False),
                 alice, bob, keys)


# -- handler level: one example ---------------------------------------------------

@dataclass
class Sent:
    """What the test expects for one frame."""

    reply_key: str  # json of the msg_id the reply must carry
    request: Request | None  # the decoded request, None when it must be refused with 400
    unique: bool  # whether reply_key names this frame alone


def fill_keys(value: Any, keys: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith(KEY_PLACEHOLDER):
        return keys.get(value[len(KEY_PLACEHOLDER):], "unknown")
    if isinstance(value, list):
        return [fill_keys(v, keys) for v in value]
    if isinstance(value, dict):
        return {k: fill_keys(v, keys) for k, v in value.items()}
    return value


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def msg_id_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def send_batch(arena: Arena, who: Fuzzed, batch: list[Frame]) -> tuple[list[Sent], str]:
    """Send *batch* and a sentinel; what each frame's reply must be, and the sentinel's id."""
    sent: list[Sent] = []
    for frame in batch:
        if frame.kind == "binary":
            who.client.send(frame.value, binary=True)
            sent.append(Sent(msg_id_key(None), None, False))
            continue
        unique = frame.kind == "object"
        if unique:
            msg_id = f"fz-{next(arena.ids)}"
            value = {**fill_keys(frame.value, arena.keys), "msg_id": msg_id}
            text = to_json(value, ascii=frame.ascii)
            if not frame.ascii and not is_utf8(text):
                text = to_json(value)  # lone surrogates travel as \u escapes
        else:
            text = frame.value
        payload = text.encode("utf-8")
        who.client.send(payload)
        # The server's own parser and decoder say what the reply must be.
        data: Any = None
        try:
            data = parse_json(payload)
            request: Request | None = decode_request(data)
        except BadRequest:
            request = None
        echoed = data.get("msg_id") if isinstance(data, dict) else None
        sent.append(Sent(msg_id_key(echoed), request, unique))
    sentinel = f"sentinel-{next(arena.ids)}"
    who.client.send({"type": "HeartbeatRequest", "msg_id": sentinel})
    return sent, sentinel


async def collect(who: Fuzzed, sentinel: str) -> list[dict[str, Any]]:
    """Every reply up to the sentinel's, in arrival order; pushes are checked and dropped."""
    replies = []
    while True:
        frame = await who.client.recv(timeout=60)
        if "msg_id" not in frame:
            check_push(frame)
            continue
        if frame["msg_id"] == sentinel:
            assert frame["type"] == "HeartbeatResponse", frame
            return replies
        replies.append(frame)


def check_replies(
    who: Fuzzed, sent: list[Sent], replies: list[dict[str, Any]], keys: dict[str, str]
) -> None:
    """Exactly one reply per frame, in the order sent, of the right kind."""
    expected = [s.reply_key for s in sent]
    got = [msg_id_key(r["msg_id"]) for r in replies]
    assert Counter(got) == Counter(expected), f"replies by msg_id: expected {expected}, got {got}"
    assert got == expected, "replies out of order"

    by_key = {msg_id_key(r["msg_id"]): r for r in replies}

    state_known = True
    for item in sent:
        if not item.unique:
            # Its reply is among those counted above. A request in plain text has no
            # msg_id of ours, so the sign-in state cannot be followed past it.
            state_known = state_known and item.request is None
            continue
        reply = by_key[item.reply_key]
        request = item.request
        if request is None:
            check_error(reply, {400})
            continue
        if state_known and request.needs_user and not who.signed_in:
            check_error(reply, {301})
        elif (state_known and who.signed_in
              and isinstance(request, (RegisterRequest, ResumeRequest))):
            check_error(reply, {302})
        elif reply["type"] == "ErrorResponse":
            check_error(reply, ALLOWED_ERRORS)
        else:
            assert reply["type"] == SUCCESS[type(request).__name__], (request, reply)
            assert reply["status"] == SUCCESS_STATUS.get(type(request).__name__, 200), reply
        event(f"{type(request).__name__}: {reply['type']} {reply['status']}")
        if reply["type"] in ("RegisterResponse", "ResumeResponse"):
            who.signed_in = True
            if "session_key" in reply:
                keys[reply["username"]] = reply["session_key"]  # for later ResumeRequests
        elif reply["type"] == "LogoutResponse":
            who.signed_in = False


async def reset(arena: Arena, who: Fuzzed) -> None:
    """Put a fuzzed connection back in its starting state."""
    msg_id = f"reset-{next(arena.ids)}"
    if who.username is None and who.signed_in:
        who.client.send({"type": "LogoutRequest", "msg_id": msg_id})
        reply = await next_reply(who.client, msg_id)
        assert reply["type"] == "LogoutResponse", reply
        who.signed_in = False
    elif who.username is not None and not who.signed_in:
        who.client.send({"type": "RegisterRequest", "username": who.username,
                         "password": PASSWORD, "msg_id": msg_id})
        reply = await next_reply(who.client, msg_id)
        assert reply["type"] == "RegisterResponse", reply
        arena.keys[who.username] = reply["session_key"]
        who.signed_in = True


async def bystanders_still_talk(arena: Arena) -> None:
    """Alice and Bob, never fuzzed, still get their messages through."""
    number = next(arena.ids)
    token = f"still here {number}"
    arena.alice.send({"type": "MessageRequest", "recipient": "bob", "content": token,
                      "msg_id": f"by-{number}"})
    ack = await next_reply(arena.alice, f"by-{number}")
    assert ack["type"] == "MessageSendResponse", ack
    while True:
        frame = await arena.bob.recv(timeout=30)
        assert "msg_id" not in frame, f"bob got a reply he did not ask for: {frame}"
        check_push(frame)
        if frame["type"] == "MessageRecv" and frame["content"] == token:
            assert frame["sender"] == "alice" and frame["id"] == ack["id"], frame
            break
    arena.bob.send({"type": "ClientListRequest", "msg_id": f"cl-{number}"})
    listing = await next_reply(arena.bob, f"cl-{number}")
    assert listing["type"] == "ClientListResponse" and "alice" in listing["clients"], listing


HANDLERS = settings(
    max_examples=150, deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


async def fuzz_example(
    arena: Arena, signed_in_batch: list[Frame], anonymous_batch: list[Frame]
) -> None:
    """One example: both batches at once, every reply checked, then the bystanders."""
    await reset(arena, arena.fuzzer)
    await reset(arena, arena.anon)
    plans = []
    for who, batch in ((arena.fuzzer, signed_in_batch), (arena.anon, anonymous_batch)):
        plans.append((who, *send_batch(arena, who, batch)))
    results = await defer.gatherResults(
        [defer.ensureDeferred(collect(who, sentinel)) for who, _, sentinel in plans],
        consumeErrors=True,
    )
    for (who, sent, _), replies in zip(plans, results):
        check_replies(who, sent, replies, arena.keys)
        assert not who.client.is_closed, (
            f"the server closed a fuzzed connection: {who.client.close_code}")
    await bystanders_still_talk(arena)


def handler_fuzz_test(database: str) -> Callable[..., Any]:
    """The handler-level test on one database.

    pytest-twisted wraps hypothesis's inner test on the function object once per
    collected item, so one function parametrized over both databases would run the
    first item's wrapper again for the second. Hence one function per database.
    """

    async def test(
        arena: Arena, signed_in_batch: list[Frame], anonymous_batch: list[Frame]
    ) -> None:
        await fuzz_example(arena, signed_in_batch, anonymous_batch)

    test.__name__ = test.__qualname__ = f"test_handlers_answer_every_frame_{database}"
    test = inline(test)
    test = given(signed_in_batch=batches, anonymous_batch=batches)(test)
    test = HANDLERS(test)
    return pytest.mark.parametrize("database_url", [database], indirect=True)(test)


test_handlers_answer_every_frame_sqlite = handler_fuzz_test("sqlite")
test_handlers_answer_every_frame_postgresql = handler_fuzz_test("postgresql")


@inline
async def test_binary_frames_get_400(server: Any) -> None:
    client = await server.client()
    signed_in = await server.client("alice")
    for who in (client, signed_in):
        payloads = (
            b"", b"\x00\xff", b'{"type": "HeartbeatRequest", "msg_id": 1}', bytes(range(256)))
        for payload in payloads:
            who.send(payload, binary=True)
            reply = await who.recv()
            check_error(reply, {400})
            assert reply["msg_id"] is None and "binary" in reply["detail"]
        assert (await who.request({"type": "HeartbeatRequest", "msg_id": 2}))["msg_id"] == 2


# -- bugs found by fuzzing -----------------------------------------------------------
#
# Regression tests for bugs the fuzzing found, all fixed.


def heartbeat(msg_id: Any) -> dict[str, Any]:
    return {"type": "HeartbeatRequest", "msg_id": msg_id}


@inline
async def test_regression_lone_surrogates_are_refused_not_dropped(server: Any) -> None:
    """Echoing "\\ud800" could not be encoded: no reply, or a dropped connection."""
    alice = await server.client("alice")
    alice.send('{"type": "HeartbeatRequest", "msg_id": "\\ud800"}')
    alice.send('{"type": "HeartbeatRequest", "payload": ["\\udfff"], "msg_id": 1}')
    alice.send('{"type": "Nope", "msg_id": "\\ud800"}')
    alice.send('{"type": "MessageRequest", "recipient": "alice", "content": "\\ud83d", '
               '"msg_id": 2}')
    replies = await alice.frames_until_heartbeat("end")
    assert [r["status"] for r in replies] == [400, 400, 400, 400], replies
    assert not alice.is_closed


@inline
async def test_regression_sign_in_with_lone_surrogate_msg_id_loses_no_message(server: Any) -> None:
    """The sign-in reply could not be encoded after the connection started holding
    frames: it held every frame for the user from then on, and they were lost."""
    bob = await server.client("bob")
    carol = await server.client()
    await carol.register("carol")
    await carol.close()
    carol = await server.client()
    carol.send('{"type": "RegisterRequest", "username": "carol", "password": "secret", '
               '"msg_id": "\\ud800"}')
    early = await carol.frames_until_heartbeat("signed-in")
    ack = await bob.request(
        {"type": "MessageRequest", "recipient": "carol", "content": "still there?"})
    assert ack["type"] == "MessageSendResponse", ack
    live = await carol.frames_until_heartbeat("after")
    await carol.close()
    again = await server.client()
    await again.register("carol")
    offline = await again.frames_until_heartbeat("caught-up")
    received = [f for f in early + live + offline if f.get("content") == "still there?"]
    assert len(received) == 1, (early, live, offline)


@inline
async def test_regression_out_of_range_ids_are_refused(server: Any) -> None:
    """Ids beyond 64 bits reached the database: 500 on SQLite, 503 on PostgreSQL."""
    alice = await server.client("alice")
    await server.client("bob")
    for number in (2**63, -(2**63) - 1, 10**30):
        for request in (
            {"type": "MessageEditRequest", "id": number, "content": "x"},
            {"type": "MessageDeleteRequest", "id": number},
            {"type": "HistoryRequest", "user": "bob", "before": number},
        ):
            reply = await alice.request(request)
            assert reply["type"] == "HistoryResponse" or reply["status"] in (400, 404), (
                request, reply)


@pytest.mark.parametrize("digits", [4299, 4300, 4301, 100_000])
@inline
async def test_integers_too_long_to_parse_are_refused(
    server_factory: Any, config_factory: Callable[..., Config], digits: int
) -> None:
    """Python parses integers of at most ``sys.get_int_max_str_digits()`` digits
    (4,300). A longer one anywhere in a frame is a 400 that says so, with no
    msg_id to echo; a shorter one parses, so a msg_id that long comes back whole
    and an id that long is refused as no 64-bit integer. The connection goes on."""
    running = await server_factory(config_factory(server={"max_message_size": "262144"}))
    alice = await running.client("alice")
    huge = "7" * digits
    parses = digits <= sys.get_int_max_str_digits()
    for field_name in ("msg_id", "id", "payload"):
        frame = '{"type": "MessageEditRequest", "content": "x", "id": 1, "%s": %s}'
        reply = await alice.request(frame % (field_name, huge))
        assert reply["type"] == "ErrorResponse", (field_name, reply)
        if not parses:
            assert reply["status"] == 400 and reply["msg_id"] is None, (field_name, reply)
            assert reply["detail"].startswith("frame is not valid JSON: "), (field_name, reply)
            assert f"value has {digits} digits" in reply["detail"], (field_name, reply)
        elif field_name == "id":
            assert reply == {"type": "ErrorResponse", "status": 400, "msg_id": None,
                             "detail": "MessageEditRequest: field 'id' must be an integer (64-bit)"}
        else:  # decoded and handled: there is no message 1 to edit
            echoed = int(huge) if field_name == "msg_id" else None
            assert reply == {"type": "ErrorResponse", "status": 404, "msg_id": echoed,
                             "detail": "no message with id 1"}, field_name
    assert (await alice.request(heartbeat("open")))["msg_id"] == "open"


@inline
async def test_regression_deep_nesting_always_gets_a_reply(
    server_factory: Any, config_factory: Callable[..., Config]
) -> None:
    """Nesting just below the parser's limit parsed, but its echo could not be encoded.

    Its 151 frames in one burst are over the default request rate, which
    every frame counts against: the limits are raised, as for the arena.
    """
    server = await server_factory(config_factory(**generous_limits()))
    alice = await server.client("alice")
    depths = range(850, 1001)
    for depth in depths:
        alice.send('{"type": "HeartbeatRequest", "msg_id": %d, "payload": %s}'
                   % (depth, nested_text(depth)))
    replies = await alice.frames_until_heartbeat("end")
    assert len(replies) == len(depths)
    assert all(r["type"] == "HeartbeatResponse" or r["status"] == 400 for r in replies)


@inline
async def test_nul_in_text_is_refused_cleanly(server: Any) -> None:
    """NUL cannot be stored by PostgreSQL, so every database answers alike.

    Content with NUL is refused (400); no name holds NUL, so a name with one is
    unknown (404), and a sign-in with one fails (301) without asking anything.
    """
    alice = await server.client("alice")
    await server.client("bob")
    for request, status in (
        ({"type": "MessageRequest", "recipient": "bob", "content": "a\x00b"}, 400),
        ({"type": "HistoryRequest", "user": "bo\x00b"}, 404),
        ({"type": "ContactRequest", "username": "\x00"}, 404),
        ({"type": "ContactAccept", "username": "a\x00"}, 404),
        ({"type": "MessageRequest", "recipient": "\x00", "content": "x"}, 404),
    ):
        reply = await alice.request(request)
        assert reply["status"] == status, (request, reply)
    stranger = await server.client()
    for username, password in (("al\x00ice", "pw"), ("carol", "p\x00w")):
        reply = await stranger.request(
            {"type": "RegisterRequest", "username": username, "password": password})
        assert reply["status"] == 301, reply
    ack = await alice.request({"type": "MessageRequest", "recipient": "bob", "content": "fine"})
    assert ack["type"] == "MessageSendResponse"
