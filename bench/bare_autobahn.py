"""The ceiling of Chateau's stack: a bare Twisted + Autobahn server, same wire protocol.

It keeps nothing but who is online and which groups exist, answers sign-ins
without checking anything (unless a sign-in asks to be hashed, see
``--bcrypt-cost``), and fans a group message out by encoding it once with
``prepareMessage`` and sending it with ``sendPreparedMessage``, the cheapest
broadcast Autobahn has. Whatever Chateau does beyond this is its own cost.

    python -m bench.bare_autobahn --port 9001 [--bcrypt-cost 12]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from bench import common


class Hub:
    """Who is online and which groups exist; nothing is stored."""

    def __init__(self) -> None:
        self.online: dict[str, list[BareProtocol]] = {}
        self.groups: dict[str, list[str]] = {}
        self.next_id = 0
        self.pending_signins = 0


class BareProtocol(WebSocketServerProtocol):
    factory: "BareFactory"

    def connectionMade(self) -> None:
        # Autobahn tries to turn Nagle off before it has copied its options
        # from the factory, and swallows the AttributeError, so a bare
        # listenTCP socket keeps Nagle: every reply waits for a delayed ACK
        # (~40 ms). twisted.web (Chateau's Site) turns it off; so do we.
        super().connectionMade()
        self.transport.setTcpNoDelay(True)

    def onOpen(self) -> None:
        self.username: str | None = None
        self.live = True

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.live = False
        username = getattr(self, "username", None)
        if username is not None:
            peers = self.factory.hub.online.get(username, [])
            if self in peers:
                peers.remove(self)
            if not peers:
                self.factory.hub.online.pop(username, None)

    def reply(self, message: dict[str, Any]) -> None:
        if self.live:
            self.sendMessage(common.encode(message))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            data = json.loads(payload)
            kind = data["type"]
        except (ValueError, KeyError, TypeError):
            self.reply(common.error(400, "malformed request"))
            return
        msg_id = data.get("msg_id")
        if kind == "RegisterRequest":
            self.register(data, msg_id)
        elif self.username is None:
            self.reply(common.error(301, "not signed in", msg_id))
        elif kind in ("MessageRequest", "GroupMessageRequest"):
            self.message(data, msg_id)
        elif kind == "GroupMessageInitRequest":
            self.group_init(data, msg_id)
        else:
            self.reply(common.error(400, f"unknown request type {kind!r}", msg_id))

    def register(self, data: dict[str, Any], msg_id: Any) -> None:
        username = str(data.get("username", ""))
        factory = self.factory
        if not (data.get("hash") and factory.bcrypt_cost):
            self.signed_in(username, msg_id)
            return
        hub = factory.hub
        if hub.pending_signins >= common.MAX_PENDING_SIGNINS:
            self.reply(common.error(503, "server busy: too many sign-ins in progress", msg_id))
            return
        hub.pending_signins += 1
        hashed = deferToThreadPool(
            factory.reactor, factory.hash_pool, common.hash_password,
            str(data.get("password", "")), factory.bcrypt_cost,
        )

        def done(_: Any) -> None:
            hub.pending_signins -= 1
            if self.live:
                self.signed_in(username, msg_id)

        hashed.addBoth(done)

    def signed_in(self, username: str, msg_id: Any) -> None:
        self.username = username
        self.factory.hub.online.setdefault(username, []).append(self)
        self.reply(common.register_response(username, msg_id))

    def group_init(self, data: dict[str, Any], msg_id: Any) -> None:
        hub = self.factory.hub
        chatname = str(data["chatname"])
        if chatname in hub.groups or chatname in hub.online:
            self.reply(common.error(301, f"chatname {chatname!r} is taken", msg_id))
            return
        members = [self.username] + [r for r in data["recipients"] if r != self.username]
        hub.groups[chatname] = members
        self.fan_out(members, common.group_init_notice(chatname, self.username, members))
        self.reply(common.group_init_response(chatname, msg_id))

    def message(self, data: dict[str, Any], msg_id: Any) -> None:
        hub = self.factory.hub
        recipient, content = data["recipient"], data["content"]
        hub.next_id += 1
        message_id, timestamp = hub.next_id, common.iso_now()
        members = hub.groups.get(recipient)
        if members is not None:
            out = common.group_recv(self.username, recipient, content, message_id, timestamp)
            self.fan_out(members, out)
        else:
            self.fan_out([recipient], common.direct_recv(self.username, content, message_id, timestamp))
        self.reply(common.send_response(message_id, timestamp, msg_id))

    def fan_out(self, usernames: list[str], message: dict[str, Any]) -> None:
        """Encode once, send the prepared frame to every connection but our own."""
        frame = self.factory.prepareMessage(common.encode(message))
        online = self.factory.hub.online
        for name in usernames:
            for peer in online.get(name, ()):
                if peer is not self and peer.live:
                    peer.sendPreparedMessage(frame)


class BareFactory(WebSocketServerFactory):
    protocol = BareProtocol

    def __init__(self, url: str, reactor: Any, bcrypt_cost: int) -> None:
        super().__init__(url, reactor=reactor)
        self.hub = Hub()
        self.bcrypt_cost = bcrypt_cost
        self.hash_pool = ThreadPool(minthreads=1, maxthreads=common.BCRYPT_THREADS, name="bcrypt")
        # The same options Chateau sets: no compression, no pings, a size cap,
        # and a close frame with the reason when a client breaks the protocol.
        self.setProtocolOptions(
            maxMessagePayloadSize=65536, maxFramePayloadSize=65536,
            autoPingInterval=None, perMessageCompressionAccept=lambda offers: None,
            failByDrop=False,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bcrypt-cost", type=int, default=0,
                        help="hash sign-ins that carry \"hash\": true at this cost (0: never)")
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    factory = BareFactory(f"ws://127.0.0.1:{args.port}", reactor, args.bcrypt_cost)
    factory.hash_pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", factory.hash_pool.stop)
    reactor.listenTCP(args.port, factory, interface="127.0.0.1", backlog=1024)
    print(f"bare autobahn listening on {args.port}", flush=True)
    reactor.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
