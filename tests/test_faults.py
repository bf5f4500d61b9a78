"""Faults: the database goes away and comes back; the server is asked to stop."""

from __future__ import annotations

import json
import signal
import time

import pytest
import websocket
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from tests.conftest import make_config, start_server
from tests.deferreds import inline, sleep
from tests.postgres import PostgresServer
from tests.processes import TwistdServer


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test's own, which it may stop and start."""
    server = PostgresServer().start()
    yield server
    server.stop()


@inline
async def test_database_outage_gives_503_and_service_resumes(tmp_path, own_postgres):
    url = own_postgres.new_database()
    running = await start_server(make_config(tmp_path, database={"url": url}))
    try:
        alice = await running.client("alice")
        bob = await running.client("bob")
        acked = []
        for number in range(5):
            ack = await alice.request({"type": "MessageRequest", "recipient": "bob",
                                       "content": f"before {number}"})
            assert ack["type"] == "MessageSendResponse"
            acked.append(ack["id"])
            await bob.expect("MessageRecv")

        await deferToThread(own_postgres.halt)
        reply = await alice.request({"type": "MessageRequest", "recipient": "bob",
                                     "content": "during"}, timeout=30)
        assert reply["type"] == "ErrorResponse" and reply["status"] == 503, reply
        assert "database is unavailable" in reply["detail"]
        reply = await alice.request({"type": "HistoryRequest", "user": "bob"}, timeout=30)
        assert reply["status"] == 503
        # What needs no database goes on working.
        assert (await alice.request({"type": "ClientListRequest"}))["clients"] == ["bob"]
        await bob.nothing()

        await deferToThread(own_postgres.launch)
        for _ in range(50):
            reply = await alice.request({"type": "MessageRequest", "recipient": "bob",
                                         "content": "after"}, timeout=30)
            if reply["type"] == "MessageSendResponse":
                break
            await sleep(0.2)
        assert reply["type"] == "MessageSendResponse", reply
        await bob.expect("MessageRecv", content="after")
        page = await bob.request({"type": "HistoryRequest", "user": "alice"})
        ids = [m["id"] for m in page["messages"]]
        contents = [m["content"] for m in page["messages"]]
        assert set(acked) <= set(ids)
        assert "during" not in contents
        assert contents[0] == "after" and contents[-5:] == [f"before {n}" for n in range(4, -1, -1)]
    finally:
        await running.close_clients()
        await running.service.stopService()


def test_sigterm_closes_clients_with_1001_and_exits_promptly(tmp_path, database_url):
    with TwistdServer(tmp_path, "--db", database_url) as server:
        peers = []
        for name in ("alice", "bob"):
            peer = websocket.create_connection(server.url, timeout=10)
            peer.send(json.dumps({"type": "RegisterRequest", "username": name, "password": "pw"}))
            assert json.loads(peer.recv())["type"] == "RegisterResponse"
            peers.append(peer)
        peers[0].send(json.dumps({"type": "MessageRequest", "recipient": "bob",
                                  "content": "last words"}))
        assert json.loads(peers[0].recv())["type"] == "MessageSendResponse"
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        codes = []
        for peer in peers:
            while True:
                opcode, data = peer.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    codes.append(int.from_bytes(data[:2], "big"))
                    break
        assert codes == [1001, 1001]
        server.process.wait(15)
        assert time.monotonic() - started < 10
        assert "Server Shut Down." in server.output()

    with TwistdServer(tmp_path, "--db", database_url) as server:
        bob = websocket.create_connection(server.url, timeout=10)
        bob.send(json.dumps({"type": "RegisterRequest", "username": "bob", "password": "pw"}))
        assert json.loads(bob.recv())["type"] == "RegisterResponse"
        bob.send(json.dumps({"type": "HistoryRequest", "user": "alice"}))
        frame = json.loads(bob.recv())
        while frame["type"] != "HistoryResponse":
            frame = json.loads(bob.recv())
        assert [m["content"] for m in frame["messages"]] == ["last words"]
        bob.close()


async def http_get(url: str) -> tuple[int, bytes]:
    from twisted.web.client import Agent, readBody

    response = await Agent(reactor).request(b"GET", url.encode())
    return response.code, await readBody(response)


@inline
async def test_health_follows_the_database(tmp_path, own_postgres):
    url = own_postgres.new_database()
    running = await start_server(make_config(tmp_path, database={"url": url}))
    try:
        code, body = await http_get(running.http_url + "health")
        assert code == 200 and json.loads(body) == {"status": "ok", "database": "ok"}
        await deferToThread(own_postgres.halt)
        code, body = await http_get(running.http_url + "health")
        assert code == 503 and json.loads(body)["status"] == "unavailable"
        await deferToThread(own_postgres.launch)
        for _ in range(50):
            code, body = await http_get(running.http_url + "health")
            if code == 200:
                break
            await sleep(0.2)
        assert code == 200
    finally:
        await running.service.stopService()


@inline
async def test_metrics_count_what_happens(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await alice.request({"type": "MessageRequest", "recipient": "bob", "content": "hi"})
    await alice.request({"type": "MessageRequest", "recipient": "ghost", "content": "hi"})
    wrong = await server.client()
    await wrong.request({"type": "RegisterRequest", "username": "bob", "password": "nope"})
    del bob
    code, body = await http_get(server.http_url + "metrics")
    text = body.decode()
    assert code == 200
    for line in (
        "chateau_connections 3.0",
        "chateau_online_users 2.0",
        'chateau_signins_total{method="local",result="ok"} 2.0',
        'chateau_signins_total{method="local",result="refused"} 1.0',
        'chateau_messages_total{kind="direct"} 1.0',
        'chateau_errors_total{status="404"} 1.0',
        'chateau_errors_total{status="301"} 1.0',
        'chateau_threadpool_queue_depth{pool="chateau-db"}',
        "chateau_db_call_seconds_count",
    ):
        assert line in text, line
