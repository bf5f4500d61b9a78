"""A bounded soak: 200 clients on a real ``twistd chateau`` doing everything at once.

Every user runs a seeded random mix of every request type (see
``tests/soak_support.py``): groups among random subsets, bursts of pipelined group,
direct and random-chat messages numbered ``<sender>#<seq>``, history, contacts,
members, heartbeats, leaves, edits and deletes of its own messages, a few requests
that must fail, and clean disconnects followed by a ``ResumeRequest``.

At the end, when nothing moves any more, the checks are:

- every acknowledged message reached, live, every member who was online and a
  member for its whole lifetime (from its send to its acknowledgement);
- per receiver and sender, sequence numbers only grow, across live frames and the
  ``offline`` catch-up together: nothing twice, nothing out of order;
- every acknowledged message that was not deleted reached every member, live or
  offline (everyone is signed in at the end), except in random chats, which are not
  replayed;
- no reply the test did not provoke, never a 500, no close it did not ask for, and
  no traceback in the server's log;
- the server's resident memory grew by less than ``RSS_GROWTH_LIMIT`` from the end
  of the warm-up to the end.

The activity lasts ``CHATEAU_SOAK_SECONDS`` (45 s by default: about a minute in
all). ``CHATEAU_SOAK_DATABASES=sqlite,postgresql`` runs it on PostgreSQL too, and
``CHATEAU_SOAK_SEED`` picks another seed. Timing decides how the actors
interleave, so runs differ, but no check depends on timing.

The tests after the soak are deterministic forms of losses and duplicates it
found, in-process, with one store call held back to force the interleaving.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet import defer, reactor
from twisted.internet.task import LoopingCall

import chateau.catchup
from chateau.config import documented_keys
from tests.deferreds import inline, sleep
from tests.processes import TwistdServer, resident_kib
from tests.soak_support import World, check_delivery, delivery_summary, gather

SOAK_SECONDS = float(os.environ.get("CHATEAU_SOAK_SECONDS", "45"))
SEED = int(os.environ.get("CHATEAU_SOAK_SEED", "20261121"))
USERS = 200
DATABASES = [db.strip() for db in os.environ.get("CHATEAU_SOAK_DATABASES", "sqlite").split(",")]

# Resident memory may grow by this much between the end of the warm-up (the first
# third) and the end. The warm-up fills what legitimately grows and then levels
# off: CPython's allocator arenas, SQLAlchemy's statement cache, SQLite's page
# cache, the sessions of 200 users. Here the growth after it is a few MiB. A leak
# of anything per delivered frame (a held frame, a cursor, a closed connection's
# state: 500 bytes at the very least in CPython) over the ~100,000 frames of a
# default run comes to 48 MiB or more, so it fails; allocator noise does not.
RSS_GROWTH_LIMIT = 32 * 1024 * 1024

LIMITS = {
    # High enough that no client of the soak is ever throttled.
    "message_rate": "100000", "message_burst": "100000", "rate_strikes": "100000",
    "max_connections": "100000", "max_connections_per_address": "100000",
    "send_buffer": str(64 * 1024 * 1024), "max_groups_per_user": "100000",
    "signin_free_failures": "1000000",
    "handshake_rate": "100000", "handshake_burst": "100000",
    "http_request_rate": "100000", "http_request_burst": "100000",
    "signups_per_hour_per_address": "1000000", "signins_per_minute_per_address": "1000000",
    "max_random_chats_per_user": "100000", "groups_created_per_hour": "100000",
}


def write_config(path: Path) -> Path:
    """bcrypt at its cheapest, [limits] out of the way (only the keys this checkout knows)."""
    known = set(documented_keys())
    lines = ["[auth]", "bcrypt_cost = 4", "", "[server]", "public_user_lookup = true",
             # This process drives 200 clients: give pongs time under load.
             "auto_ping_timeout = 60", ""]
    limits = [f"{key} = {value}" for key, value in LIMITS.items() if ("limits", key) in known]
    if limits:
        lines += ["[limits]", *limits, ""]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(params=DATABASES)
def soak_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TwistdServer]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'soak.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    config = write_config(tmp_path / "soak.ini")
    server = TwistdServer(tmp_path / "server", "--db", url, "--config", str(config))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def server_problems(output: str) -> list[str]:
    """Tracebacks and unhandled errors in the server's log."""
    markers = ("Traceback (most recent call last)", "Unhandled error", "unexpected error")
    lines = output.splitlines()
    return [
        "\n".join(lines[max(0, n - 2):n + 12])
        for n, line in enumerate(lines) if any(marker in line for marker in markers)
    ]


