"""What the layers above the wire need from one client connection.

:class:`chateau.protocol.ChateauServerProtocol` is the real thing; the
in-process tests use a fake. Handlers, delivery and catch-up see only this.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred


class Connection(Protocol):
    """One client connection, as handlers and delivery see it."""

    username: str | None
    signing_in: bool
    live: bool
    # The client's real address (chateau.addresses: the PROXY protocol's, or
    # a trusted proxy's X-Forwarded-For), which per-address limits key on.
    address: str
    # Set when the connection stops taking frames: the last id routed before.
    delivered_until: int | None
    # Set with it: whether the client had stopped taking frames (what was
    # written last may not have left the server).
    stalled: bool
    session_key_hash: str | None
    # Set whenever a frame is sent; the account check clears it and saves the
    # delivery cursors of only the users it found set (chateau.catchup).
    sent_since_check: bool
    # Given at sign-on (chateau.catchup): where the connection adds itself
    # when sent_since_check goes from clear to set, so that the check walks
    # the connections that sent something, not everyone online.
    sent_watch: set[Any] | None

    def send_frame(self, frame: Any) -> None:
        """Send a frame prepared by :meth:`chateau.delivery.Delivery.frame`."""

    def send_message(self, message: dict[str, Any]) -> None:
        """Encode and send one message to this connection only."""

    def hold(self) -> None:
        """Queue routed frames instead of sending them (while catching up).

        What is held is bounded (``[limits] send_buffer`` bytes): past it the
        connection is closed with 1013 and the held frames are dropped (the
        messages among them stay stored for the next catch-up).
        """

    def release(self) -> Deferred[None]:
        """Send the frames queued since :meth:`hold` as the client takes them, then go on as usual.

        Frames routed meanwhile are queued behind them. Fires once nothing is
        held any more, or the connection has closed.
        """

    def wait_writable(self) -> Deferred[None] | None:
        """None when the client is taking what is sent; else fires once it has (or closed).

        Large answers the server builds itself (catch-up, history) write the
        next frame only then: the network's pace, not the server's backlog.
        """

    def close_for(self, code: int, reason: str) -> None:
        """Close the WebSocket with *code*."""

    def close_overloaded(self, frames: int, size: int) -> None:
        """Close with 1013: *frames* held for it (*size* bytes) passed ``send_buffer``.

        They are dropped (logged and counted); the messages among them stay
        stored for the next catch-up.
        """
