"""WebSocket framing for the common case, without Autobahn's general machinery.

Autobahn frames and parses every message through a general state machine
(fragmentation, extensions, streaming hooks, per-frame objects, a txaio
event per message). Nearly every frame Chateau sends or receives is the
simplest kind: one unfragmented text frame, masked on the way in. For those
this module writes and reads the bytes directly; anything else (control
frames, fragments, binary frames, a frame split across reads, a frame over
the size limit, invalid UTF-8, an unmasked client frame) is left to
Autobahn, which handles it, or fails the connection, exactly as before.

Both paths stand in for parts of Autobahn, so they use its internals: the
names are listed below (``*_INTERNALS``, ``TRAFFIC_COUNTERS``, and the two
imports from ``autobahn.websocket``), with the Autobahn releases they were
checked against (:data:`AUTOBAHN_RANGE`, the pin in ``setup.py``).
:func:`check_autobahn` fails, naming what is missing, on a release that
renamed or dropped one. What a check of names cannot see, Autobahn doing
more per frame than these paths do, is what the tests comparing both paths
byte for byte are for.
"""

from __future__ import annotations

import struct
from typing import Any

import autobahn

from chateau.turnwrites import TurnWrites, direct_sends_possible

# The Autobahn releases these paths were checked against: from 25.9.1, the
# first with USES_NVX, to 26.11.1 (the frame tests passed on 25.9.1, 25.10.x,
# 25.12.x, 26.6.x and 26.11.1). The upper bound stops before the next major
# release, which may rename what they use. setup.py pins the same range.
AUTOBAHN_RANGE = ">=25.9.1,<27"
_CHECKED = "25.9.1 to 26.11.1"

try:
    from autobahn.websocket import USES_NVX
    from autobahn.websocket.protocol import PreparedMessage
    from autobahn.websocket.xormasker import create_xor_masker
except ImportError as exc:  # pragma: no cover - only with an untested Autobahn
    raise ImportError(
        f"chateau.frames cannot use autobahn {autobahn.__version__}: {exc}; "
        f"it was checked against autobahn {_CHECKED} (autobahn{AUTOBAHN_RANGE})"
    ) from exc

# Attributes the direct paths read or call on an open server connection
# (an autobahn.twisted.websocket.WebSocketServerProtocol).
CONNECTION_INTERNALS = (
    # What makes Autobahn do more than write or parse a frame, fixed once the
    # connection is open: compression (private), timing, masking, fragmenting,
    # frame and octet logging, mask and UTF-8 checks, the protocol version.
    "_perMessageCompress", "trackedTimings", "maskServerFrames", "autoFragmentSize",
    "logFrames", "logOctets", "requireMaskedClientFrames", "applyMask",
    "utf8validateIncoming", "websocket_version",
    # The limits it enforces on what is read and sent.
    "maxMessagePayloadSize", "maxFramePayloadSize",
    # Its state: open or not, chopped or synchronous sends waiting, and the
    # parser's frame, message and buffered bytes.
    "state", "STATE_OPEN", "send_queue",
    "current_frame", "inside_message", "data",
    # The auto-ping timeout that any traffic restarts (the method is private).
    "autoPingTimeoutCall", "autoPingRestartOnAnyTraffic", "_cancelAutoPingTimeoutCall",
    # Its counters (see TRAFFIC_COUNTERS), its parser behind the Twisted
    # adapter's dataReceived (private), and the ways back into Autobahn.
    "trafficStats", "_dataReceived", "sendPreparedMessage", "onMessage",
)
# On the connection's factory.
FACTORY_INTERNALS = ("isServer",)
# On the connection's trafficStats: counted as Autobahn would count them.
TRAFFIC_COUNTERS = (
    "incomingOctetsWireLevel", "incomingOctetsWebSocketLevel", "incomingOctetsAppLevel",
    "incomingWebSocketFrames", "incomingWebSocketMessages", "outgoingOctetsWireLevel",
)
# On a message the factory prepared (a PreparedMessage): its whole frame.
PREPARED_INTERNALS = ("payloadHybi",)


class AutobahnMismatch(RuntimeError):
    """The installed Autobahn lacks an internal that the direct frame paths use."""


# First header byte of an unfragmented text frame: FIN, no RSV bits, opcode 1.
TEXT_FIN = 0x81
# Second header byte's mask bit.
_MASKED = 0x80
# Above this payload size Autobahn's native (NVX) unmasking beats Python's
# big-integer XOR; below it, creating the native masker costs more than the XOR.
_NATIVE_UNMASK_FROM = 512


def text_frame(payload: bytes) -> bytes:
    """The wire bytes of one unmasked text frame, as Autobahn's server would frame it."""
    size = len(payload)
    if size <= 125:
        return bytes((TEXT_FIN, size)) + payload
    if size <= 0xFFFF:
        return struct.pack("!BBH", TEXT_FIN, 126, size) + payload
    return struct.pack("!BBQ", TEXT_FIN, 127, size) + payload


