"""The chat service: what every connection shares, and request dispatch.

A :class:`Chat` lives on the WebSocket factory. It owns the registry, the
store and the authenticator, and routes each typed request to its handler in
:mod:`chateau.handlers`. It knows nothing of frames or sockets: connections
reach it through the small :class:`Connection` interface.

Offline delivery works with one number per user, ``delivered_until``: every
message with an id up to it has reached the user. Messages are committed by
a single writer and routed in commit order, so ``last_routed_id`` (the
newest id routed so far) splits the world exactly: when a user's first
connection signs on, everything routed before went past them, and everything
after reaches them live. Signing on pushes the messages in between.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chateau import messages
from chateau.auth import Account, Authenticator
from chateau.config import Config
from chateau.errors import NOT_AUTHENTICATED, NOT_IMPLEMENTED, ChateauError
from chateau.handlers import HANDLERS
from chateau.messages import GroupMessageRequest, Request
from chateau.names import canonical
from chateau.metrics import Metrics
from chateau.registry import Registry
from chateau.store import (
    MessageRecord,
    Store,
    StoredMessage,
    hash_session_key,
    iso_timestamp,
    now_millis,
)

# Missed messages are fetched and pushed in pages of this many.
CATCH_UP_PAGE = 500


@dataclass
class CatchUp:
    """How far a connection's push of missed messages has got."""

    username: str
    # The id up to which everything has been written; None until known.
    pushed: int | None = None


