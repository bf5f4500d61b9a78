"""The engine and the pool boundary: where transactions run, and how they fail.

Every transaction function of the store takes a connection and returns
plain data, never a result proxy. The server runs them through a
:class:`Runner`, which hands each to the store's
:class:`~twisted.python.threadpool.ThreadPool` and returns a Deferred, so no
SQLAlchemy call ever runs on the reactor thread. ``chateau-admin`` and the
benchmarks, which run no reactor, call :func:`in_transaction` directly.

At that boundary the driver's and the connection pool's errors become
:class:`~chateau.store.errors.StoreUnavailable` (see :func:`run_transaction`),
and this module also answers the few questions about a database URL that the
configuration and the log lines need, so that nothing outside the store
imports SQLAlchemy.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from chateau.store.errors import StoreUnavailable

__all__ = [
    "Connection", "Engine", "Runner", "check_url", "checkpoint_txn", "in_transaction",
    "make_engine", "ping_txn", "pool_size_for", "redacted_url", "run_transaction",
    "sqlite_file",
]

T = TypeVar("T")

# What "the database is unavailable" means: any driver error (IntegrityError
# included: a transaction that hits one was not expected to) and a pool with
# no connection to give within its timeout.
_UNAVAILABLE = (DBAPIError, PoolTimeoutError)

# A pooled PostgreSQL connection that sat unused for longer than this is
# pinged before it is handed out (and replaced if the ping fails), so a
# database that restarted, or a proxy that dropped idle connections, is never
# seen by a request. One in steady use is not: a ping is a round trip, which
# the message writer would otherwise pay on every batch. A restart takes
# longer than this, so every connection that was open before it is pinged.
PING_AFTER_IDLE = 1.0


def make_engine(url: str) -> Engine:
    """An engine for *url*; SQLite gets WAL so readers never block the writer."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives a crash of
            # the process; only a power cut can lose the newest commits.
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Copy the WAL back into the database every 10,000 pages rather
            # than SQLite's default 1,000: the pages every commit rewrites (the
            # newest leaf of each table and index) are then copied once per
            # checkpoint instead of ten times, and the fsyncs that end a
            # checkpoint come a tenth as often, which the message writer's
            # CPU per message shows (docs/performance.md). The store
            # checkpoints sooner, off the writer's thread (see
            # chateau.store.writer); this is the backstop.
            cursor.execute("PRAGMA wal_autocheckpoint=10000")
            # After a checkpoint, a WAL that grew past 64 MB (a long reader
            # held the checkpoint back) is cut back to that.
            cursor.execute(f"PRAGMA journal_size_limit={64 * 1024 * 1024}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            # SQLite's lower() folds ASCII only: the group directory's
            # case-insensitive search folds topics with Python's casefold.
            dbapi_connection.create_function("casefold", 1, _casefold, deterministic=True)

        return engine
    engine = create_engine(url)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Ping on checkout a connection unused for :data:`PING_AFTER_IDLE` seconds."""

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            record.info["chateau_returned"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _lent(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("chateau_returned")
        # A connection just made needs no ping.
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool replaces the connection and tries again.
            raise DisconnectionError(str(exc)) from exc
        if alive is False:
            raise DisconnectionError("the ping was not answered")


def _casefold(value: object) -> object:
    return value.casefold() if isinstance(value, str) else value


def pool_size_for(url: str, threads: int) -> int:
    """SQLite has one writer at a time: more threads would only contend."""
    return 1 if make_url(url).get_backend_name() == "sqlite" else threads


def check_url(url: str) -> None:
    """Raise ValueError, with SQLAlchemy's reason, unless *url* reads as a database URL."""
    try:
        make_url(url)
    except ArgumentError as exc:
        raise ValueError(str(exc)) from None


def redacted_url(url: str) -> str:
    """*url* with its password hidden, for log lines and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL; None for an in-memory one or another database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return parsed.database
    return None


def in_transaction(engine: Engine, txn: Callable[..., T], *args: Any) -> T:
    """Run *txn* with a connection inside one transaction (on the calling thread)."""
    with engine.begin() as connection:
        return txn(connection, *args)


def run_transaction(engine: Engine, txn: Callable[..., T], *args: Any) -> T:
    """:func:`in_transaction` on a pool thread, raising StoreUnavailable for the database's failures.

    The new error keeps the original's text (the first line is what gets
    logged) and has the original as its cause.
    """
    try:
        return in_transaction(engine, txn, *args)
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(str(exc)) from exc


def checkpoint_txn(connection: Connection) -> tuple[int, int, int]:
    """A passive checkpoint: it copies what it can and never waits for the writer.

    Run on the store's pool, so the fsyncs that end a checkpoint do not hold
    up the message writer, and with it every sender waiting for a commit.
    """
    busy, pages, copied = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    return int(busy), int(pages), int(copied)


def ping_txn(connection: Connection) -> None:
    connection.execute(select(1))


class Runner:
    """Runs transaction functions on the store's thread pool, one transaction each.

    Every domain of the store goes through the same runner, so every
    database call is timed by the same *observe* (see chateau.metrics) and
    fails the same way.
    """

    def __init__(
        self, reactor: Any, engine: Engine, pool: ThreadPool,
        observe: Callable[[Deferred[Any]], Deferred[Any]] | None = None,
    ) -> None:
        self._reactor = reactor
        self.engine = engine
        self._pool = pool
        # Wraps each call's Deferred, to time it.
        self._observe = observe or (lambda call: call)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def run(self, txn: Callable[..., T], *args: Any) -> Deferred[T]:
        """``txn(connection, *args)`` in one transaction on the pool; its result."""
        return self._observe(
            deferToThreadPool(self._reactor, self._pool, run_transaction, self.engine, txn, *args)
        )

    def checkpoint(self) -> Deferred[tuple[int, int, int]]:
        """Copy SQLite's WAL back into the database; (busy, WAL pages, pages copied)."""
        return self.run(checkpoint_txn)

    def ping(self) -> Deferred[None]:
        """One round trip to the database (for /health)."""
        return self.run(ping_txn)
