"""WebSocket framing for the common case, without Autobahn's general machinery.

Autobahn frames and parses every message through a general state machine
(fragmentation, extensions, streaming hooks, per-frame objects, a txaio
event per message). Nearly every frame Chateau sends or receives is the
simplest kind: one unfragmented text frame, masked on the way in. For those
this module writes and reads the bytes directly; anything else (control
frames, fragments, binary frames, a frame split across reads, a frame over
the size limit, invalid UTF-8, an unmasked client frame) is left to
Autobahn, which handles it, or fails the connection, exactly as before.
"""

from __future__ import annotations

import struct
from typing import Any

from autobahn.websocket import USES_NVX
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.xormasker import create_xor_masker

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


def unmask(mask: bytes, masked: bytes) -> bytes:
    """XOR *masked* with the 4-byte *mask* repeated (RFC 6455, 5.3)."""
    size = len(masked)
    if USES_NVX and size >= _NATIVE_UNMASK_FROM:
        return create_xor_masker(mask, size).process(masked)
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "little")
    return (int.from_bytes(masked, "little") ^ key).to_bytes(size, "little")


class DirectTextFrames:
    """Reads whole masked text frames straight off the stream (a mixin).

    For an Autobahn server protocol. :meth:`direct_reads_possible` says, once
    the connection is open, whether nothing would make Autobahn do more with
    such a frame than unmask it, check its UTF-8 and its size, count it and
    call ``onMessage``; :meth:`read_text_frames` then does exactly that for
    the complete text frames at the front of a read, and returns the rest
    for Autobahn. It only ever starts at a frame boundary with nothing
    buffered, so Autobahn's parser always finds itself between frames.
    """

    # Set by the protocol once open; see direct_reads_possible.
    _direct_read = False

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


def prepare_frame(payload: bytes) -> PreparedMessage:
    """Frame an encoded text message once for any number of server connections.

    What ``WebSocketServerFactory.prepareMessage`` does (unmasked, no
    compression, which Chateau refuses), without needing the factory.
    """
    return PreparedMessage(payload, False, False, False)