class Connection(Protocol):
    """What handlers need from one client connection."""

    username: str | None
    signing_in: bool
    live: bool
    address: str
    # Set when the connection stops taking frames: the last id routed before.
    delivered_until: int | None
    session_key_hash: str | None

    def send_frame(self, frame: Any) -> None:
        """Send a frame prepared by :meth:`Chat.frame`."""

    def send_message(self, message: dict[str, Any]) -> None:
        """Encode and send one message to this connection only."""

    def hold(self) -> None:
        """Queue routed frames instead of sending them (while catching up)."""

    def release(self) -> None:
        """Send the frames queued since :meth:`hold`, then go on as usual."""

    def close_for(self, code: int, reason: str) -> None:
        """Close the WebSocket with *code*."""


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
        reactor: Any = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.config = config
        self.registry = registry
        self.store = store
        self.auth = authenticator
        self.reactor = reactor
        # Turns encoded JSON into whatever Connection.send_frame takes (an
        # Autobahn prepared message on the wire); set by the factory.
        self.prepare = prepare
        self.last_routed_id = 0
        # delivered_until of users who left recently, until the store has it.
        self._cursors: dict[str, int] = {}
        # Connections whose missed messages are being pushed, with how far
        # each has got; and users one of whose catch-ups was cut short while
        # another connection stayed (their cursor must not move on).
        self._catch_ups: dict[Connection, CatchUp] = {}
        self._cut_short: set[str] = set()
        self._account_check: LoopingCall | None = None
        self._next_id = 0

    async def start(self) -> None:
        """Check the schema and load persistent groups into the registry."""
        await self.store.prepare_schema()
        for record in await self.store.load_groups():
            self.registry.add_group(record.chatname, record.creator, record.members, record.started)
        self.last_routed_id = await self.store.last_message_id()
        if self.reactor is not None:
            self._account_check = LoopingCall(self._check_accounts)
            self._account_check.clock = self.reactor
            self._account_check.start(self.config.chat.account_check_interval, now=False)

    def stop(self) -> None:
        if self._account_check is not None and self._account_check.running:
            self._account_check.stop()

    # -- dispatch -----------------------------------------------------------

    async def dispatch(self, connection: Connection, request: Request) -> dict[str, Any] | None:
        """Run *request*'s handler; its direct response, or None for no reply."""
        if request.needs_user and connection.username is None:
            raise ChateauError(NOT_AUTHENTICATED, "not signed in: send a RegisterRequest first")
        return await HANDLERS[type(request)](self, connection, request)

    def pipelines(self, connection: Connection, request: Request) -> bool:
        """Whether *request* may start while the connection's earlier sends commit.

        True only for a message send whose recipient is known without asking
        the database, so that its one wait is the message writer: the writer
        commits in arrival order, and so replies and deliveries keep the
        sender's order.
        """
        if not (
            self.stores_messages
            and connection.username is not None
            and isinstance(request, GroupMessageRequest)
        ):
            return False
        target = canonical(request.recipient)
        registry = self.registry
        return (
            registry.pair(target) is not None
            or registry.group(target) is not None
            or registry.is_online(target)
        )

    # -- messages -----------------------------------------------------------

    @property
    def stores_messages(self) -> bool:
        return self.config.chat.store_messages

    def record_message(
        self, chat: str, sender: str, content: str, recipient: str | None = None
    ) -> Deferred[StoredMessage]:
        """Commit a message (or, with storage off, just number it)."""
        if self.stores_messages:
            return self.store.add_message(chat, sender, content, recipient)
        self._next_id = max(self._next_id, self.last_routed_id) + 1
        return succeed(StoredMessage(self._next_id, iso_timestamp(now_millis())))

    def require_stored_messages(self, feature: str) -> None:
        if not self.stores_messages:
            raise ChateauError(
                NOT_IMPLEMENTED,
                f"{feature} is off: this server keeps no messages ([chat] store_messages = false)",
            )

    # -- delivery -----------------------------------------------------------

    def frame(self, message: dict[str, Any]) -> Any:
        """Encode *message* once, ready for any number of connections."""
        return self.prepare(messages.encode(message))

    def deliver(
        self, usernames: Iterable[str], message: dict[str, Any], skip: Connection | None = None
    ) -> int:
        """Encode *message* once and let the registry route it."""
        return self.registry.deliver(usernames, self.frame(message), skip=skip)

    def routed(self, message_id: int) -> None:
        """Note that message *message_id* has been handed to the registry."""
        if message_id > self.last_routed_id:
            self.last_routed_id = message_id

    # -- sessions -----------------------------------------------------------

    async def new_session_key(self, connection: Connection, username: str) -> str:
        """Issue a session key for *username*; only its hash is stored."""
        key = secrets.token_urlsafe(32)
        key_hash = hash_session_key(key)
        lifetime = self.config.chat.session_lifetime_days * 86400
        await self.store.create_session(username, key_hash, lifetime)
        connection.session_key_hash = key_hash
        return key

    # -- presence -----------------------------------------------------------

    async def sign_on(
        self, connection: Connection, account: Account, reply: dict[str, Any]
    ) -> None:
        """Put *connection* online, send *reply*, then what it missed.

        The user is online from the moment the reply is sent. Frames routed to
        the connection while the missed messages are being fetched are held
        back and follow them, so everything arrives in order. A user's second
        connection gets no replay: the first one had it.
        """
        username = account.username
        connection.username = username
        connection.hold()
        first = self.registry.connect(username, connection)
        try:
            connection.send_message(reply)
        finally:
            if not first:
                connection.release()
        if not first:
            return
        progress = CatchUp(username)
        self._catch_ups[connection] = progress
        try:
            await self._catch_up(connection, progress)
        except Exception:
            # Keep the progress: sign-off saves no more than what was pushed.
            self.log.failure("catching {username} up failed", username=username)
        else:
            if connection.live:
                self._catch_ups.pop(connection, None)
        finally:
            connection.release()

    def _busy_catching_up(self) -> set[str]:
        return {p.username for p in self._catch_ups.values()} | self._cut_short

    async def _catch_up(self, connection: Connection, progress: CatchUp) -> None:
        username = progress.username
        upto = self.last_routed_id
        signed_on = now_millis()
        book = await self.store.contact_book(username)
        if not self.registry.is_online(username):
            return
        self.registry.set_contacts(username, book.contacts)
        self.deliver(self.registry.online_contacts(username), messages.presence_recv(username, True))
        # Requests that waited for the user; later ones were delivered live.
        for other, direction, since in book.pending:
            if direction == "incoming" and since <= signed_on:
                connection.send_message(messages.contact_request_recv(other))
        for group in await self.store.take_group_notices(username):
            notice = messages.group_init_notice(group.chatname, group.creator, sorted(group.members))
            notice["offline"] = True
            connection.send_message(notice)
        user = await self.store.get_user(username)
        after = self._cursors.pop(username, user.delivered_until if user else upto)
        progress.pushed = after
        if self.stores_messages:
            await self._push_missed(connection, progress, upto)
        if not connection.live:
            return
        progress.pushed = upto
        if upto > after and username not in self._cut_short:
            self.store.set_delivered_until([username], upto).addErrback(
                lambda failure: self.log.failure("saving a delivery cursor failed", failure)
            )

    async def _push_missed(self, connection: Connection, progress: CatchUp, upto: int) -> None:
        after = progress.pushed
        assert after is not None
        while after < upto and connection.live:
            page = await self.store.missed_messages(progress.username, after, upto, CATCH_UP_PAGE)
            if not page:
                return
            for record in page:
                connection.send_message(self._missed_frame(record))
                if not connection.live:
                    return  # it could not go out: the connection is closing
                progress.pushed = record.id
            after = page[-1].id

    @staticmethod
    def _missed_frame(record: MessageRecord) -> dict[str, Any]:
        if record.recipient is not None:
            message = messages.message_recv(
                sender=record.sender, chatname=record.sender, content=record.content or "",
                message_id=record.id, timestamp=record.timestamp,
            )
        else:
            message = messages.group_message_recv(
                first=False, sender=record.sender, chatname=record.chat,
                content=record.content or "", message_id=record.id, timestamp=record.timestamp,
            )
        message["offline"] = True
        if record.edited:
            message["edited"] = True
        return message

    def sign_off(self, connection: Connection) -> None:
        """Forget a connection; when it was the user's last, tell who should know."""
        username = connection.username
        if username is None:
            return
        connection.username = None
        connection.session_key_hash = None
        progress = self._catch_ups.pop(connection, None)
        departure = self.registry.disconnect(username, connection)
        if departure is None:
            if progress is not None:
                # Another connection stays, but this one's backlog was cut off:
                # keep the stored cursor where it is (a replay beats a loss).
                self._cut_short.add(username)
            return
        # Everything routed so far was written to the connection, except, in
        # a catch-up, what it had not pushed yet.
        if progress is not None:
            cursor = progress.pushed
        elif connection.delivered_until is not None:
            cursor = connection.delivered_until
        else:
            cursor = self.last_routed_id
        if username in self._cut_short:
            self._cut_short.discard(username)
            cursor = None
        if cursor is not None:
            self._cursors[username] = cursor
            saved = self.store.set_delivered_until([username], cursor)
            saved.addCallback(lambda _: self._forget_cursor(username, cursor))
            saved.addErrback(
                lambda failure: self.log.failure("saving a delivery cursor failed", failure)
            )
        for pair in departure.ended_pairs:
            self.deliver(
                [pair.other(username)],
                messages.random_chat_ended(pair.chatname, username, "disconnected"),
            )
        contacts_online = [
            name for name in departure.contacts if self.registry.is_online(name)
        ]
        self.deliver(contacts_online, messages.presence_recv(username, False))

    def _forget_cursor(self, username: str, cursor: int) -> None:
        if self._cursors.get(username) == cursor:
            del self._cursors[username]

    # -- housekeeping -------------------------------------------------------

    def _check_accounts(self) -> Any:
        """Disconnect disabled accounts and save online users' delivery cursors."""
        busy = self._busy_catching_up()
        # Not users with a connection that stopped taking frames: their cursor
        # is settled when it closes (see sign_off).
        online = [
            u for u in self.registry.online_users()
            if u not in busy and all(c.live for c in self.registry.connections(u))
        ]
        if not online:
            return None
        return ensureDeferred(self._check_accounts_async(online)).addErrback(
            lambda failure: self.log.failure("account check failed", failure)
        )

    async def _check_accounts_async(self, online: list[str]) -> None:
        await self.store.set_delivered_until(online, self.last_routed_id)
        for username in await self.store.disabled_among(online):
            self.log.info("closing the connections of disabled account {username}", username=username)
            for connection in self.registry.connections(username):
                connection.close_for(1008, "account disabled")
