"""The registry on its own: plain objects, no network, no reactor."""

from __future__ import annotations

import random

from chateau.names import RANDOM_PREFIX
from chateau.registry import Registry


class FakePeer:
    def __init__(self, username: str) -> None:
        self.username = username
        self.frames: list[object] = []

    def send_frame(self, frame: object) -> None:
        self.frames.append(frame)


def test_presence_counts_connections_per_user():
    registry = Registry(random.Random(1))
    first, second = FakePeer("alice"), FakePeer("alice")
    assert registry.connect("alice", first) is True
    assert registry.connect("alice", second) is False
    assert registry.online_users() == ["alice"]
    assert registry.disconnect("alice", first) is None
    assert registry.is_online("alice")
    departure = registry.disconnect("alice", second)
    assert departure is not None and departure.username == "alice"
    assert not registry.is_online("alice")
    assert registry.disconnect("alice", second) is None


def test_online_users_sorted_and_excluding():
    registry = Registry()
    for name in ("carol", "alice", "bob"):
        registry.connect(name, FakePeer(name))
    assert registry.online_users() == ["alice", "bob", "carol"]
    assert registry.online_users(exclude="bob") == ["alice", "carol"]


def test_deliver_reaches_every_connection_of_online_members_only():
    registry = Registry()
    alice, bob1, bob2 = FakePeer("alice"), FakePeer("bob"), FakePeer("bob")
    for peer in (alice, bob1, bob2):
        registry.connect(peer.username, peer)
    count = registry.deliver(["alice", "bob", "offline"], "frame", skip=alice)
    assert count == 2
    assert alice.frames == [] and bob1.frames == ["frame"] and bob2.frames == ["frame"]


def test_groups_and_leaving():
    registry = Registry()
    group = registry.add_group("team", "alice", ["alice", "bob"])
    assert registry.group("team") is group and not group.started
    assert registry.remove_member("team", "carol") is None
    assert registry.remove_member("team", "bob") is group
    assert group.members == {"alice"}
    assert registry.group("nope") is None


def test_random_pairing_needs_someone_else():
    registry = Registry(random.Random(7))
    registry.connect("alice", FakePeer("alice"))
    assert registry.pair_randomly("alice") is None
    registry.connect("bob", FakePeer("bob"))
    pair = registry.pair_randomly("alice")
    assert pair is not None and pair.members == ("alice", "bob")
    assert pair.chatname.startswith(RANDOM_PREFIX)
    assert registry.pair(pair.chatname) is pair
    assert pair.other("alice") == "bob" and pair.other("bob") == "alice"


def test_random_partner_is_chosen_among_all_others():
    registry = Registry(random.Random(3))
    for name in ("alice", "bob", "carol", "dave"):
        registry.connect(name, FakePeer(name))
    partners = {registry.pair_randomly("alice").other("alice") for _ in range(60)}
    assert partners == {"bob", "carol", "dave"}


def test_disconnect_ends_random_pairs():
    registry = Registry(random.Random(2))
    alice, bob = FakePeer("alice"), FakePeer("bob")
    registry.connect("alice", alice)
    registry.connect("bob", bob)
    pair = registry.pair_randomly("alice")
    departure = registry.disconnect("bob", bob)
    assert [p.chatname for p in departure.ended_pairs] == [pair.chatname]
    assert registry.pair(pair.chatname) is None
    # alice's own departure has nothing left to end
    assert registry.disconnect("alice", alice).ended_pairs == []


def test_group_count_follows_joins_and_leaves():
    registry = Registry()
    registry.add_group("a", "alice", ["alice", "bob"])
    registry.add_group("b", "alice", ["alice"])
    assert registry.group_count("alice") == 2 and registry.group_count("bob") == 1
    registry.remove_member("a", "alice")
    assert registry.group_count("alice") == 1 and registry.group_count("carol") == 0
