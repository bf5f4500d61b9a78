"""Retention: the daily purge of old messages and audit rows, on SQLite and PostgreSQL.

The purge's rule on a real database (server default, a group's own longer
and shorter retention, 0 = forever, batches), its claim across nodes, its
loop on ``task.Clock``, and over real sockets: GroupUpdateRequest's
``retention_days``, and history, catch-up, edits and reports after a purge.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from sqlalchemy import func, insert, select, text
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from chateau.config import ChatConfig
from chateau.retention import (
    CLAIM_GAP_MS,
    FIRST_RUN_DELAY,
    INTERVAL,
    RetentionPurge,
    purge_once,
)
from chateau.store import migrate
from chateau.store.audit import entries_txn, record_txn
from chateau.store.engine import in_transaction, make_engine
from chateau.store.retention import DAY_MS, claim_run_txn
from chateau.store.tables import audit_log, direct_chats, groups, messages, names
from tests.deferreds import inline
from tests.wsclient import send_message as send

NOW = 1_800_000_000_000  # a fixed "now" (ms), 2027


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    with engine.begin() as connection:
        migrate.prepare(connection)
    yield engine
    engine.dispose()


def blocking_run(engine) -> Callable[..., Deferred[Any]]:
    """The purge's runner, blocking: every Deferred it returns has fired."""
    return lambda txn, *args: maybeDeferred(in_transaction, engine, txn, *args)


def purge(engine, chat: ChatConfig, now: int = NOW, **options: Any):
    """purge_once run to its end on this thread."""
    outcome: list[Any] = []
    ensureDeferred(purge_once(blocking_run(engine), chat, now, **options)).addBoth(outcome.append)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def add_group(connection, chatname: str, retention_days: int | None) -> None:
    connection.execute(insert(names).values(name=chatname, kind="group"))
    connection.execute(insert(groups).values(chatname=chatname, creator="ann", created_at=1,
                                             retention_days=retention_days))


def add_messages(connection, chat: str, ages_in_days: list[float], recipient: str | None = None,
                 ) -> list[int]:
    ids = []
    for age in ages_in_days:
        result = connection.execute(insert(messages).values(
            chat=chat, recipient=recipient, sender="ann", content=f"{chat} {age}",
            created_at=NOW - int(age * DAY_MS), edited=False, deleted=False, origin=None,
            event=None,
        ))
        ids.append(int(result.inserted_primary_key[0]))
    return ids


def remaining(engine) -> dict[str, list[float]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(messages.c.chat, messages.c.created_at).order_by(messages.c.id)
        ).all()
    kept: dict[str, list[float]] = {}
    for chat, created in rows:
        kept.setdefault(chat, []).append(round((NOW - created) / DAY_MS, 2))
    return kept


def populate(engine) -> None:
    """Chats of every kind, with messages 1 to 400 days old (ids in age order, oldest first)."""
    with engine.begin() as connection:
        add_group(connection, "longer", 100)
        add_group(connection, "shorter", 10)
        add_group(connection, "forever", 0)
        add_group(connection, "plain", None)
        ages = [400, 200, 50, 20, 5, 1]
        for chat in ("longer", "shorter", "forever", "plain", "rnd-12ab", "gone-group"):
            add_messages(connection, chat, ages)
        add_messages(connection, "@ann:ben", ages, recipient="ben")
        connection.execute(insert(direct_chats).values(username="ann", chat="@ann:ben"))
        connection.execute(insert(direct_chats).values(username="ben", chat="@ann:ben"))
        # The newest message of all (SQLite keeps it whatever its age; see below).
        add_messages(connection, "plain", [0])


