"""The registry on its own: plain objects, no network, no reactor."""

from __future__ import annotations

import random

from chateau.delivery import Delivery
from chateau.names import RANDOM_PREFIX
from chateau.registry import Registry
from chateau.safety import Settings


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
    count, elsewhere = registry.fan_out(["alice", "bob", "offline"], "frame", skip=alice)
    assert count == 2 and elsewhere is None
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


class RecordingBackplane:
    def __init__(self) -> None:
        self.forwards: list[tuple[str, list[str], bytes, int | None]] = []
        self.senders: list[str | None] = []

    def forward(
        self, node: str, usernames: list[str], payload: bytes, message_id: int | None,
        sender: str | None = None,
    ) -> None:
        self.forwards.append((node, usernames, payload, message_id))
        self.senders.append(sender)


def test_users_on_other_nodes_get_one_forward_per_node():
    backplane = RecordingBackplane()
    registry = Registry()
    delivery = Delivery(registry, backplane, prepare=lambda payload: "frame")  # type: ignore[arg-type]
    alice, bob = FakePeer("alice"), FakePeer("bob")
    registry.connect("alice", alice)
    registry.connect("bob", bob)
    registry.remote_connect("bob", "n2")  # bob's phone, on another node
    registry.remote_connect("carol", "n2")
    registry.remote_connect("dave", "n3")
    count = delivery.deliver(["alice", "bob", "carol", "dave", "erin"], {}, skip=alice,
                             message_id=7)
    assert count == 1 and bob.frames == ["frame"] and alice.frames == []
    assert sorted(backplane.forwards) == [("n2", ["bob", "carol"], b"{}", 7),
                                          ("n3", ["dave"], b"{}", 7)]
    # A forward's last step reaches only this node's connections.
    assert registry.deliver_local(["bob", "carol"], "again") == 1 and bob.frames[-1] == "again"


def test_presence_spans_nodes_and_departures_say_when_a_user_is_gone_everywhere():
    registry = Registry()
    alice = FakePeer("alice")
    assert registry.remote_connect("bob", "n2") is True
    assert registry.remote_connect("bob", "n3") is False
    assert registry.online_users() == ["bob"] and registry.online_count() == 1
    registry.connect("alice", alice)
    registry.remote_connect("alice", "n2")
    assert registry.online_count() == 2 and registry.nodes_of("alice") == {"n2"}
    # alice leaves this node but is still on n2: not offline.
    departure = registry.disconnect("alice", alice)
    assert departure is not None and departure.offline is False
    assert registry.is_online("alice") and not registry.is_local("alice")
    assert registry.remote_disconnect("bob", "n2").offline is False
    assert registry.remote_disconnect("bob", "n3").offline is True
    assert registry.remote_disconnect("bob", "n3") is None
    assert registry.remote_users("n2") == ["alice"] and registry.remote_nodes() == {"n2"}


def test_a_remote_departure_ends_pairs_with_local_users():
    registry = Registry(random.Random(1))
    alice = FakePeer("alice")
    registry.connect("alice", alice)
    registry.remote_connect("bob", "n2")
    pair = registry.pair_randomly("alice")
    assert pair is not None and pair.other("alice") == "bob"
    assert registry.pair_randomly("alice", local_only=True) is None
    departure = registry.remote_disconnect("bob", "n2")
    assert [p.chatname for p in departure.ended_pairs] == [pair.chatname]
    assert registry.pair(pair.chatname) is None


def test_watchers_are_the_local_users_who_have_someone_as_a_contact():
    registry = Registry()
    alice, carol = FakePeer("alice"), FakePeer("carol")
    registry.connect("alice", alice)
    registry.connect("carol", carol)
    registry.set_contacts("alice", ["bob", "carol"])
    registry.set_contacts("carol", ["alice"])
    registry.set_contacts("bob", ["alice"])  # not online here: ignored
    assert registry.watchers("bob") == ["alice"]
    assert registry.watchers("alice") == ["carol"]
    registry.link_contacts("carol", "bob")
    assert registry.watchers("bob") == ["alice", "carol"]
    registry.unlink_contacts("bob", "alice")
    assert registry.watchers("bob") == ["carol"]
    registry.disconnect("carol", carol)
    assert registry.watchers("bob") == [] and registry.watchers("alice") == []


def test_a_group_keeps_roles_mutes_and_who_may_send_for_the_send_check():
    registry = Registry()
    group = registry.add_group("club", "alice", ["alice", "bob"])
    assert group.roles == {"alice": "owner"} and group.who_can_send == "everyone"
    assert (group.role_of("alice"), group.role_of("bob"), group.role_of("eve")) == (
        "owner", "member", None)
    registry.add_members("club", ["carol"])
    assert registry.group_count("carol") == 1 and group.role_of("carol") == "member"
    registry.set_role("club", "carol", "admin")
    registry.set_muted("club", "bob", 10)
    registry.set_muted("club", "eve", 10)  # not a member: nothing
    assert group.roles == {"alice": "owner", "carol": "admin"} and group.muted_until == {"bob": 10}
    registry.set_role("club", "carol", "member")
    registry.set_muted("club", "bob", None)
    assert group.roles == {"alice": "owner"} and group.muted_until == {}
    registry.set_role("club", "carol", "admin")
    registry.set_muted("club", "carol", 10)
    registry.remove_member("club", "carol")
    assert "carol" not in group.roles and "carol" not in group.muted_until
    # Reloaded from the database: what was stored.
    again = registry.add_group("club", "alice", ["alice", "bob"], roles={"bob": "owner"},
                               muted_until={"alice": 5}, who_can_send="admins")
    assert (again.roles, again.muted_until, again.who_can_send) == (
        {"bob": "owner"}, {"alice": 5}, "admins")
    assert registry.add_members("nope", ["x"]) is None


