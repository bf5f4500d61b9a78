"""No password or session key reaches any log, at any level."""

from __future__ import annotations

import json
import time
import urllib.request

import websocket
from twisted.logger import formatEvent, globalLogPublisher

from tests.deferreds import inline
from tests.processes import TwistdServer

PASSWORD = "Tr0ub4dor&3-secret"
WRONG = "hunter2-wrong-guess"


@inline
async def test_no_secret_in_any_log_event(server):
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        alice = await server.client()
        reply = await alice.request({"type": "RegisterRequest", "username": "alice",
                                     "password": PASSWORD})
        key = reply["session_key"]
        guess = await server.client()
        await guess.request({"type": "RegisterRequest", "username": "alice", "password": WRONG})
        # A password typed into the username field is refused, and not logged either.
        await guess.request({"type": "RegisterRequest", "username": PASSWORD, "password": "x"})
        resumed = await server.client()
        await resumed.request({"type": "ResumeRequest", "session_key": key})
        await resumed.request({"type": "ResumeRequest", "session_key": key})
        bad = await server.client()
        await bad.request({"type": "ResumeRequest", "session_key": key[::-1]})
        await resumed.request({"type": "LogoutRequest"})
        alice.send(f'{{"type": "RegisterRequest", "password": "{PASSWORD}", "oops"')
        await alice.recv()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert events, "nothing was logged at all"
    text = "\n".join(formatEvent(event) + " " + repr(event) for event in events)
    for secret in (PASSWORD, WRONG, key, key[::-1]):
        assert secret not in text


def test_no_secret_in_twistd_output(tmp_path):
    with TwistdServer(tmp_path) as server:
        peer = websocket.create_connection(server.url, timeout=10)
        peer.send(json.dumps({"type": "RegisterRequest", "username": "alice",
                              "password": PASSWORD}))
        key = json.loads(peer.recv())["session_key"]
        peer.send(json.dumps({"type": "LogoutRequest"}))
        peer.recv()
        peer.send(json.dumps({"type": "RegisterRequest", "username": "alice",
                              "password": WRONG}))
        peer.recv()
        peer.close()
        server.stop()
        output = server.output()
    assert "signed in" in output  # the log is there, just without secrets
    for secret in (PASSWORD, WRONG, key):
        assert secret not in output


REDIS_PASSWORD = "Redis-Secret-9f3a w/ @:%"


def test_no_redis_password_in_output_metrics_health_or_errors(tmp_path):
    """The password in [cluster] redis_url: in no log line, page or exception."""
    from urllib.parse import quote

    import pytest

    from chateau.cluster import ClusterRefused, RedisAddress
    from chateau.config import load_config
    from tests.redis import RedisServer

    encoded = quote(REDIS_PASSWORD, safe="")
    secrets = (REDIS_PASSWORD, encoded, "Secret-9f3a")
    with RedisServer(password=REDIS_PASSWORD) as redis:
        assert redis.url == f"redis://:{encoded}@127.0.0.1:{redis.port}/0"
        config = tmp_path / "node.ini"
        config.write_text(
            f"[database]\nurl = sqlite:///{tmp_path / 'db.sqlite3'}\n"
            f"[cluster]\nredis_url = {redis.url}\nnode_name = n1\n"
        )
        with TwistdServer(tmp_path / "n1", "--config", str(config)) as server:
            pages = {}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                for path in ("/health", "/metrics"):
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{server.port}{path}", timeout=5
                    ) as response:
                        pages[path] = response.read().decode()
                if '"connected": true' in pages["/health"]:
                    break
                time.sleep(0.1)
            assert '"connected": true' in pages["/health"], pages["/health"]
            server.stop()
            output = server.output()
        assert "joined the cluster as n1" in output
        # A wrong password: start-up stops, saying why, without either password.
        wrong = "Wrong-Secret-77c1"
        config.write_text(config.read_text().replace(encoded, wrong))
        failed = TwistdServer(tmp_path / "n2", "--config", str(config))
        with pytest.raises(RuntimeError, match="twistd exited early"):
            failed.start()
        refused = failed.output()
        assert "WRONGPASS" in refused
    for text in (output, refused, *pages.values()):
        for secret in (*secrets, wrong):
            assert secret not in text
    # Nor in the objects and exceptions that carry the URL.
    address = RedisAddress.parse(redis.url)
    assert address.password == REDIS_PASSWORD
    assert REDIS_PASSWORD not in repr(address) and encoded not in address.display
    assert "***" in address.redact(f"ERR {REDIS_PASSWORD} oops")
    loaded = load_config(None, {("cluster", "redis_url"): redis.url})
    assert encoded not in repr(loaded) and REDIS_PASSWORD not in repr(loaded)
    assert encoded not in str(ClusterRefused(address.display))
