"""Offline delivery: who has had which messages, and pushing what they missed.

One concern: every message reaches every signed-in user exactly once, live
or from the database. It works with one number per user, ``delivered_until``:
every message with an id up to it has reached the user. Messages are
committed by a single writer and routed in commit order, so
``Delivery.last_routed_id`` (the newest id routed so far) splits the world
exactly: when a user's first connection signs on, everything routed before
went past them, and everything after reaches them live. Signing on pushes the
messages in between.

In a cluster (:mod:`chateau.cluster`) that rule holds per origin node: each
user has a cursor per node whose messages they get, and the other nodes'
*fences* take the place of ``last_routed_id`` for their messages. Messages
other nodes forward while a user here is being caught up, or while this node
is out of touch, are held and released after the push, minus what it sent.

The push is paced by the connection's flow control: pages are read from the
database by bytes (:data:`CATCH_UP_PAGE_BYTES`), and each frame is written
only while the client is taking what was sent (``wait_writable``), so a
backlog of any size costs the server about one page. The progress kept for
the cursor moves only past what has drained to the network (or, at the end,
was written, as for live frames), so a catch-up cut short resumes there.
What is held meanwhile is bounded by ``[limits] send_buffer``: past it the
connection is closed with 1013 and the messages wait, stored, for next time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from chateau import messages
from chateau.auth import Account
from chateau.backplane import Backplane
from chateau.config import Config
from chateau.connection import Connection
from chateau.delivery import Delivery
from chateau.registry import Registry
from chateau.store import Store
from chateau.signout import SIGNED_OUT, SIGNED_OUT_REASON
from chateau.store.records import ANY_ORIGIN, MessageRecord, now_millis

# Missed messages are fetched and pushed in pages of at most this many, and
# of about this many bytes of content (a page ends with the message that
# passes it): the most a catch-up holds in memory, besides the frames on
# their way out.
CATCH_UP_PAGE = 500
CATCH_UP_PAGE_BYTES = 256 * 1024
# Users online whose accounts one account check looks up for being disabled
# (a backstop: sign-out closes them at once); the next check takes the next
# ones, so each is looked at every ceil(online / this) intervals.
DISABLED_CHECK_SLICE = 2048
# Users whose delivery cursors one account check saves at most; the others
# sent something stay flagged for the next check (an older saved cursor can
# only mean a replay after a crash, never a loss). After a burst of sign-ins,
# whose replies flag everyone, this spreads the saving over several checks.
CURSOR_SAVE_SLICE = 2048


@dataclass
class Progress:
    """How far a connection's push of missed messages has got."""

    username: str
    # Per origin, the id up to which everything has left the server (drained
    # to the network); None until known.
    pushed: dict[Any, int] | None = None
    # Per origin, the id up to which everything has been written.
    written: dict[Any, int] | None = None


# One stretch of missed messages: (origin key, after, upto or None for "all").
Range = tuple[Any, int, "int | None"]


