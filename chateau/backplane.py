"""The link between cluster nodes, as the rest of the server sees it.

:class:`Backplane` is what delivery and catch-up use to reach other nodes;
:class:`chateau.cluster.RedisBackplane` implements it over Redis, and
:class:`NullBackplane` stands in for a server running alone, so no caller
asks "is there a cluster?". :class:`ClusterListener` is what a backplane
calls back with what other nodes say (:class:`chateau.cluster_sync.ClusterSync`).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred


class ClusterListener(Protocol):
    """Receives what the other nodes of a cluster say."""

    @property
    def last_routed_id(self) -> int:
        """The newest id this node has routed: its fence for other nodes."""

    def forwarded(
        self, origin: str, usernames: list[str], payload: bytes, message_id: int | None,
        sender: str | None = None,
    ) -> None:
        """A message another node routed to users here (*sender*: whose words it carries)."""

    def event(self, event: dict[str, Any]) -> None:
        """A change to shared state another node announced."""

    def node_gone(self, node: str) -> None:
        """*node* died or restarted."""

    def link_lost(self) -> None:
        """This node is out of touch with the others."""

    async def rejoined(self, fences: dict[str, int]) -> None:
        """Back in touch; *fences* bound what users here may have missed."""

    async def peer_returned(self, node: str, fences: Deferred[dict[str, int]]) -> None:
        """*node* is back in touch; *fences* fires with its fence."""


class Backplane(Protocol):
    """Carries events and encoded messages to the other nodes of a cluster."""

    # This node's name (which its messages record as their origin); None alone.
    node: str | None

    @property
    def connected(self) -> bool:
        """Whether other nodes can be reached now."""

    def attach(self, listener: ClusterListener) -> None:
        """Name the one object that hears what other nodes say."""

    def publish(self, event: dict[str, Any]) -> None:
        """Tell every other node of a change (fire and forget)."""

    def forward(
        self, node: str, usernames: list[str], payload: bytes, message_id: int | None,
        sender: str | None = None,
    ) -> None:
        """Deliver *payload* to the connections of *usernames* on *node*.

        *sender* (whose words it carries) lets that node pass over its users
        who block them: only it knows their blocks.
        """

    def user_joined(self, username: str) -> Deferred[dict[str, int]] | None:
        """Announce a user's first connection here; fires with the other nodes' fences."""

    def user_left(self, username: str) -> None:
        """Announce that a user's last connection here went away."""

    def status(self) -> dict[str, Any] | None:
        """What ``/health`` says of the cluster; None for a server running alone."""


class NullBackplane:
    """A server running alone: nobody is on another node, and nothing is out of reach."""

    node: str | None = None
    connected = True

    def attach(self, listener: ClusterListener) -> None:
        pass

    def publish(self, event: dict[str, Any]) -> None:
        pass

    def forward(
        self, node: str, usernames: list[str], payload: bytes, message_id: int | None,
        sender: str | None = None,
    ) -> None:
        raise AssertionError(f"no cluster, yet {usernames} are said to be on {node}")

    def user_joined(self, username: str) -> None:
        return None

    def user_left(self, username: str) -> None:
        pass

    def status(self) -> None:
        return None
