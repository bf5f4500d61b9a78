"""A connection the server failed is closed at once, as bare Autobahn closes it.

When a client breaks RFC 6455 (a reserved opcode: 1002; invalid UTF-8 in a
text message: 1007), the server sends its close frame with the reason. Once
the client answers it, the server drops the TCP connection straight away
(RFC 6455, 7.1.1: the server closes first), and without an answer it drops
it when the closing handshake times out; either way its place in the
connection limits is given back. A connection left open after a failure
would be a resource an attacker could hold. ``python -m bench.rfc6455``
compares every case of the Autobahn TestSuite with bare Autobahn.
"""

from __future__ import annotations

import time

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.deferreds import inline
from tests.wsclient import RawClient, client_frame

NORMAL = (1000).to_bytes(2, "big")

# What the client sends, and the close code the server fails the connection with.
FAILURES = [
    pytest.param(client_frame(b"reserved", opcode=3), 1002, id="reserved-data-opcode"),
    pytest.param(client_frame(b"", opcode=0xB), 1002, id="reserved-control-opcode"),
    # Ends inside a code point (TestSuite 6.6.4): only the message's end shows it.
    pytest.param(client_frame(b"\xce\xba\xe1\xbd"), 1007, id="utf8-cut-short"),
    pytest.param(client_frame(b"\xce\xba\xff\xbd"), 1007, id="utf8-invalid-byte"),
    # A fragmented text message whose second fragment is invalid.
    pytest.param(bytes((0x01, 0x82)) + b"\0\0\0\0" + b"\xce\xba"
                 + client_frame(b"\xf4\x90\x80\x80", opcode=0), 1007, id="utf8-in-fragment"),
    # Over max_message_size (64 KiB): refused from its header, its payload skipped.
    pytest.param(client_frame(b"x" * 65537), 1009, id="oversized-frame"),
    # Garbage after the failure, in the same write: the close frame still comes first.
    pytest.param(client_frame(b"", opcode=3) + b"\xff" * 64, 1002, id="garbage-after-failure"),
]


def fail_and_answer(url: str, frame: bytes, answer: bool) -> tuple[int, bytes, list, float]:
    """Send *frame*; read the server's close; answer it (or not); wait for the end.

    Returns the close frame's opcode and payload, the frames after it, and
    the seconds from the answer (or from the close frame) to the end of the
    stream (infinite when the client's socket timed out first).
    """
    client = RawClient(url)
    try:
        client.write(frame)
        opcode, payload = client.read_frame()
        while opcode == 1:  # a reply to an earlier frame, if any
            opcode, payload = client.read_frame()
        if answer:
            try:
                client.write(client_frame(NORMAL, opcode=8))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server had given up on the stream already
        started = time.monotonic()
        after: list = []
        try:
            while (frame := client.read_frame())[0] != -1:
                after.append(frame)
        except ConnectionResetError:
            pass  # dropped by abort, as Autobahn drops a connection whose close is done
        except TimeoutError:
            return opcode, payload, after, float("inf")
        return opcode, payload, after, time.monotonic() - started
    finally:
        client.close()


async def released(server, timeout: float = 2.0) -> bool:
    """Whether every connection's place in the limits is given back within *timeout*."""
    factory = server.service.factory
    deadline = time.monotonic() + timeout
    while factory.connections or factory._per_address:
        if time.monotonic() > deadline:
            return False
        await deferLater(reactor, 0.02, lambda: None)
    return True


@pytest.mark.parametrize(("frame", "code"), FAILURES)
@inline
async def test_a_failed_connection_is_dropped_once_the_client_answers_the_close(
        server, frame, code):
    # Long enough that only the client's answer can end the connection in time.
    server.service.factory.setProtocolOptions(closeHandshakeTimeout=30)
    opcode, payload, after, waited = await deferToThread(fail_and_answer, server.url, frame,
                                                         True)
    assert opcode == 8 and payload[:2] == code.to_bytes(2, "big"), (opcode, payload)
    assert after == [], after  # nothing follows the close frame
    assert waited < 2.0, f"the server kept the failed connection open {waited:.1f} s"
    assert await released(server)


@pytest.mark.parametrize(("frame", "code"), FAILURES[:3])
@inline
async def test_a_failed_connection_is_dropped_when_the_client_never_answers(
        server, frame, code):
    timeout = server.service.factory.closeHandshakeTimeout
    opcode, payload, after, waited = await deferToThread(fail_and_answer, server.url, frame,
                                                         False)
    assert opcode == 8 and payload[:2] == code.to_bytes(2, "big"), (opcode, payload)
    assert after == [], after
    assert waited < timeout + 2.0, f"the failed connection stayed open {waited:.1f} s"
    assert await released(server)


@inline
async def test_requests_after_a_failure_are_not_answered(server):
    """What the client sends between the server's close and its answer is ignored."""
    server.service.factory.setProtocolOptions(closeHandshakeTimeout=30)
    frame = (client_frame(b"\xff")
             + client_frame(b'{"type": "HeartbeatRequest", "msg_id": 1}')
             + client_frame(b"\x00" * 4, opcode=2))
    opcode, payload, after, waited = await deferToThread(fail_and_answer, server.url, frame,
                                                         True)
    assert opcode == 8 and payload[:2] == (1007).to_bytes(2, "big"), (opcode, payload)
    assert after == [] and waited < 2.0, (after, waited)
    assert await released(server)
