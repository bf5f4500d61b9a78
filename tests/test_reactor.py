"""The reactor thread only routes: bcrypt and SQL run on their own pools."""

from __future__ import annotations

import os
import threading
import time

import bcrypt
import pytest
from sqlalchemy import event

from chateau.threads import run_in_background_priority
from tests.deferreds import inline, sleep
from tests.timing import collector_paused


@inline
async def test_reactor_answers_within_50ms_while_20_bcrypt_sign_ins_run(
    server_factory, config_factory
):
    running = await server_factory(
        config_factory(auth={"bcrypt_cost": "11"}, limits={"message_rate": "1000"}))
    watcher = await running.client("watcher")
    signers = [await running.client() for _ in range(20)]
    with collector_paused():
        for number, client in enumerate(signers):
            client.send({"type": "RegisterRequest", "username": f"user{number}",
                         "password": "correct horse", "auth": False})
        await sleep(0.05)
        assert running.service.authenticator.pending > 0
        latencies = []
        while running.service.authenticator.pending > 0:
            started = time.perf_counter()
            reply = await watcher.request({"type": "ClientListRequest"})
            latencies.append(time.perf_counter() - started)
            assert reply["type"] == "ClientListResponse"
            await sleep(0.02)
    for client in signers:
        assert (await client.recv(timeout=30))["type"] == "RegisterResponse"
    assert len(latencies) >= 5
    assert max(latencies) < 0.05, latencies


@inline
async def test_sign_ins_beyond_the_bound_are_refused_quickly(server_factory, config_factory):
    running = await server_factory(
        config_factory(auth={"bcrypt_cost": "12", "max_pending_signins": "2"}))
    clients = [await running.client() for _ in range(4)]
    for number, client in enumerate(clients):
        client.send({"type": "RegisterRequest", "username": f"u{number}", "password": "pw"})
    replies = [await client.recv(timeout=30) for client in clients]
    busy = [reply for reply in replies if reply["type"] == "ErrorResponse"]
    assert len(busy) == 2, replies
    assert all(reply["status"] == 503 and "busy" in reply["detail"] for reply in busy)
    assert sum(reply["type"] == "RegisterResponse" for reply in replies) == 2


@inline
async def test_a_password_not_checked_in_time_is_answered_busy_and_never_hashed(
    server_factory, config_factory, monkeypatch
):
    running = await server_factory(config_factory(
        auth={"bcrypt_threads": "1", "signin_timeout": "0.5"}))
    hashed: list[bytes] = []
    real_hashpw = bcrypt.hashpw

    def hashpw(password, salt):
        hashed.append(password)
        return real_hashpw(password, salt)

    monkeypatch.setattr(bcrypt, "hashpw", hashpw)
    # The only hashing thread is taken (as by a machine too busy to run it).
    pool = next(pool for pool in running.service.pools if pool.name == "chateau-bcrypt")
    release = threading.Event()
    pool.callInThread(release.wait, 10)
    try:
        client = await running.client()
        started = time.monotonic()
        reply = await client.request({"type": "RegisterRequest", "username": "late",
                                      "password": "late-pw"})
        waited = time.monotonic() - started
        assert reply["type"] == "ErrorResponse" and reply["status"] == 503, reply
        assert "could not be checked within 0.5 seconds" in reply["detail"], reply
        assert 0.4 < waited < 3, waited
        assert running.service.authenticator.pending == 0
    finally:
        release.set()
    # The queued job was dropped when its thread came free: no hash, no account.
    await sleep(0.3)
    assert hashed == []
    assert await running.service.store.accounts.get_user("late") is None
    # The same connection can sign in now that the thread is free again.
    reply = await client.request({"type": "RegisterRequest", "username": "late",
                                  "password": "late-pw"})
    assert reply["type"] == "RegisterResponse", reply
    assert hashed == [b"late-pw"]


@inline
async def test_no_sql_or_bcrypt_on_the_reactor_thread(server, monkeypatch):
    reactor_thread = threading.current_thread()
    sql_threads: list[threading.Thread] = []
    bcrypt_threads: list[threading.Thread] = []

    @event.listens_for(server.service.engine, "before_cursor_execute")
    def record_sql(*args):
        sql_threads.append(threading.current_thread())

    real_hashpw, real_checkpw = bcrypt.hashpw, bcrypt.checkpw

    def hashpw(*args):
        bcrypt_threads.append(threading.current_thread())
        return real_hashpw(*args)

    def checkpw(*args):
        bcrypt_threads.append(threading.current_thread())
        return real_checkpw(*args)

    monkeypatch.setattr(bcrypt, "hashpw", hashpw)
    monkeypatch.setattr(bcrypt, "checkpw", checkpw)

    alice = await server.client("alice")
    await server.clients[-1].close()
    alice = await server.client("alice")  # checks the stored hash
    bob = await server.client("bob")
    await alice.request({"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": "g"})
    await alice.request({"type": "MessageRequest", "recipient": "g", "content": "hi"})
    await alice.request({"type": "MessageRequest", "recipient": "bob", "content": "hi"})
    await bob.request({"type": "GroupLeaveRequest", "chatname": "g"})
    event.remove(server.service.engine, "before_cursor_execute", record_sql)

    assert sql_threads and bcrypt_threads
    assert reactor_thread not in sql_threads
    assert reactor_thread not in bcrypt_threads
    assert all("chateau-db" in t.name for t in sql_threads), {t.name for t in sql_threads}
    assert all("chateau-bcrypt" in t.name for t in bcrypt_threads)


# The hashing threads ask for SCHED_IDLE, so that a waking reactor always
# preempts them (docs/performance.md); the policy must stay on their own thread.
@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"),
                    reason="SCHED_IDLE is a Linux scheduling policy; other systems have none")
def test_idle_priority_applies_to_the_calling_thread_only() -> None:
    seen: list[bool] = []

    def work() -> None:
        run_in_background_priority(idle=True)
        run_in_background_priority(idle=True)  # once per thread
        seen.append(os.sched_getscheduler(0) == os.SCHED_IDLE)

    before = os.sched_getscheduler(0)
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen == [True]
    assert os.sched_getscheduler(0) == before