def test_the_purge_deletes_exactly_what_each_chat_no_longer_keeps(engine):
    populate(engine)
    report = purge(engine, ChatConfig(retention_days=30), batch=4)
    assert remaining(engine) == {
        "longer": [50, 20, 5, 1],           # its own 100 days, longer than the server's
        "shorter": [5, 1],                  # its own 10 days, shorter
        "forever": [400, 200, 50, 20, 5, 1],  # 0: kept forever
        "plain": [20, 5, 1, 0],             # the server's 30 days
        "rnd-12ab": [20, 5, 1],             # random chats, direct chats and the messages
        "gone-group": [20, 5, 1],           # of deleted groups: the server's
        "@ann:ben": [20, 5, 1],
    }
    assert report.removed == 2 + 4 + 3 * 4
    assert report.per_chat == {"longer": 2, "shorter": 4, "plain": 3, "rnd-12ab": 3,
                               "gone-group": 3, "@ann:ben": 3}
    # More than one batch of 4 went (the server's pass alone removed 12).
    # direct_chats stays: the message writers remember the chats they recorded.
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(direct_chats)).scalar() == 2
    # A second run finds nothing more.
    assert purge(engine, ChatConfig(retention_days=30), batch=4).removed == 0


def test_zero_keeps_forever_and_a_dry_run_deletes_nothing(engine):
    populate(engine)
    before = remaining(engine)
    dry = purge(engine, ChatConfig(retention_days=0, audit_retention_days=0), dry_run=True)
    # Only the groups with their own retention lose anything.
    assert dry.per_chat == {"longer": 2, "shorter": 4} and dry.dry_run
    assert remaining(engine) == before
    done = purge(engine, ChatConfig(retention_days=0, audit_retention_days=0), batch=1)
    assert done.per_chat == dry.per_chat
    assert remaining(engine)["plain"] == [400, 200, 50, 20, 5, 1, 0]


def test_old_audit_rows_are_purged_too(engine):
    with engine.begin() as connection:
        for age in (400, 366, 364, 1):
            connection.execute(insert(audit_log).values(
                at=NOW - age * DAY_MS, actor="cli:ops", action="user_ban", target=f"u{age}",
                reason="", detail="{}",
            ))
    dry = purge(engine, ChatConfig(audit_retention_days=365), dry_run=True)
    assert dry.audit_removed == 2
    assert purge(engine, ChatConfig(audit_retention_days=365), batch=1).audit_removed == 2
    with engine.connect() as connection:
        assert [e.target for e in entries_txn(connection, 10)] == ["u1", "u364"]
    assert purge(engine, ChatConfig(audit_retention_days=0)).audit_removed == 0


def test_sqlite_keeps_the_newest_message_so_no_id_is_handed_out_twice(engine):
    """SQLite numbers a new row after the highest id left: the newest is never purged."""
    with engine.begin() as connection:
        ids = add_messages(connection, "@ann:ben", [90, 60], recipient="ben")
    report = purge(engine, ChatConfig(retention_days=30))
    sqlite = engine.dialect.name == "sqlite"
    assert report.removed == (1 if sqlite else 2)
    with engine.begin() as connection:
        (new,) = add_messages(connection, "@ann:ben", [0], recipient="ben")
    assert new > ids[-1]


def test_one_node_claims_each_days_run(engine):
    claim = lambda node, now: in_transaction(engine, claim_run_txn, "retention", node, now,
                                             CLAIM_GAP_MS)
    assert claim("node-a", NOW) is True
    assert claim("node-b", NOW + 1000) is False
    assert claim("node-a", NOW + CLAIM_GAP_MS - 1) is False
    assert claim("node-b", NOW + CLAIM_GAP_MS) is True
    with engine.connect() as connection:
        row = connection.execute(text("SELECT node, started_at FROM scheduled_runs")).one()
    assert tuple(row) == ("node-b", NOW + CLAIM_GAP_MS)


class BlockingStore:
    """What RetentionPurge uses of the Store, run on this thread (for task.Clock)."""

    def __init__(self, engine) -> None:
        self.runner = self
        self.retention = self
        self.audit = self
        self.engine = engine

    def run(self, txn, *args):
        return maybeDeferred(in_transaction, self.engine, txn, *args)

    def claim_run(self, job, node, now, gap):
        return self.run(claim_run_txn, job, node, now, gap)

    def record(self, actor, action, target, reason="", address=None, **detail):
        return self.run(record_txn, actor, action, target, reason, detail, address)


