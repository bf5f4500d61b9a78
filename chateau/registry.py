"""Who is online, which groups exist, who is paired with whom, and who gets what.

The registry is plain Python with no I/O: it keeps the live chat state and is
the one place that decides who receives a message. A fan-out hands an
already-encoded frame to each recipient's :class:`Peer` on this node and
names, by node, the users connected to other nodes of a cluster, whom
:mod:`chateau.delivery` reaches through the backplane.

In a cluster the registry mirrors who is online on the other nodes, and all
groups and random pairs; each node tells only its own connections of what
changed (presence notices, pairs ended), so nothing is said twice.

It is one concern, though long: every rule a delivery must decide without a
database read (group roles and mutes, blocks, settings, random-pair
avoidance) lives here beside the state it filters.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from chateau.names import RANDOM_PREFIX
from chateau.safety import DEFAULT_SETTINGS, Settings

# What a user online here with no contacts, or nobody to avoid, holds: one
# shared immutable set instead of an empty set each (216 bytes a user, twice).
# Whoever adds a name replaces it with a set of the user's own.
NOBODY: frozenset[str] = frozenset()


def _add_to(sets: dict[str, set[str] | frozenset[str]], key: str,
            names: set[str] | frozenset[str], name: str) -> None:
    """Add *name* to ``sets[key]`` (which is *names*), replacing the shared NOBODY."""
    if isinstance(names, set):
        names.add(name)
    else:
        sets[key] = {*names, name}


class Peer(Protocol):
    """One signed-in connection, as the registry sees it."""

    username: str | None

    def send_frame(self, frame: Any) -> None:
        """Queue an encoded frame for this connection."""


@dataclass
class Group:
    chatname: str
    creator: str
    members: set[str]
    # Whether the group has carried a message: its first gets status 201.
    started: bool = False
    # What a send is checked against without the database, kept current by
    # every change here and by the other nodes' events: the members above
    # member (username -> "owner"/"admin"), members muted until when (ms),
    # and who may send ("everyone" or "admins").
    roles: dict[str, str] = field(default_factory=dict)
    muted_until: dict[str, int] = field(default_factory=dict)
    who_can_send: str = "everyone"

    def role_of(self, username: str) -> str | None:
        """*username*'s role here, None when not a member."""
        if username not in self.members:
            return None
        return self.roles.get(username, "member")


@dataclass
class RandomPair:
    chatname: str
    members: tuple[str, str]

    def other(self, username: str) -> str:
        first, second = self.members
        return second if username == first else first


@dataclass
class Departure:
    """What changed when a user's last connection (on this node) went away.

    *offline* is whether the user has gone from the whole cluster; only then
    are random pairs ended and presence told.
    """

    username: str
    offline: bool = True
    ended_pairs: list[RandomPair] = field(default_factory=list)


