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

In a cluster (:mod:`chateau.cluster`) that rule holds per origin node: each
user has a cursor per node whose messages they get, and the other nodes'
*fences* take the place of ``last_routed_id`` for their messages.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable, Protocol

from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chateau import messages
from chateau.auth import Account, Authenticator
from chateau.config import Config
from chateau.errors import NOT_AUTHENTICATED, NOT_IMPLEMENTED, UNAVAILABLE, ChateauError
from chateau.handlers import HANDLERS
from chateau.messages import GroupMessageRequest, Request
from chateau.names import canonical
from chateau.metrics import Metrics
from chateau.registry import Departure, Registry
from chateau.store import Store
from chateau.store.records import (
    ANY_ORIGIN,
    MessageRecord,
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
    # Per origin, the id up to which everything has been written; None until known.
    pushed: dict[Any, int] | None = None


# One stretch of missed messages: (origin key, after, upto or None for "all").
Range = tuple[Any, int, "int | None"]


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
        # Per-origin cursors of users who left recently, until the store has them.
        self._cursors: dict[str, dict[Any, int]] = {}
        # Connections whose missed messages are being pushed, with how far
        # each has got; and users one of whose catch-ups was cut short while
        # another connection stayed (their cursor must not move on).
        self._catch_ups: dict[Connection, CatchUp] = {}
        self._cut_short: set[str] = set()
        self._account_check: LoopingCall | None = None
        self._next_id = 0
        # Cluster mode: the link to the other nodes (set by the service), and
        # this node's name, which its messages record as their origin.
        self.backplane: Any = None
        self.node: str | None = store.origin
        # Per user online here: per other origin, the newest id pushed or
        # forwarded to them; and forwarded messages held during a catch-up.
        self._remote_seen: dict[str, dict[Any, int]] = {}
        self._remote_held: dict[str, list[tuple[Any, int, bytes]]] = {}
        # Pushes of other nodes' messages to every user here in progress (while
        # any is, forwarded messages are held), and whether the link is down.
        self._holds = 0
        self._link_lost = False

    @property
    def own_origin(self) -> Any:
        """The cursor key of this node's messages (alone: one cursor for all)."""
        return self.node if self.node is not None else ANY_ORIGIN

    async def start(self) -> None:
        """Check the schema and load persistent groups into the registry."""
        await self.store.prepare_schema()
        await self.load_groups()
        if self.node is not None:
            await self.store.cursors.register_node(self.node)
        self.last_routed_id = await self.store.messages.last_message_id(self.own_origin)
        if self.reactor is not None:
            self._account_check = LoopingCall(self._check_accounts)
            self._account_check.clock = self.reactor
            self._account_check.start(self.config.chat.account_check_interval, now=False)

    async def load_groups(self) -> None:
        for record in await self.store.groups.load_groups():
            self.registry.add_group(record.chatname, record.creator, record.members, record.started)

    def stop(self) -> None:
        if self._account_check is not None and self._account_check.running:
            self._account_check.stop()

    # -- dispatch -----------------------------------------------------------

    def dispatch(self, connection: Connection, request: Request) -> Deferred[dict[str, Any] | None]:
        """Run *request*'s handler; its direct response, or None for no reply.

        A refusal, raised at once or later, comes out as the Deferred's failure.
        """
        if request.needs_user and connection.username is None:
            return fail(
                ChateauError(NOT_AUTHENTICATED, "not signed in: send a RegisterRequest first")
            )
        try:
            result = HANDLERS[type(request)](self, connection, request)
        except Exception:
            return fail()
        if isinstance(result, Deferred):
            return result
        return Deferred.fromCoroutine(result)

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
            return self.store.messages.add_message(chat, sender, content, recipient)
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
        self, usernames: Iterable[str], message: dict[str, Any], skip: Connection | None = None,
        message_id: int | None = None,
    ) -> int:
        """Encode *message* once and let the registry route it.

        *message_id* marks a chat message (one that offline delivery counts).
        """
        payload = messages.encode(message)
        return self.registry.deliver(
            usernames, self.prepare(payload), skip=skip, payload=payload, message_id=message_id
        )

    def deliver_here(self, usernames: Iterable[str], message: dict[str, Any]) -> int:
        """Send *message* to the connections on this node only."""
        return self.registry.deliver_local(usernames, self.frame(message))

    # -- cluster ------------------------------------------------------------

    def check_reachable(self, usernames: Iterable[str]) -> None:
        """Refuse (503) what would have to reach another node while the link is down."""
        backplane = self.backplane
        if backplane is None or backplane.connected:
            return
        registry = self.registry
        for name in usernames:
            if not registry.is_local(name) and registry.nodes_of(name):
                raise ChateauError(
                    UNAVAILABLE,
                    f"{name!r} is connected to another Chateau node and the link between "
                    "nodes (Redis) is down: try again shortly",
                )

    @property
    def cluster_link_down(self) -> bool:
        return self.backplane is not None and not self.backplane.connected

    def announce(self, event: dict[str, Any]) -> None:
        """Tell the other nodes of a change to shared state (groups, pairs, contacts)."""
        if self.backplane is not None:
            self.backplane.publish(event)

    def cluster_forward(
        self, origin: str, usernames: list[str], payload: bytes, message_id: int | None
    ) -> None:
        """A message another node routed to users here."""
        registry = self.registry
        frame = None
        for username in usernames:
            if not registry.is_local(username):
                continue  # gone since: offline delivery has it
            if message_id is not None:
                held = self._remote_held.get(username)
                if held is not None:
                    held.append((origin, message_id, payload))
                    continue
                seen = self._remote_seen.setdefault(username, {})
                if message_id <= seen.get(origin, 0):
                    continue  # already pushed from the database
                seen[origin] = message_id
            if frame is None:
                frame = self.prepare(payload)
            registry.deliver_local([username], frame)

    def cluster_event(self, event: dict[str, Any]) -> None:
        """Apply a change another node announced (see chateau.cluster)."""
        registry = self.registry
        kind = event["t"]
        node = event["node"]
        if kind == "join":
            if registry.remote_connect(event["user"], node):
                self._tell_presence(event["user"], True)
        elif kind == "leave":
            departure = registry.remote_disconnect(event["user"], node)
            if departure is not None and departure.offline:
                self._went_offline(departure)
        elif kind == "hello":
            users = set(event["users"])
            for username in registry.remote_users(node):
                if username not in users:
                    self.cluster_event({"t": "leave", "node": node, "user": username})
            for username in sorted(users):
                self.cluster_event({"t": "join", "node": node, "user": username})
        elif kind == "reset":
            self.cluster_node_gone(node)
        elif kind == "group":
            registry.add_group(event["chatname"], event["creator"], event["members"])
        elif kind == "group_started":
            group = registry.group(event["chatname"])
            if group is not None:
                group.started = True
        elif kind == "member_left":
            registry.remove_member(event["chatname"], event["user"])
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

    def cluster_node_gone(self, node: str) -> None:
        """A node died or restarted: its users are offline unless connected elsewhere."""
        for username in self.registry.remote_users(node):
            departure = self.registry.remote_disconnect(username, node)
            if departure is not None and departure.offline:
                self._went_offline(departure)

    def cluster_link_lost(self) -> None:
        """Out of touch: hold other nodes' messages for users here until the rejoin push.

        Until the nodes have fenced each other again, a message arriving
        live could overtake older ones another node kept meanwhile (and the
        push, which starts after the newest seen, would skip those).
        """
        if not self._link_lost:
            self._link_lost = True
            self._hold_all_remote()

    async def cluster_rejoined(self, fences: dict[str, int]) -> None:
        """Back in touch with the cluster: reload groups, push what users here missed.

        While the link was down, other nodes stored messages for users who
        signed on here meanwhile, as for offline users. Their fences bound
        what each user here may have missed of theirs.
        """
        if not self._link_lost:
            self._link_lost = True
            self._hold_all_remote()
        try:
            await self.load_groups()
            await self._push_remote_to(self.registry.local_users(), fences)
        finally:
            self._link_lost = False
            self._release_all_remote()

    async def cluster_peer_returned(self, node: str) -> None:
        """*node* is back in touch (restarted, or its link came back): the same, for its messages."""
        users = self._hold_all_remote()
        try:
            await self._push_remote_to(users, await self.backplane.fence_from(node))
        finally:
            self._release_all_remote()

    def _hold_all_remote(self) -> list[str]:
        self._holds += 1
        busy = self._busy_catching_up()
        users = [u for u in self.registry.local_users() if u not in busy]
        for username in users:
            self._remote_held.setdefault(username, [])
        return users

    def _release_all_remote(self) -> None:
        self._holds -= 1
        if self._holds:
            return
        busy = self._busy_catching_up()
        for username in list(self._remote_held):
            if username not in busy and self.registry.is_local(username):
                self._release_remote(username)

    async def _push_remote_to(self, users: list[str], fences: dict[str, int]) -> None:
        if not fences:
            return
        for username in users:
            if username in self._busy_catching_up() or not self.registry.is_local(username):
                continue
            try:
                await self._push_remote_missed(username, fences)
            except Exception:
                self.log.failure("pushing {username} what they missed failed", username=username)

    async def _push_remote_missed(self, username: str, fences: dict[str, int]) -> None:
        """Push *username* other nodes' messages up to their fences (frames from them are held)."""
        seen = self._remote_seen.setdefault(username, {})
        cursors = await self.store.cursors.delivery_cursors(username)
        ranges: list[Range] = []
        for origin, fence in sorted(fences.items()):
            after = max(seen.get(origin, 0), cursors.get(origin, cursors[None]))
            if fence > after:
                ranges.append((origin, after, fence))
        async for page in self._missed_pages(username, ranges):
            if not self.registry.is_local(username):
                break
            for record in page:
                self.deliver_here([username], self._missed_frame(record))
        for origin, fence in fences.items():
            seen[origin] = max(seen.get(origin, 0), fence)

    def _release_remote(self, username: str) -> None:
        """Send forwarded messages held during a push, minus those it already sent."""
        held = self._remote_held.pop(username, [])
        seen = self._remote_seen.setdefault(username, {})
        for origin, message_id, payload in held:
            if message_id > seen.get(origin, 0):
                seen[origin] = message_id
                self.registry.deliver_local([username], self.prepare(payload))

    def _tell_presence(self, username: str, online: bool) -> None:
        """Tell users here who have *username* as a contact."""
        watchers = self.registry.watchers(username)
        if watchers:
            self.deliver_here(watchers, messages.presence_recv(username, online))

    def _went_offline(self, departure: Departure) -> None:
        """A user left the whole cluster: end their random pairs, tell contacts here."""
        username = departure.username
        for pair in departure.ended_pairs:
            partner = pair.other(username)
            if self.registry.is_local(partner):
                self.deliver_here(
                    [partner], messages.random_chat_ended(pair.chatname, username, "disconnected")
                )
        self._tell_presence(username, False)

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
        await self.store.sessions.create_session(username, key_hash, lifetime)
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
        connection on this node gets no replay: the first one had it. On
        another node, it does (pushing from that node's delivery cursors):
        whether the user is still connected elsewhere may not be known yet.
        """
        username = account.username
        connection.username = username
        connection.hold()
        elsewhere = bool(self.registry.nodes_of(username))
        first = self.registry.connect(username, connection)
        try:
            connection.send_message(reply)
        finally:
            if not first:
                connection.release()
        if not first:
            return
        fences: Deferred[dict[str, int]] | None = None
        if self.backplane is not None:
            fences = self.backplane.user_joined(username)
        progress = CatchUp(username)
        self._catch_ups[connection] = progress
        self._remote_held[username] = []
        try:
            await self._catch_up(connection, progress, fences, was_online=elsewhere)
        except Exception:
            # Keep the progress: sign-off saves no more than what was pushed.
            self.log.failure("catching {username} up failed", username=username)
        else:
            if connection.live:
                self._catch_ups.pop(connection, None)
        finally:
            if connection.username == username and not self._holds:
                self._release_remote(username)
            connection.release()

    def _busy_catching_up(self) -> set[str]:
        return {p.username for p in self._catch_ups.values()} | self._cut_short

    async def _catch_up(
        self, connection: Connection, progress: CatchUp,
        fences: Deferred[dict[str, int]] | None, was_online: bool,
    ) -> None:
        username = progress.username
        upto = self.last_routed_id
        signed_on = now_millis()
        book = await self.store.contacts.contact_book(username)
        if not self.registry.is_local(username):
            return
        self.registry.set_contacts(username, book.contacts)
        if not was_online:
            self._tell_presence(username, True)
        # Requests that waited for the user; later ones were delivered live.
        for other, direction, since in book.pending:
            if direction == "incoming" and since <= signed_on:
                connection.send_message(messages.contact_request_recv(other))
        for group in await self.store.groups.take_group_notices(username):
            notice = messages.group_init_notice(group.chatname, group.creator, sorted(group.members))
            notice["offline"] = True
            connection.send_message(notice)
        # A cursor saved as the user left may land while the stored ones are
        # read: the read can miss it and the save's end clears it from
        # memory, so what memory holds now counts too, not only afterwards.
        unsaved = dict(self._cursors.get(username, {}))
        cursors = await self.store.cursors.delivery_cursors(username)
        for origin, value in [*unsaved.items(), *self._cursors.pop(username, {}).items()]:
            key = None if origin is ANY_ORIGIN else origin
            cursors[key] = max(cursors.get(key, cursors[None]), value)
        ranges = await self._missed_ranges(cursors, upto, fences)
        initial = {origin: after for origin, after, _ in ranges}
        progress.pushed = dict(initial)
        if self.stores_messages:
            await self._push_missed(connection, progress, ranges)
        if not connection.live:
            return
        for origin, after, bound in ranges:
            if bound is not None:
                progress.pushed[origin] = max(progress.pushed[origin], bound)
        seen = self._remote_seen.setdefault(username, {})
        for origin, value in progress.pushed.items():
            if origin != self.own_origin:
                seen[origin] = max(seen.get(origin, 0), value)
        moved = {o: v for o, v in progress.pushed.items() if v > initial[o]}
        if moved and username not in self._cut_short:
            self.store.cursors.save_cursors(username, moved).addErrback(
                lambda failure: self.log.failure("saving a delivery cursor failed", failure)
            )

    async def _missed_ranges(
        self, cursors: dict[Any, int], upto: int, fences: Deferred[dict[str, int]] | None
    ) -> list[Range]:
        """What a user coming online may have missed, per origin.

        Alone: everything after their cursor up to ``last_routed_id``. In a
        cluster: this node's messages likewise; another live node's up to its
        fence; messages of nodes that gave no fence (gone, or out of reach)
        and of the time before clustering, all there are.
        """
        base = cursors[None]
        if self.node is None:
            return [(ANY_ORIGIN, base, upto)]
        replies = await fences if fences is not None else {}
        ranges: list[Range] = [(self.node, cursors.get(self.node, base), upto)]
        for origin in await self.store.cursors.known_origins():
            if origin != self.node:
                ranges.append((origin, cursors.get(origin, base), replies.get(origin)))
        ranges.append((None, base, None))
        return [r for r in ranges if r[2] is None or r[2] > r[1]]

    async def _push_missed(
        self, connection: Connection, progress: CatchUp, ranges: list[Range]
    ) -> None:
        pushed = progress.pushed
        assert pushed is not None
        single = self.node is None
        async for page in self._missed_pages(progress.username, ranges):
            if not connection.live:
                return
            for record in page:
                connection.send_message(self._missed_frame(record))
                if not connection.live:
                    return  # it could not go out: the connection is closing
                # Everything up to this id has been written, in every range
                # with a bound; of an unbounded origin, up to its own ids.
                for origin, after, bound in ranges:
                    if bound is not None:
                        pushed[origin] = max(pushed[origin], min(record.id, bound))
                    elif single or record.origin == origin:
                        pushed[origin] = max(pushed[origin], record.id)

    async def _missed_pages(
        self, username: str, ranges: list[Range]
    ) -> AsyncIterator[list[MessageRecord]]:
        """Pages of *username*'s messages in *ranges*, oldest first, until none are left.

        Pages are ordered by id, so after one everything up to its last id has
        been seen in every range: each range starts again from there.
        """
        while ranges:
            page = await self.store.messages.missed_in_ranges(username, ranges, CATCH_UP_PAGE)
            if page:
                yield page
            if len(page) < CATCH_UP_PAGE:
                return
            last = page[-1].id
            ranges = [(o, max(a, last), u) for o, a, u in ranges if u is None or u > last]

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
        if self.backplane is not None:
            self.backplane.user_left(username)
        remote_seen = self._remote_seen.pop(username, {})
        self._remote_held.pop(username, None)
        # Everything routed so far was written to the connection, except, in
        # a catch-up, what it had not pushed yet.
        cursors: dict[Any, int] | None
        if progress is not None:
            cursors = dict(progress.pushed) if progress.pushed is not None else None
        else:
            own = connection.delivered_until
            cursors = {**remote_seen, self.own_origin: own if own is not None else self.last_routed_id}
        if username in self._cut_short:
            self._cut_short.discard(username)
            cursors = None
        if cursors:
            self._cursors[username] = cursors
            saved = self.store.cursors.save_cursors(username, cursors)
            saved.addCallback(lambda _: self._forget_cursors(username, cursors))
            saved.addErrback(
                lambda failure: self.log.failure("saving a delivery cursor failed", failure)
            )
        if departure.offline:
            self._went_offline(departure)

    def _forget_cursors(self, username: str, cursors: dict[Any, int]) -> None:
        if self._cursors.get(username) is cursors:
            del self._cursors[username]

    # -- housekeeping -------------------------------------------------------

    def _check_accounts(self) -> Any:
        """Disconnect disabled accounts and save online users' delivery cursors."""
        busy = self._busy_catching_up()
        # Not users with a connection that stopped taking frames: their cursor
        # is settled when it closes (see sign_off).
        online = [
            u for u in self.registry.local_users()
            if u not in busy and all(c.live for c in self.registry.connections(u))
        ]
        if not online:
            return None
        return ensureDeferred(self._check_accounts_async(online)).addErrback(
            lambda failure: self.log.failure("account check failed", failure)
        )

    async def _check_accounts_async(self, online: list[str]) -> None:
        rows = [(u, self.own_origin, self.last_routed_id) for u in online]
        for username in online:
            for origin, value in self._remote_seen.get(username, {}).items():
                rows.append((username, origin, value))
        await self.store.cursors.save_cursor_rows(rows)
        for username in await self.store.accounts.disabled_among(online):
            self.log.info("closing the connections of disabled account {username}", username=username)
            for connection in self.registry.connections(username):
                connection.close_for(1008, "account disabled")
