"""What a user might pick instead: the same minimal server on the ``websockets`` library.

Same wire protocol and the same bookkeeping as :mod:`bench.bare_autobahn`,
written the way the library's documentation suggests: one coroutine per
connection reading with ``async for``, ``broadcast()`` for fan-out, and the
standard asyncio event loop.

    python -m bench.bare_websockets --port 9002 [--bcrypt-cost 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from bench import common


class Hub:
    """Who is online and which groups exist; nothing is stored."""

    def __init__(self, bcrypt_cost: int) -> None:
        self.online: dict[str, list[ServerConnection]] = {}
        self.groups: dict[str, list[str]] = {}
        self.next_id = 0
        self.pending_signins = 0
        self.bcrypt_cost = bcrypt_cost
        self.hashers = ThreadPoolExecutor(common.BCRYPT_THREADS)

    def fan_out(self, usernames: list[str], message: dict[str, Any], skip: Any) -> None:
        online = self.online
        peers = [peer for name in usernames for peer in online.get(name, ()) if peer is not skip]
        broadcast(peers, common.encode(message), text=True)

    async def serve(self, ws: ServerConnection) -> None:
        username: str | None = None
        try:
            async for raw in ws:
                try:
                    data = json.loads(raw)
                    kind = data["type"]
                except (ValueError, KeyError, TypeError):
                    await ws.send(common.encode(common.error(400, "malformed request")), text=True)
                    continue
                msg_id = data.get("msg_id")
                if kind == "RegisterRequest":
                    reply, name = await self.register(data, msg_id)
                    if name is not None:
                        username = name
                        self.online.setdefault(name, []).append(ws)
                elif username is None:
                    reply = common.error(301, "not signed in", msg_id)
                elif kind in ("MessageRequest", "GroupMessageRequest"):
                    reply = self.message(ws, username, data, msg_id)
                elif kind == "GroupMessageInitRequest":
                    reply = self.group_init(ws, username, data, msg_id)
                else:
                    reply = common.error(400, f"unknown request type {kind!r}", msg_id)
                await ws.send(common.encode(reply), text=True)
        except ConnectionClosed:
            pass
        finally:
            if username is not None:
                peers = self.online.get(username, [])
                if ws in peers:
                    peers.remove(ws)
                if not peers:
                    self.online.pop(username, None)

    async def register(self, data: dict[str, Any], msg_id: Any) -> tuple[dict[str, Any], str | None]:
        username = str(data.get("username", ""))
        if data.get("hash") and self.bcrypt_cost:
            if self.pending_signins >= common.MAX_PENDING_SIGNINS:
                return common.error(503, "server busy: too many sign-ins in progress", msg_id), None
            self.pending_signins += 1
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self.hashers, common.hash_password, str(data.get("password", "")),
                    self.bcrypt_cost,
                )
            finally:
                self.pending_signins -= 1
        return common.register_response(username, msg_id), username

    def group_init(self, ws: ServerConnection, creator: str, data: dict[str, Any],
                   msg_id: Any) -> dict[str, Any]:
        chatname = str(data["chatname"])
        if chatname in self.groups or chatname in self.online:
            return common.error(301, f"chatname {chatname!r} is taken", msg_id)
        members = [creator] + [r for r in data["recipients"] if r != creator]
        self.groups[chatname] = members
        self.fan_out(members, common.group_init_notice(chatname, creator, members), ws)
        return common.group_init_response(chatname, msg_id)

    def message(self, ws: ServerConnection, sender: str, data: dict[str, Any],
                msg_id: Any) -> dict[str, Any]:
        recipient, content = data["recipient"], data["content"]
        self.next_id += 1
        message_id, timestamp = self.next_id, common.iso_now()
        members = self.groups.get(recipient)
        if members is not None:
            out = common.group_recv(sender, recipient, content, message_id, timestamp)
            self.fan_out(members, out, ws)
        else:
            self.fan_out([recipient], common.direct_recv(sender, content, message_id, timestamp), ws)
        return common.send_response(message_id, timestamp, msg_id)


async def run(port: int, bcrypt_cost: int) -> None:
    hub = Hub(bcrypt_cost)
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.cancel)
    async with serve(
        hub.serve, "127.0.0.1", port, compression=None, max_size=65536,
        ping_interval=None, backlog=1024,
    ):
        print(f"bare websockets listening on {port}", flush=True)
        try:
            await stop
        except asyncio.CancelledError:
            pass
    hub.hashers.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bcrypt-cost", type=int, default=0,
                        help="hash sign-ins that carry \"hash\": true at this cost (0: never)")
    args = parser.parse_args(argv)
    asyncio.run(run(args.port, args.bcrypt_cost))


if __name__ == "__main__":
    main()
