"""The store's pool boundary: the database's own failures arrive as StoreUnavailable.

The protocol answers StoreUnavailable with 503 "retry shortly" and nothing
above the store imports SQLAlchemy, so the translation must catch every
driver and pool error (and nothing else) and keep the original's text.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from twisted.internet import reactor
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from chateau.errors import UNAVAILABLE
from chateau.messages import HeartbeatRequest
from chateau.protocol import ChateauServerProtocol
from chateau.store import Store, StoreUnavailable
from chateau.store.engine import in_transaction, make_engine, run_transaction
from chateau.store.migrate import prepare


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    in_transaction(engine, prepare)
    yield engine
    engine.dispose()


def test_a_driver_error_becomes_store_unavailable_with_the_same_text(engine):
    def broken(connection):
        connection.exec_driver_sql("SELECT * FROM nowhere")

    with pytest.raises(StoreUnavailable) as info:
        run_transaction(engine, broken)
    assert isinstance(info.value.__cause__, DBAPIError)
    assert str(info.value) == str(info.value.__cause__)
    assert str(info.value).splitlines()[0] == (
        "(sqlite3.OperationalError) no such table: nowhere"
    )
    # in_transaction (chateau-admin, no reactor) leaves errors as they are.
    with pytest.raises(DBAPIError):
        in_transaction(engine, broken)


@pytest.mark.parametrize("error", [
    IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")),
    PoolTimeoutError("QueuePool limit of size 5 overflow 10 reached"),
])
def test_integrity_errors_and_pool_timeouts_are_unavailable_too(engine, error):
    def failing(connection):
        raise error

    with pytest.raises(StoreUnavailable) as info:
        run_transaction(engine, failing)
    assert info.value.__cause__ is error and str(info.value) == str(error)


def test_errors_of_our_own_code_pass_unchanged(engine):
    def buggy(connection):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_transaction(engine, buggy)


@pytest_twisted.ensureDeferred
async def test_runner_and_message_writer_failures_are_store_unavailable(engine):
    pool = ThreadPool(minthreads=1, maxthreads=1, name="test-store")
    pool.start()
    try:
        store = Store(reactor, engine, pool)
        with pytest.raises(StoreUnavailable):
            await store.runner.run(lambda connection: connection.exec_driver_sql("SELECT nope"))
        stored = await store.messages.add_message("team", "ann", "kept", None)
        assert (await store.messages.get_message(stored.id)).content == "kept"
        # A direct message's batch also records its chat in direct_chats.
        in_transaction(
            engine, lambda connection: connection.exec_driver_sql("DROP TABLE direct_chats")
        )
        with pytest.raises(StoreUnavailable, match="no such table: direct_chats"):
            await store.messages.add_message("@ann:ben", "ann", "lost", "ben")
        assert await store.messages.last_message_id() == stored.id
    finally:
        pool.stop()


def test_the_protocol_answers_store_unavailable_with_503_and_one_log_line():
    events: list[dict] = []

    class Connection:
        _log = Logger(observer=events.append)
        username = "ann"

    failure = Failure(StoreUnavailable("(psycopg.OperationalError) server closed\n[SQL: ...]"))
    reply = ChateauServerProtocol._error_for(Connection(), failure, HeartbeatRequest(msg_id=7))
    assert reply == {
        "type": "ErrorResponse", "status": UNAVAILABLE,
        "detail": "the database is unavailable; nothing was changed, retry shortly", "msg_id": 7,
    }
    assert [formatEvent(event) for event in events] == [
        "database unavailable while handling HeartbeatRequest: "
        "(psycopg.OperationalError) server closed"
    ]


def test_cursors_and_disabled_accounts_of_many_users_are_found_slice_by_slice(engine):
    """The periodic account check saves every online user's cursor and asks which
    are disabled, its IN lists cut into padded slices: none is missed or doubled."""
    from sqlalchemy import insert, select, update

    from chateau.store.accounts import disabled_among_txn
    from chateau.store.cursors import save_cursors_txn
    from chateau.store.records import ANY_ORIGIN
    from chateau.store.tables import names as name_rows
    from chateau.store.tables import users

    names = [f"u{i:05d}" for i in range(1300)]
    in_transaction(engine, lambda c: c.execute(insert(name_rows), [
        {"name": n, "kind": "user"} for n in names]))
    in_transaction(engine, lambda c: c.execute(insert(users), [
        {"username": n, "password_hash": None, "auth_method": "local", "display_name": None,
         "disabled": False, "created_at": 0, "delivered_until": 0} for n in names]))
    in_transaction(engine, lambda c: c.execute(
        update(users).where(users.c.username.in_(["u00007", "u01299"])).values(disabled=True)))
    in_transaction(engine, save_cursors_txn, [(n, ANY_ORIGIN, 42) for n in names])
    in_transaction(engine, save_cursors_txn, [(n, "node-b", 7) for n in names[-700:]])
    cursors = in_transaction(engine, lambda c: set(
        c.execute(select(users.c.delivered_until)).scalars()))
    assert cursors == {42}
    assert in_transaction(engine, disabled_among_txn, names) == ["u00007", "u01299"]
