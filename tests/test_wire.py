"""Frames written straight to the transport are the bytes Autobahn would write."""

from __future__ import annotations

import os
import threading
from collections import deque

import pytest
from autobahn.websocket.protocol import PreparedMessage, TrafficStats
from twisted.internet.testing import StringTransport

from chateau.frames import text_frame
from chateau.protocol import ChateauServerProtocol
from chateau.threads import run_in_background_priority


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


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is a Linux scheduling policy; other systems have none")
def test_idle_priority_applies_to_the_calling_thread_only() -> None:
    seen: list[bool] = []

    def work() -> None:
        run_in_background_priority(idle=True)
        run_in_background_priority(idle=True)  # once per thread
        seen.append(os.sched_getscheduler(0) == os.SCHED_IDLE)

    before = os.sched_getscheduler(0)
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen == [True]
    assert os.sched_getscheduler(0) == before
