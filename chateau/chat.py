"""The chat service: what every connection shares, and request dispatch.

A :class:`Chat` lives on the WebSocket factory. It owns the registry, the
store and the authenticator, and routes each typed request to its handler in
:mod:`chateau.handlers`. It knows nothing of frames or sockets: connections
reach it through the small :class:`Connection` interface.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol

from twisted.logger import Logger

from chateau import messages
from chateau.auth import Authenticator
from chateau.config import Config
from chateau.errors import NOT_AUTHENTICATED, ChateauError
from chateau.handlers import HANDLERS
from chateau.messages import Request
from chateau.registry import Registry
from chateau.store import Store


class Connection(Protocol):
    """What handlers need from one client connection."""

    username: str | None
    signing_in: bool
    live: bool

    def send_frame(self, frame: Any) -> None:
        """Send a frame prepared by :meth:`Chat.frame`."""


class Chat:
    """Shared state and services of one Chateau server."""

    log = Logger()

    def __init__(
        self,
        config: Config,
        registry: Registry,
        store: Store,
        authenticator: Authenticator,
        prepare: Callable[[bytes], Any] = bytes,
    ) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self.auth = authenticator
        # Turns encoded JSON into whatever Connection.send_frame takes (an
        # Autobahn prepared message on the wire); set by the factory.
        self.prepare = prepare

    async def start(self) -> None:
        """Create the schema and load persistent groups into the registry."""
        await self.store.create_schema()
        for record in await self.store.load_groups():
            self.registry.add_group(record.chatname, record.creator, record.members, record.started)

    # -- dispatch -----------------------------------------------------------

    async def dispatch(self, connection: Connection, request: Request) -> dict[str, Any] | None:
        """Run *request*'s handler; its direct response, or None for no reply."""
        if request.needs_user and connection.username is None:
            raise ChateauError(NOT_AUTHENTICATED, "not signed in: send a RegisterRequest first")
        return await HANDLERS[type(request)](self, connection, request)

    # -- delivery -----------------------------------------------------------

    def frame(self, message: dict[str, Any]) -> Any:
        """Encode *message* once, ready for any number of connections."""
        return self.prepare(messages.encode(message))

    def deliver(
        self, usernames: Iterable[str], message: dict[str, Any], skip: Connection | None = None
    ) -> int:
        """Encode *message* once and let the registry route it."""
        return self.registry.deliver(usernames, self.frame(message), skip=skip)

    # -- presence -----------------------------------------------------------

    def sign_on(self, connection: Connection, username: str) -> None:
        connection.username = username
        self.registry.connect(username, connection)

    def sign_off(self, connection: Connection) -> None:
        """Forget a closed connection and tell random partners it has gone."""
        username = connection.username
        if username is None:
            return
        departure = self.registry.disconnect(username, connection)
        if departure is None:
            return
        for pair in departure.ended_pairs:
            self.deliver(
                [pair.other(username)],
                messages.random_chat_ended(pair.chatname, username, "disconnected"),
            )
