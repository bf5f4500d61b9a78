"""Account administration against a running server: disable, reset, add, list."""

from __future__ import annotations

import pytest
from twisted.internet.threads import deferToThread

from chateau import accounts
from chateau.store.engine import make_engine
from tests.deferreds import inline


def blocking(function, *args):
    """Run an admin call off the reactor, as the separate command would."""
    return deferToThread(function, *args)


@inline
async def test_disable_closes_live_connections_and_revokes_keys(server_factory, config_factory):
    config = config_factory(chat={"account_check_interval": "0.2"})
    running = await server_factory(config)
    alice = await running.client()
    key = (await alice.request({"type": "RegisterRequest", "username": "alice",
                                "password": "pw"}))["session_key"]
    bob = await running.client("bob")
    engine = make_engine(config.database.url)
    try:
        revoked = await blocking(accounts.set_disabled, engine, "alice")
        assert revoked == 1
        assert await alice.closed(timeout=5) == 4001
        late = await running.client()
        reply = await late.request({"type": "ResumeRequest", "session_key": key})
        assert reply["status"] == 301
        reply = await late.request({"type": "RegisterRequest", "username": "alice",
                                    "password": "pw"})
        assert reply["status"] == 301 and "disabled" in reply["detail"]
        assert (await bob.request({"type": "ClientListRequest"}))["clients"] == []
        await blocking(accounts.set_disabled, engine, "alice", False)
        again = await running.client()
        reply = await again.request({"type": "RegisterRequest", "username": "alice",
                                     "password": "pw"})
        assert reply["type"] == "RegisterResponse"
    finally:
        engine.dispose()


@inline
async def test_password_reset_revokes_every_key(server_factory, config_factory):
    config = config_factory()
    running = await server_factory(config)
    keys = []
    for _ in range(2):
        client = await running.client()
        keys.append((await client.request({"type": "RegisterRequest", "username": "alice",
                                           "password": "old"}))["session_key"])
    engine = make_engine(config.database.url)
    try:
        assert await blocking(accounts.set_password, engine, "alice", "new", 4) == 2
    finally:
        engine.dispose()
    for key in keys:
        client = await running.client()
        assert (await client.request({"type": "ResumeRequest", "session_key": key}))["status"] == 301
    client = await running.client()
    assert (await client.request({"type": "RegisterRequest", "username": "alice",
                                  "password": "old"}))["status"] == 301
    assert (await client.request({"type": "RegisterRequest", "username": "alice",
                                  "password": "new"}))["type"] == "RegisterResponse"


def test_add_list_and_refusals(database_url):
    from chateau.store import migrate

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            migrate.prepare(connection)
        assert accounts.add_user(engine, "Dana", "pw", 4) == "dana"
        with pytest.raises(accounts.AdminError, match="already taken"):
            accounts.add_user(engine, "dana", "pw", 4)
        with pytest.raises(accounts.AdminError, match="must not be empty"):
            accounts.add_user(engine, "erin", "  ", 4)
        with pytest.raises(accounts.AdminError, match="invalid username"):
            accounts.add_user(engine, "a*b", "pw", 4)
        with pytest.raises(accounts.AdminError, match="no such user"):
            accounts.set_password(engine, "nobody", "pw", 4)
        listed = accounts.list_users(engine)
        assert [(u.username, u.method, u.disabled) for u in listed] == [("dana", "local", False)]
    finally:
        engine.dispose()
