"""An Autobahn WebSocket client for tests: send dicts, await replies in order."""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred, DeferredQueue

from tests.deferreds import sleep


class TestClientProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.client.inbox.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        client = self.factory.client
        client.close_code = self.remoteCloseCode if self.remoteCloseCode is not None else code
        client.close_reason = self.remoteCloseReason
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"handshake failed: {code} {reason}"))
        for waiter in client.closed_waiters:
            waiter.callback(client.close_code)
        client.closed_waiters.clear()
        client.is_closed = True


class Client:
    """A connected test client. ``recv`` returns frames in arrival order."""

    def __init__(self) -> None:
        self.inbox: DeferredQueue = DeferredQueue()
        self.protocol: TestClientProtocol | None = None
        self.close_code: int | None = None
        # The server's close reason, when it sent one.
        self.close_reason: str | None = None
        self.is_closed = False
        self.closed_waiters: list[Deferred] = []
        self.username: str | None = None

    def send(self, message: dict[str, Any] | str | bytes, binary: bool = False) -> None:
        if isinstance(message, dict):
            payload = json.dumps(message).encode()
        elif isinstance(message, str):
            payload = message.encode()
        else:
            payload = message
        self.protocol.sendMessage(payload, isBinary=binary)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        d = self.inbox.get()
        d.addTimeout(timeout, reactor)
        return await d

    async def expect(self, type: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """The next frame, checked to be of *type* with the given field values."""
        message = await self.recv(timeout)
        assert message.get("type") == type, f"expected {type}, got {message}"
        for key, value in fields.items():
            assert message.get(key) == value, f"{key}: expected {value!r} in {message}"
        return message

    async def request(self, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        self.send(message)
        return await self.recv(timeout)

    async def nothing(self, wait: float = 0.2) -> None:
        """Assert that no frame arrives within *wait* seconds."""
        await sleep(wait)
        assert not self.inbox.pending, f"unexpected frames: {self.inbox.pending}"

    async def frames_until_heartbeat(self, msg_id: Any = "end",
                                     timeout: float = 10.0) -> list[dict[str, Any]]:
        """Send a heartbeat; every frame that arrives before its reply, in order.

        The server answers a connection's requests in order, so by the reply
        everything it owed the connection before the heartbeat has arrived.
        """
        self.send({"type": "HeartbeatRequest", "msg_id": msg_id})
        frames = []
        while True:
            frame = await self.recv(timeout)
            if "msg_id" in frame and frame["msg_id"] == msg_id:
                return frames
            frames.append(frame)

    async def register(self, username: str, password: str = "secret", **extra: Any) -> dict:
        reply = await self.request(
            {"type": "RegisterRequest", "username": username, "password": password,
             "auth": False, **extra}
        )
        assert reply["type"] == "RegisterResponse", reply
        self.username = reply["username"]
        return reply

    async def close(self) -> None:
        if self.is_closed or self.protocol is None:
            return
        d = Deferred()
        self.closed_waiters.append(d)
        self.protocol.sendClose()
        d.addTimeout(5, reactor)
        await d

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close the connection; the close code."""
        if self.is_closed:
            return self.close_code
        d = Deferred()
        self.closed_waiters.append(d)
        d.addTimeout(timeout, reactor)
        return await d

    def drop(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        self.protocol.transport.abortConnection()


async def connect(url: str, origin: str | None = None) -> Client:
    client = Client()
    factory = WebSocketClientFactory(url, origin=origin)
    factory.protocol = TestClientProtocol
    factory.client = client
    factory.opened = Deferred()
    host, port = factory.host, factory.port
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=5)
    await endpoint.connect(factory)
    client.protocol = await factory.opened
    return client


async def send_message(client: Client, recipient: str, content: str) -> dict[str, Any]:
    """Send a message to a user or group; its acknowledgement, checked to be one."""
    ack = await client.request({"type": "MessageRequest", "recipient": recipient,
                                "content": content})
    assert ack["type"] == "MessageSendResponse", ack
    return ack


def client_frame(payload: bytes, opcode: int = 1, mask: bytes = b"\x37\xfa\x21\x3d") -> bytes:
    """One masked, unfragmented client frame written by hand (text by default; 8 is close)."""
    import struct

    size = len(payload)
    if size <= 125:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + masked


class RawClient:
    """A blocking WebSocket client over a plain TCP socket, writing frames by hand.

    For what a well-behaved client library will not do, such as data frames
    after a close frame in one TCP write. Blocking: run it in a thread.
    """

    def __init__(self, url: str) -> None:
        import socket
        from urllib.parse import urlparse

        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=10)
        self.sock.sendall(
            f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.hostname}:{parsed.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))

    def write(self, data: bytes) -> None:
        """Write *data* (frames from :func:`client_frame`) in one TCP write."""
        self.sock.sendall(data)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send *message* as a text frame; the next frame, which must be a text frame."""
        self.write(client_frame(json.dumps(message).encode()))
        opcode, payload = self.read_frame()
        assert opcode == 1, (opcode, payload)
        return json.loads(payload)

    def read_frame(self) -> tuple[int, bytes]:
        """The next server frame, (opcode, payload); (-1, b"") at the end of the stream."""
        while True:
            if len(self.buffer) >= 2:
                size, start = self.buffer[1] & 0x7F, 2
                if size == 126:
                    size, start = int.from_bytes(self.buffer[2:4], "big"), 4
                elif size == 127:
                    size, start = int.from_bytes(self.buffer[2:10], "big"), 10
                if len(self.buffer) >= start and len(self.buffer) >= start + size:
                    opcode = self.buffer[0] & 0x0F
                    payload = self.buffer[start:start + size]
                    self.buffer = self.buffer[start + size:]
                    return opcode, payload
            chunk = self.sock.recv(65536)
            if not chunk:
                return -1, b""
            self.buffer += chunk

    def frames_until_end(self) -> list[tuple[int, bytes]]:
        """Every frame up to the end of the stream (the server dropped the connection)."""
        frames = []
        while True:
            frame = self.read_frame()
            if frame[0] == -1:
                return frames
            frames.append(frame)

    def close(self) -> None:
        self.sock.close()