def test_the_daily_loop_runs_on_one_node_a_minute_after_start_then_daily(engine):
    populate(engine)
    chat = ChatConfig(retention_days=30)
    clocks = [task.Clock(), task.Clock()]
    for clock in clocks:
        clock.advance(NOW / 1000)
    purges = [RetentionPurge(chat, BlockingStore(engine), clock, f"node-{n}")
              for n, clock in enumerate(clocks)]
    for purge_ in purges:
        purge_.start()
    for clock in clocks:
        clock.advance(FIRST_RUN_DELAY - 1)
    assert remaining(engine)["plain"][0] == 400
    clocks[0].advance(1)
    assert remaining(engine)["plain"] == [20, 5, 1, 0]
    clocks[1].advance(1)   # node-1's first run: node-0 ran it already
    with engine.connect() as connection:
        runs = [(e.actor, e.action, e.detail) for e in entries_txn(connection, 10)]
    assert runs == [("server", "retention_purge",
                     {"removed": 18, "chats": 6, "audit_removed": 0})]
    # A day later it is node-1's turn when its clock comes first.
    with engine.begin() as connection:
        add_messages(connection, "plain", [45, 0])
    clocks[1].advance(INTERVAL)
    clocks[0].advance(INTERVAL)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT node FROM scheduled_runs")).scalar() == "node-1"
        assert len(entries_txn(connection, 10)) == 2
    assert 45 not in remaining(engine)["plain"]
    for purge_ in purges:
        purge_.stop()
    assert not clocks[0].getDelayedCalls() and not clocks[1].getDelayedCalls()


def test_a_failing_run_is_logged_and_the_loop_goes_on(engine):
    class Broken(BlockingStore):
        def claim_run(self, *args):
            raise RuntimeError("database is down\nmore")

    clock = task.Clock()
    clock.advance(NOW / 1000)
    purge_ = RetentionPurge(ChatConfig(retention_days=1), Broken(engine), clock, "n")
    purge_.start()
    clock.advance(FIRST_RUN_DELAY)
    clock.advance(INTERVAL)
    assert clock.getDelayedCalls()  # still scheduled
    purge_.stop()