def prepare_frame(payload: bytes) -> PreparedMessage:
    """Frame an encoded text message once for any number of server connections.

    What ``WebSocketServerFactory.prepareMessage`` does (unmasked, no
    compression, which Chateau refuses), without needing the factory.
    """
    return PreparedMessage(payload, False, False, False)


def unmask(mask: bytes, masked: bytes) -> bytes:
    """XOR *masked* with the 4-byte *mask* repeated (RFC 6455, 5.3)."""
    size = len(masked)
    if USES_NVX and size >= _NATIVE_UNMASK_FROM:
        return create_xor_masker(mask, size).process(masked)
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "little")
    return (int.from_bytes(masked, "little") ^ key).to_bytes(size, "little")


class DirectTextFrames:
    """Reads and writes whole text frames straight off and onto the stream (a mixin).

    For an Autobahn server protocol, before it in the bases. Once the
    connection is open, :meth:`enable_direct_frames` settles what the fast
    paths may do for its lifetime.

    Reading: :meth:`direct_reads_possible` says whether nothing would make
    Autobahn do more with a masked text frame than unmask it, check its
    UTF-8 and its size, count it and call ``onMessage``;
    :meth:`read_text_frames` then does exactly that for the complete text
    frames at the front of a read, and returns the rest for Autobahn. It
    only ever starts at a frame boundary with nothing buffered, so
    Autobahn's parser always finds itself between frames.

    Writing: :meth:`direct_writes_possible` says whether Autobahn's send path
    would do more than ``transport.write``; :meth:`write_frame_directly` and
    :meth:`send_prepared` then write whole frames to the transport
    themselves while nothing is queued.
    """

    # Set once open by enable_direct_frames.
    _direct_read = False
    _direct_write = False
    # The reactor's TurnWrites when this connection's frames are collected
    # per turn (a plain TCP transport); None writes to the transport at once.
    _turn_writes: TurnWrites | None = None

    def enable_direct_frames(self) -> None:
        """Decide, once the handshake is done, which frames may bypass Autobahn.

        What the decision depends on (compression, masking, fragmenting,
        frame/octet logging and timing) is fixed from then on.
        """
        self._direct_write = self.direct_writes_possible()
        self._direct_read = self.direct_reads_possible()
        writes = getattr(self.factory, "turn_writes", None)
        if writes is not None and self._direct_write and direct_sends_possible(self.transport):
            self._turn_writes = writes

    def direct_writes_possible(self: Any) -> bool:
        return (
            self._perMessageCompress is None
            and not self.maskServerFrames
            and not self.autoFragmentSize
            and not self.logFrames
            and not self.logOctets
            and not self.trackedTimings
        )

    def direct_reads_possible(self: Any) -> bool:
        return (
            self.factory.isServer
            and self.websocket_version != 0
            and self._perMessageCompress is None
            and self.requireMaskedClientFrames
            and self.applyMask
            and self.utf8validateIncoming
            and not self.logFrames
            and not self.logOctets
            and not self.trackedTimings
        )

    def _at_frame_boundary(self: Any) -> bool:
        return (
            self._direct_read
            and self.state == self.STATE_OPEN
            and self.current_frame is None
            and not self.inside_message
            and not self.data
        )

    def read_text_frames(self: Any, data: bytes) -> bytes:
        """Deliver the whole text frames at the front of *data*; what is left of it."""
        if not self._at_frame_boundary():
            return data
        limits = [size for size in (self.maxMessagePayloadSize, self.maxFramePayloadSize) if size > 0]
        limit = min(limits) if limits else 0
        stats = self.trafficStats
        available = len(data)
        at = 0
        while self.state == self.STATE_OPEN and available - at >= 6:
            if data[at] != TEXT_FIN:
                break
            size = data[at + 1]
            if not size & _MASKED:
                break
            size &= 0x7F
            start = at + 2
            if size == 126:
                size = int.from_bytes(data[start:start + 2], "big")
                start += 2
                if size < 126:
                    break  # not the minimal encoding: a protocol violation
            elif size == 127:
                break  # 64 KiB or more: over any limit Chateau sets
            if limit and size > limit:
                break
            end = start + 4 + size
            if end > available:
                break
            payload = unmask(data[start:start + 4], data[start + 4:end])
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                break
            stats.incomingOctetsWireLevel += end - at
            stats.incomingOctetsWebSocketLevel += size
            stats.incomingOctetsAppLevel += size
            stats.incomingWebSocketFrames += 1
            stats.incomingWebSocketMessages += 1
            if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                self._cancelAutoPingTimeoutCall()
            at = end
            self.onMessage(payload, False)
        return data[at:] if at else data

    def dataReceived(self: Any, data: bytes) -> None:
        """Read whole text frames directly; hand the rest to Autobahn's parser.

        Complete, unfragmented, masked text frames at the front of the read
        go straight to ``onMessage`` (see :meth:`read_text_frames`); what is
        left, if anything, goes to Autobahn's parser, without the per-read
        ``log.debug`` of its Twisted adapter, which builds its arguments
        (highlighted with ``click`` when it is importable) even with debug
        logging off. Everything else the adapter does is ``_dataReceived``.

        Once this side has failed the connection (1002, 1007, 1009...),
        Autobahn's parser still reads what follows, skipping the rest of the
        bad frame: the client's answering close frame then ends the TCP
        connection at once, as in bare Autobahn, instead of leaving it open
        until the closing handshake times out (tests/test_rfc6455.py).
        """
        data = self.read_text_frames(data)
        if data:
            self._dataReceived(data)

    def write_frame_directly(self: Any, wire: bytes) -> bool:
        """Write one complete frame straight to the transport, if Autobahn would.

        This is ``sendData``'s own fast path (connection open, nothing queued
        for chopped or synchronous sends, and, from :meth:`enable_direct_frames`,
        no compression, masking, fragmenting, frame logging or timing) minus
        its ``log.debug``, whose arguments are built on every send although
        debug is off: a large share of a fan-out's CPU per delivery
        (docs/performance.md). The
        wire-level traffic counter is kept (Autobahn's other counters, which
        nothing here reads, are not). False when the caller must go through
        Autobahn instead.
        """
        if not self._direct_write or self.send_queue or self.state != self.STATE_OPEN:
            return False
        writes = self._turn_writes
        if writes is None:
            self.transport.write(wire)
        else:
            writes.write(self.transport, wire)
        self.trafficStats.outgoingOctetsWireLevel += len(wire)
        return True

    def send_prepared(self: Any, prepared: Any) -> int:
        """Send a message the factory prepared once for a whole fan-out; its size on the wire.

        Its frame (``payloadHybi``) goes straight to the transport exactly
        when :meth:`write_frame_directly` would write it, else through
        ``sendPreparedMessage``. The test is repeated here rather than
        called: this runs once per delivery, the server's hottest path.
        """
        wire = prepared.payloadHybi
        if self._direct_write and not self.send_queue and self.state == self.STATE_OPEN:
            writes = self._turn_writes
            if writes is None:
                self.transport.write(wire)
            else:
                writes.write(self.transport, wire)
            self.trafficStats.outgoingOctetsWireLevel += len(wire)
        else:
            self.sendPreparedMessage(prepared)
        return len(wire)


    def sendData(self: Any, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Autobahn's write (control, close and fallback frames), after the frames
        collected for this connection in the current turn, so the order on the
        wire is the order of writing."""
        writes = self._turn_writes
        if writes is not None:
            writes.flush(self.transport)
        super().sendData(data, sync, chopsize)  # type: ignore[misc]


def check_autobahn(connection: Any = None, prepared: Any = None) -> None:
    """Raise :class:`AutobahnMismatch` naming an internal the fast paths use that is missing.

    *connection* is an open server connection and *prepared* a message its
    factory prepared; by default both are made with the installed Autobahn,
    over an in-memory transport. Names only are checked, not what they do.
    """
    if connection is None or prepared is None:
        sample, sample_prepared = _sample_connection()
        connection = sample if connection is None else connection
        prepared = sample_prepared if prepared is None else prepared
    wanted = [
        (connection, "the server connection", CONNECTION_INTERNALS),
        (getattr(connection, "factory", None), "the connection's factory", FACTORY_INTERNALS),
        (getattr(connection, "trafficStats", None), "the connection's trafficStats",
         TRAFFIC_COUNTERS),
        (prepared, "a prepared message", PREPARED_INTERNALS),
    ]
    for holder, where, names in wanted:
        for name in names:
            if not hasattr(holder, name):
                raise AutobahnMismatch(
                    f"autobahn {autobahn.__version__} has no {name!r} on {where} "
                    f"({type(holder).__name__}); Chateau's direct frame paths "
                    f"(chateau.frames) use it and were checked against autobahn "
                    f"{_CHECKED} (autobahn{AUTOBAHN_RANGE})"
                )


def _sample_connection() -> tuple[Any, Any]:
    """An open Autobahn server connection over an in-memory transport, and a prepared message."""
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    factory = WebSocketServerFactory("ws://127.0.0.1:9000", reactor=Clock())
    factory.protocol = WebSocketServerProtocol
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0)
    connection = factory.buildProtocol(None)
    connection.makeConnection(StringTransport())
    connection.dataReceived(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    if getattr(connection, "state", None) != getattr(connection, "STATE_OPEN", ()):
        raise AutobahnMismatch(
            f"autobahn {autobahn.__version__} did not open a sample connection; "
            f"chateau.frames was checked against autobahn {_CHECKED}"
        )
    return connection, factory.prepareMessage(b"{}")
