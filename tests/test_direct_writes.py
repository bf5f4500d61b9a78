"""Frames written straight to the transport are the bytes Autobahn would write."""

from __future__ import annotations

from collections import deque

from autobahn.websocket.protocol import PreparedMessage, TrafficStats
from twisted.internet.testing import StringTransport

from chateau.frames import text_frame
from chateau.protocol import ChateauServerProtocol


def test_text_frame_matches_autobahn_at_every_length_boundary() -> None:
    for size in (0, 1, 125, 126, 127, 0xFFFF, 0x10000, 70_000):
        payload = b"x" * size
        assert text_frame(payload) == PreparedMessage(payload, False, False, False).payloadHybi


def _open_protocol() -> tuple[ChateauServerProtocol, StringTransport]:
    protocol = ChateauServerProtocol()
    transport = StringTransport()
    protocol.transport = transport
    protocol.state = protocol.STATE_OPEN
    protocol.send_queue = deque()
    protocol.trafficStats = TrafficStats()
    protocol._direct_write = True
    return protocol, transport


def test_direct_write_goes_to_the_transport_and_counts_octets() -> None:
    protocol, transport = _open_protocol()
    wire = text_frame(b'{"type":"x"}')
    assert protocol.write_frame_directly(wire)
    assert transport.value() == wire
    assert protocol.trafficStats.outgoingOctetsWireLevel == len(wire)


def test_direct_write_declines_whenever_autobahn_would_do_more() -> None:
    protocol, transport = _open_protocol()
    protocol.send_queue.append((b"queued", True))
    assert not protocol.write_frame_directly(b"frame")
    protocol.send_queue.clear()
    protocol.state = protocol.STATE_CLOSING
    assert not protocol.write_frame_directly(b"frame")
    protocol.state = protocol.STATE_OPEN
    protocol._direct_write = False  # compression, masking, fragmenting or frame logging on
    assert not protocol.write_frame_directly(b"frame")
    assert transport.value() == b""
