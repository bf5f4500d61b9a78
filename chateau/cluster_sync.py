"""What this node does with what the other nodes of a cluster say.

:class:`chateau.cluster.RedisBackplane` carries the words; this applies them:
changes to shared state (presence, groups, random pairs, contacts) go into
the registry, with presence notices for users here; forwarded messages and
the holds around a lost or regained link go to :mod:`chateau.catchup`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chateau.backplane import Backplane
from chateau.catchup import CatchUp
from chateau.delivery import Delivery
from chateau.registry import Registry
from chateau.safety import Settings
from chateau.store import Store


async def load_groups(store: Store, registry: Registry) -> None:
    """Load the stored groups into the registry (at start-up, and after a rejoin).

    A group the database no longer has under a name (renamed while this
    node could not hear it) is forgotten under that name.
    """
    records = await store.groups.load_groups()
    loaded = {record.chatname for record in records}
    for chatname in registry.group_names():
        if chatname not in loaded:
            registry.remove_group(chatname)
    for record in records:
        registry.add_group(
            record.chatname, record.creator, record.members, record.started,
            roles=dict(record.roles), muted_until=dict(record.muted),
            who_can_send=record.who_can_send,
        )


async def load_settings(store: Store, registry: Registry) -> None:
    """Load every user's non-default settings (at start-up, and after a rejoin)."""
    registry.load_settings(await store.safety.all_settings())


async def load_shared(store: Store, registry: Registry) -> None:
    """What every node keeps of the whole chat: groups and users' settings."""
    await load_groups(store, registry)
    await load_settings(store, registry)


class ClusterSync:
    """The backplane's listener: applies other nodes' events on this node."""

    log = Logger()

    def __init__(
        self, registry: Registry, store: Store, delivery: Delivery, catch_up: CatchUp,
        backplane: Backplane,
    ) -> None:
        self.registry = registry
        self.store = store
        self.delivery = delivery
        self.catch_up = catch_up
        backplane.attach(self)

    @property
    def last_routed_id(self) -> int:
        return self.delivery.last_routed_id

    def forwarded(
        self, origin: str, usernames: list[str], payload: bytes, message_id: int | None,
        sender: str | None = None,
    ) -> None:
        self.catch_up.forwarded(origin, usernames, payload, message_id, sender)

    def event(self, event: dict[str, Any]) -> None:
        """Apply a change another node announced (see chateau.cluster)."""
        registry = self.registry
        kind = event["t"]
        node = event["node"]
        if kind == "join":
            if registry.remote_connect(event["user"], node):
                self.delivery.tell_presence(event["user"], True)
        elif kind == "leave":
            departure = registry.remote_disconnect(event["user"], node)
            if departure is not None and departure.offline:
                self.delivery.went_offline(departure)
        elif kind == "hello":
            users = set(event["users"])
            for username in registry.remote_users(node):
                if username not in users:
                    self.event({"t": "leave", "node": node, "user": username})
            for username in sorted(users):
                self.event({"t": "join", "node": node, "user": username})
        elif kind == "reset":
            self.node_gone(node)
        elif kind == "group":
            registry.add_group(event["chatname"], event["creator"], event["members"])
        elif kind == "group_started":
            group = registry.group(event["chatname"])
            if group is not None:
                group.started = True
        elif kind == "member_left":
            registry.remove_member(event["chatname"], event["user"])
        elif kind == "group_renamed":
            if registry.rename_group(event["chatname"], event["new_name"]) is not None:
                self.renamed(event["chatname"], event["new_name"])
        elif kind == "group_settings":
            group = registry.group(event["chatname"])
            if group is not None:
                group.who_can_send = event["who_can_send"]
        elif kind == "members_added":
            registry.add_members(event["chatname"], event["users"])
        elif kind == "member_role":
            registry.set_role(event["chatname"], event["user"], event["role"])
        elif kind == "member_muted":
            registry.set_muted(event["chatname"], event["user"], event["until"] or None)
        elif kind == "pair":
            first, second = event["members"]
            registry.add_pair(event["chatname"], (first, second))
        elif kind == "pair_end":
            if registry.pair(event["chatname"]) is not None:
                registry.end_pair(event["chatname"])
        elif kind == "contacts":
            if event["linked"]:
                registry.link_contacts(event["first"], event["second"])
            else:
                registry.unlink_contacts(event["first"], event["second"])
        elif kind == "block":
            if event["on"]:
                registry.block(event["blocker"], event["blocked"])
            else:
                registry.unblock(event["blocker"], event["blocked"])
        elif kind == "apart":
            registry.keep_apart(event["first"], event["second"])
        elif kind == "settings":
            user = event["user"]
            old = registry.settings(user)
            registry.set_settings(user, Settings(**{
                name: event["settings"][name] for name in Settings.__dataclass_fields__
            }))
            if (registry.settings(user).presence == "nobody") != (old.presence == "nobody"):
                self.delivery.presence_changed(user)

    def renamed(self, old_name: str, new_name: str) -> Deferred[int]:
        """After a rename heard from another node: move what this node committed late.

        A send here that passed its check under the old name before the
        event arrived commits under it; it joins the rest of the history.
        """
        work = self.store.group_settings.move_stragglers(old_name, new_name)
        return work.addErrback(self._sweep_failed, old_name, new_name)

    def _sweep_failed(self, failure: Failure, old_name: str, new_name: str) -> int:
        self.log.warn(
            "could not move late messages of {old_name} to {new_name}: {reason}",
            old_name=old_name, new_name=new_name, reason=failure.getErrorMessage(),
        )
        return 0

    def node_gone(self, node: str) -> None:
        """A node died or restarted: its users are offline unless connected elsewhere."""
        for username in self.registry.remote_users(node):
            departure = self.registry.remote_disconnect(username, node)
            if departure is not None and departure.offline:
                self.delivery.went_offline(departure)

    def link_lost(self) -> None:
        self.catch_up.link_lost()

    async def rejoined(self, fences: dict[str, int]) -> None:
        await self.catch_up.rejoined(fences, lambda: load_shared(self.store, self.registry))

    async def peer_returned(self, node: str, fences: Deferred[dict[str, int]]) -> None:
        await self.catch_up.peer_returned(fences)
