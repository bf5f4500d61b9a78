"""Frames written to a TCP connection during one reactor turn go out in one ``send()``.

Twisted's ``transport.write`` buffers and registers the socket with epoll;
the reactor then wakes for it, sends, and deregisters it: two ``epoll_ctl``
calls, a dispatch through its per-event log context, and the send, for
every connection written to, whether it carries one frame or many. Here the
frames written to a connection during a turn are collected, and at the end
of the turn (one ``callLater(0)`` for all of them) each connection's frames
are joined and sent straight to its socket when Twisted has nothing
buffered for it. Whatever the kernel does not take, and everything for a
connection that Twisted is still sending to or closing, goes through
``transport.write`` as before, so its buffering, its flow control (the
producer is paused when that buffer fills) and its handling of a lost
connection stay Twisted's.

Order: the frames of one connection keep the order they were written in,
and a frame written by another path (Autobahn's ``sendData``: control
frames, close frames) must first :meth:`TurnWrites.flush` the connection's
collected frames (:class:`chateau.frames.DirectTextFrames` does).

Bursts: what one connection collects in a turn is bounded by *limit*
(Twisted's buffer size); past it the frames go to ``transport.write`` at
once, and so does everything after them (Twisted's buffer is no longer
empty), so a loop that writes many frames in one turn (a catch-up's
release) meets the transport's flow control as it goes, exactly as
before: the producer is paused once Twisted's buffer fills, and the rest
waits for the client to read.

Only plain TCP connections qualify (:func:`direct_sends_possible`); over
TLS or a wrapping protocol every write is ``transport.write`` as before.
It reads Twisted's transport state: the names are in
:data:`TRANSPORT_INTERNALS`, and a transport without one of them does not
qualify.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

# What is read or called on a twisted.internet.tcp.Connection: its buffer
# (bytes being sent from offset, and the list appended to since), whether it
# is connected, closing or aborted, and its one-send method.
TRANSPORT_INTERNALS = (
    "dataBuffer", "offset", "_tempDataLen", "connected", "disconnecting",
    "_writeDisconnected", "writeSomeData", "write",
)

# Bytes one connection may collect in a turn before it is flushed at once:
# Twisted's own buffer size, past which it pauses the connection's producer.
FLUSH_AT = 64 * 1024


def direct_sends_possible(transport: Any) -> bool:
    """Whether *transport* is a plain TCP connection whose buffer state can be read."""
    return isinstance(transport, tcp.Connection) and all(
        hasattr(transport, name) for name in TRANSPORT_INTERNALS
    )


class TurnWrites:
    """The frames written this turn, per TCP transport, and their flush at the turn's end.

    One per reactor (the factory's): writes of every connection share its
    single ``callLater(0)``.
    """

    def __init__(self, reactor: Any, limit: int = FLUSH_AT) -> None:
        self._reactor = reactor
        self._limit = limit
        # transport -> [bytes collected, chunks...], in first-write order.
        self._pending: dict[Any, list[Any]] = {}
        self._scheduled = False

    def write(self, transport: Any, data: bytes) -> None:
        """Send *data* on *transport* at the end of this turn, after what it already has."""
        entry = self._pending.get(transport)
        if entry is None:
            self._pending[transport] = [len(data), data]
            if not self._scheduled:
                self._scheduled = True
                self._reactor.callLater(0, self.flush_all)
            return
        entry.append(data)
        entry[0] += len(data)
        if entry[0] >= self._limit:
            # A burst (a catch-up's release): Twisted's buffer takes it, and
            # pauses the producer as it fills, exactly as without collecting.
            del self._pending[transport]
            transport.write(b"".join(entry[1:]))

    def flush(self, transport: Any) -> None:
        """Send what *transport* collected this turn now (before a write by another path)."""
        entry = self._pending.pop(transport, None)
        if entry is not None:
            _send(transport, entry)

    def flush_all(self) -> None:
        """The turn's end: every connection written to gets its frames in one send."""
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for transport, entry in pending.items():
            _send(transport, entry)


def _send(transport: Any, entry: list[Any]) -> None:
    """Send the chunks of *entry* (after its byte count) straight to the socket if Twisted
    has nothing buffered; what the kernel does not take goes to Twisted's buffer."""
    data = entry[1] if len(entry) == 2 else b"".join(entry[1:])
    if not transport.connected or transport._writeDisconnected:
        return  # as transport.write would: the connection is gone
    if (
        transport.disconnecting
        or getattr(transport, "_aborting", False)
        or transport._tempDataLen
        or len(transport.dataBuffer) > transport.offset
    ):
        # Closing, aborted, or Twisted is still sending: its buffer keeps the order.
        transport.write(data)
        return
    sent = transport.writeSomeData(data)
    if not isinstance(sent, int):
        # The connection is lost: Twisted's own write meets the error and closes it.
        transport.write(data)
    elif sent < len(data):
        transport.write(data[sent:])