class Registry:
    """Live chat state shared by every connection of one server."""

    def __init__(self, rng: _random.Random | None = None) -> None:
        self._rng = rng or _random.SystemRandom()
        self._online: dict[str, list[Peer]] = {}
        # Users connected to other nodes: username -> node names.
        self._remote: dict[str, set[str]] = {}
        self._groups: dict[str, Group] = {}
        self._groups_by_user: dict[str, set[str]] = {}
        self._pairs: dict[str, RandomPair] = {}
        self._pairs_by_user: dict[str, set[str]] = {}
        # Accepted contacts of each user online here, and the reverse: who
        # here has a user as a contact (to tell of that user's presence).
        # (Empty is NOBODY, shared.)
        self._contacts: dict[str, set[str] | frozenset[str]] = {}
        self._watchers: dict[str, set[str]] = {}
        # Personal safety. Whom each user online here blocks, and the
        # reverse (blocked name -> blockers here), which fan_out consults
        # once per message, and only when someone here blocks anybody;
        # whom each user online here is never paired with in random chat;
        # and every user's settings that are not the defaults, on every
        # node (presence and pairing concern users online anywhere).
        self._blocks: dict[str, set[str]] = {}
        self._blocked_by: dict[str, set[str]] = {}
        self._avoid: dict[str, set[str] | frozenset[str]] = {}
        self._settings: dict[str, Settings] = {}
        # The users' renames applied here (their ids): each is applied once.
        self._renames: set[str] = set()

    # -- presence ---------------------------------------------------------

    def connect(self, username: str, peer: Peer) -> bool:
        """Mark *peer* as signed in; True when it is the user's first connection here."""
        peers = self._online.setdefault(username, [])
        peers.append(peer)
        return len(peers) == 1

    def disconnect(self, username: str, peer: Peer) -> Departure | None:
        """Forget *peer*; a :class:`Departure` when the user has no connection here left."""
        peers = self._online.get(username)
        if not peers or peer not in peers:
            return None
        peers.remove(peer)
        if peers:
            return None
        del self._online[username]
        self._forget_contacts(username)
        self._forget_safety(username)
        return self._departed(username)

    def _departed(self, username: str) -> Departure:
        departure = Departure(username, offline=not self.is_online(username))
        if departure.offline:
            for chatname in sorted(self._pairs_by_user.get(username, ())):
                departure.ended_pairs.append(self.end_pair(chatname))
        return departure

    def remote_connect(self, username: str, node: str) -> bool:
        """Note that *username* is online on *node*; True if they were offline everywhere."""
        was_online = self.is_online(username)
        self._remote.setdefault(username, set()).add(node)
        return not was_online

    def remote_disconnect(self, username: str, node: str) -> Departure | None:
        """Note that *username* left *node*; a Departure unless nothing changed."""
        nodes = self._remote.get(username)
        if not nodes or node not in nodes:
            return None
        nodes.discard(node)
        if not nodes:
            del self._remote[username]
        return self._departed(username)

    def remote_users(self, node: str) -> list[str]:
        return sorted(name for name, nodes in self._remote.items() if node in nodes)

    def remote_nodes(self) -> set[str]:
        return {node for nodes in self._remote.values() for node in nodes}

    def nodes_of(self, username: str) -> set[str]:
        """The other nodes *username* is connected to."""
        return set(self._remote.get(username, ()))

    def online_count(self) -> int:
        return len(self._online.keys() | self._remote.keys())

    def is_online(self, username: str) -> bool:
        return username in self._online or username in self._remote

    def is_local(self, username: str) -> bool:
        return username in self._online

    def online_users(self, exclude: str | None = None) -> list[str]:
        return sorted(name for name in self._online.keys() | self._remote.keys() if name != exclude)

    def local_users(self) -> list[str]:
        return sorted(self._online)

    def local_slice(self, start: int, count: int) -> tuple[list[str], int]:
        """Up to *count* users online here from position *start* on, wrapping
        round, and where the next slice starts: for looking at everyone online
        a bounded slice at a time (copying the names is done in C, unlike a
        walk in Python over every user)."""
        names = list(self._online)
        if not names:
            return [], 0
        start %= len(names)
        part = names[start:start + count]
        if len(part) < count:
            part += names[:min(count - len(part), start)]
        return part, (start + len(part)) % len(names)

    def local_among(self, usernames: Iterable[str]) -> list[str]:
        """Those of *usernames* connected here, in the order given."""
        online = self._online
        return [username for username in usernames if username in online]

    def connections(self, username: str) -> list[Peer]:
        return list(self._online.get(username, ()))

    # -- contacts ---------------------------------------------------------

    def set_contacts(self, username: str, contacts: Iterable[str]) -> None:
        """Remember the accepted contacts of a user online here."""
        if username not in self._online:
            return
        self._forget_contacts(username)
        names = set(contacts) or NOBODY
        self._contacts[username] = names
        for contact in names:
            self._watchers.setdefault(contact, set()).add(username)

    def _forget_contacts(self, username: str) -> None:
        for contact in self._contacts.pop(username, ()):
            watchers = self._watchers.get(contact)
            if watchers is not None:
                watchers.discard(username)
                if not watchers:
                    del self._watchers[contact]

    def link_contacts(self, first: str, second: str) -> None:
        for one, other in ((first, second), (second, first)):
            contacts = self._contacts.get(one)
            if contacts is not None:
                _add_to(self._contacts, one, contacts, other)
                self._watchers.setdefault(other, set()).add(one)

    def unlink_contacts(self, first: str, second: str) -> None:
        for one, other in ((first, second), (second, first)):
            contacts = self._contacts.get(one)
            if contacts is not None:
                if isinstance(contacts, set):
                    contacts.discard(other)
                watchers = self._watchers.get(other)
                if watchers is not None:
                    watchers.discard(one)
                    if not watchers:
                        del self._watchers[other]

    def contact_of(self, username: str, other: str) -> bool | None:
        """Whether *other* is an accepted contact of *username*; None when not known here."""
        contacts = self._contacts.get(username)
        return None if contacts is None else other in contacts

    def watchers(self, username: str) -> list[str]:
        """Users online here who have *username* as a contact (to tell of presence)."""
        return sorted(self._watchers.get(username, ()))

    # -- personal safety --------------------------------------------------

    def set_safety(self, username: str, blocked: Iterable[str], avoid: Iterable[str]) -> None:
        """Remember whom a user online here blocks, and is never to be paired with."""
        if username not in self._online:
            return
        self._forget_safety(username)
        self._avoid[username] = set(avoid) or NOBODY
        for name in blocked:
            self.block(username, name)

    def _forget_safety(self, username: str) -> None:
        self._avoid.pop(username, None)
        for name in self._blocks.pop(username, ()):
            blockers = self._blocked_by.get(name)
            if blockers is not None:
                blockers.discard(username)
                if not blockers:
                    del self._blocked_by[name]

    def block(self, blocker: str, blocked: str) -> None:
        """*blocker* receives nothing from *blocked* here any more (if online here).

        Random chat keeps the two apart either way: *blocked* may be the one here.
        """
        self.keep_apart(blocker, blocked)
        if blocker not in self._online:
            return
        self._blocks.setdefault(blocker, set()).add(blocked)
        self._blocked_by.setdefault(blocked, set()).add(blocker)

    def unblock(self, blocker: str, blocked: str) -> None:
        """Future messages reach *blocker* again (they stay apart in random chat)."""
        names = self._blocks.get(blocker)
        if names is None or blocked not in names:
            return
        names.discard(blocked)
        if not names:
            del self._blocks[blocker]
        blockers = self._blocked_by[blocked]
        blockers.discard(blocker)
        if not blockers:
            del self._blocked_by[blocked]

    def blockers_of(self, blocked: str) -> set[str] | None:
        """The users online here who block *blocked* (None or empty when nobody does).

        The set is the registry's own: read it, do not keep or change it.
        """
        return self._blocked_by.get(blocked)

    def blocks(self, blocker: str, blocked: str) -> bool:
        """Whether *blocker* (online here) blocks *blocked*."""
        names = self._blocks.get(blocker)
        return names is not None and blocked in names

    def keep_apart(self, first: str, second: str) -> None:
        """Never pair these two in a random chat again (as far as users here go).

        The store keeps it (``random_avoid``, or the report or block that
        caused it) for the next sign-on; this makes it hold at once.
        """
        for one, other in ((first, second), (second, first)):
            avoid = self._avoid.get(one)
            if avoid is not None:
                _add_to(self._avoid, one, avoid, other)

    def kept_apart(self, first: str, second: str) -> bool:
        return second in self._avoid.get(first, ()) or first in self._avoid.get(second, ())

    def settings(self, username: str) -> Settings:
        return self._settings.get(username, DEFAULT_SETTINGS)

    def set_settings(self, username: str, settings: Settings) -> None:
        if settings.is_default:
            self._settings.pop(username, None)
        else:
            self._settings[username] = settings

    def load_settings(self, settings: dict[str, Settings]) -> None:
        """Replace every user's settings (at start-up, and after a rejoin)."""
        self._settings = {name: s for name, s in settings.items() if not s.is_default}

    def shows_presence(self, username: str, viewer: str | None) -> bool:
        """Whether *username*'s presence setting lets *viewer* (or None: anyone) see it.

        Contacts are known for users online here: one of the two must be.
        """
        presence = self.settings(username).presence
        if presence == "everyone" or viewer == username:
            return True
        if presence == "nobody" or viewer is None:
            return False
        return username in self._contacts.get(viewer, ()) or viewer in self._contacts.get(
            username, ()
        )

    def seen_online(self, username: str, viewer: str | None) -> bool:
        """Whether *viewer* sees *username* online (presence setting applied)."""
        return self.is_online(username) and self.shows_presence(username, viewer)

    def online_to_contacts(self, username: str) -> bool:
        """Whether *username*'s contacts see them online."""
        return self.is_online(username) and self.settings(username).presence != "nobody"

    def visible_online_users(self, viewer: str) -> list[str]:
        """The users *viewer* sees online, but *viewer*."""
        settings = self._settings
        if not settings:
            return self.online_users(exclude=viewer)
        return [
            name for name in self.online_users(exclude=viewer)
            if name not in settings or self.shows_presence(name, viewer)
        ]

    # -- groups -----------------------------------------------------------

    def group_count(self, username: str) -> int:
        """How many groups *username* belongs to."""
        return len(self._groups_by_user.get(username, ()))

    def add_group(
        self, chatname: str, creator: str, members: Iterable[str], started: bool = False,
        roles: dict[str, str] | None = None, muted_until: dict[str, int] | None = None,
        who_can_send: str = "everyone",
    ) -> Group:
        """Add (or, reloaded from the database, replace) a group.

        *roles* default to the creator as owner (a new group's only role).
        """
        old = self._groups.get(chatname)
        if old is not None:
            for member in list(old.members):
                self.remove_member(chatname, member)
            started = started or old.started
        group = Group(chatname, creator, set(members), started)
        group.roles = dict(roles) if roles is not None else {creator: "owner"}
        group.muted_until = dict(muted_until or {})
        group.who_can_send = who_can_send
        self._groups[chatname] = group
        for member in group.members:
            self._groups_by_user.setdefault(member, set()).add(chatname)
        return group

    def add_members(self, chatname: str, usernames: Iterable[str]) -> Group | None:
        """Add members (as plain members) to a known group."""
        group = self._groups.get(chatname)
        if group is None:
            return None
        for username in usernames:
            group.members.add(username)
            self._groups_by_user.setdefault(username, set()).add(chatname)
        return group

    def set_role(self, chatname: str, username: str, role: str) -> None:
        group = self._groups.get(chatname)
        if group is None or username not in group.members:
            return
        if role == "member":
            group.roles.pop(username, None)
        else:
            group.roles[username] = role

    def set_muted(self, chatname: str, username: str, until: int | None) -> None:
        """Mute a member until *until* (ms); None lifts it."""
        group = self._groups.get(chatname)
        if group is None:
            return
        if until is None:
            group.muted_until.pop(username, None)
        elif username in group.members:
            group.muted_until[username] = until

    def group(self, chatname: str) -> Group | None:
        return self._groups.get(chatname)

    def group_names(self) -> list[str]:
        return sorted(self._groups)

    def rename_group(self, old_name: str, new_name: str) -> Group | None:
        """Move a group, the same object with all it holds, to *new_name*.

        The old name no longer finds it. None when there is no group
        *old_name* (already renamed, or unknown here), or *new_name* is held.
        """
        group = self._groups.get(old_name)
        if group is None or new_name in self._groups:
            return None
        del self._groups[old_name]
        group.chatname = new_name
        self._groups[new_name] = group
        for member in group.members:
            chats = self._groups_by_user.setdefault(member, set())
            chats.discard(old_name)
            chats.add(new_name)
        return group

    def remove_member(self, chatname: str, username: str) -> Group | None:
        group = self._groups.get(chatname)
        if group is None or username not in group.members:
            return None
        group.members.discard(username)
        group.roles.pop(username, None)
        group.muted_until.pop(username, None)
        chats = self._groups_by_user.get(username)
        if chats is not None:
            chats.discard(chatname)
            if not chats:
                del self._groups_by_user[username]
        return group

    def remove_group(self, chatname: str) -> Group | None:
        """Forget a group (deleted by an operator, or gone from the database); the group, or None."""
        group = self._groups.get(chatname)
        if group is None:
            return None
        for member in list(group.members):
            self.remove_member(chatname, member)
        del self._groups[chatname]
        return group

    # -- renamed users ----------------------------------------------------

    def rename_user(self, old: str, new: str, rename_id: str = "") -> bool:
        """Move what others hold of *old* to *new* (a user renamed for good).

        Each rename is applied once (*rename_id*: the node that made it acts
        at once, and again when it reads the rename's notice); False when
        it already was.

        Group memberships, roles, mutes and creators, others' contacts,
        blocks and random-chat avoidance of them, and their settings. The
        state of *old*'s own connections here (their contacts, blocks,
        avoid set, random pairs) stays under *old*: those connections are
        being closed, and their sign-off forgets it.
        """
        if rename_id:
            if rename_id in self._renames:
                return False
            self._renames.add(rename_id)
        for chatname in self._groups_by_user.pop(old, set()):
            group = self._groups[chatname]
            group.members.discard(old)
            group.members.add(new)
            if old in group.roles:
                group.roles[new] = group.roles.pop(old)
            if old in group.muted_until:
                group.muted_until[new] = group.muted_until.pop(old)
            self._groups_by_user.setdefault(new, set()).add(chatname)
        for group in self._groups.values():
            if group.creator == old:
                group.creator = new
        for reverse, forward in ((self._watchers, self._contacts),
                                 (self._blocked_by, self._blocks)):
            holders = reverse.pop(old, set())
            for holder in holders:
                names = forward.get(holder)
                if isinstance(names, set) and old in names:
                    names.discard(old)
                    names.add(new)
            if holders:
                reverse.setdefault(new, set()).update(holders)
        for name, avoid in self._avoid.items():
            if name != old and isinstance(avoid, set) and old in avoid:
                avoid.discard(old)
                avoid.add(new)
        if old in self._settings:
            self._settings[new] = self._settings.pop(old)
        return True

    # -- random pairs -----------------------------------------------------

    def pair_randomly(self, username: str, local_only: bool = False) -> RandomPair | None:
        """Pair *username* with a random other online user, or None if alone.

        Users who opted out of random chats (their settings) and those kept
        apart from *username* (:meth:`keep_apart`) are never chosen.
        *local_only* picks among users on this node (when the cluster link is down).
        """
        if local_only:
            candidates = [name for name in self.local_users() if name != username]
        else:
            candidates = self.online_users(exclude=username)
        # Never someone who opted out, nor anyone kept apart from the user.
        avoid = self._avoid.get(username, set())
        settings = self._settings
        candidates = [
            name for name in candidates
            if name not in avoid and (name not in settings or settings[name].random_chat)
            and username not in self._avoid.get(name, ())
        ]
        if not candidates:
            return None
        partner = self._rng.choice(candidates)
        chatname = f"{RANDOM_PREFIX}random-{self._rng.getrandbits(64):016x}"
        while chatname in self._pairs:
            chatname = f"{RANDOM_PREFIX}random-{self._rng.getrandbits(64):016x}"
        return self.add_pair(chatname, (username, partner))

    def add_pair(self, chatname: str, members: tuple[str, str]) -> RandomPair:
        """Record a random pair (made here, or on another node)."""
        pair = RandomPair(chatname, members)
        self._pairs[chatname] = pair
        for member in pair.members:
            self._pairs_by_user.setdefault(member, set()).add(chatname)
        return pair

    def pair_count(self, username: str) -> int:
        """How many random chats *username* is in (made on any node)."""
        return len(self._pairs_by_user.get(username, ()))

    def pairs_between(self, first: str, second: str) -> list[RandomPair]:
        """The random chats of these two with each other."""
        return [
            self._pairs[chatname] for chatname in sorted(self._pairs_by_user.get(first, ()))
            if second in self._pairs[chatname].members
        ]

    def pair(self, chatname: str) -> RandomPair | None:
        return self._pairs.get(chatname)

    def end_pair(self, chatname: str) -> RandomPair:
        pair = self._pairs.pop(chatname)
        for member in pair.members:
            chats = self._pairs_by_user.get(member)
            if chats is not None:
                chats.discard(chatname)
                if not chats:
                    del self._pairs_by_user[member]
        return pair

    # -- delivery ---------------------------------------------------------

    def fan_out(
        self, usernames: Iterable[str], frame: Any, skip: Peer | None = None,
        sender: str | None = None,
    ) -> tuple[int, dict[str, list[str]] | None]:
        """Send *frame* to every connection here of every online user named.

        *skip* is a connection that already has the message (the sender's own).
        Users here who block *sender* are passed over (their other nodes,
        which know their blocks too, pass them over as well).
        Returns how many connections here it went to, and the users connected
        to other nodes, by node (None when there are none), for the caller to
        forward. Offline users are passed over.
        """
        count = 0
        online = self._online
        # Alone (or nobody elsewhere) the loop skips the lookup of other nodes.
        elsewhere = self._remote
        remote: dict[str, list[str]] | None = None
        # One lookup per message, and none while nobody here blocks anybody.
        blockers = self._blocked_by.get(sender) if sender is not None and self._blocked_by else None
        for username in usernames:
            if blockers is not None and username in blockers:
                continue
            peers = online.get(username)
            if peers is not None:
                for peer in peers:
                    if peer is not skip:
                        peer.send_frame(frame)
                        count += 1
            if not elsewhere:
                continue
            nodes = elsewhere.get(username)
            if nodes:
                if remote is None:
                    remote = {}
                for node in nodes:
                    names = remote.get(node)
                    if names is None:
                        remote[node] = [username]
                    else:
                        names.append(username)
        return count, remote

    def deliver_local(self, usernames: Iterable[str], frame: Any) -> int:
        """Send *frame* to the connections on this node only (a forward's last step)."""
        count = 0
        for username in usernames:
            for peer in self._online.get(username, ()):
                peer.send_frame(frame)
                count += 1
        return count
