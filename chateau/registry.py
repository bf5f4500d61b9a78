"""Who is online, which groups exist, who is paired with whom, and who gets what.

The registry is plain Python with no I/O: it keeps the live chat state and is
the one place that decides who receives a message. Delivering means handing
an already-encoded frame to each recipient's :class:`Peer`; a backplane that
spans several processes can later sit behind :meth:`Registry.deliver`.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from chateau.names import RANDOM_PREFIX


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


@dataclass
class RandomPair:
    chatname: str
    members: tuple[str, str]

    def other(self, username: str) -> str:
        first, second = self.members
        return second if username == first else first


@dataclass
class Departure:
    """What changed when a user's last connection went away."""

    username: str
    ended_pairs: list[RandomPair] = field(default_factory=list)
    contacts: set[str] = field(default_factory=set)


class Registry:
    """Live chat state shared by every connection of one server."""

    def __init__(self, rng: _random.Random | None = None) -> None:
        self._rng = rng or _random.SystemRandom()
        self._online: dict[str, list[Peer]] = {}
        self._groups: dict[str, Group] = {}
        self._groups_by_user: dict[str, set[str]] = {}
        self._pairs: dict[str, RandomPair] = {}
        self._pairs_by_user: dict[str, set[str]] = {}
        # Accepted contacts of each online user, for presence notices.
        self._contacts: dict[str, set[str]] = {}

    # -- presence ---------------------------------------------------------

    def connect(self, username: str, peer: Peer) -> bool:
        """Mark *peer* as signed in; True when it is the user's first connection."""
        peers = self._online.setdefault(username, [])
        peers.append(peer)
        return len(peers) == 1

    def disconnect(self, username: str, peer: Peer) -> Departure | None:
        """Forget *peer*; a :class:`Departure` when the user has gone offline."""
        peers = self._online.get(username)
        if not peers or peer not in peers:
            return None
        peers.remove(peer)
        if peers:
            return None
        del self._online[username]
        departure = Departure(username, contacts=self._contacts.pop(username, set()))
        for chatname in sorted(self._pairs_by_user.get(username, ())):
            departure.ended_pairs.append(self.end_pair(chatname))
        return departure

    def online_count(self) -> int:
        return len(self._online)

    def is_online(self, username: str) -> bool:
        return username in self._online

    def online_users(self, exclude: str | None = None) -> list[str]:
        return sorted(name for name in self._online if name != exclude)

    def connections(self, username: str) -> list[Peer]:
        return list(self._online.get(username, ()))

    # -- contacts ---------------------------------------------------------

    def set_contacts(self, username: str, contacts: Iterable[str]) -> None:
        """Remember an online user's accepted contacts."""
        if username in self._online:
            self._contacts[username] = set(contacts)

    def link_contacts(self, first: str, second: str) -> None:
        for one, other in ((first, second), (second, first)):
            if one in self._contacts:
                self._contacts[one].add(other)

    def unlink_contacts(self, first: str, second: str) -> None:
        for one, other in ((first, second), (second, first)):
            if one in self._contacts:
                self._contacts[one].discard(other)

    def online_contacts(self, username: str) -> list[str]:
        """The contacts of *username* who are online (to tell of presence)."""
        return sorted(c for c in self._contacts.get(username, ()) if c in self._online)

    # -- groups -----------------------------------------------------------

    def group_count(self, username: str) -> int:
        """How many groups *username* belongs to."""
        return len(self._groups_by_user.get(username, ()))

    def add_group(
        self, chatname: str, creator: str, members: Iterable[str], started: bool = False
    ) -> Group:
        group = Group(chatname, creator, set(members), started)
        self._groups[chatname] = group
        for member in group.members:
            self._groups_by_user.setdefault(member, set()).add(chatname)
        return group

    def group(self, chatname: str) -> Group | None:
        return self._groups.get(chatname)

    def remove_member(self, chatname: str, username: str) -> Group | None:
        group = self._groups.get(chatname)
        if group is None or username not in group.members:
            return None
        group.members.discard(username)
        chats = self._groups_by_user.get(username)
        if chats is not None:
            chats.discard(chatname)
            if not chats:
                del self._groups_by_user[username]
        return group

    # -- random pairs -----------------------------------------------------

    def pair_randomly(self, username: str) -> RandomPair | None:
        """Pair *username* with a random other online user, or None if alone."""
        candidates = self.online_users(exclude=username)
        if not candidates:
            return None
        partner = self._rng.choice(candidates)
        chatname = f"{RANDOM_PREFIX}random-{self._rng.getrandbits(64):016x}"
        while chatname in self._pairs:
            chatname = f"{RANDOM_PREFIX}random-{self._rng.getrandbits(64):016x}"
        pair = RandomPair(chatname, (username, partner))
        self._pairs[chatname] = pair
        for member in pair.members:
            self._pairs_by_user.setdefault(member, set()).add(chatname)
        return pair

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

    def deliver(self, usernames: Iterable[str], frame: Any, skip: Peer | None = None) -> int:
        """Send *frame* to every connection of every online user named.

        *skip* is a connection that already has the message (the sender's own).
        Returns how many connections it went to; offline users are passed over.
        """
        count = 0
        for username in usernames:
            for peer in self._online.get(username, ()):
                if peer is not skip:
                    peer.send_frame(frame)
                    count += 1
        return count
