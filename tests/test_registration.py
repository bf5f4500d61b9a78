"""Who may create an account: invite codes, and the per-address rates of
sign-ups and of successful sign-ins. Real server, real clients, both databases."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread

from chateau import accounts
from chateau.limits import AddressRates
from chateau.store.engine import make_engine
from tests.deferreds import inline


def register(username: str, password: str = "pw", **extra):
    return {"type": "RegisterRequest", "username": username, "password": password, **extra}


@inline
async def test_invite_codes_make_accounts_only_while_they_last(server_factory, config_factory):
    config = config_factory(auth={"registration": "invite"})
    running = await server_factory(config)
    engine = make_engine(config.database.url)
    try:
        _, twice = await deferToThread(accounts.create_invite, engine, 2, 24)
        _, expired = await deferToThread(accounts.create_invite, engine, 5, 1e-7)
        revoked_id, revoked = await deferToThread(accounts.create_invite, engine)
        await deferToThread(accounts.revoke_invite, engine, str(revoked_id))
        await deferToThread(accounts.add_user, engine, "root", "pw", 4)
    finally:
        engine.dispose()
    client = await running.client()
    # No code: as closed registration.
    reply = await client.request(register("ann"))
    assert reply["status"] == 301 and "wrong username or password" in reply["detail"]
    for bad in ("nonsense", expired, revoked):
        reply = await client.request(register("ann", invite=bad))
        assert reply["status"] == 301 and "invite code" in reply["detail"], reply
    reply = await client.request(register("ann", invite=5))
    assert reply["status"] == 400
    assert (await client.request(register("ann", invite=twice)))["type"] == "RegisterResponse"
    second = await running.client()
    assert (await second.request(register("ben", invite=twice)))["type"] == "RegisterResponse"
    third = await running.client()
    reply = await third.request(register("cat", invite=twice))
    assert reply["status"] == 301 and "used up" in reply["detail"]
    # Existing accounts sign in as ever, with or without a code.
    assert (await third.request(register("root", invite=twice)))["type"] == "RegisterResponse"
    fourth = await running.client()
    assert (await fourth.request(register("ann")))["type"] == "RegisterResponse"


@inline
async def test_a_single_use_code_makes_one_account_however_many_race(
    server_factory, config_factory
):
    config = config_factory(auth={"registration": "invite"})
    running = await server_factory(config)
    engine = make_engine(config.database.url)
    try:
        _, code = await deferToThread(accounts.create_invite, engine, 1)
    finally:
        engine.dispose()
    clients = [await running.client() for _ in range(6)]
    replies = await gatherResults([
        Deferred.fromCoroutine(client.request(register(f"racer{n}", invite=code)))
        for n, client in enumerate(clients)
    ])
    assert sorted(r["type"] for r in replies) == ["ErrorResponse"] * 5 + ["RegisterResponse"]
    # A name already taken does not use the code up.
    engine = make_engine(config.database.url)
    try:
        _, code = await deferToThread(accounts.create_invite, engine, 1)
    finally:
        engine.dispose()
    taken = [r for r in replies if r["type"] == "RegisterResponse"][0]["username"]
    late = await running.client()
    assert (await late.request(register(taken, "wrong", invite=code)))["status"] == 301
    # Nor does a name refused as a look-alike (Cyrillic а): its use is given back.
    lookalike = taken.replace("a", "\u0430")
    assert (await late.request(register(lookalike, invite=code)))["status"] == 409
    assert (await late.request(register("newbie", invite=code)))["type"] == "RegisterResponse"


@inline
async def test_sign_ups_per_address_are_limited(server_factory, config_factory):
    config = config_factory(limits={"signups_per_hour_per_address": "2"})
    running = await server_factory(config)
    for name in ("one", "two"):
        await running.client(name)
    client = await running.client()
    reply = await client.request(register("three"))
    assert reply["status"] == 429 and reply["retry_after"] > 0
    assert "new accounts" in reply["detail"]
    # Signing in to existing accounts is not a sign-up.
    assert (await client.request(register("one", "secret")))["type"] == "RegisterResponse"


@inline
async def test_successful_sign_ins_per_address_are_limited(server_factory, config_factory):
    config = config_factory(limits={"signins_per_minute_per_address": "3"})
    running = await server_factory(config)
    for _ in range(3):
        await running.client("ann")
    client = await running.client()
    # Refused before the password is checked: a right one and a wrong one alike.
    for password in ("secret", "wrong"):
        reply = await client.request(register("ann", password))
        assert reply["status"] == 429 and reply["retry_after"] > 0, reply
    # The connection and everyone else carry on.
    assert (await client.request({"type": "HeartbeatRequest"}))["status"] == 200


def test_address_rates_keep_a_bounded_table():
    now = [0.0]
    rate = AddressRates(2 / 60.0, 2, lambda: now[0], entries=1000)
    assert rate.take("a") == 0 and rate.take("a") == 0
    assert rate.wait("a") == pytest.approx(30.0)
    now[0] = 30.0
    assert rate.wait("a") == 0
    for n in range(100_000):
        rate.take(f"10.0.{n // 256}.{n % 256}")
    assert len(rate) == 1000
