"""A member that stops reading is dropped; its group and the server's memory are fine."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import websocket

from tests.processes import TwistdServer, resident_kib

MESSAGES = 10_000
CONTENT = "x" * 3000  # 30 MB in all: far more than the kernel's socket buffers


def connect(url: str, receive_buffer: int | None = None) -> websocket.WebSocket:
    options = ((socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer),) if receive_buffer else ()
    return websocket.create_connection(url, timeout=60, sockopt=options)


def sign_in(ws: websocket.WebSocket, username: str) -> None:
    ws.send(json.dumps({"type": "RegisterRequest", "username": username, "password": "pw"}))
    assert json.loads(ws.recv())["type"] == "RegisterResponse"


def test_a_member_that_never_reads_is_dropped_and_memory_stays_flat(tmp_path):
    config = tmp_path / "chateau.ini"
    config.write_text(
        "[auth]\nbcrypt_cost = 4\n"
        "[limits]\nmessage_rate = 100000\nmessage_burst = 1000\nsend_buffer = 1048576\n"
        "[chat]\nstore_messages = false\n"
    )
    with TwistdServer(tmp_path, "--config", str(config)) as server:
        alice, bob = connect(server.url), connect(server.url)
        carol = connect(server.url, receive_buffer=4096)
        for ws, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            sign_in(ws, name)
        alice.send(json.dumps({"type": "GroupMessageInitRequest",
                               "recipients": ["bob", "carol"], "chatname": "busy"}))
        assert json.loads(alice.recv())["status"] == 200
        assert json.loads(bob.recv())["status"] == 201
        # carol never reads again.
        before = resident_kib(server.process.pid)

        received: list[int] = []

        def read_bob() -> None:
            while len(received) < MESSAGES:
                frame = json.loads(bob.recv())
                if frame["type"] == "GroupMessageRecv":
                    received.append(int(frame["content"].split(":", 1)[0]))

        reader = threading.Thread(target=read_bob, daemon=True)
        reader.start()
        acked = 0
        batch = 200
        for start in range(0, MESSAGES, batch):
            for number in range(start, start + batch):
                alice.send(json.dumps({"type": "MessageRequest", "recipient": "busy",
                                       "content": f"{number}:{CONTENT}"}))
            for _ in range(batch):
                assert json.loads(alice.recv())["type"] == "MessageSendResponse"
                acked += 1
            # bob reads as fast as he can; the sender waits for him, carol is ignored.
            deadline = time.monotonic() + 60
            while len(received) < start + batch and time.monotonic() < deadline:
                time.sleep(0.005)
        reader.join(120)
        after = resident_kib(server.process.pid)

        assert acked == MESSAGES
        assert received == list(range(MESSAGES))  # bob got everything, in order
        alice.send(json.dumps({"type": "ClientListRequest"}))
        assert json.loads(alice.recv())["clients"] == ["bob"]  # carol was dropped
        assert "stopped reading" in server.output()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read()
        assert b'chateau_frames_dropped_total{reason="slow_reader"} 1.0' in metrics
        # 30 MB went to carol's connection; at most about send_buffer stayed.
        assert after - before < 15 * 1024, (before, after)
        for ws in (alice, bob, carol):
            ws.close()