class SteppedStore(BlockingStore):
    """BlockingStore whose transactions run only when the test says (a slow database)."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.pending: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []

    def run(self, txn, *args):
        waiting: Deferred[Any] = Deferred()
        self.pending.append((waiting, txn, args))
        return waiting

    def step(self) -> None:
        waiting, txn, args = self.pending.pop(0)
        waiting.callback(in_transaction(self.engine, txn, *args))


def test_stopping_ends_a_purge_after_its_current_batch(engine):
    populate(engine)
    store = SteppedStore(engine)
    clock = task.Clock()
    clock.advance(NOW / 1000)
    purge_ = RetentionPurge(ChatConfig(retention_days=30), store, clock, "n", batch=2)
    finished = purge_.run()
    for _ in range(3):  # the claim, the plan, the first batch ("longer": 2 rows)
        store.step()
    assert not finished.called
    stopped = purge_.stop()
    assert not stopped.called
    store.step()  # the batch under way when told to stop ("longer" has no more)
    store.step()  # the audit row of what went
    assert stopped.called and finished.called
    assert finished.result.per_chat == {"longer": 2} and not store.pending
    left = remaining(engine)
    assert left["longer"] == [50, 20, 5, 1]
    # The rest waits for the next run.
    assert left["shorter"][0] == 400 and left["plain"][0] == 400


def test_nodes_claiming_at_the_same_moment_get_one_run(engine):
    """Several threads (as several nodes) claim at once: exactly one wins."""
    import threading

    results: list[bool] = []
    start = threading.Barrier(4)

    def claim(node: str) -> None:
        start.wait()
        results.append(in_transaction(engine, claim_run_txn, "retention", node, NOW,
                                      CLAIM_GAP_MS))

    threads = [threading.Thread(target=claim, args=(f"node-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False, False, False, True]


# -- over the wire ---------------------------------------------------------------

async def make_group(creator, chatname: str, *members: str) -> None:
    reply = await creator.request({"type": "GroupMessageInitRequest",
                                   "recipients": list(members), "chatname": chatname})
    assert reply["status"] == 200, reply


@inline
async def test_group_update_sets_and_shows_retention_days(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await make_group(alice, "club", "bob")
    await bob.expect("GroupMessageInitResponse", chatname="club")
    info = await bob.request({"type": "GroupInfoRequest", "chatname": "club"})
    assert info["settings"]["retention_days"] is None
    reply = await alice.request({"type": "GroupUpdateRequest", "chatname": "club",
                                 "retention_days": 30, "msg_id": 3})
    assert reply["status"] == 200 and reply["settings"]["retention_days"] == 30, reply
    event = await bob.expect("GroupEventRecv", event="settings")
    assert event["settings"] == {"retention_days": 30}
    info = await bob.request({"type": "GroupInfoRequest", "chatname": "club"})
    assert info["settings"]["retention_days"] == 30
    # Members may not; bad values are 400 and change nothing.
    refused = await bob.request({"type": "GroupUpdateRequest", "chatname": "club",
                                 "retention_days": 0})
    assert refused["status"] == 403 and "only admins and owners" in refused["detail"], refused
    for bad in (-1, 36501, "30", True, 1.5):
        reply = await alice.request({"type": "GroupUpdateRequest", "chatname": "club",
                                     "retention_days": bad})
        assert reply["status"] == 400 and "retention_days" in reply["detail"], (bad, reply)
    # An admin may; 0 keeps forever, null gives back the server's.
    await alice.request({"type": "GroupRoleRequest", "chatname": "club", "user": "bob",
                         "role": "admin"})
    await bob.expect("GroupEventRecv", event="role")
    reply = await bob.request({"type": "GroupUpdateRequest", "chatname": "club",
                               "retention_days": 0})
    assert reply["status"] == 200 and reply["settings"]["retention_days"] == 0, reply
    event = await alice.expect("GroupEventRecv", event="settings")
    assert event["settings"] == {"retention_days": 0}
    reply = await alice.request({"type": "GroupUpdateRequest", "chatname": "club",
                                 "retention_days": None})
    assert reply["status"] == 200 and reply["settings"]["retention_days"] is None, reply
    event = await bob.expect("GroupEventRecv", event="settings")
    assert event["settings"] == {"retention_days": None}
    # Setting the same value again tells nobody; everyone keeps working.
    reply = await alice.request({"type": "GroupUpdateRequest", "chatname": "club",
                                 "retention_days": None})
    assert reply["status"] == 200
    await send(bob, "club", "still here")
    await alice.expect("GroupMessageRecv", content="still here")
    await bob.nothing(0.1)
    audit = await server.service.store.audit.entries(10, user="alice")
    assert [(e.action, e.detail) for e in audit if e.action == "group_retention"] == [
        ("group_retention", {"retention_days": None}), ("group_retention", {"retention_days": 30})]


def _age_messages(engine, contents: list[str], days: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            messages.update().where(messages.c.content.in_(contents))
            .values(created_at=messages.c.created_at - days * DAY_MS)
        )


@inline
async def test_after_a_purge_history_catch_up_and_edits_hold(server_factory, config_factory):
    running = await server_factory(config_factory(chat={"retention_days": "30"}))
    alice = await running.client("alice")
    bob = await running.client()
    key = (await bob.register("bob"))["session_key"]
    await make_group(alice, "team", "bob")
    await bob.expect("GroupMessageInitResponse")
    old = [(await send(alice, "team", f"old {n}"))["id"] for n in range(3)]
    for _ in old:
        await bob.expect("GroupMessageRecv")
    await bob.close()
    # Bob is away: one message he missed will be purged, two will not.
    missed_old = (await send(alice, "team", "missed old"))["id"]
    direct = (await send(alice, "bob", "direct old"))["id"]
    await send(alice, "team", "missed 1")
    await send(alice, "team", "missed 2")
    engine = running.service.engine
    await deferToThread(_age_messages, engine,
                        ["old 0", "old 1", "old 2", "missed old", "direct old"], 40)
    report = await running.service.retention.run()
    assert report is not None and report.removed == 5, report
    # Bob catches up on what is left, in order, and nothing else.
    bob = await running.client()
    bob.send({"type": "ResumeRequest", "session_key": key})
    await bob.expect("ResumeResponse", username="bob")
    frames = await bob.frames_until_heartbeat()
    assert [f.get("content") for f in frames if "content" in f] == ["missed 1", "missed 2"]
    page = await bob.request({"type": "HistoryRequest", "chatname": "team", "limit": 2})
    assert [m["content"] for m in page["messages"]] == ["missed 2", "missed 1"]
    page = await bob.request({"type": "HistoryRequest", "chatname": "team",
                              "before": page["messages"][-1]["id"]})
    contents = [m["content"] for m in page["messages"]]
    assert "old 0" not in contents and "missed old" not in contents and page["more"] is False
    # A purged message is no more: 404 to edit, delete or report it.
    for request in ({"type": "MessageEditRequest", "id": old[0], "content": "x"},
                    {"type": "MessageDeleteRequest", "id": missed_old},
                    {"type": "ReportRequest", "message_id": direct, "reason": "spam"}):
        reply = await alice.request(request)
        assert reply["status"] == 404, (request, reply)
    # New messages still reach everyone, live and after a restart of delivery.
    await send(alice, "team", "new")
    await bob.expect("GroupMessageRecv", content="new")
    # The next run the same day is another node's turn, or nobody's.
    assert await running.service.retention.run() is None
    audit = await running.service.store.audit.entries(5)
    assert [(e.actor, e.action, e.detail["removed"]) for e in audit
            if e.action == "retention_purge"] == [("server", "retention_purge", 5)]


def test_upgrading_to_0018_keeps_groups_and_messages(database_url):
    """A populated 0013 database gains groups.retention_days (NULL) and scheduled_runs."""
    from alembic import command

    from chateau.store.groups import group_info_txn

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0013")
            connection.execute(text(
                "INSERT INTO names (name, kind) VALUES ('ann', 'user'), ('club', 'group')"))
            connection.execute(text(
                "INSERT INTO users (username, password_hash, auth_method, disabled, created_at, "
                "delivered_until) VALUES ('ann', 'x', 'local', false, 1, 0)"))
            connection.execute(text(
                "INSERT INTO groups (chatname, creator, created_at) VALUES ('club', 'ann', 5)"))
            connection.execute(text(
                "INSERT INTO group_members (chatname, username, notified, role, joined_at) "
                "VALUES ('club', 'ann', true, 'owner', 5)"))
            for age in (100, 1):
                connection.execute(text(
                    "INSERT INTO messages (chat, sender, content, created_at, edited, deleted) "
                    f"VALUES ('club', 'ann', 'hi', {NOW - age * DAY_MS}, false, false)"))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            info = group_info_txn(connection, "club")
            assert info.retention_days is None and [m.username for m in info.members] == ["ann"]
        assert purge(engine, ChatConfig(retention_days=30)).removed == 1
        with engine.begin() as connection:
            connection.execute(text("UPDATE groups SET retention_days = 0"))
            add_messages(connection, "club", [400, 0])
        assert purge(engine, ChatConfig(retention_days=30)).removed == 0
        assert in_transaction(engine, claim_run_txn, "retention", "n", NOW, CLAIM_GAP_MS)
    finally:
        engine.dispose()
