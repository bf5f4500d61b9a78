"""Reading text frames directly gives what Autobahn's own parser gives, byte for byte."""

from __future__ import annotations

import os
import struct
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from chateau.frames import DirectTextFrames, unmask

LIMIT = 1000
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


class Transport(StringTransport):
    """Like a TCP transport, lets a connection unregister a producer it never registered."""

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


class Recorder(DirectTextFrames, WebSocketServerProtocol):
    """Records what reaches the application; reads like ChateauServerProtocol."""

    direct = True

    def onOpen(self) -> None:
        self.got: list[tuple[bytes, bool]] = []
        self._direct_read = self.direct and self.direct_reads_possible()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.got.append((payload, isBinary))

    def dataReceived(self, data: bytes) -> None:
        data = self.read_text_frames(data)
        if data:
            self._dataReceived(data)


def _open(direct: bool) -> tuple[Recorder, Transport]:
    factory = WebSocketServerFactory("ws://127.0.0.1:9000")
    factory.protocol = Recorder
    factory.setProtocolOptions(
        maxMessagePayloadSize=LIMIT, maxFramePayloadSize=LIMIT, autoPingInterval=0,
        openHandshakeTimeout=0, closeHandshakeTimeout=0,
    )
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    protocol.direct = direct
    transport = Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(HANDSHAKE)
    assert transport.value().startswith(b"HTTP/1.1 101")
    transport.clear()
    assert protocol._direct_read is direct
    return protocol, transport


def frame(payload: bytes, opcode: int = 1, fin: bool = True, mask: bytes | None = b"\x01\x02\x03\x04",
          minimal: bool = True) -> bytes:
    """A client frame (masked unless *mask* is None)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size <= 125 and minimal:
        header = bytes((first, size | (0x80 if mask else 0)))
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", first, 126 | (0x80 if mask else 0), size)
    else:
        header = struct.pack("!BBQ", first, 127 | (0x80 if mask else 0), size)
    if mask is None:
        return header + payload
    return header + mask + unmask(mask, payload)


def run(stream: bytes, cuts: list[int], direct: bool) -> dict[str, Any]:
    protocol, transport = _open(direct)
    previous = 0
    for cut in sorted({c % (len(stream) + 1) for c in cuts}) + [len(stream)]:
        if cut > previous:
            protocol.dataReceived(stream[previous:cut])
            previous = cut
    stats = protocol.trafficStats
    return {
        "messages": protocol.got,
        "written": transport.value(),  # pongs, close frames
        "state": protocol.state,
        "dropped": transport.disconnecting,
        "stats": (stats.incomingOctetsWireLevel, stats.incomingOctetsWebSocketLevel,
                  stats.incomingOctetsAppLevel, stats.incomingWebSocketFrames,
                  stats.incomingWebSocketMessages),
    }


texts = st.text(max_size=40).map(lambda s: s.encode())
frames = st.one_of(
    texts.map(frame),
    st.integers(100, 1200).map(lambda n: frame(b"x" * n)),  # 16-bit length; some over the limit
    st.integers(600, 900).map(lambda n: frame(("é" * n).encode())),  # unmasked natively
    texts.map(lambda t: frame(t + b"\xff")),  # invalid UTF-8
    texts.map(lambda t: frame(b"\xe2\x82" + t)),  # truncated code point, maybe
    texts.map(lambda t: frame(t, opcode=2)),  # binary
    st.binary(max_size=20).map(lambda b: frame(b, opcode=9)),  # ping
    texts.map(lambda t: frame(t, fin=False) + frame(b"tail", opcode=0)),  # fragmented
    texts.map(lambda t: frame(t, mask=None)),  # unmasked: a violation
    st.integers(0, 125).map(lambda n: frame(b"y" * n, minimal=False)),  # non-minimal length
    st.just(frame(b"x" * 70_000)[:40]),  # 64-bit length (the header is enough)
    st.binary(min_size=4, max_size=4).flatmap(
        lambda m: texts.map(lambda t: frame(t, mask=m))),  # any mask
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, min_size=1, max_size=8), st.lists(st.integers(0, 10**6), max_size=6))
def test_direct_reads_match_autobahn(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    assert run(stream, cuts, direct=True) == run(stream, cuts, direct=False)


def test_a_burst_of_text_frames_is_read_directly_in_order() -> None:
    protocol, _ = _open(direct=True)
    payloads = [b'{"n":%d}' % i for i in range(50)] + [os.urandom(300).hex().encode()]
    stream = b"".join(frame(p, mask=os.urandom(4)) for p in payloads)
    seen = []
    protocol._dataReceived = lambda data: seen.append(data)  # Autobahn's parser: not reached
    protocol.dataReceived(stream)
    assert protocol.got == [(p, False) for p in payloads]
    assert seen == []
    assert protocol.trafficStats.incomingWebSocketMessages == len(payloads)


def test_unmask_matches_autobahn_at_both_sizes() -> None:
    from autobahn.websocket.xormasker import create_xor_masker

    for size in (0, 1, 3, 4, 5, 511, 512, 513, 4096, 65_535):
        data, mask = os.urandom(size), os.urandom(4)
        assert unmask(mask, data) == create_xor_masker(mask, max(size, 1)).process(data)
