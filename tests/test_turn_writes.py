"""Frames written during a reactor turn leave in one send() per connection, in order."""

from __future__ import annotations

import socket
from collections import deque
from typing import Any, Iterator

import pytest
from autobahn.websocket.protocol import TrafficStats
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock

from chateau.frames import text_frame
from chateau.protocol import ChateauServerProtocol
from chateau.turnwrites import TurnWrites, direct_sends_possible


class FakeReactor(Clock):
    """A clock that also keeps the descriptors registered for reading and writing."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set[Any] = set()

    def addWriter(self, writer: Any) -> None:
        self.writers.add(writer)

    def removeWriter(self, writer: Any) -> None:
        self.writers.discard(writer)

    def addReader(self, reader: Any) -> None:
        pass

    def removeReader(self, reader: Any) -> None:
        pass


class CountingConnection(tcp.Connection):
    """A real TCP-style transport over one end of a socket pair, counting its sends."""

    sends = 0

    def writeSomeData(self, data: bytes) -> Any:
        self.sends += 1
        return super().writeSomeData(data)


@pytest.fixture
def pair() -> Iterator[tuple[CountingConnection, socket.socket, FakeReactor]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    reactor = FakeReactor()
    transport = CountingConnection(ours, Protocol(), reactor)
    transport.connected = 1
    yield transport, theirs, reactor
    ours.close()
    theirs.close()


def received(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_a_turns_frames_go_out_together_at_its_end_without_registering_for_writes(pair) -> None:
    transport, theirs, reactor = pair
    assert direct_sends_possible(transport)
    writes = TurnWrites(reactor)
    for index in range(5):
        writes.write(transport, b"frame%d;" % index)
    assert received(theirs) == b""
    reactor.advance(0)
    assert received(theirs) == b"frame0;frame1;frame2;frame3;frame4;"
    assert transport.sends == 1
    assert not reactor.writers


def test_frames_queue_behind_what_twisted_still_has_to_send(pair) -> None:
    transport, theirs, reactor = pair
    writes = TurnWrites(reactor)
    transport.write(b"buffered;")  # Twisted's buffer: sent when the reactor says writable
    writes.write(transport, b"collected;")
    reactor.advance(0)
    assert transport.sends == 0
    assert reactor.writers == {transport}
    transport.doWrite()
    assert received(theirs) == b"buffered;collected;"


def test_a_burst_goes_to_twisteds_buffer_and_pauses_the_producer(pair) -> None:
    transport, theirs, reactor = pair

    class Producer:
        paused = False

        def pauseProducing(self) -> None:
            self.paused = True

        def resumeProducing(self) -> None:
            self.paused = False

        def stopProducing(self) -> None:
            pass

    producer = Producer()
    transport.registerProducer(producer, True)
    writes = TurnWrites(reactor, limit=1000)
    transport.bufferSize = 1500
    for _ in range(4):
        writes.write(transport, b"x" * 400)
    # Past the limit: handed to Twisted as it is written, not held to the turn's end.
    assert transport._tempDataLen == 1200
    writes.write(transport, b"y" * 400)
    reactor.advance(0)
    assert transport.sends == 0
    assert producer.paused
    while reactor.writers:
        transport.doWrite()
    assert received(theirs) == b"x" * 1600 + b"y" * 400


def test_nothing_is_sent_to_a_lost_connection(pair) -> None:
    transport, theirs, reactor = pair
    writes = TurnWrites(reactor)
    writes.write(transport, b"late")
    transport.connected = 0
    reactor.advance(0)
    assert transport.sends == 0
    assert received(theirs) == b""


def test_autobahns_own_frames_follow_the_frames_collected_before_them(pair) -> None:
    """A close or control frame (Autobahn's sendData) never overtakes a collected frame."""
    transport, theirs, reactor = pair
    protocol = ChateauServerProtocol()
    protocol.transport = transport
    protocol.state = protocol.STATE_OPEN
    protocol.send_queue = deque()
    protocol.trafficStats = TrafficStats()
    protocol.logOctets = False
    protocol._direct_write = True
    protocol._turn_writes = TurnWrites(reactor)
    first, second = text_frame(b'{"n":1}'), text_frame(b'{"n":2}')
    assert protocol.write_frame_directly(first)
    assert protocol.write_frame_directly(second)
    protocol.sendData(b"\x88\x02\x03\xe8")  # a close frame, 1000
    reactor.advance(0)
    while reactor.writers:
        transport.doWrite()
    assert received(theirs) == first + second + b"\x88\x02\x03\xe8"
