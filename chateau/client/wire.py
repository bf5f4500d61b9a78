"""Connecting to a Chateau server: the URL, TLS, and JSON frames over Autobahn.

Nothing here knows about chats or terminals. :func:`open_connection` opens
one WebSocket and hands every frame it receives to a :class:`Listener`, so
the interactive session and the scripted ``--send`` mode share the same
transport code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.util import parse_url
from OpenSSL.SSL import Error as SSLError
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint

from chateau import __version__

USER_AGENT = f"chateau-client/{__version__}"
NORMAL_CLOSE = 1000


class ConnectionFailed(Exception):
    """The WebSocket could not be opened; the message says why, for people."""


class ClientSetupError(Exception):
    """Bad input from the command line (URL, CA file), found before connecting."""


@dataclass(frozen=True)
class ServerURL:
    url: str
    secure: bool
    host: str
    port: int


def parse_server_url(url: str) -> ServerURL:
    """Check a ``ws://`` or ``wss://`` URL, so a typo fails before any connection."""
    try:
        secure, host, port, _resource, _path, _params = parse_url(url)
    except Exception as exc:  # autobahn raises plain Exception with a good text
        raise ClientSetupError(f"invalid server URL {url!r}: {exc}") from None
    return ServerURL(url=url, secure=secure, host=host, port=port)


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


def load_trust_root(ca_file: str) -> Any:
    """Every certificate in a PEM file, as the only roots to trust."""
    try:
        with open(ca_file, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ClientSetupError(f"--ca-file {ca_file}: {exc.strerror}") from None
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ClientSetupError(f"--ca-file {ca_file}: no PEM certificate found")
    try:
        certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as exc:
        raise ClientSetupError(f"--ca-file {ca_file}: unreadable certificate: {exc}") from None
    return ssl.trustRootFromCertificates(certificates)


def client_endpoint(
    reactor: Any, server: ServerURL, ca_file: str | None = None, timeout: float = 10.0
) -> IStreamClientEndpoint:
    """TCP, or TLS verified against *ca_file* (else the system's roots) for ``wss``."""
    tcp = HostnameEndpoint(reactor, server.host, server.port, timeout=timeout)
    if not server.secure:
        return tcp
    trust = load_trust_root(ca_file) if ca_file else None  # None: platform trust
    options = ssl.optionsForClientTLS(server.host, trustRoot=trust)
    return wrapClientTLS(options, tcp)


class Listener(Protocol):
    """What a connection tells about itself, once it is open."""

    def frame_received(self, connection: "ClientConnection", frame: Any, raw: bytes) -> None:
        """A text frame; *frame* is the parsed JSON, or None if it was not JSON."""

    def connection_closed(self, connection: "ClientConnection", code: int | None,
                          reason: str | None) -> None:
        """The WebSocket closed, cleanly or not."""


class ClientConnection(WebSocketClientProtocol):
    """One WebSocket to the server, sending and receiving JSON text frames."""

    factory: "_ClientFactory"

    def __init__(self) -> None:
        super().__init__()
        self.websocket_open = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._close_waiters: list[Deferred[None]] = []
        self._lost_reason: Any = None

    def connectionLost(self, reason: Any) -> None:
        # Kept so a failed TLS handshake can be reported as what it was.
        self._lost_reason = reason
        super().connectionLost(reason)

    def onOpen(self) -> None:
        self.websocket_open = True
        opened = self.factory.opened
        if not opened.called:
            opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            return  # the protocol has no binary frames; nothing to show
        try:
            frame = json.loads(payload)
        except ValueError:
            frame = None
        self.factory.listener.frame_received(self, frame, payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        was_open, self.websocket_open = self.websocket_open, False
        # The server's code when it sent one; Autobahn's own otherwise.
        self.close_code = self.remoteCloseCode if self.remoteCloseCode is not None else code
        self.close_reason = self.remoteCloseReason or reason
        opened = self.factory.opened
        if not opened.called:
            why = self.close_reason or "the connection closed during the handshake"
            lost = self._lost_reason
            if lost is not None and lost.check(SSLError):
                why = f"TLS failed: {describe_tls_error(lost.value)}"
            elif getattr(self, "http_status_code", None):
                why = f"HTTP {self.http_status_code}: {why}"
            opened.errback(ConnectionFailed(why))
        if was_open:
            self.factory.listener.connection_closed(self, self.close_code, self.close_reason)
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def send_json(self, message: Any) -> None:
        """Send one message; anything JSON can encode, as the caller gave it."""
        self.send_text(json.dumps(message, ensure_ascii=False))

    def send_text(self, text: str) -> None:
        if self.websocket_open:
            self.sendMessage(text.encode("utf-8"), isBinary=False)

    def close(self, timeout: float = 3.0) -> Deferred[None]:
        """Start the closing handshake; fires once closed (or dropped after *timeout*)."""
        done: Deferred[None] = Deferred()
        if self.transport is None or (not self.websocket_open and self.close_code is not None):
            done.callback(None)
            return done
        self._close_waiters.append(done)
        if self.websocket_open:
            self.sendClose(code=NORMAL_CLOSE)
        # A server that never answers the close must not hold the exit up.
        timer = self.factory.reactor.callLater(timeout, self._abort)

        def stop_timer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(stop_timer)
        return done

    def drop(self) -> None:
        """Cut the TCP connection without a closing handshake."""
        self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()


class _ClientFactory(WebSocketClientFactory):
    protocol = ClientConnection

    def __init__(self, url: str, listener: Listener, reactor: Any) -> None:
        super().__init__(url, useragent=USER_AGENT, reactor=reactor)
        self.listener = listener
        self.opened: Deferred[ClientConnection] = Deferred()


async def open_connection(
    reactor: Any,
    server: ServerURL,
    listener: Listener,
    ca_file: str | None = None,
    ping_interval: float | None = None,
    timeout: float = 10.0,
) -> ClientConnection:
    """Connect and finish the WebSocket handshake, or raise :class:`ConnectionFailed`.

    *ping_interval* makes the client ping the server, so a connection that
    died silently (a laptop's network gone) is noticed and can be replaced.
    """
    factory = _ClientFactory(server.url, listener, reactor)
    factory.setProtocolOptions(
        openHandshakeTimeout=timeout,
        closeHandshakeTimeout=3,
        autoPingInterval=ping_interval,
        autoPingTimeout=ping_interval / 2 if ping_interval else None,
        perMessageCompressionOffers=[],
    )
    endpoint = client_endpoint(reactor, server, ca_file, timeout)
    try:
        await endpoint.connect(factory)
    except Exception as exc:
        raise ConnectionFailed(describe_error(exc)) from None
    return await factory.opened


def describe_tls_error(exc: BaseException) -> str:
    """OpenSSL's nested error tuples, reduced to their texts."""
    texts = [
        item[2] for item in (exc.args[0] if exc.args and isinstance(exc.args[0], list) else [])
        if isinstance(item, tuple) and len(item) == 3 and item[2]
    ]
    return "; ".join(texts) or describe_error(exc)


def describe_error(exc: BaseException) -> str:
    """A connection error in a few words, without a traceback."""
    text = str(exc).strip()
    if not text or text == type(exc).__name__:
        return type(exc).__name__
    return text
