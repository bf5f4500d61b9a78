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
