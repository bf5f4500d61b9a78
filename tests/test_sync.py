"""Every device keeps up: SyncRequest, change rows, history by time, ids in order.

Socket tests against a real server (SQLite and PostgreSQL), store tests on
both databases, and the advisory lock on a real PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from sqlalchemy import select

from chateau.store import migrate
from chateau.store.engine import in_transaction, make_engine
from chateau.store.messages import (
    MESSAGES_LOCK,
    add_messages_txn,
    edit_message_txn,
    history_txn,
    missed_in_ranges_txn,
    record_change_txn,
)
from chateau.store.tables import messages
from tests.deferreds import inline, sleep

FRAME = 16384
BIG = 5000  # characters: three such messages fill a page of FRAME bytes


async def sign_in(server: Any, username: str) -> tuple[Any, str]:
    """A new device of *username* (an account made at the first): the client and its key."""
    client = await server.client()
    reply = await ask(client, {"type": "RegisterRequest", "username": username,
                                  "password": "secret"})
    assert reply["status"] == 200, reply
    client.username = username
    return client, reply["session_key"]


_ASKED = iter(range(1, 10**9))


async def ask(client: Any, message: dict[str, Any]) -> dict[str, Any]:
    """Send *message*; its reply, the pushes that came first left aside."""
    msg_id = f"ask-{next(_ASKED)}"
    client.send({**message, "msg_id": msg_id})
    while True:
        frame = await client.recv()
        if frame.get("msg_id") == msg_id:
            return frame


async def send(client: Any, recipient: str, content: str) -> dict[str, Any]:
    ack = await ask(client, {"type": "MessageRequest", "recipient": recipient,
                             "content": content})
    assert ack["type"] == "MessageSendResponse", ack
    return ack


async def drain(client: Any) -> list[dict[str, Any]]:
    return await client.frames_until_heartbeat()


async def sync_all(client: Any, **request: Any) -> tuple[list[dict[str, Any]], list[dict]]:
    """Every SyncResponse page until ``more`` is false: the entries, the pages."""
    entries: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    while True:
        page = await ask(client, {"type": "SyncRequest", **request})
        assert page["type"] == "SyncResponse" and page["status"] == 200, page
        assert len(json.dumps(page, ensure_ascii=False, separators=(",", ":"))) <= FRAME
        pages.append(page)
        entries.extend(page["messages"])
        if page["messages"]:
            assert page["until"] == page["messages"][-1]["id"]
        else:
            assert page["until"] == page["since"]
        if not page["more"]:
            return entries, pages
        assert "groups" not in page
        if "since" in request:
            request["since"] = page["until"]


@inline
async def test_an_offline_laptop_gets_what_it_missed_even_if_the_phone_read_it(
    server_factory, config_factory
):
    server = await server_factory(config_factory(server={"max_message_size": str(FRAME)}))
    phone, _ = await sign_in(server, "alice")
    laptop, laptop_key = await sign_in(server, "alice")
    bob, _ = await sign_in(server, "bob")
    carol, _ = await sign_in(server, "carol")
    await laptop.close()
    # While the laptop is away: groups, big messages, direct ones, edits,
    # deletions, membership events; the phone reads everything.
    reply = await ask(bob, {"type": "GroupMessageInitRequest", "chatname": "team",
                               "recipients": ["alice"]})
    assert reply["status"] == 200, reply
    reply = await ask(bob, {"type": "GroupMessageInitRequest", "chatname": "gone",
                               "recipients": ["alice"]})
    assert reply["status"] == 200, reply
    sent = []
    for number in range(10):
        sent.append(await send(bob, "team", f"{number}" + "x" * BIG))
    direct = await send(bob, "alice", "hello alice")
    mine = await send(phone, "bob", "hello bob")
    in_gone = await send(bob, "gone", "you will not see this")
    edit = await ask(bob, {"type": "MessageEditRequest", "id": sent[1]["id"],
                              "content": "edited one"})
    assert edit["status"] == 200, edit
    deleted = await ask(bob, {"type": "MessageDeleteRequest", "id": sent[2]["id"]})
    assert deleted["status"] == 200, deleted
    added = await ask(bob, {"type": "GroupAddRequest", "chatname": "team",
                               "users": ["carol"]})
    assert added["status"] == 200, added
    removed = await ask(bob, {"type": "GroupRemoveRequest", "chatname": "gone",
                                 "user": "alice"})
    assert removed["status"] == 200, removed
    await send(carol, "team", "hi all")
    await sleep(0.3)
    await drain(phone)
    # The laptop comes back and asks without since, page after page.
    laptop = await server.client()
    resumed = await ask(laptop, {"type": "ResumeRequest", "session_key": laptop_key})
    assert resumed["status"] == 200, resumed
    await drain(laptop)
    entries, pages = await sync_all(laptop)
    assert len(pages) >= 3, [len(p["messages"]) for p in pages]
    ids = [entry["id"] for entry in entries]
    assert ids == sorted(set(ids)), ids  # oldest first, no duplicates
    # Nothing of "gone" (alice is no longer in it), everything else.
    assert all(entry.get("chatname") != "gone" for entry in entries)
    assert in_gone["id"] not in ids
    team = [e for e in entries if e.get("chatname") == "team" and "change" not in e
            and "event" not in e]
    assert [e["content"] for e in team] == (
        ["0" + "x" * BIG, "edited one", None] + [f"{n}" + "x" * BIG for n in range(3, 10)]
        + ["hi all"])
    assert [e["id"] for e in team[:10]] == [s["id"] for s in sent]
    assert team[2]["deleted"] is True and team[1]["edited"] is True
    changes = [e for e in entries if "change" in e]
    assert changes == [
        {"id": changes[0]["id"], "change": "edited", "message": sent[1]["id"],
         "chatname": "team", "sender": "bob", "timestamp": changes[0]["timestamp"],
         "content": "edited one"},
        {"id": changes[1]["id"], "change": "deleted", "message": sent[2]["id"],
         "chatname": "team", "sender": "bob", "timestamp": changes[1]["timestamp"]},
    ]
    assert changes[0]["id"] > sent[-1]["id"]
    directs = [e for e in entries if "user" in e]
    assert [(e["user"], e["sender"], e["content"]) for e in directs] == [
        ("bob", "bob", "hello alice"), ("bob", "alice", "hello bob")]
    assert [e["id"] for e in directs] == [direct["id"], mine["id"]]
    events = [e["event"] for e in entries if "event" in e]
    assert any(ev.get("event") == "added" and ev.get("user") == "carol" for ev in events), events
    assert pages[-1]["groups"] == ["team"]
    # The position moved: nothing again, and the phone's own key is separate.
    again, _ = await sync_all(laptop)
    assert again == []
    assert (await ask(laptop, {"type": "SyncRequest"}))["until"] == ids[-1]
    # An explicit since gives the same again, page by page.
    same, _ = await sync_all(laptop, since=pages[0]["since"])
    assert same == entries
    await server.close_clients()


@inline
async def test_sync_rules_and_refusals(server):
    alice, _ = await sign_in(server, "alice")
    bob, _ = await sign_in(server, "bob")
    eve, _ = await sign_in(server, "eve")
    # A new key starts at the newest message: nothing from before it.
    await send(bob, "alice", "before the laptop")
    await drain(alice)
    laptop, _ = await sign_in(server, "alice")
    laptop.send({"type": "SyncRequest", "msg_id": 7})
    empty = await laptop.recv()
    assert empty["messages"] == [] and empty["more"] is False and empty["msg_id"] == 7
    assert empty["since"] == empty["until"] > 0 and empty["groups"] == []
    # Someone alice blocks: left out of direct chats, a gap in groups.
    reply = await ask(bob, {"type": "GroupMessageInitRequest", "chatname": "club",
                               "recipients": ["alice", "eve"]})
    assert reply["status"] == 200
    assert (await ask(alice, {"type": "BlockRequest", "username": "eve"}))["status"] == 200
    from_eve = await send(eve, "club", "hidden words")
    await send(eve, "alice", "blocked dm")  # refused or dropped: never synced
    entries, pages = await sync_all(laptop)
    hidden = [e for e in entries if e["id"] == from_eve["id"]]
    assert hidden == [{"id": from_eve["id"], "chatname": "club",
                       "timestamp": hidden[0]["timestamp"], "hidden": True}]
    assert not any(e.get("user") == "eve" for e in entries)
    assert not any("blocked dm" == e.get("content") for e in entries)
    assert pages[-1]["groups"] == ["club"]
    for bad in ({"since": -1}, {"limit": 0}, {"limit": 501}, {"since": "x"}):
        reply = await ask(laptop, {"type": "SyncRequest", **bad})
        assert reply["status"] == 400, (bad, reply)
    await server.close_clients()


@inline
async def test_sync_is_not_served_without_stored_messages(server_factory, config_factory):
    running = await server_factory(config_factory(chat={"store_messages": "false"}))
    alice, _ = await sign_in(running, "alice")
    assert (await ask(alice, {"type": "SyncRequest"}))["status"] == 501
    await running.close_clients()


@inline
async def test_change_rows_never_show_in_history_catch_up_or_export(server):
    alice, alice_key = await sign_in(server, "alice")
    bob, bob_key = await sign_in(server, "bob")
    await bob.close()
    first = await send(alice, "bob", "first")
    second = await send(alice, "bob", "second")
    assert (await ask(alice, {"type": "MessageEditRequest", "id": first["id"],
                                 "content": "first, edited"}))["status"] == 200
    assert (await ask(alice, {"type": "MessageDeleteRequest",
                                 "id": second["id"]}))["status"] == 200
    third = await send(alice, "bob", "third")
    page = await ask(alice, {"type": "HistoryRequest", "user": "bob"})
    assert [m["id"] for m in page["messages"]] == [third["id"], second["id"], first["id"]]
    bob = await server.client()
    await ask(bob, {"type": "ResumeRequest", "session_key": bob_key})
    pushed = [f for f in await drain(bob) if f.get("type") == "MessageRecv"]
    assert [f["id"] for f in pushed] == [first["id"], third["id"]]
    # The change rows are there (for SyncRequest), with the ids between.
    changes = await ask(bob, {"type": "SyncRequest", "since": first["id"]})
    kinds = [e.get("change") for e in changes["messages"]]
    assert kinds == [None, "edited", "deleted", None]
    # A change row is no message: not to edit, delete or report.
    change_id = changes["messages"][1]["id"]
    for request in ({"type": "MessageEditRequest", "id": change_id, "content": "x"},
                    {"type": "MessageDeleteRequest", "id": change_id}):
        assert (await ask(alice, request))["status"] == 404
    # Nor in the export.
    from tests.test_erasure import export
    status, document = await export(server.http_url, alice_key)
    assert status == 200
    assert [m["id"] for m in document["messages"]] == [first["id"], second["id"], third["id"]]
    await server.close_clients()


@inline
async def test_history_before_and_after_a_moment_or_an_id(server):
    alice, _ = await sign_in(server, "alice")
    bob, _ = await sign_in(server, "bob")
    reply = await ask(alice, {"type": "GroupMessageInitRequest", "chatname": "club",
                                 "recipients": ["bob"]})
    assert reply["status"] == 200
    acks = []
    for number in range(6):
        acks.append(await send(alice, "club", f"m{number}"))
        await sleep(0.01)
    # An edit's change row in between changes nothing.
    await ask(alice, {"type": "MessageEditRequest", "id": acks[0]["id"], "content": "m0!"})
    moment = acks[3]["timestamp"]
    assert moment.endswith("Z")

    async def page(**fields: Any) -> dict[str, Any]:
        reply = await ask(bob, {"type": "HistoryRequest", "chatname": "club", **fields})
        assert reply["status"] == 200, reply
        return reply

    def contents(reply: dict[str, Any]) -> list[str]:
        return [m["content"] for m in reply["messages"] if "event" not in m]

    before = await page(before_time=moment, limit=2)
    assert contents(before) == ["m2", "m1"] and before["more"] is True
    after = await page(after_time=moment, limit=2)
    assert contents(after) == ["m3", "m4"] and after["more"] is True
    after = await page(after=after["messages"][-1]["id"], limit=5)
    assert contents(after) == ["m5"] and after["more"] is False
    after = await page(after=acks[0]["id"])
    assert contents(after) == ["m1", "m2", "m3", "m4", "m5"] and after["more"] is False
    # Other spellings of the same moment; moments outside the chat's life.
    plain = moment[:-5] + "+00:00"
    assert contents(await page(after_time=plain)) == contents(
        await page(after_time=moment[:-5] + ".000Z"))
    assert contents(await page(before_time=moment[:-1] + "000+00:00")) == ["m2", "m1", "m0!"]
    assert contents(await page(before_time="2000-01-01T00:00:00Z")) == []
    assert contents(await page(after_time="2999-01-01T00:00:00.000Z")) == []
    everything = await page(after_time="2000-01-01T00:00:00Z")
    assert contents(everything) == ["m0!", "m1", "m2", "m3", "m4", "m5"]
    for bad, field in (({"before": 5, "after": 3}, None),
                       ({"before_time": moment, "after_time": moment}, None),
                       ({"after": 1, "before_time": moment}, None),
                       ({"before_time": "yesterday"}, "before_time"),
                       ({"after_time": "2026-11-21T13:04:02+01:00"}, "after_time"),
                       ({"after_time": "2026-02-30T00:00:00Z"}, "after_time"),
                       ({"after_time": 5}, "after_time")):
        reply = await ask(bob, {"type": "HistoryRequest", "chatname": "club", **bad})
        assert reply["status"] == 400, (bad, reply)
        if field is not None:
            assert field in reply["detail"], reply
    await server.close_clients()


# -- the store, on both databases ------------------------------------------------

def _engine(database_url: str) -> Any:
    engine = make_engine(database_url)
    in_transaction(engine, migrate.prepare)
    return engine


def test_erasure_writes_one_deleted_change_row_per_erased_message(database_url):
    from chateau.store.accounts import create_user_txn
    from chateau.store.erasure import ANONYMISE, ERASE, erase_account_txn

    engine = _engine(database_url)
    for name in ("ann", "ben", "cat"):
        in_transaction(engine, create_user_txn, name, "x", "local", None)
    stored = in_transaction(engine, add_messages_txn, [
        ("@ann:ben", "ann", "one", "ben"), ("@ann:ben", "ann", "two", "ben"),
        ("@ann:ben", "ben", "three", "ann"), ("@ben:cat", "cat", "four", "ben"),
    ], None)
    in_transaction(engine, edit_message_txn, stored[2].id, "three!", "ben")
    in_transaction(engine, erase_account_txn, "admin", "ann", ERASE, 0)
    in_transaction(engine, erase_account_txn, "admin", "cat", ANONYMISE, 0)
    with engine.connect() as connection:
        rows = connection.execute(
            select(messages.c.changes, messages.c.event, messages.c.sender, messages.c.chat)
            .where(messages.c.changes.is_not(None)).order_by(messages.c.id)
        ).all()
    assert [(r.changes, json.loads(r.event)["change"], r.sender) for r in rows] == [
        (stored[2].id, "edited", "ben"),
        (stored[0].id, "deleted", "(deleted user)"),
        (stored[1].id, "deleted", "(deleted user)"),
    ]
    assert rows[1].chat == rows[2].chat == "@(deleted user):ben"
    # History and catch-up see only the messages.
    with engine.connect() as connection:
        records, _ = history_txn(connection, "@(deleted user):ben", None, 50)
        missed, _ = missed_in_ranges_txn(connection, "ben", [(None, 0, None)], 50)
    # (cat's chat with ben took the same key when cat was erased.)
    assert [r.id for r in records] == [stored[3].id, stored[2].id, stored[1].id, stored[0].id]
    assert all(r.changes is None for r in missed)
    engine.dispose()


def test_retention_purges_change_rows_without_counting_them(database_url):
    from chateau.store.retention import PurgePlan, purge_batch_txn

    engine = _engine(database_url)
    stored = in_transaction(engine, add_messages_txn, [
        ("club", "ann", "one", None), ("club", "ann", "two", None), ("club", "ann", "x", None),
    ], None)
    in_transaction(engine, record_change_txn, stored[0].id, "deleted", "ann")
    plan = PurgePlan({}, int(time.time() * 1000) + 60_000, None)
    dry = in_transaction(engine, purge_batch_txn, plan, None, 0, 100, True)
    assert dry.removed == 3 and dry.chats == {"club": 3} and dry.rows == 4
    done = in_transaction(engine, purge_batch_txn, plan, None, 0, 2, False)
    assert done.rows == 2 and done.removed == 2
    done = in_transaction(engine, purge_batch_txn, plan, None, done.last_id, 2, False)
    assert done.rows == 2 and done.removed == 1
    with engine.connect() as connection:
        assert connection.execute(select(messages.c.id)).all() == []
    engine.dispose()


def test_ids_commit_in_order_on_postgresql(postgres):
    """The second transaction's insert waits for the first's commit (MESSAGES_LOCK)."""
    engine = _engine(postgres.new_database())
    first = engine.connect()
    transaction = first.begin()
    (early,) = add_messages_txn(first, [("club", "ann", "first", None)], None)
    held = first.exec_driver_sql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s"
        % (MESSAGES_LOCK & 0xFFFFFFFF)
    ).scalar()
    assert held == 1
    done: list[Any] = []

    def second() -> None:
        done.append(in_transaction(engine, add_messages_txn, [("club", "ann", "second", None)]))

    def change() -> None:
        in_transaction(engine, record_change_txn, early.id, "edited", "ann")
        done.append("change")

    threads = [threading.Thread(target=second), threading.Thread(target=change)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    assert done == []  # both wait for the first transaction's lock
    transaction.commit()
    first.close()
    for thread in threads:
        thread.join(10)
    assert len(done) == 2
    with engine.connect() as connection:
        ids = connection.execute(select(messages.c.id).order_by(messages.c.id)).scalars().all()
    assert ids[0] == early.id and len(ids) == 3
    engine.dispose()


# -- across cluster nodes -----------------------------------------------------------

from tests.test_cluster import two_nodes  # noqa: E402,F401  (the fixture)


@inline
async def test_a_sync_loop_misses_nothing_written_concurrently_on_two_nodes(two_nodes):
    cluster = two_nodes
    alice = await cluster.client("n1", "alice")
    bob = await cluster.client("n2", "bob")
    reader = await cluster.client("n2", "carol")
    made = await ask(bob, {"type": "GroupMessageInitRequest", "chatname": "club",
                           "recipients": ["alice", "carol"]})
    assert made["status"] == 200, made
    since = (await ask(reader, {"type": "SyncRequest"}))["until"]
    count = 150
    for number in range(count):
        for sender in (alice, bob):
            sender.send({"type": "MessageRequest", "recipient": "club",
                         "content": f"{sender.username} {number}", "msg_id": f"m{number}"})
    seen: list[int] = []
    contents: list[str] = []
    deadline = time.monotonic() + 60
    while len(contents) < 2 * count and time.monotonic() < deadline:
        page = await ask(reader, {"type": "SyncRequest", "since": since, "limit": 7})
        for entry in page["messages"]:
            seen.append(entry["id"])
            if "event" not in entry:
                contents.append(entry["content"])
        since = page["until"]
    acks: list[int] = []
    for sender in (alice, bob):
        mine = 0
        while mine < count:
            frame = await sender.recv(10)
            if frame.get("type") == "MessageSendResponse":
                acks.append(frame["id"])
                mine += 1
    assert seen == sorted(set(seen))  # in order, once each
    # None skipped, though the two nodes wrote at once.
    assert sorted(acks) == [i for i in seen if i in set(acks)]
    for name in ("alice", "bob"):
        assert [c for c in contents if c.startswith(name)] == [
            f"{name} {n}" for n in range(count)]
    await cluster.close()
