"""The WebSocket protocol: frames in, typed requests to the chat, replies out.

It holds no chat logic. Each text frame is decoded into a typed request and
handed to :meth:`Chat.dispatch`; the result, or the error, goes back with the
request's ``msg_id``. Requests of one connection are handled one after the
other, so a sender's messages keep their order for everyone.
"""

from __future__ import annotations

from collections import deque
from fnmatch import fnmatchcase
from typing import Any

from autobahn.twisted.websocket import (
    ConnectionDeny,
    ConnectionRequest,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chateau import messages
from chateau.chat import Chat
from chateau.config import ServerConfig
from chateau.errors import BAD_REQUEST, INTERNAL_ERROR, ChateauError
from chateau.messages import Request

# Requests a connection may have queued behind the one being handled. A
# client that pipelines more than this is told to slow down.
MAX_BACKLOG = 256
TOO_MANY_REQUESTS = 429


class ChateauServerProtocol(WebSocketServerProtocol):
    """One client connection. Autobahn owns ``self.log``; ours is ``_log``."""

    _log = Logger()
    factory: ChateauServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.username: str | None = None
        self.signing_in = False
        self.live = False
        self.session_key_hash: str | None = None
        self._backlog: deque[Request] = deque()
        self._busy = False
        self._held: list[Any] | None = None

    # -- Autobahn hooks -----------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> None:
        origin = request.headers.get("origin")
        if origin is not None and not self.factory.origin_allowed(origin):
            self._log.info("refused a handshake from origin {origin}", origin=origin)
            raise ConnectionDeny(403, "origin not allowed")

    def onOpen(self) -> None:
        self.live = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.send_message(
                messages.error_response(
                    BAD_REQUEST, "binary frames are not supported: send JSON text frames"
                )
            )
            return
        data: Any = None
        try:
            data = messages.parse_json(payload)
            request = messages.decode_request(data)
        except ChateauError as error:
            self.send_message(
                messages.error_response(error.status, error.detail, messages.peek_msg_id(data))
            )
            return
        if len(self._backlog) >= MAX_BACKLOG:
            self.send_message(
                messages.error_response(
                    TOO_MANY_REQUESTS,
                    f"too many requests in flight (at most {MAX_BACKLOG}); wait for replies",
                    request.msg_id,
                )
            )
            return
        self._backlog.append(request)
        if not self._busy:
            self._drain()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.live = False
        self._backlog.clear()
        self.factory.chat.sign_off(self)

    # -- sending ------------------------------------------------------------

    def send_frame(self, frame: Any) -> None:
        """Send a frame prepared once by the factory for a whole fan-out."""
        if self._held is not None:
            self._held.append(frame)
        elif self.live:
            self.sendPreparedMessage(frame)

    def hold(self) -> None:
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held, self._held = self._held, None
        for frame in held or ():
            self.send_frame(frame)

    def close_for(self, code: int, reason: str) -> None:
        """Close with a protocol-level code (1008, 1013...), which sendClose refuses."""
        if self.live:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:120], isReply=False)

    def send_message(self, message: dict[str, Any]) -> None:
        if self.live:
            self.sendMessage(messages.encode(message))

    # -- request handling ---------------------------------------------------

    def _drain(self) -> None:
        while self._backlog:
            request = self._backlog.popleft()
            done = ensureDeferred(self.factory.chat.dispatch(self, request))
            done.addCallbacks(
                self._reply, self._fail, callbackArgs=(request,), errbackArgs=(request,)
            )
            if not done.called:
                self._busy = True
                done.addBoth(self._resume)
                return

    def _resume(self, _: Any) -> None:
        self._busy = False
        self._drain()

    def _reply(self, reply: dict[str, Any] | None, request: Request) -> None:
        if reply is not None:
            reply["msg_id"] = request.msg_id
            self.send_message(reply)

    def _fail(self, failure: Failure, request: Request) -> None:
        if failure.check(ChateauError):
            error: ChateauError = failure.value
            self.send_message(messages.error_response(error.status, error.detail, request.msg_id))
            return
        self._log.failure(
            "unexpected error handling {kind} from {username}",
            failure, kind=type(request).__name__, username=self.username,
        )
        self.send_message(
            messages.error_response(
                INTERNAL_ERROR, "internal server error; the request was not completed",
                request.msg_id,
            )
        )


class ChateauServerFactory(WebSocketServerFactory):
    """Builds connections that share one :class:`Chat`.

    Origins are checked here rather than with Autobahn's ``allowedOrigins``,
    which also demands that the page's scheme and port equal the server's own
    and so refuses every page served through a reverse proxy or another port.
    """

    protocol = ChateauServerProtocol

    def __init__(self, chat: Chat, server: ServerConfig, reactor: Any = None) -> None:
        super().__init__(reactor=reactor)
        self.chat = chat
        self._origins = tuple(origin.lower().rstrip("/") for origin in server.allowed_origins)
        chat.prepare = lambda payload: self.prepareMessage(payload)
        self.setProtocolOptions(
            maxMessagePayloadSize=server.max_message_size,
            maxFramePayloadSize=server.max_message_size,
            autoPingInterval=server.auto_ping_interval or None,
            autoPingTimeout=server.auto_ping_timeout or None,
            openHandshakeTimeout=server.open_handshake_timeout,
            perMessageCompressionAccept=lambda offers: None,
            # Send a close frame with the reason (1009 for an oversized
            # message) instead of dropping the TCP connection silently.
            failByDrop=False,
        )

    def origin_allowed(self, origin: str) -> bool:
        """Whether a browser page from *origin* may connect (patterns may use ``*``)."""
        origin = origin.lower().rstrip("/")
        return any(fnmatchcase(origin, pattern) for pattern in self._origins)
