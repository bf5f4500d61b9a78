"""The private Redis server the cluster tests run against (tests/redis.py)."""

from __future__ import annotations

import pytest

from tests.redis import RedisError, RedisServer


def test_answers_ping(redis: RedisServer) -> None:
    assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
    assert redis.ping()
    assert redis.command("PING") == b"+PONG\r\n"


def test_set_get_through_command(redis: RedisServer) -> None:
    assert redis.command("SET", "chateau:test:key", "caf\u00e9 \r\n value") == b"+OK\r\n"
    value = "caf\u00e9 \r\n value".encode()
    assert redis.command("GET", "chateau:test:key") == b"$%d\r\n%s\r\n" % (len(value), value)
    assert redis.command("GET", "chateau:test:missing") == b"$-1\r\n"
    assert redis.command("SET", "chateau:test:ttl", "1", "EX", 30) == b"+OK\r\n"
    ttl = redis.command("TTL", "chateau:test:ttl")
    assert ttl.startswith(b":") and 0 < int(ttl[1:]) <= 30
    assert redis.command("KEYS", "chateau:test:*").startswith(b"*2\r\n")
    assert redis.command("NOSUCHCOMMAND").startswith(b"-ERR")
    assert redis.command("DEL", "chateau:test:key", "chateau:test:ttl") == b":2\r\n"


def test_halt_and_start_again_on_the_same_port() -> None:
    # A server of its own: halting the session one would empty it under other tests.
    server = RedisServer().start()
    try:
        port, pid = server.port, server.process.pid
        server.command("SET", "k", "v")
        server.halt()
        assert server.process is None
        assert not server.ping()
        server.start()
        assert server.port == port and server.process.pid != pid
        assert server.ping()
        # Persistence is off: a restarted Redis starts empty.
        assert server.command("GET", "k") == b"$-1\r\n"
    finally:
        server.stop()
    assert server.process is None
    assert not server.root.exists()


def test_missing_redis_fails_under_ci_and_skips_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(RedisError, match="redis-server is not installed"):
        RedisServer()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        RedisServer()


def test_a_server_with_a_password_tls_and_an_acl_user() -> None:
    with RedisServer(password="s3cret pass/word", tls=True) as server:
        assert server.url == f"rediss://:s3cret%20pass%2Fword@127.0.0.1:{server.port}/0"
        assert server.command("PING") == b"+PONG\r\n"
        # Plain TCP is off, and TLS needs the password.
        wrong = RedisServer.__new__(RedisServer)
        wrong.__dict__.update(server.__dict__, password="nope")
        with pytest.raises(RedisError, match="WRONGPASS"):
            wrong.command("PING")
    with RedisServer(password="pw", username="chat") as server:
        assert server.url == f"redis://chat:pw@127.0.0.1:{server.port}/0"
        assert server.command("SET", "chateau:x", "1") == b"+OK\r\n"
        # The ACL user is limited to Chateau's keys.
        assert server.command("SET", "other", "1").startswith(b"-NOPERM")
