"""The plugin as a user runs it: a real twistd process, a third-party client."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess

import websocket  # websocket-client: deliberately not Autobahn

from tests.processes import Peer, TwistdServer


def test_twistd_serves_and_keeps_accounts_and_groups_across_restart(tmp_path):
    with TwistdServer(tmp_path) as server:
        alice, bob = Peer(server.url), Peer(server.url)
        assert alice.request(type="RegisterRequest", username="alice", password="a-pass",
                             auth=False)["status"] == 200
        assert bob.request(type="RegisterRequest", username="bob", password="b-pass",
                           auth=False)["status"] == 200
        reply = alice.request(type="GroupMessageInitRequest", recipients=["bob"],
                              chatname="book club", msg_id=1)
        assert reply == {"type": "GroupMessageInitResponse", "status": 200,
                         "chatname": "book club", "msg_id": 1}
        assert bob.recv()["status"] == 201
        ack = alice.request(type="MessageRequest", recipient="book club", content="chapter 1")
        assert ack["type"] == "MessageSendResponse"
        assert bob.recv()["content"] == "chapter 1"
        alice.close()
        bob.close()
        assert server.stop() == -signal.SIGTERM
        output = server.output()
        assert "Server Shut Down." in output
        assert "a-pass" not in output and "b-pass" not in output
        # What start-up says about the process it runs in.
        assert "Autobahn NVX acceleration is on" in output
        assert "start-up objects frozen, young threshold 10000" in output
    assert (tmp_path / "chateau.sqlite3").exists()

    with TwistdServer(tmp_path) as server:
        thief = Peer(server.url)
        reply = thief.request(type="RegisterRequest", username="alice", password="guess",
                              auth=False)
        assert reply["type"] == "ErrorResponse" and reply["status"] == 301
        thief.close()
        alice, bob = Peer(server.url), Peer(server.url)
        assert alice.request(type="RegisterRequest", username="alice", password="a-pass",
                             auth=False)["status"] == 200
        assert bob.request(type="RegisterRequest", username="bob", password="b-pass",
                           auth=False)["status"] == 200
        reply = alice.request(type="GroupMessageInitRequest", recipients=["bob"],
                              chatname="book club")
        assert reply["status"] == 301 and "taken" in reply["detail"]
        ack = bob.request(type="GroupMessageRequest", recipient="book club",
                          content="chapter 2")
        assert ack["type"] == "MessageSendResponse"
        received = alice.recv()
        assert received["type"] == "GroupMessageRecv"
        assert received["status"] == 200  # not the group's first message any more
        assert received["content"] == "chapter 2"
        alice.close()
        bob.close()


def test_twistd_serves_wss_on_an_ssl_endpoint(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    listen = f"ssl:{{port}}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    with TwistdServer(tmp_path, listen=listen, scheme="wss") as server:
        context = ssl.create_default_context(cafile=str(cert))
        peer = websocket.create_connection(server.url, sslopt={"context": context}, timeout=10)
        peer.send(json.dumps({"type": "RegisterRequest", "username": "alice",
                              "password": "pw", "auth": False}))
        assert json.loads(peer.recv())["type"] == "RegisterResponse"
        peer.close()


def test_a_failed_start_exits_with_status_1(tmp_path):
    """A port already taken stops start-up; a service manager must see it failed."""
    with TwistdServer(tmp_path / "first") as first:
        second = TwistdServer(tmp_path / "second", port=first.port)
        # The port answers (the first server), so start() returns; then the
        # second one must stop by itself.
        second.start(timeout=20)
        try:
            assert second.process.wait(20) == 1
        finally:
            second.stop()
        output = second.output()
        assert "Chateau could not start" in output and "Address already in use" in output
        assert "Server Shut Down." in output