def test_fan_out_passes_over_users_here_who_block_the_sender():
    backplane = RecordingBackplane()
    registry = Registry()
    delivery = Delivery(registry, backplane, prepare=lambda payload: "frame")  # type: ignore[arg-type]
    alice, bob, carol = FakePeer("alice"), FakePeer("bob"), FakePeer("carol")
    for peer in (alice, bob, carol):
        registry.connect(peer.username, peer)
    registry.remote_connect("alice", "n2")  # alice on another node too: that node filters
    registry.set_safety("alice", ["eve"], [])
    registry.set_safety("dave", ["eve"], [])  # not online here: ignored
    delivery.deliver(["alice", "bob", "carol"], {}, sender="eve", message_id=3)
    assert alice.frames == [] and bob.frames == carol.frames == ["frame"]
    assert backplane.forwards == [] and backplane.senders == []
    delivery.deliver(["alice", "bob"], {}, sender="bob")
    assert alice.frames == ["frame"]
    assert backplane.forwards == [("n2", ["alice"], b"{}", None)] and backplane.senders == ["bob"]
    registry.unblock("alice", "eve")
    delivery.deliver(["alice"], {}, sender="eve")
    assert alice.frames == ["frame", "frame"]
    # Leaving this node forgets the user's blocks.
    registry.block("alice", "eve")
    registry.disconnect("alice", alice)
    assert not registry.blocks("alice", "eve")


def test_random_pairing_skips_those_who_opted_out_and_those_kept_apart():
    registry = Registry(random.Random(3))
    alice = FakePeer("alice")
    registry.connect("alice", alice)
    registry.set_safety("alice", [], ["bob"])
    registry.remote_connect("bob", "n2")
    registry.remote_connect("carol", "n2")
    registry.set_settings("carol", Settings(random_chat=False))
    assert registry.pair_randomly("alice") is None
    registry.set_settings("carol", Settings())
    assert registry.settings("carol") == Settings()
    pair = registry.pair_randomly("alice")
    assert pair is not None and pair.other("alice") == "carol"
    registry.keep_apart("carol", "alice")
    assert registry.kept_apart("alice", "carol")


def test_a_renamed_user_keeps_groups_roles_mutes_contacts_blocks_and_settings_once():
    registry = Registry(random.Random(1))
    bob, carol = FakePeer("bob"), FakePeer("carol")
    registry.connect("bob", bob)
    registry.connect("carol", carol)
    registry.add_group("club", "ivan", ["ivan", "bob"], roles={"ivan": "owner"},
                       muted_until={"ivan": 99})
    registry.set_contacts("bob", ["ivan"])
    registry.set_safety("carol", ["ivan"], ["ivan"])
    registry.set_settings("ivan", Settings(presence="contacts"))

    assert registry.rename_user("ivan", "ivo", "r1") is True
    group = registry.group("club")
    assert group is not None and group.members == {"ivo", "bob"}
    assert group.creator == "ivo" and group.role_of("ivo") == "owner"
    assert group.muted_until == {"ivo": 99} and registry.group_count("ivan") == 0
    assert registry.group_count("ivo") == 1
    assert registry.contact_of("bob", "ivo") and not registry.contact_of("bob", "ivan")
    assert registry.watchers("ivo") == ["bob"] and registry.watchers("ivan") == []
    assert registry.blocks("carol", "ivo") and not registry.blocks("carol", "ivan")
    assert registry.kept_apart("carol", "ivo")
    assert registry.settings("ivo").presence == "contacts"
    assert registry.settings("ivan").presence == "everyone"
    # The frame from the blocked user's new name does not reach carol.
    registry.add_group("all", "bob", ["bob", "carol", "ivo"])
    count, _ = registry.fan_out(["bob", "carol"], "frame", sender="ivo")
    assert count == 1 and carol.frames == []

    # The same rename again (its notice read after the sign-in applied it) does nothing.
    registry.add_group("later", "bob", ["bob", "ivan"])
    assert registry.rename_user("ivan", "ivo", "r1") is False
    assert registry.group("later").members == {"bob", "ivan"}


def test_a_slice_of_users_online_wraps_round_and_says_where_the_next_starts():
    registry = Registry()
    assert registry.local_slice(5, 3) == ([], 0)
    for name in ["a", "b", "c", "d", "e"]:
        registry.connect(name, object())
    assert registry.local_slice(0, 3) == (["a", "b", "c"], 3)
    assert registry.local_slice(3, 3) == (["d", "e", "a"], 1)
    # Never the same user twice in one slice, however large it is asked to be.
    assert registry.local_slice(2, 10) == (["c", "d", "e", "a", "b"], 2)
    # A start past the end (users left since) wraps round too.
    assert registry.local_slice(12, 2) == (["c", "d"], 4)