@pytest.mark.filterwarnings("ignore:Using readBody:DeprecationWarning")
@inline
async def test_soak(soak_server: TwistdServer) -> None:
    assert soak_server.process is not None
    pid = soak_server.process.pid
    http_url = soak_server.url.replace("ws://", "http://").removesuffix("ws")
    world = World(soak_server.url, http_url, USERS, SEED)
    await world.sign_in_all()

    start = reactor.seconds()
    samples: list[tuple[float, int]] = []

    def sample() -> None:
        samples.append((reactor.seconds() - start, resident_kib(pid) * 1024))

    sampler = LoopingCall(sample)
    sampler.start(2.0)
    try:
        await gather(actor.run(start + SOAK_SECONDS) for actor in world.actors.values())
        await world.quiesce()
    finally:
        sampler.stop()
    end_rss = resident_kib(pid) * 1024
    warm_rss = next(rss for at, rss in samples if at >= SOAK_SECONDS / 3)
    await world.close_all()

    model = world.model
    report = [
        delivery_summary(model),
        "requests: " + ", ".join(f"{k} x{v}" for k, v in sorted(model.counts.items())),
        "RSS MiB (s: MiB): "
        + ", ".join(f"{at:.0f}: {rss / 2**20:.1f}" for at, rss in samples[::5])
        + f", warm: {warm_rss / 2**20:.1f}, end: {end_rss / 2**20:.1f}",
    ]
    print("\n".join(report))

    problems = model.violations + check_delivery(model)
    log_problems = server_problems(soak_server.output())
    assert not problems and not log_problems, (
        f"{len(problems)} problems, the first ones:\n" + "\n".join(problems[:40])
        + f"\n\nthe server logged {len(log_problems)} errors:\n"
        + "\n---\n".join(log_problems[:5])
    )
    assert end_rss - warm_rss < RSS_GROWTH_LIMIT, (
        f"RSS grew from {warm_rss / 2**20:.1f} MiB to {end_rss / 2**20:.1f} MiB"
    )


# -- catch-up cut short (cases the soak found) ------------------------------------

@inline
async def test_a_stale_catch_up_does_not_skip_messages_for_the_next_connection(
    server: Any,
) -> None:
    """No acknowledged message is lost when a catch-up outlives its connection.

    A user resumes, closes again while the server is still fetching its backlog, and
    resumes once more. The store call that starts the catch-up is held back so that
    the first catch-up finishes while the second connection is signed in.
    """
    chat = server.service
    bob = await server.client("bob")
    carol = await server.client()
    key = (await carol.register("carol"))["session_key"]
    await carol.close()
    for n in range(3):
        ack = await bob.request(
            {"type": "MessageRequest", "recipient": "carol", "content": f"m{n}"})
        assert ack["type"] == "MessageSendResponse", ack

    gates: list[defer.Deferred[None]] = []
    contact_book = chat.store.contacts.contact_book

    async def held_contact_book(username: str) -> Any:
        gate: defer.Deferred[None] = defer.Deferred()
        gates.append(gate)
        await gate
        return await contact_book(username)

    chat.store.contacts.contact_book = (
        lambda username: defer.ensureDeferred(held_contact_book(username))
    )
    try:
        first = await server.client()
        assert (await first.request({"type": "ResumeRequest", "session_key": key}))["status"] == 200
        await first.close()  # its catch-up is still waiting
        while chat.registry.is_online("carol"):
            await sleep(0.01)
        second = await server.client()
        resumed = await second.request({"type": "ResumeRequest", "session_key": key})
        assert resumed["status"] == 200, resumed
        gates[0].callback(None)  # the first catch-up goes on, and ends
        await sleep(0.5)
    finally:
        chat.store.contacts.contact_book = contact_book
    gates[1].callback(None)  # now the second one
    contents = [frame.get("content") for frame in await second.frames_until_heartbeat()]
    assert contents == ["m0", "m1", "m2"]


