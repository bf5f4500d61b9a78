"""What comes from Redis is data: the checks of chateau/cluster_events.py, in-process.

The socket tests (tests/test_cluster_trust.py) publish garbage into a real
Redis; these go through many more shapes in milliseconds, and through the
backplane's own handling (logged with named fields, counted, dropped).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher

from chateau.cluster import RedisBackplane, _Subscriber
from chateau.cluster_events import (
    EVENT_FIELDS, MAX_EVENT_BYTES, BadClusterMessage, parse_event, parse_forward,
)
from chateau.metrics import Metrics
from chateau.registry import Registry

GOOD_EVENTS: list[dict[str, Any]] = [
    {"t": "hello", "node": "n1", "users": ["alice", "bob"], "fence": "0123456789abcdef"},
    {"t": "hello", "node": "n1", "users": []},
    {"t": "join", "node": "n1", "user": "alice", "fence": "abc"},
    {"t": "leave", "node": "host.example:8881", "user": "alice"},
    {"t": "reset", "node": "n1"},
    {"t": "refence", "node": "n1", "fence": "abc"},
    {"t": "fence", "node": "n1", "token": "abc", "last": 0},
    {"t": "group", "node": "n1", "chatname": "the team", "creator": "alice",
     "members": ["alice", "bob"]},
    {"t": "group_started", "node": "n1", "chatname": "the team"},
    {"t": "member_left", "node": "n1", "chatname": "the team", "user": "bob"},
    {"t": "group_renamed", "node": "n1", "chatname": "the team", "new_name": "the crew"},
    {"t": "group_settings", "node": "n1", "chatname": "the crew", "who_can_send": "admins"},
    {"t": "members_added", "node": "n1", "chatname": "the team", "users": ["carol"]},
    {"t": "member_role", "node": "n1", "chatname": "the team", "user": "bob", "role": "admin"},
    {"t": "member_muted", "node": "n1", "chatname": "the team", "user": "bob",
     "until": 1_800_000_000_000},
    {"t": "pair", "node": "n1", "chatname": "~random-0123456789abcdef",
     "members": ["alice", "bob"]},
    {"t": "pair_end", "node": "n1", "chatname": "~random-0123456789abcdef"},
    {"t": "contacts", "node": "n1", "first": "alice", "second": "bob", "linked": False},
    {"t": "block", "node": "n1", "blocker": "alice", "blocked": "bob", "on": True},
    {"t": "apart", "node": "n1", "first": "alice", "second": "bob"},
    {"t": "settings", "node": "n1", "user": "alice",
     "settings": {"direct_messages": "contacts", "presence": "nobody", "random_chat": False,
                  "read_receipts": True}},
    # Unknown extra fields are ignored (a newer node may add some).
    {"t": "join", "node": "n1", "user": "ålice", "extra": {"anything": [1, 2]}},
]


def encode(event: Any) -> bytes:
    return json.dumps(event).encode()


def test_every_kind_has_a_good_example():
    assert {event["t"] for event in GOOD_EVENTS} == set(EVENT_FIELDS)


@pytest.mark.parametrize("event", GOOD_EVENTS, ids=lambda e: e["t"])
def test_well_formed_events_pass(event):
    assert parse_event(encode(event)) == event


def without(event: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != key}


BAD_EVENTS: list[tuple[bytes, str, str, str]] = [
    # raw, reason, kind, field
    (b"", "json", "-", "-"),
    (b"{", "json", "-", "-"),
    (b"\xc3\x28", "encoding", "-", "-"),
    (b"[" * 50_000, "json", "-", "-"),
    (b"null", "shape", "-", "-"),
    (b"3", "shape", "-", "-"),
    (encode({"node": "n1"}), "kind", "-", "-"),
    (encode({"t": ["join"], "node": "n1"}), "kind", "-", "-"),
    (encode({"t": "close_everything", "node": "n1"}), "kind", "-", "-"),
    (encode({"t": "reset"}), "field", "reset", "node"),
    (encode({"t": "reset", "node": ""}), "field", "reset", "node"),
    (encode({"t": "reset", "node": "n" * 65}), "field", "reset", "node"),
    (encode({"t": "reset", "node": "n1\n"}), "field", "reset", "node"),
    (encode({"t": "reset", "node": 1}), "field", "reset", "node"),
    (encode({"t": "join", "node": "n1", "user": "alice", "fence": 5}), "field", "join", "fence"),
    (encode({"t": "join", "node": "n1", "user": "a" * 33}), "field", "join", "user"),
    (encode({"t": "join", "node": "n1", "user": ""}), "field", "join", "user"),
    (encode({"t": "join", "node": "n1", "user": "a\x00b"}), "field", "join", "user"),
    (encode({"t": "join", "node": "n1", "user": None}), "field", "join", "user"),
    (encode({"t": "hello", "node": "n1", "users": {"alice": 1}}), "field", "hello", "users"),
    (encode({"t": "hello", "node": "n1", "users": ["alice", ["bob"]]}), "field", "hello",
     "users"),
    (encode({"t": "hello", "node": "n1", "users": ["u"] * 100_001}), "field", "hello", "users"),
    (encode({"t": "refence", "node": "n1"}), "field", "refence", "fence"),
    (encode({"t": "fence", "node": "n1", "token": "x", "last": -1}), "field", "fence", "last"),
    (encode({"t": "fence", "node": "n1", "token": "x", "last": 2 ** 70}), "field", "fence",
     "last"),
    (encode({"t": "fence", "node": "n1", "token": "x", "last": 1.5}), "field", "fence", "last"),
    (encode({"t": "fence", "node": "n1", "token": "x" * 65, "last": 1}), "field", "fence",
     "token"),
    (encode({"t": "group", "node": "n1", "chatname": "g" * 65, "creator": "a",
             "members": ["a"]}), "field", "group", "chatname"),
    (encode({"t": "group", "node": "n1", "chatname": "g", "creator": "a", "members": []}),
     "field", "group", "members"),
    (encode(without(GOOD_EVENTS[7], "creator")), "field", "group", "creator"),
    (encode({"t": "pair", "node": "n1", "chatname": "~r", "members": ["a", "b", "c"]}),
     "field", "pair", "members"),
    (encode({"t": "contacts", "node": "n1", "first": "a", "second": "b", "linked": 1}),
     "field", "contacts", "linked"),
    (encode({"t": "member_left", "node": "n1", "chatname": "g"}), "field", "member_left",
     "user"),
    (encode({"t": "group_renamed", "node": "n1", "chatname": "g", "new_name": ""}), "field",
     "group_renamed", "new_name"),
    (encode({"t": "group_settings", "node": "n1", "chatname": "g", "who_can_send": "all"}),
     "field", "group_settings", "who_can_send"),
    (encode({"t": "members_added", "node": "n1", "chatname": "g", "users": []}), "field",
     "members_added", "users"),
    (encode({"t": "member_role", "node": "n1", "chatname": "g", "user": "a", "role": "king"}),
     "field", "member_role", "role"),
    (encode({"t": "member_muted", "node": "n1", "chatname": "g", "user": "a", "until": -1}),
     "field", "member_muted", "until"),
    (encode({"t": "member_muted", "node": "n1", "chatname": "g", "user": "a", "until": True}),
     "field", "member_muted", "until"),
    (encode({"t": "member_muted", "node": "n1", "chatname": "g", "user": "a",
             "until": 2 ** 53}), "field", "member_muted", "until"),
    (encode({"t": "block", "node": "n1", "blocker": "a", "blocked": "b", "on": "yes"}),
     "field", "block", "on"),
    (encode({"t": "apart", "node": "n1", "first": "a"}), "field", "apart", "second"),
    (encode({"t": "settings", "node": "n1", "user": "a", "settings": []}), "field",
     "settings", "settings"),
    (encode({"t": "settings", "node": "n1", "user": "a",
             "settings": {"direct_messages": "everyone", "presence": "all",
                          "random_chat": True, "read_receipts": True}}),
     "field", "settings", "settings"),
    (encode({"t": "settings", "node": "n1", "user": "a",
             "settings": {"direct_messages": "everyone", "presence": "nobody",
                          "random_chat": 1, "read_receipts": True}}),
     "field", "settings", "settings"),
    (b'{"t": "reset", "node": "n1", "pad": "' + b"x" * MAX_EVENT_BYTES + b'"}', "size", "-", "-"),
]


@pytest.mark.parametrize("raw, reason, kind, field", BAD_EVENTS,
                         ids=[f"{n}-{b[3]}" for n, b in enumerate(BAD_EVENTS)])
def test_malformed_events_are_refused_naming_the_field(raw, reason, kind, field):
    with pytest.raises(BadClusterMessage) as caught:
        parse_event(raw)
    assert (caught.value.reason, caught.value.kind, caught.value.field) == (reason, kind, field)


def forward(header: Any, payload: bytes = b'{"type":"MessageRecv"}') -> bytes:
    return json.dumps(header).encode() + b"\n" + payload


def test_well_formed_forwards_pass():
    message = parse_forward(forward({"o": "n1", "u": ["bob", "carol"], "i": 7}), 1000)
    assert (message.origin, message.usernames, message.message_id) == ("n1", ["bob", "carol"], 7)
    assert message.payload == b'{"type":"MessageRecv"}'
    assert parse_forward(forward({"o": "n1", "u": ["bob"], "i": None}), 1000).message_id is None
    assert parse_forward(forward({"o": "n1", "u": ["bob"]}), 1000).message_id is None
    # The sender, when the message carries someone's words (blocks apply to it).
    assert parse_forward(forward({"o": "n1", "u": ["bob"], "s": "eve"}), 1000).sender == "eve"
    assert parse_forward(forward({"o": "n1", "u": ["bob"]}), 1000).sender is None


@pytest.mark.parametrize("raw, reason, field", [
    (b"", "shape", "-"),
    (b'{"o": "n1", "u": ["bob"]}', "shape", "-"),
    (b"nope\n{}", "json", "header"),
    (b"[]\n{}", "shape", "header"),
    (forward({"u": ["bob"]}), "field", "o"),
    (forward({"o": "n 1", "u": ["bob"]}), "field", "o"),
    (forward({"o": "n1"}), "field", "u"),
    (forward({"o": "n1", "u": []}), "field", "u"),
    (forward({"o": "n1", "u": ["b" * 33]}), "field", "u"),
    (forward({"o": "n1", "u": ["bob"], "i": True}), "field", "i"),
    (forward({"o": "n1", "u": ["bob"], "i": "7"}), "field", "i"),
    (forward({"o": "n1", "u": ["bob"], "s": 7}), "field", "s"),
    (forward({"o": "n1", "u": ["bob"], "s": "e\x00ve"}), "field", "s"),
    (forward({"o": "n1", "u": ["bob"]}, b"x" * 1001), "size", "payload"),
    (forward({"o": "n1", "u": ["bob"]}, b"\xff"), "encoding", "payload"),
    (forward({"o": "n1", "u": ["bob"]}, b"not json"), "json", "payload"),
    (forward({"o": "n1", "u": ["bob"]}, b"[1]"), "shape", "payload"),
])
def test_malformed_forwards_are_refused(raw, reason, field):
    with pytest.raises(BadClusterMessage) as caught:
        parse_forward(raw, 1000)
    assert (caught.value.reason, caught.value.field) == (reason, field)


class Listener:
    last_routed_id = 0

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.forwards: list[tuple[Any, ...]] = []

    def event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def forwarded(self, *args: Any) -> None:
        self.forwards.append(args)


def test_the_backplane_logs_counts_and_drops_what_does_not_fit():
    metrics = Metrics()
    backplane = RedisBackplane(Clock(), Registry(), metrics, "here", "redis://127.0.0.1:1/0",
                               presence_ttl=3, fence_timeout=1, max_payload=1000)
    listener = Listener()
    backplane.attach(listener)  # type: ignore[arg-type]
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        for raw, *_ in BAD_EVENTS:
            backplane.received(b"chateau:0:events", raw)
        backplane.received(b"chateau:0:node:here", b"M" + forward({"o": "n1", "u": []}))
        # Good ones still pass, after all that.
        backplane.received(b"chateau:0:events", encode({"t": "reset", "node": "n2"}))
        backplane.received(b"chateau:0:node:here", b"M" + forward({"o": "n1", "u": ["bob"],
                                                                   "i": 3}))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert listener.events == [{"t": "reset", "node": "n2"}]
    assert listener.forwards == [("n1", ["bob"], b'{"type":"MessageRecv"}', 3, None)]
    rendered = metrics.render().decode()
    total = sum(
        float(line.rsplit(" ", 1)[1]) for line in rendered.splitlines()
        if line.startswith("chateau_cluster_events_rejected_total{")
    )
    assert total == len(BAD_EVENTS) + 1
    assert 'chateau_cluster_events_rejected_total{reason="field"}' in rendered
    drops = [event for event in logged if "malformed" in event.get("log_format", "")]
    assert len(drops) == len(BAD_EVENTS) + 1
    assert {"reason", "kind", "field", "size", "channel"} <= set(drops[-1])
    text = "\n".join(formatEvent(event) for event in drops)
    assert "(kind join, field user," in text
    # Named fields only: the content of what came in is never dumped.
    assert "xxxxxxxxxx" not in text and "[[[[" not in text
    assert not any(event.get("log_failure") for event in logged)


def pubsub(channel: bytes, message: bytes) -> bytes:
    """What Redis sends a subscriber for one PUBLISH (RESP2)."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(part), part)
                    for part in (b"message", channel, message)).join((b"*3\r\n", b""))


