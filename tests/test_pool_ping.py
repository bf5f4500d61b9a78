"""PostgreSQL connections in the pool: pinged after sitting idle, not in steady use.

A connection that sat in the pool for longer than ``PING_AFTER_IDLE`` may
belong to a database that restarted since (or have been dropped by a proxy):
it is pinged before it is lent, and replaced if the ping fails, so the
request never sees it. A connection in steady use is not pinged: a ping is a
round trip, which the message writer would otherwise pay on every batch.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from chateau.store import engine as engine_module
from chateau.store.engine import in_transaction, make_engine, ping_txn
from tests.postgres import PostgresServer


def backend_pid(connection: Any) -> int:
    return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()


def count_pings(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> Any:
        pings.append(1)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def test_a_connection_in_steady_use_is_not_pinged(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = make_engine(postgres.new_database())
    try:
        pings = count_pings(engine, monkeypatch)
        for _ in range(50):
            in_transaction(engine, ping_txn)
        assert pings == []
    finally:
        engine.dispose()


def test_a_connection_the_database_dropped_while_idle_is_replaced_unseen(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = postgres.new_database()
    engine = make_engine(url)
    try:
        pings = count_pings(engine, monkeypatch)
        first = in_transaction(engine, backend_pid)
        # As a restart or an idle-dropping proxy would: the server ends the
        # connection while it sits in the pool.
        with psycopg.connect(postgres.admin_dsn(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        time.sleep(engine_module.PING_AFTER_IDLE + 0.1)
        second = in_transaction(engine, backend_pid)
        assert second != first
        assert len(pings) == 1
    finally:
        engine.dispose()


def test_a_restarted_database_is_not_seen_by_the_next_transaction(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = PostgresServer().start()
    try:
        engine = make_engine(server.new_database())
        try:
            first = in_transaction(engine, backend_pid)
            server.halt()
            server.launch()
            time.sleep(engine_module.PING_AFTER_IDLE)
            assert in_transaction(engine, backend_pid) != first
        finally:
            engine.dispose()
    finally:
        server.stop()