@inline
async def test_a_close_during_catch_up_pushes_nothing_twice(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user who leaves while its backlog is being pushed gets the rest, once, next time.

    Pages of one message and a hold on the second page stop the catch-up half way.
    """
    chat = server.service
    bob = await server.client("bob")
    carol = await server.client()
    key = (await carol.register("carol"))["session_key"]
    await carol.close()
    for n in range(3):
        ack = await bob.request(
            {"type": "MessageRequest", "recipient": "carol", "content": f"m{n}"})
        assert ack["type"] == "MessageSendResponse", ack

    monkeypatch.setattr(chateau.catchup, "CATCH_UP_PAGE", 1)
    gate: defer.Deferred[None] = defer.Deferred()
    missed_in_ranges = chat.store.messages.missed_in_ranges
    pages: list[Any] = []

    async def held_missed_in_ranges(*args: Any) -> Any:
        pages.append(args)
        if len(pages) == 2:
            await gate
        return await missed_in_ranges(*args)

    monkeypatch.setattr(chat.store.messages, "missed_in_ranges",
                        lambda *args: defer.ensureDeferred(held_missed_in_ranges(*args)))
    first = await server.client()
    assert (await first.request({"type": "ResumeRequest", "session_key": key}))["status"] == 200
    got = [await first.recv()]  # m0; the catch-up then waits for its second page
    await first.close()
    gate.callback(None)
    while chat.registry.is_online("carol") or "carol" in chat.catch_up.busy():
        await sleep(0.01)
    monkeypatch.undo()
    second = await server.client()
    assert (await second.request({"type": "ResumeRequest", "session_key": key}))["status"] == 200
    got += await second.frames_until_heartbeat()
    assert [f.get("content") for f in got] == ["m0", "m1", "m2"]


@inline
async def test_a_catch_up_cut_by_the_closing_handshake_loses_nothing(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soak's last loss: the close frame is read while a backlog page is on its way.

    Between reading a close frame and losing the connection, Autobahn refuses to
    send (``live`` is still true). The first page of the backlog is held back until
    the server has read the client's close frame.
    """
    chat = server.service
    bob = await server.client("bob")
    carol = await server.client()
    key = (await carol.register("carol"))["session_key"]
    await carol.close()
    for n in range(3):
        ack = await bob.request(
            {"type": "MessageRequest", "recipient": "carol", "content": f"m{n}"})
        assert ack["type"] == "MessageSendResponse", ack

    fetched: defer.Deferred[None] = defer.Deferred()
    gate: defer.Deferred[None] = defer.Deferred()
    missed_in_ranges = chat.store.messages.missed_in_ranges

    async def fetched_then_held(*args: Any) -> Any:
        page = await missed_in_ranges(*args)
        fetched.callback(None)
        await gate
        return page

    monkeypatch.setattr(chat.store.messages, "missed_in_ranges",
                        lambda *args: defer.ensureDeferred(fetched_then_held(*args)))
    first = await server.client()
    assert (await first.request({"type": "ResumeRequest", "session_key": key}))["status"] == 200
    (connection,) = chat.registry.connections("carol")
    on_close_frame = connection.onCloseFrame

    def close_then_push(code: int | None, reason: bytes | None) -> Any:
        result = on_close_frame(code, reason)
        gate.callback(None)  # the page goes out after the close frame was read
        return result

    monkeypatch.setattr(connection, "onCloseFrame", close_then_push)
    await fetched
    await first.close()
    got = []
    while first.inbox.pending:
        got.append(await first.recv())
    monkeypatch.undo()
    while chat.registry.is_online("carol"):
        await sleep(0.01)
    second = await server.client()
    assert (await second.request({"type": "ResumeRequest", "session_key": key}))["status"] == 200
    got += await second.frames_until_heartbeat()
    assert [f.get("content") for f in got] == ["m0", "m1", "m2"]


@inline
async def test_a_cursor_saved_while_the_next_sign_on_reads_pushes_nothing_twice(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user who leaves and comes straight back is not pushed what they already had.

    The departing connection's cursor is still being saved when the next sign-on
    reads the stored ones: the read sees the old value, and the save (which ends the
    server's own memory of the new value) lands before the read returns.
    """
    chat = server.service
    store = chat.store
    bob = await server.client("bob")
    first = await server.client("carol")
    ack = await bob.request({"type": "MessageRequest", "recipient": "carol", "content": "live"})
    assert ack["type"] == "MessageSendResponse", ack
    assert (await first.recv())["content"] == "live"

    released: defer.Deferred[None] = defer.Deferred()
    saves: list[defer.Deferred[None]] = []
    save_cursors, delivery_cursors = store.cursors.save_cursors, store.cursors.delivery_cursors

    def held_save(username: str, cursors: dict[Any, int]) -> defer.Deferred[None]:
        saved: defer.Deferred[None] = defer.Deferred()
        released.addCallback(lambda _: save_cursors(username, cursors).chainDeferred(saved))
        saves.append(saved)
        return saved

    async def read_then_let_the_save_land(username: str) -> dict[Any, int]:
        stale = await delivery_cursors(username)
        released.callback(None)
        for saved in saves:
            await saved
        return stale

    monkeypatch.setattr(store.cursors, "save_cursors", held_save)
    monkeypatch.setattr(store.cursors, "delivery_cursors",
                        lambda username: defer.ensureDeferred(read_then_let_the_save_land(username)))
    await first.close()
    while chat.registry.is_online("carol"):
        await sleep(0.01)
    assert saves, "the departing connection's cursor was not saved"
    second = await server.client("carol")
    got = await second.frames_until_heartbeat()
    assert released.called, "the sign-on did not read the stored cursors"
    assert [f.get("content") for f in got] == []
