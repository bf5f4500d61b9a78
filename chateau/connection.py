"""What the layers above the wire need from one client connection.

:class:`chateau.protocol.ChateauServerProtocol` is the real thing; the
in-process tests use a fake. Handlers, delivery and catch-up see only this.
"""

from __future__ import annotations

from typing import Any, Protocol


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
    session_key_hash: str | None

    def send_frame(self, frame: Any) -> None:
        """Send a frame prepared by :meth:`chateau.delivery.Delivery.frame`."""

    def send_message(self, message: dict[str, Any]) -> None:
        """Encode and send one message to this connection only."""

    def hold(self) -> None:
        """Queue routed frames instead of sending them (while catching up)."""

    def release(self) -> None:
        """Send the frames queued since :meth:`hold`, then go on as usual."""

    def close_for(self, code: int, reason: str) -> None:
        """Close the WebSocket with *code*."""