class CatchUp:
    """Signs connections on and off, and pushes each user what they missed."""

    log = Logger()

    def __init__(
        self, config: Config, registry: Registry, store: Store, delivery: Delivery,
        backplane: Backplane,
    ) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self.delivery = delivery
        self.backplane = backplane
        # In a cluster, this node's name, which its messages record as their origin.
        self.node: str | None = backplane.node
        # Per-origin cursors of users who left recently, until the store has them.
        self._cursors: dict[str, dict[Any, int]] = {}
        # Connections whose missed messages are being pushed, with how far
        # each has got; and users one of whose catch-ups was cut short while
        # another connection stayed (their cursor must not move on).
        self._catch_ups: dict[Connection, Progress] = {}
        self._cut_short: set[str] = set()
        # Per user online here: per other origin, the newest id pushed or
        # forwarded to them; and forwarded messages held during a catch-up,
        # with their bytes (bounded by send_buffer).
        self._remote_seen: dict[str, dict[Any, int]] = {}
        self._remote_held: dict[str, list[tuple[Any, int, bytes]]] = {}
        self._remote_held_bytes: dict[str, int] = {}
        # Pushes of other nodes' messages to every user here in progress (while
        # any is, forwarded messages are held), and whether the link is down.
        self._holds = 0
        self._link_lost = False
        # Where the next account check's slice of users online starts.
        self._disabled_turn = 0
        # Connections signed on here that sent a frame since the last account
        # check: each adds itself (its sent_watch) when its sent_since_check
        # goes from clear to set, so the check looks at these, not everyone.
        self._sent: set[Connection] = set()

    @property
    def own_origin(self) -> Any:
        """The cursor key of this node's messages (alone: one cursor for all)."""
        return self.node if self.node is not None else ANY_ORIGIN

    @property
    def stores_messages(self) -> bool:
        return self.config.chat.store_messages

    # -- signing on ---------------------------------------------------------

    async def sign_on(
        self, connection: Connection, account: Account, reply: dict[str, Any]
    ) -> None:
        """Put *connection* online, send *reply*, then what it missed.

        The user is online from the moment the reply is sent. Frames routed to
        the connection while the missed messages are being pushed are held
        back and follow them, as fast as the client takes them, so everything
        arrives in order; the catch-up ends when nothing is held any more. A
        user's second connection on this node gets no replay: the first one
        had it. On another node, it does (pushing from that node's delivery
        cursors): whether the user is still connected elsewhere may not be
        known yet.
        """
        username = account.username
        # Whom the user blocks is known before anything can reach them.
        safety = None
        if not self.registry.is_local(username):
            safety = await self.store.safety.safety_state(username)
            if not connection.live:
                return
        connection.username = username
        connection.hold()
        elsewhere = bool(self.registry.nodes_of(username))
        first = self.registry.connect(username, connection)
        if safety is not None:
            self.registry.set_safety(username, safety.blocked, safety.avoid)
        try:
            connection.send_message(reply)
        finally:
            # Nothing sent so far (replies, the sign-in's above) delivered a
            # message, so there is no cursor to save for it: after a restart,
            # everyone resuming at once would otherwise have every cursor
            # rewritten. From here on the account check watches the connection.
            connection.sent_since_check = False
            connection.sent_watch = self._sent
            if not first:
                connection.release()
        if not first:
            return
        fences = self.backplane.user_joined(username)
        progress = Progress(username)
        self._catch_ups[connection] = progress
        self._remote_held[username] = []
        released = False
        try:
            await self._catch_up(
                connection, progress, fences, was_online=elsewhere, load_safety=safety is None
            )
            released = True
            self._release_to(connection, username)
            # Until what was held has gone out, a cut leaves the cursor at
            # what the push wrote (the held messages come again next time).
            await connection.release()
        except Exception:
            # Keep the progress: sign-off saves no more than what was pushed.
            self.log.failure("catching {username} up failed", username=username)
        else:
            if connection.live:
                self._catch_ups.pop(connection, None)
        finally:
            if not released:
                self._release_to(connection, username)
                connection.release()

    def _release_to(self, connection: Connection, username: str) -> None:
        """Hand *connection* the other nodes' messages held for its user during the push."""
        if connection.username == username and not self._holds:
            self._release_remote(username)

    def busy(self) -> set[str]:
        """Users being caught up, or whose cursor must stay put for now."""
        return {p.username for p in self._catch_ups.values()} | self._cut_short

    async def _catch_up(
        self, connection: Connection, progress: Progress,
        fences: Deferred[dict[str, int]] | None, was_online: bool, load_safety: bool = False,
    ) -> None:
        username = progress.username
        upto = self.delivery.last_routed_id
        signed_on = now_millis()
        book = await self.store.contacts.contact_book(username)
        if load_safety:
            # Rare: the user's other connection here went while this one signed on.
            safety = await self.store.safety.safety_state(username)
            self.registry.set_safety(username, safety.blocked, safety.avoid)
        if not self.registry.is_local(username):
            return
        self.registry.set_contacts(username, book.contacts)
        if not was_online:
            self.delivery.tell_presence(username, True)
        # Requests that waited for the user; later ones were delivered live.
        for other, direction, since in book.pending:
            if direction == "incoming" and since <= signed_on:
                connection.send_message(messages.contact_request_recv(other))
        # Removals before additions: a member removed, then added back,
        # ends up in the group.
        for removal in await self.store.membership.take_removal_notices(username):
            notice = messages.group_removed(
                removal.chatname, removal.by, removal.reason, removal.banned
            )
            notice["offline"] = True
            connection.send_message(notice)
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
        progress.written = progress.pushed
        for origin, value in progress.pushed.items():
            if origin != self.own_origin:
                # Only users with other nodes' messages get a dict (a single
                # node has none): an empty one would cost every user 64 bytes.
                seen = self._remote_seen.setdefault(username, {})
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
        self, connection: Connection, progress: Progress, ranges: list[Range]
    ) -> None:
        """Write the missed messages as the client takes them.

        ``progress.pushed`` (what sign-off saves if the connection goes)
        moves only past frames that have drained to the network: to what
        was written before each wait for the client, and at the end.
        """
        assert progress.pushed is not None
        written = progress.written = dict(progress.pushed)
        single = self.node is None
        async for page in self._missed_pages(progress.username, ranges):
            for record in page:
                waiting = connection.wait_writable()
                if waiting is not None:
                    await waiting
                    if connection.live:
                        # What was written before the wait has left.
                        progress.pushed = dict(written)
                if not connection.live:
                    return
                connection.send_message(missed_message(record))
                if not connection.live:
                    return  # it could not go out: the connection is closing
                # Everything up to this id has been written, in every range
                # with a bound; of an unbounded origin, up to its own ids.
                for origin, after, bound in ranges:
                    if bound is not None:
                        written[origin] = max(written[origin], min(record.id, bound))
                    elif single or record.origin == origin:
                        written[origin] = max(written[origin], record.id)
        waiting = connection.wait_writable()
        if waiting is not None:
            await waiting
        if connection.live:
            progress.pushed = dict(written)

    async def _missed_pages(
        self, username: str, ranges: list[Range]
    ) -> AsyncIterator[list[MessageRecord]]:
        """Pages of *username*'s messages in *ranges*, oldest first, until none are left.

        Pages are ordered by id, so after one everything up to its last id has
        been seen in every range: each range starts again from there.
        """
        while ranges:
            page, full = await self.store.messages.missed_in_ranges(
                username, ranges, CATCH_UP_PAGE, CATCH_UP_PAGE_BYTES
            )
            if page:
                yield page
            if not full:
                return
            last = page[-1].id
            ranges = [(o, max(a, last), u) for o, a, u in ranges if u is None or u > last]

    # -- signing off --------------------------------------------------------

    def sign_off(self, connection: Connection) -> None:
        """Forget a connection; when it was the user's last, tell who should know."""
        username = connection.username
        if username is None:
            return
        connection.username = None
        connection.session_key_hash = None
        connection.sent_watch = None
        self._sent.discard(connection)
        progress = self._catch_ups.pop(connection, None)
        departure = self.registry.disconnect(username, connection)
        if departure is None:
            if progress is not None:
                # Another connection stays, but this one's backlog was cut off:
                # keep the stored cursor where it is (a replay beats a loss).
                self._cut_short.add(username)
            return
        self.backplane.user_left(username)
        remote_seen = self._remote_seen.pop(username, {})
        self._remote_held.pop(username, None)
        self._remote_held_bytes.pop(username, None)
        # Everything routed so far was written to the connection, except, in
        # a catch-up, what it had not pushed yet.
        cursors: dict[Any, int] | None
        if progress is not None:
            # What was written counts as delivered, as for live frames, unless
            # the client had stopped taking frames: then only what drained.
            done = progress.pushed if connection.stalled else progress.written or progress.pushed
            cursors = dict(done) if done is not None else None
        else:
            own = connection.delivered_until
            last = own if own is not None else self.delivery.last_routed_id
            cursors = {**remote_seen, self.own_origin: last}
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
            self.delivery.went_offline(departure)

    def _forget_cursors(self, username: str, cursors: dict[Any, int]) -> None:
        if self._cursors.get(username) is cursors:
            del self._cursors[username]

    # -- other nodes' messages ----------------------------------------------

    def forwarded(
        self, origin: str, usernames: list[str], payload: bytes, message_id: int | None,
        sender: str | None = None,
    ) -> None:
        """A message another node routed to users here (*sender*: whose words it carries).

        This runs once per message per node for every user of the node that
        it names (half a split group's members, say), so the per-user work is
        plain dictionary lookups; the sender's blockers here are looked up once.
        """
        registry = self.registry
        # Users gone since are passed over: offline delivery has it. Those
        # who block the sender too: this node knows their blocks, and
        # catch-up skips the message for them as well.
        names = registry.local_among(usernames)
        if sender is not None:
            blockers = registry.blockers_of(sender)
            if blockers:
                names = [username for username in names if username not in blockers]
        if message_id is not None and names:
            held_for = self._remote_held
            seen_by = self._remote_seen
            live: list[str] = []
            for username in names:
                held = held_for.get(username)
                if held is not None:
                    self._hold_remote(username, held, (origin, message_id, payload))
                    continue
                seen = seen_by.get(username)
                if seen is None:
                    seen = seen_by[username] = {}
                if message_id <= seen.get(origin, 0):
                    continue  # already pushed from the database
                seen[origin] = message_id
                live.append(username)
            names = live
        if names:
            self.delivery.deliver_payload_here(names, payload)

    def _hold_remote(
        self, username: str, held: list[tuple[Any, int, bytes]], item: tuple[Any, int, bytes]
    ) -> None:
        """Hold a forwarded message for *username*; past send_buffer bytes, close with 1013.

        Held messages are not seen: the cursors stay before them, and the
        next catch-up brings them from the database.
        """
        size = self._remote_held_bytes.get(username, 0) + len(item[2])
        if size <= self.config.limits.send_buffer:
            held.append(item)
            self._remote_held_bytes[username] = size
            return
        frames = len(held) + 1
        held.clear()
        self._remote_held_bytes[username] = 0
        for connection in self.registry.connections(username):
            connection.close_overloaded(frames, size)

    def link_lost(self) -> None:
        """Out of touch: hold other nodes' messages for users here until the rejoin push.

        Until the nodes have fenced each other again, a message arriving
        live could overtake older ones another node kept meanwhile (and the
        push, which starts after the newest seen, would skip those).
        """
        if not self._link_lost:
            self._link_lost = True
            self._hold_all_remote()

    async def rejoined(
        self, fences: dict[str, int], reload: Callable[[], Awaitable[None]]
    ) -> None:
        """Back in touch with the cluster: *reload* shared state, push what users here missed.

        While the link was down, other nodes stored messages for users who
        signed on here meanwhile, as for offline users. Their fences bound
        what each user here may have missed of theirs.
        """
        if not self._link_lost:
            self._link_lost = True
            self._hold_all_remote()
        try:
            await reload()
            await self._push_remote_to(self.registry.local_users(), fences)
        finally:
            self._link_lost = False
            self._release_all_remote()

    async def peer_returned(self, fences: Deferred[dict[str, int]]) -> None:
        """A node is back in touch (restarted, or its link came back): the same, for its messages."""
        users = self._hold_all_remote()
        try:
            await self._push_remote_to(users, await fences)
        finally:
            self._release_all_remote()

    def _hold_all_remote(self) -> list[str]:
        self._holds += 1
        busy = self.busy()
        users = [u for u in self.registry.local_users() if u not in busy]
        for username in users:
            self._remote_held.setdefault(username, [])
        return users

    def _release_all_remote(self) -> None:
        self._holds -= 1
        if self._holds:
            return
        busy = self.busy()
        for username in list(self._remote_held):
            if username not in busy and self.registry.is_local(username):
                self._release_remote(username)

    async def _push_remote_to(self, users: list[str], fences: dict[str, int]) -> None:
        if not fences:
            return
        for username in users:
            if username in self.busy() or not self.registry.is_local(username):
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
                # As fast as the user's connections take it.
                for connection in self.registry.connections(username):
                    waiting = connection.wait_writable()
                    if waiting is not None:
                        await waiting
                self.delivery.deliver_here([username], missed_message(record))
        for origin, fence in fences.items():
            seen[origin] = max(seen.get(origin, 0), fence)

    def _release_remote(self, username: str) -> None:
        """Send forwarded messages held during a push, minus those it already sent."""
        held = self._remote_held.pop(username, [])
        self._remote_held_bytes.pop(username, None)
        seen = self._remote_seen.setdefault(username, {})
        for origin, message_id, payload in held:
            if message_id > seen.get(origin, 0):
                seen[origin] = message_id
                self.delivery.deliver_payload_here([username], payload)

    # -- housekeeping -------------------------------------------------------

    def check_accounts(self) -> Deferred[None] | None:
        """Save the delivery cursors of users sent something since the last check,
        and disconnect disabled accounts among a slice of the users online.

        Both follow what happened, not how many are online: a user who was
        sent nothing since the last check has nothing a crash could make them
        miss or see twice (every message routed to a live connection is sent
        to it), so their saved cursor stays as it is; and the disabled
        accounts, which sign-out closes at once (chateau.signout), are looked
        for here only as a backstop, :data:`DISABLED_CHECK_SLICE` users at a
        time, in turn. This runs on the reactor thread every interval: it
        walks only the connections that sent something, never everyone online,
        and saves at most :data:`CURSOR_SAVE_SLICE` users' cursors at a time.
        """
        busy = self.busy()
        moved: list[str] = []
        cleared: list[Connection] = []
        seen: set[str] = set()
        sent = self._sent
        flagged = list(sent)
        sent.clear()
        for connection in flagged:
            username = connection.username
            if username is None or username in seen:
                continue
            if len(moved) >= CURSOR_SAVE_SLICE:
                sent.add(connection)
                continue
            seen.add(username)
            connections = self.registry.connections(username)
            if connection not in connections:
                continue
            # Not users being caught up or with a connection that stopped
            # taking frames (their cursor is settled when it closes, see
            # sign_off): they stay flagged for a later check.
            if username in busy or not all(c.live for c in connections):
                sent.update(c for c in connections if c.sent_since_check)
                continue
            moved.append(username)
            for other in connections:
                if other.sent_since_check:
                    other.sent_since_check = False
                    cleared.append(other)
        among, self._disabled_turn = self.registry.local_slice(
            self._disabled_turn, DISABLED_CHECK_SLICE
        )
        if not moved and not among:
            return None
        return ensureDeferred(self._check_accounts(moved, cleared, among)).addErrback(
            lambda failure: self.log.failure("account check failed", failure)
        )

    async def _check_accounts(
        self, moved: list[str], cleared: list[Connection], among: list[str],
    ) -> None:
        if moved:
            last = self.delivery.last_routed_id
            rows = [(u, self.own_origin, last) for u in moved]
            for username in moved:
                for origin, value in self._remote_seen.get(username, {}).items():
                    rows.append((username, origin, value))
            try:
                await self.store.cursors.save_cursor_rows(rows)
            except BaseException:
                # Not saved: the next check saves them.
                for connection in cleared:
                    connection.sent_since_check = True
                    if connection.username is not None:
                        self._sent.add(connection)
                raise
        for username in await self.store.accounts.disabled_among(among):
            self.log.info("closing the connections of disabled account {username}", username=username)
            for connection in self.registry.connections(username):
                connection.close_for(SIGNED_OUT, "account disabled: " + SIGNED_OUT_REASON)


def missed_message(record: MessageRecord) -> dict[str, Any]:
    """The push of a stored message its recipient missed."""
    if record.event is not None:
        event = dict(record.event)
        message = messages.group_event(
            record.chat, str(event.pop("event", "")), str(event.pop("user", "")),
            str(event.pop("by", record.sender)), **event,
        )
        message.update(id=record.id, timestamp=record.timestamp, offline=True)
        return message
    if record.recipient is not None:
        message = messages.message_recv(
            sender=record.sender, chatname=record.sender, content=record.content or "",
            message_id=record.id, timestamp=record.timestamp,
        )
    else:
        message = messages.group_message_recv(
            first=False, sender=record.sender, chatname=record.chat,
            content=record.content or "", message_id=record.id, timestamp=record.timestamp,
            mentions=record.mentions,
        )
    message["offline"] = True
    if record.edited:
        message["edited"] = True
    return message
