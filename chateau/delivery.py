"""Delivery: encode a message once and hand it to everyone who should have it.

Handlers decide *what* to say; the registry decides *who* is where; this
module does the sending: it prepares one frame for a whole fan-out, gives it
to the registry for the connections on this node, and forwards the encoded
message through the backplane to users on other nodes. It also keeps
``last_routed_id``, the newest message id routed so far, which offline
delivery (:mod:`chateau.catchup`) uses to split "already delivered live"
from "missed".

Interface, in short:

- :meth:`Delivery.deliver` / :meth:`Delivery.deliver_here`: a message to users
  (everywhere / on this node only).
- :meth:`Delivery.routed`: a chat message has been handed out.
- :meth:`Delivery.check_reachable`, :attr:`Delivery.link_down`: refuse (503)
  what must reach another node while the cluster link is down.
- :meth:`Delivery.announce`: tell other nodes of a change to shared state.
- :meth:`Delivery.tell_presence`, :meth:`Delivery.went_offline`: presence
  notices and random pairs ended when a user leaves.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from chateau import messages
from chateau.backplane import Backplane
from chateau.connection import Connection
from chateau.errors import UNAVAILABLE, ChateauError
from chateau.frames import prepare_frame
from chateau.registry import Departure, Registry


class Delivery:
    """The outgoing side of one node: fan-out, forwarding, routed ids."""

    def __init__(
        self, registry: Registry, backplane: Backplane,
        prepare: Callable[[bytes], Any] = prepare_frame,
    ) -> None:
        self.registry = registry
        self.backplane = backplane
        # Turns encoded JSON into what Connection.send_frame takes.
        self.prepare = prepare
        self.last_routed_id = 0
        self._next_id = 0

    # -- frames -------------------------------------------------------------

    def frame(self, message: dict[str, Any]) -> Any:
        """Encode *message* once, ready for any number of connections."""
        return self.prepare(messages.encode(message))

    def deliver(
        self, usernames: Iterable[str], message: dict[str, Any], skip: Connection | None = None,
        message_id: int | None = None, sender: str | None = None,
    ) -> int:
        """Send *message* to every connection of the users named, on every node.

        *skip* is a connection that already has it (the sender's own);
        *message_id* marks a chat message (one that offline delivery counts);
        *sender* is whose words it carries: users who block them are passed
        over, here and, told the sender, on the node of their connection.
        Returns how many connections on this node it went to.
        """
        payload = messages.encode(message)
        count, remote = self.registry.fan_out(
            usernames, self.prepare(payload), skip=skip, sender=sender
        )
        if remote:
            for node, names in remote.items():
                self.backplane.forward(node, names, payload, message_id, sender)
        return count

    def deliver_here(self, usernames: Iterable[str], message: dict[str, Any]) -> int:
        """Send *message* to the connections on this node only."""
        return self.registry.deliver_local(usernames, self.frame(message))

    def deliver_payload_here(self, usernames: Iterable[str], payload: bytes) -> int:
        """Send an already encoded message (one another node routed) to users here."""
        return self.registry.deliver_local(usernames, self.prepare(payload))

    # -- message ids ----------------------------------------------------------

    def routed(self, message_id: int) -> None:
        """Note that message *message_id* has been handed to the registry."""
        if message_id > self.last_routed_id:
            self.last_routed_id = message_id

    def next_unstored_id(self) -> int:
        """An id for a message that is not stored (``[chat] store_messages = false``)."""
        self._next_id = max(self._next_id, self.last_routed_id) + 1
        return self._next_id

    # -- the cluster ----------------------------------------------------------

    @property
    def link_down(self) -> bool:
        """Whether the other nodes are out of reach now."""
        return not self.backplane.connected

    def check_reachable(self, usernames: Iterable[str]) -> None:
        """Refuse (503) what would have to reach another node while the link is down."""
        if self.backplane.connected:
            return
        registry = self.registry
        for name in usernames:
            if not registry.is_local(name) and registry.nodes_of(name):
                raise ChateauError(
                    UNAVAILABLE,
                    f"{name!r} is connected to another Chateau node and the link between "
                    "nodes (Redis) is down: try again shortly",
                )

    def announce(self, event: dict[str, Any]) -> None:
        """Tell the other nodes of a change to shared state (groups, pairs, contacts)."""
        self.backplane.publish(event)

    # -- presence -------------------------------------------------------------

    def tell_presence(self, username: str, online: bool) -> None:
        """Tell users here who have *username* as a contact (unless they appear to nobody)."""
        if self.registry.settings(username).presence == "nobody":
            return
        watchers = self.registry.watchers(username)
        if watchers:
            self.deliver_here(watchers, messages.presence_recv(username, online))

    def presence_changed(self, username: str) -> None:
        """*username* appears to contacts now, or no more: tell their contacts here.

        (Contacts see a user whose presence is "everyone" or "contacts" alike.)
        """
        watchers = self.registry.watchers(username)
        if watchers:
            online = self.registry.is_online(username) and (
                self.registry.settings(username).presence != "nobody"
            )
            self.deliver_here(watchers, messages.presence_recv(username, online))

    def went_offline(self, departure: Departure) -> None:
        """A user left the whole cluster: end their random pairs, tell contacts here."""
        username = departure.username
        for pair in departure.ended_pairs:
            partner = pair.other(username)
            if self.registry.is_local(partner):
                self.deliver_here(
                    [partner], messages.random_chat_ended(pair.chatname, username, "disconnected")
                )
        self.tell_presence(username, False)
