"""The WebSocket protocol: frames in, typed requests to the chat, replies out.

One concern: one client connection's wire, with its limits and its pace.

It holds no chat logic. Each text frame is decoded into a typed request and
handed to :class:`~chateau.handlers.dispatch.Dispatcher`; the result, or the
error, goes back with the request's ``msg_id``. Requests of one connection
are handled one after the other, so a sender's messages keep their order for
everyone.

It also enforces the per-connection limits of ``[limits]``: a rate that
every data frame counts against (token bucket, 429, then 1008), the number
of connections (in total and per address), and the bytes a connection may
have waiting when its client stops reading. Once the closing handshake has
begun (a close frame received or sent), no request is started any more.

What the server sends follows the transport's flow control: while the
client is not taking frames (the transport paused the send-buffer guard),
no new request is started, large answers wait (:meth:`wait_writable`), and
frames held during a catch-up are released only as fast as they drain. Only
what the client's own slowness piles up counts against ``send_buffer``.
Frames the server builds are never refused for their size; a frame that
cannot go out is logged and counted (``chateau_frames_dropped_total``).
"""

from __future__ import annotations

from collections import deque
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any

from autobahn.twisted.websocket import (
    ConnectionDeny,
    ConnectionRequest,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chateau import messages
from chateau.addresses import ClientAddresses
from chateau.config import Config
from chateau.errors import (
    BAD_REQUEST,
    INTERNAL_ERROR,
    TOO_MANY_REQUESTS,
    ChateauError,
)
from chateau.frames import DirectTextFrames, prepare_frame, text_frame
from chateau.handlers.dispatch import Dispatcher, error_reply
from chateau.limits import TokenBucket
from chateau.metrics import Metrics
from chateau.turnwrites import TurnWrites
from chateau.messages import Request

# Requests a connection may have queued behind the one being handled. A
# client that pipelines more than this is told to slow down.
MAX_BACKLOG = 256
# Message sends of one connection that may wait for their commit together.
MAX_PIPELINE = 64

# WebSocket close codes.
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
# Seconds a client has to answer the server's close frame before the TCP
# connection is dropped anyway (Autobahn's default, made explicit: a
# connection the server failed or closed is not held open for longer).
CLOSE_HANDSHAKE_TIMEOUT = 1.0


@implementer(IPushProducer)
class SendBufferGuard:
    """Counts what a connection queues while the network refuses more.

    Registered as the transport's producer: the transport pauses it when its
    buffer is full (the client is not reading) and resumes it once drained.
    What is sent while paused piles up in memory, so past *limit* bytes the
    connection is dropped. What waits for the client to take more
    (:meth:`when_resumed`) is told when it has, or when it never will.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.paused = False
        self.queued = 0
        self._waiters: list[Deferred[None]] = []

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.queued = 0
        self._wake()

    def stopProducing(self) -> None:
        # The connection is lost; whether it was paused stays as it was.
        self._wake()

    def when_resumed(self) -> Deferred[None]:
        """Fires once the transport has drained (or the connection is gone)."""
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def abandon(self) -> None:
        """The connection is going: nobody waits for it any more."""
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def sent(self, size: int) -> bool:
        """Note *size* more bytes; False once the limit is passed."""
        if not self.paused:
            return True
        self.queued += size
        return self.queued <= self.limit


class SendQueue(list[Any]):
    """Autobahn's queue of chopped and synchronous sends, as a list.

    Autobahn makes it a deque, which takes 760 bytes even empty; it stays
    empty on nearly every connection of Chateau's (only sends Autobahn
    chops or synchronises are queued), and Autobahn only appends, pops the
    oldest and asks its length. An empty list takes 56 bytes.
    """

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


# What Autobahn keeps from the opening handshake, which nothing reads once the
# connection is open: the request and response as sent, the headers parsed,
# the client's key. About 1.3 KB per connection for a browser's headers.
HANDSHAKE_LEFTOVERS: tuple[tuple[str, Any], ...] = (
    ("http_headers", MappingProxyType({})), ("http_request_data", b""),
    ("http_response_data", ""), ("http_status_line", ""),
    ("http_request_params", MappingProxyType({})), ("_wskey", ""),
)


def _header_values(value: str | None) -> list[str] | None:
    """A header as Autobahn gives it (repeats joined with commas), as a list."""
    return None if value is None else [value]


class ChateauServerProtocol(DirectTextFrames, WebSocketServerProtocol):
    """One client connection. Autobahn owns ``self.log``; ours is ``_log``.

    Plain text frames are read and written past Autobahn's general machinery
    by :class:`DirectTextFrames` (which also owns ``dataReceived``).
    """

    _log = Logger()
    factory: ChateauServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.username: str | None = None
        self.signing_in = False
        self.live = False
        self.session_key_hash: str | None = None
        # The newest message id routed while frames could still go out, and
        # whether the client had stopped taking frames by then.
        self.delivered_until: int | None = None
        self.stalled = False
        self.sent_since_check = False
        self.sent_watch: set[Any] | None = None
        self.address = "?"
        # Lists, not deques: they stay short, and an empty deque is several
        # times the size of an empty list, which every idle connection would
        # carry twice (docs/performance.md).
        self._backlog: list[Request | dict[str, Any]] = []
        self._in_flight = 0
        self._pipelining = False
        # Started requests, oldest first: [finished, reply]; see _answer.
        self._slots: list[list[Any]] = []
        # Frames routed here during a catch-up, each with the newest message
        # id routed before it; and their bytes (bounded by send_buffer).
        self._held: deque[tuple[Any, int]] | None = None
        self._held_bytes = 0
        self._releasing: Deferred[None] | None = None
        # Once held frames were dropped: the newest id routed before the first.
        self._unsent_after: int | None = None
        self._waiting_to_drain = False
        self._told_closed = False
        self._counted = False
        self._bucket: TokenBucket | None = None
        self._strikes = 0
        self._guard: SendBufferGuard | None = None

    # -- Autobahn hooks -----------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> None:
        origin = request.headers.get("origin")
        if origin is not None and not self.factory.origin_allowed(origin):
            self._log.info("refused a handshake from origin {origin}", origin=origin)
            raise ConnectionDeny(403, "origin not allowed")
        # The real client's address: the PROXY protocol's (the transport's
        # peer), or a trusted proxy's X-Forwarded-For / Forwarded. Invalid
        # headers were logged already, with the HTTP request that carried them.
        self.address = self.factory.addresses.resolve(
            getattr(self.transport.getPeer(), "host", None),
            _header_values(request.headers.get("x-forwarded-for")),
            _header_values(request.headers.get("forwarded")),
            log=False,
        )
        refusal = self.factory.admit(self)
        if refusal is not None:
            raise refusal
        self._counted = True

    def onOpen(self) -> None:
        self.live = True
        # Idle connections are most of a server's memory: drop what the
        # handshake left behind and trade the deque for a list
        # (docs/performance.md).
        for name, empty in HANDSHAKE_LEFTOVERS:
            setattr(self, name, empty)
        self.send_queue = SendQueue(self.send_queue)
        limits = self.factory.config.limits
        self._bucket = TokenBucket(
            limits.message_rate, limits.message_burst, self.factory.clock.seconds
        )
        self._guard = SendBufferGuard(limits.send_buffer)
        self.enable_direct_frames()
        # twisted.web's HTTP channel was the transport's producer until
        # Autobahn took the transport over; the guard replaces it.
        try:
            self.transport.unregisterProducer()
            self.transport.registerProducer(self._guard, True)
        except (AttributeError, RuntimeError):
            self._guard = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.state != self.STATE_OPEN:
            # A close frame was received or sent: nothing more is handled
            # (Autobahn still parses what arrives while closing).
            return
        # Every frame takes a token, whatever it holds (binary, malformed,
        # before sign-in), so no kind of frame escapes the rate or the strikes.
        wait = self._take_token()
        if self.state != self.STATE_OPEN:
            return  # closed by the strike rule
        if len(self._backlog) >= MAX_BACKLOG:
            # Answered at once, out of turn: the queue is what is too long.
            self.send_message(
                messages.error_response(
                    TOO_MANY_REQUESTS,
                    f"too many requests in flight (at most {MAX_BACKLOG}); wait for replies",
                )
            )
            return
        item: Request | dict[str, Any]
        if isBinary:
            msg_id = None
            item = messages.error_response(
                BAD_REQUEST, "binary frames are not supported: send JSON text frames"
            )
        else:
            data: Any = None
            try:
                data = messages.parse_json(payload)
                item = messages.decode_request(data)
                msg_id = item.msg_id
            except ChateauError as error:
                msg_id = messages.peek_msg_id(data)
                item = messages.error_response(error.status, error.detail, msg_id)
        self._queue(self._rate_refusal(wait, msg_id) if wait else item)

    def _queue(self, item: Request | dict[str, Any]) -> None:
        """Queue a request, or an error for a refused one, so replies keep their order."""
        self._backlog.append(item)
        self._drain()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._stop_sending()
        self._backlog.clear()
        self._end_release()
        if self._guard is not None:
            self._guard.abandon()
        if self._counted:
            self._counted = False
            self.factory.release(self)
        self.factory.dispatcher.closed(self)

    # -- limits -------------------------------------------------------------

    def _take_token(self) -> float:
        """Count one frame against the rate: 0 when within it, else the seconds to wait.

        Past ``rate_strikes`` refusals in a row the connection is closed (1008).
        """
        if self._bucket is None:
            return 0.0
        wait = self._bucket.take()
        if not wait:
            self._strikes = 0
            return 0.0
        self._strikes += 1
        if self._strikes > self.factory.config.limits.rate_strikes:
            self._log.info(
                "closing {address} ({username}): it kept sending over the rate limit",
                address=self.address, username=self.username,
            )
            self._backlog.clear()
            self.close_for(POLICY_VIOLATION, "rate limit exceeded")
        return wait

    @staticmethod
    def _rate_refusal(wait: float, msg_id: Any) -> dict[str, Any]:
        """The 429 for a frame over the rate."""
        error = messages.error_response(
            TOO_MANY_REQUESTS, "too many requests: slow down and retry after retry_after seconds",
            msg_id,
        )
        error["retry_after"] = round(wait, 3)
        return error

    def _check_buffer(self, size: int) -> None:
        if self._guard is not None and not self._guard.sent(size):
            self._log.info(
                "dropping {address} ({username}): it stopped reading and {queued} bytes "
                "are waiting", address=self.address, username=self.username,
                queued=self._guard.queued,
            )
            self.factory.metrics.frames_dropped_for["slow_reader"].inc()
            self.stalled = True
            guard, self._guard = self._guard, None
            self.close_for(TRY_AGAIN_LATER, "not reading fast enough")
            guard.abandon()
            self.transport.abortConnection()

    def wait_writable(self) -> Deferred[None] | None:
        """None while the client takes what is sent; else fires once it has (or is gone)."""
        guard = self._guard
        if guard is None or not guard.paused or not self.live:
            return None
        return guard.when_resumed()

    def _dropped(self, reason: str, kind: Any) -> None:
        """Count (and log) a frame that could not go out."""
        self.factory.metrics.frames_dropped_for[reason].inc()
        if reason == "closed":
            # Routine as a connection closes (offline delivery has the
            # messages): said once per connection.
            if not self._told_closed:
                self._told_closed = True
                self._log.info(
                    "frames for {address} ({username}) are no longer sent: the connection "
                    "is closing (first: {kind})", address=self.address,
                    username=self.username, kind=kind,
                )
            return
        self._log.warn(
            "a {kind} for {address} ({username}) was not sent: {reason}",
            kind=kind, address=self.address, username=self.username, reason=reason,
        )

    # -- sending ------------------------------------------------------------

    def _note_sent(self) -> None:
        """The first frame since the account check: the check is to look here."""
        self.sent_since_check = True
        if self.sent_watch is not None:
            self.sent_watch.add(self)

    def send_frame(self, frame: Any) -> None:
        """Send a frame prepared once by the factory for a whole fan-out."""
        if not self.sent_since_check:
            self._note_sent()
        if self._held is not None:
            self._hold_frame(frame)
        elif self._sendable():
            self._check_buffer(self.send_prepared(frame))
        else:
            self._dropped("closed", "pushed frame")

    def _sendable(self) -> bool:
        """Open for data: Autobahn refuses sends once the closing handshake has begun."""
        if self.live and self.state != self.STATE_OPEN:
            self._stop_sending()
        return self.live

    def _stop_sending(self) -> None:
        """No frame goes out from now on: note how far the user got (for offline delivery).

        Frames still held, or dropped from the hold, did not go out: the
        cursor stops before the first of them.
        """
        if self.live:
            self.live = False
            if self._guard is not None and self._guard.paused:
                self.stalled = True
            until = self.factory.dispatcher.last_routed_id
            if self._held:
                until = min(until, self._held[0][1])
            if self._unsent_after is not None:
                until = min(until, self._unsent_after)
            self.delivered_until = until

    def hold(self) -> None:
        if self._held is None:
            self._held = deque()
            self._held_bytes = 0

    def _hold_frame(self, frame: Any) -> None:
        held = self._held
        assert held is not None
        routed_before = self.factory.dispatcher.last_routed_id
        if self._unsent_after is not None:
            # Overflowed and closing: the stored messages wait for next time.
            self.factory.metrics.frames_dropped_for["hold_overflow"].inc()
            return
        self._held_bytes += len(frame.payloadHybi)
        limit = self.factory.config.limits.send_buffer
        if self._held_bytes <= limit:
            held.append((frame, routed_before))
            return
        self._unsent_after = held[0][1] if held else routed_before
        self.close_overloaded(len(held) + 1, self._held_bytes)
        held.clear()
        self._held_bytes = 0

    def close_overloaded(self, frames: int, size: int) -> None:
        """Close with 1013: more than ``send_buffer`` bytes were held for this connection.

        The held frames are dropped (logged, counted); the messages among
        them stay stored, and the next catch-up brings them. A slow client
        is given time to read up to the close frame before the TCP
        connection is closed.
        """
        limit = self.factory.config.limits.send_buffer
        self._log.warn(
            "closing {address} ({username}): {frames} frames ({size} bytes) held for it "
            "during its catch-up passed [limits] send_buffer ({limit} bytes); the messages "
            "stay stored for its next catch-up",
            address=self.address, username=self.username, frames=frames, size=size,
            limit=limit,
        )
        self.factory.metrics.frames_dropped_for["hold_overflow"].inc(frames)
        self.closeHandshakeTimeout = max(
            self.closeHandshakeTimeout, self.factory.config.server.auto_ping_timeout or 10.0
        )
        self.close_for(TRY_AGAIN_LATER, "too many messages waiting: try again later")

    def release(self) -> Deferred[None]:
        """Send what was held as the client takes it; fires when nothing is held any more."""
        if self._held is None:
            return succeed(None)
        if self._releasing is None:
            self._releasing = Deferred()
        releasing = self._releasing
        self._flush_held()
        return releasing

    def _flush_held(self, _: Any = None) -> None:
        held = self._held
        while held:
            if not self._sendable():
                break
            waiting = self.wait_writable()
            if waiting is not None:
                waiting.addCallback(self._flush_held)
                return
            frame, _routed_before = held.popleft()
            self._held_bytes -= len(frame.payloadHybi)
            self._check_buffer(self.send_prepared(frame))
        self._end_release()

    def _end_release(self) -> None:
        """Stop holding; whoever waits for the release is told."""
        if self._held and not self.live:
            for _frame in self._held:
                self._dropped("closed", "held frame")
        self._held = None
        self._held_bytes = 0
        releasing, self._releasing = self._releasing, None
        if releasing is not None:
            releasing.callback(None)

    def close_for(self, code: int, reason: str) -> None:
        """Close with a protocol-level code (1008, 1013...), which sendClose refuses."""
        if self.live:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:120], isReply=False)
            # Nothing may follow a close frame.
            self._stop_sending()

    def send_message(self, message: dict[str, Any]) -> None:
        if not self.sent_since_check:
            self._note_sent()
        if message["type"] == "ErrorResponse":
            self.factory.metrics.errors.labels(str(message["status"])).inc()
        if not self._sendable():
            self._dropped("closed", message.get("type"))
            return
        try:
            payload = messages.encode(message)
        except (ValueError, TypeError, RecursionError) as exc:
            # Input is checked so that this cannot happen; if it does, the
            # client still gets an answer and the connection goes on.
            self._log.error("could not encode a {kind}: {error}",
                            kind=message.get("type"), error=repr(exc))
            self._dropped("unencodable", message.get("type"))
            payload = messages.encode(messages.error_response(
                INTERNAL_ERROR, "internal server error: the reply could not be encoded",
            ))
        if not self.write_frame_directly(text_frame(payload)):
            # Autobahn's own path, but not sendMessage: it applies the limit
            # on what clients send (max_message_size) to what the server
            # sends too, and would drop the frame. Nothing the server builds
            # is refused for its size (acceptance keeps messages within it).
            try:
                self.sendPreparedMessage(prepare_frame(payload))
            except Exception as exc:
                self._log.error("sending a {kind} failed: {error}",
                                kind=message.get("type"), error=repr(exc))
                self._dropped("send_failed", message.get("type"))
                return
        self._check_buffer(len(payload))

    # -- request handling ---------------------------------------------------

    def _drain(self) -> None:
        """Start queued requests: one at a time, except runs of message sends.

        Consecutive sends may be in flight together (so they share a group
        commit) when :meth:`Dispatcher.pipelines` says their only wait is the
        message writer, which commits in arrival order. Replies are released
        in request order whatever order handlers finish in.
        """
        dispatcher = self.factory.dispatcher
        while self._backlog:
            if self.state != self.STATE_OPEN:
                # Closing: what is queued is dropped unstarted; what was
                # started finishes (its reply cannot go out any more).
                self._backlog.clear()
                return
            guard = self._guard
            if guard is not None and guard.paused:
                # The client is not taking what was sent: the next answer
                # waits until it has (requests stay queued, MAX_BACKLOG bounds them).
                if not self._waiting_to_drain:
                    self._waiting_to_drain = True
                    guard.when_resumed().addCallback(self._drained)
                return
            item = self._backlog[0]
            if isinstance(item, dict):
                self._backlog.pop(0)
                self._answer(self._open_slot(), item)
                continue
            if self._in_flight and not (
                self._pipelining
                and self._in_flight < MAX_PIPELINE
                and dispatcher.pipelines(self, item)
            ):
                return
            self._backlog.pop(0)
            slot = self._open_slot()
            done = dispatcher.dispatch(self, item)
            done.addCallbacks(
                self._reply, self._fail, callbackArgs=(item, slot), errbackArgs=(item, slot)
            )
            if not done.called:
                if not self._in_flight:
                    # Asked only now, and only of a request left waiting: the
                    # recipient it resolved to has not changed meanwhile.
                    self._pipelining = dispatcher.pipelines(self, item)
                self._in_flight += 1
                done.addBoth(self._resume)

    def _resume(self, _: Any) -> None:
        self._in_flight -= 1
        self._drain()

    def _drained(self, _: Any) -> None:
        self._waiting_to_drain = False
        if self._backlog and self.state == self.STATE_OPEN:
            self._drain()

    def _open_slot(self) -> list[Any]:
        slot: list[Any] = [False, None]
        self._slots.append(slot)
        return slot

    def _answer(self, slot: list[Any], reply: dict[str, Any] | None) -> None:
        slot[0], slot[1] = True, reply
        while self._slots and self._slots[0][0]:
            ready = self._slots.pop(0)[1]
            if ready is not None:
                self.send_message(ready)

    def _reply(self, reply: dict[str, Any] | None, request: Request, slot: list[Any]) -> None:
        if reply is not None:
            reply["msg_id"] = request.msg_id
        self._answer(slot, reply)

    def _fail(self, failure: Failure, request: Request, slot: list[Any]) -> None:
        self._answer(slot, self._error_for(failure, request))

    def _error_for(self, failure: Failure, request: Request) -> dict[str, Any]:
        return error_reply(
            failure, type(request).__name__, self.username, self._log, request.msg_id
        )


class ChateauServerFactory(WebSocketServerFactory):
    """Builds connections that share one :class:`Dispatcher`.

    Origins are checked here rather than with Autobahn's ``allowedOrigins``,
    which also demands that the page's scheme and port equal the server's own
    and so refuses every page served through a reverse proxy or another port.
    """

    protocol = ChateauServerProtocol

    def __init__(
        self, dispatcher: Dispatcher, config: Config, metrics: Metrics, reactor: Any = None
    ) -> None:
        super().__init__(reactor=reactor)
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.clock = reactor
        # Frames written during a reactor turn leave with one send() per
        # connection at its end (chateau.turnwrites).
        self.turn_writes = TurnWrites(reactor)
        self.config = config
        server = config.server
        self.dispatcher = dispatcher
        self.metrics = metrics
        # The one rule for a client's real address, which the site shares.
        self.addresses = ClientAddresses(server.trusted_proxies)
        self.connections: set[ChateauServerProtocol] = set()
        self._per_address: dict[str, int] = {}
        self._origins = tuple(origin.lower().rstrip("/") for origin in server.allowed_origins)
        self.setProtocolOptions(
            maxMessagePayloadSize=server.max_message_size,
            maxFramePayloadSize=server.max_message_size,
            autoPingInterval=server.auto_ping_interval or None,
            autoPingTimeout=server.auto_ping_timeout or None,
            openHandshakeTimeout=server.open_handshake_timeout,
            perMessageCompressionAccept=lambda offers: None,
            # Send a close frame with the reason (1002 for a protocol error,
            # 1007 for invalid UTF-8, 1009 for an oversized message) instead
            # of dropping the TCP connection silently; the connection is
            # dropped once the client answers it, or after the timeout.
            failByDrop=False,
            closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
        )

    def origin_allowed(self, origin: str) -> bool:
        """Whether a browser page from *origin* may connect (patterns may use ``*``)."""
        origin = origin.lower().rstrip("/")
        return any(fnmatchcase(origin, pattern) for pattern in self._origins)

    def admit(self, connection: ChateauServerProtocol) -> ConnectionDeny | None:
        """Count a new connection, or the refusal when a limit is reached."""
        limits = self.config.limits
        if len(self.connections) >= limits.max_connections:
            self._log.warn("refusing a connection: {count} are open", count=len(self.connections))
            return ConnectionDeny(503, "server full: too many connections")
        count = self._per_address.get(connection.address, 0)
        if count >= limits.max_connections_per_address:
            return ConnectionDeny(429, "too many connections from your address")
        self._per_address[connection.address] = count + 1
        self.connections.add(connection)
        return None

    def release(self, connection: ChateauServerProtocol) -> None:
        self.connections.discard(connection)
        count = self._per_address.get(connection.address, 1) - 1
        if count > 0:
            self._per_address[connection.address] = count
        else:
            self._per_address.pop(connection.address, None)

    def close_all(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> int:
        """Start closing every connection (on shutdown); how many there were."""
        connections = list(self.connections)
        for connection in connections:
            connection.close_for(code, reason)
        return len(connections)

    _log = Logger()