def test_every_message_of_one_read_is_handed_on_at_once():
    """What Redis sends in one read reaches the node in that turn, in order.

    So a node fans out every forwarded message that arrived together in one
    reactor turn, and their frames to each connection leave in one write,
    as they would had the sender been on this node. (txredisapi's pure-Python
    parser put every bulk string after the first off to a later turn.)
    """
    backplane = RedisBackplane(Clock(), Registry(), Metrics(), "here", "redis://127.0.0.1:1/0",
                               presence_ttl=3, fence_timeout=1, max_payload=1000)
    listener = Listener()
    backplane.attach(listener)  # type: ignore[arg-type]
    subscriber = _Subscriber(charset=None, convertNumbers=False)
    subscriber.backplane = backplane
    subscriber.makeConnection(StringTransport())
    here = b"chateau:0:node:here"
    reads = b"".join(
        pubsub(here, b"M" + forward({"o": "n1", "u": ["bob"], "i": i}, b'{"n":%d}' % i))
        for i in range(1, 5)
    ) + pubsub(b"chateau:0:events", encode({"t": "reset", "node": "n2"}))
    subscriber.dataReceived(reads)
    assert [args[3] for args in listener.forwards] == [1, 2, 3, 4]
    assert listener.events == [{"t": "reset", "node": "n2"}]
    # A message split across reads is handed on once its last byte is in.
    last = pubsub(here, b"M" + forward({"o": "n1", "u": ["bob"], "i": 5}))
    subscriber.dataReceived(last[:20])
    subscriber.dataReceived(last[20:-3])
    assert len(listener.forwards) == 4
    subscriber.dataReceived(last[-3:])
    assert [args[3] for args in listener.forwards] == [1, 2, 3, 4, 5]
