"""Accounts, groups and messages in a SQL database, on a thread pool of their own.

Every public method returns a Deferred and runs its ``*_txn`` function in one
transaction on the store's :class:`~twisted.python.threadpool.ThreadPool`, so
no SQLAlchemy call ever runs on the reactor thread. ``*_txn`` functions take a
connection and return plain Python data, never a result proxy.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    delete,
    func,
    or_,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

metadata = MetaData()

# Users and groups share one namespace; the primary key here is what keeps a
# group from ever taking a user's name (and the other way round), even when
# two requests race on different threads.
names = Table(
    "names",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),  # "user" or "group"
)

users = Table(
    "users",
    metadata,
    Column("username", String(64), ForeignKey("names.name"), primary_key=True),
    Column("password_hash", String(128), nullable=True),
    Column("auth_method", String(16), nullable=False),
    Column("display_name", String(256), nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
    # Every message up to this id was delivered to the user (live or when
    # they signed in); offline delivery starts after it.
    Column("delivered_until", BigInteger, nullable=False, server_default="0"),
)

groups = Table(
    "groups",
    metadata,
    Column("chatname", String(64), ForeignKey("names.name"), primary_key=True),
    Column("creator", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

group_members = Table(
    "group_members",
    metadata,
    Column("chatname", String(64), ForeignKey("groups.chatname"), primary_key=True),
    Column("username", String(64), ForeignKey("users.username"), primary_key=True),
    # False until the member has been told of the group (they were offline
    # when it was made): they are told when they next sign in.
    Column("notified", Boolean, nullable=False, server_default=true()),
    Index("ix_group_members_username", "username"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    # A group's chatname, "@a:b" for the direct chat of a and b (sorted), or
    # a random pair's generated name.
    Column("chat", String(160), nullable=False),
    # The addressee of a direct message; NULL in groups and random chats.
    Column("recipient", String(64), nullable=True),
    Column("sender", String(64), nullable=False),
    # NULL once deleted: a deleted message keeps its place, not its words.
    Column("content", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("edited", Boolean, nullable=False),
    Column("deleted", Boolean, nullable=False),
    # The cluster node that committed it (and routed it live); NULL on a
    # server running alone. Offline delivery keeps one cursor per origin.
    Column("origin", String(64), nullable=True),
    # History and offline delivery both read a chat's messages in id order.
    # There is deliberately no index on recipient: every message would then
    # rewrite a second index page at each commit (see direct_chats).
    Index("ix_messages_chat_id", "chat", "id"),
)

# The direct chats each user takes part in, one row per user and chat,
# written with a chat's first message. Offline delivery finds a user's
# direct messages through these and ix_messages_chat_id, as it finds their
# group messages through group_members.
direct_chats = Table(
    "direct_chats",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("chat", String(160), primary_key=True),
)

# Session keys are stored only as their SHA-256: a stolen table resumes nobody.
sessions = Table(
    "sessions",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("username", String(64), ForeignKey("users.username"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_sessions_username", "username"),
)

# Cluster mode: how far each user has had the messages of each origin node
# (users.delivered_until is the cursor for messages without an origin, and
# the starting point for an origin without a row).
delivery_cursors = Table(
    "delivery_cursors",
    metadata,
    Column("username", String(64), ForeignKey("users.username"), primary_key=True),
    Column("origin", String(64), primary_key=True),
    Column("delivered_until", BigInteger, nullable=False),
)

# Every node that has joined the cluster: the origins offline delivery asks about.
cluster_nodes = Table(
    "cluster_nodes",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("first_seen", BigInteger, nullable=False),
)

# One row per pair of users: pending until the addressee accepts.
contacts = Table(
    "contacts",
    metadata,
    Column("requester", String(64), ForeignKey("users.username"), primary_key=True),
    Column("addressee", String(64), ForeignKey("users.username"), primary_key=True),
    Column("accepted", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_contacts_addressee", "addressee"),
)


class _AnyOrigin:
    """Sentinel: messages of every origin (a server running alone)."""

    def __repr__(self) -> str:
        return "ANY_ORIGIN"


ANY_ORIGIN: Any = _AnyOrigin()


def direct_chat(first: str, second: str) -> str:
    """The stored chat key of the direct conversation between two users."""
    low, high = sorted((first, second))
    return f"@{low}:{high}"


def hash_session_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def iso_timestamp(millis: int) -> str:
    """Milliseconds since the epoch as the wire's ISO 8601 UTC timestamp."""
    moment = datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class UserRecord:
    username: str
    password_hash: str | None
    auth_method: str
    display_name: str | None
    disabled: bool
    delivered_until: int = 0


@dataclass(frozen=True)
class GroupRecord:
    chatname: str
    creator: str
    members: frozenset[str]
    started: bool


@dataclass(frozen=True)
class StoredMessage:
    id: int
    timestamp: str


@dataclass(frozen=True)
class MessageRecord:
    """One stored message, as history and offline delivery see it."""

    id: int
    chat: str
    recipient: str | None
    sender: str
    content: str | None
    timestamp: str
    edited: bool
    deleted: bool
    origin: str | None = None

    def history_entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sender": self.sender,
            "content": None if self.deleted else self.content,
            "timestamp": self.timestamp,
            "edited": self.edited,
            "deleted": self.deleted,
        }


@dataclass(frozen=True)
class ContactBook:
    """A user's accepted contacts and pending requests (name, "incoming"/"outgoing", when)."""

    contacts: list[str]
    pending: list[tuple[str, str, int]]


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
            # Copy the WAL back into the database every 10,000 pages (40 MB at
            # the default page size) rather than every 1,000: the pages every
            # commit rewrites (the newest leaf of each table and index) are
            # then copied once per checkpoint instead of ten times, and the
            # fsyncs that end a checkpoint come a tenth as often. It cut the
            # message writer's CPU per message by a fifth to a quarter. The
            # store checkpoints sooner, off the writer's thread (see
            # MessageWriter); this is the backstop.
            cursor.execute("PRAGMA wal_autocheckpoint=10000")
            # After a checkpoint, a WAL that grew past 64 MB (a long reader
            # held the checkpoint back) is cut back to that.
            cursor.execute(f"PRAGMA journal_size_limit={64 * 1024 * 1024}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def pool_size_for(url: str, threads: int) -> int:
    """SQLite has one writer at a time: more threads would only contend."""
    return 1 if make_url(url).get_backend_name() == "sqlite" else threads


def now_millis() -> int:
    return int(time.time() * 1000)


def in_transaction(engine: Engine, txn: Callable[..., T], *args: Any) -> T:
    """Run *txn* with a connection inside one transaction (on the calling thread)."""
    with engine.begin() as connection:
        return txn(connection, *args)


# Committed messages between two SQLite checkpoints: some 4,500 WAL pages of
# 100-byte messages in direct chats, 9,000 of 4 KiB ones; under the 10,000
# pages at which the writer's connection would checkpoint by itself.
CHECKPOINT_EVERY = 2000

# How many direct chats the message writer remembers as recorded in
# direct_chats (some 10 MB); past that it forgets them all, and each chat's
# next message writes its (already present, so ignored) rows once more.
RECORDED_CHATS_KEPT = 100_000


class MessageWriter:
    """Commits chat messages in batches on one thread: group commit.

    While one batch is being committed, new messages queue up and go in the
    next transaction, so a burst costs a few commits instead of one each.
    A single writer also means ids are assigned in the order the reactor
    routes messages, which offline delivery relies on. Every Deferred fires
    only after its batch has committed.
    """

    _log = Logger()

    def __init__(
        self, reactor: Any, engine: Engine, pool: ThreadPool, max_batch: int = 500,
        origin: str | None = None,
        checkpoint: Callable[[], Deferred[Any]] | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        self._reactor = reactor
        self._origin = origin
        self._engine = engine
        self._pool = pool
        self._max_batch = max_batch
        self._queue: list[tuple[tuple[str, str, str, str | None], Deferred[StoredMessage]]] = []
        self._writing = False
        self._idle_waiters: list[Deferred[None]] = []
        # Started every *checkpoint_every* committed messages, elsewhere (see Store).
        self._checkpoint = checkpoint
        self._checkpoint_every = checkpoint_every
        self._since_checkpoint = 0
        self._checkpointing = False
        # Direct chats whose direct_chats rows are committed: only a chat's
        # first message (since start-up, or since the set was last emptied)
        # writes them. Touched on the reactor thread only.
        self._recorded_chats: set[str] = set()

    def drain(self) -> Deferred[None]:
        """Fires once every queued message is committed (or has failed)."""
        done: Deferred[None] = Deferred()
        if self._writing or self._queue:
            self._idle_waiters.append(done)
        else:
            done.callback(None)
        return done

    def add(self, chat: str, sender: str, content: str, recipient: str | None) -> Deferred[StoredMessage]:
        done: Deferred[StoredMessage] = Deferred()
        self._queue.append(((chat, sender, content, recipient), done))
        if not self._writing:
            self._start_soon()
        return done

    def _start_soon(self) -> None:
        """Start the next batch on the next reactor turn, not now.

        Every message read in the current turn (several clients' frames
        arrive in one poll) then lands in the same transaction. Started at
        once, the first of a burst commits alone and the rest wait for it;
        its fan-out then goes out on its own too, costing a socket flush
        per member for one frame instead of one for the whole burst.
        """
        self._writing = True
        self._reactor.callLater(0, self._write_next)

    def _write_next(self) -> None:
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        self._writing = True
        recorded = self._recorded_chats
        new_chats = {
            item[0] for item, _ in batch if item[3] is not None and item[0] not in recorded
        }
        work = deferToThreadPool(
            self._reactor, self._pool, in_transaction, self._engine, _add_messages_txn,
            [item for item, _ in batch], self._origin, new_chats,
        )

        def committed(stored: list[StoredMessage]) -> None:
            if new_chats:
                if len(recorded) + len(new_chats) > RECORDED_CHATS_KEPT:
                    recorded.clear()
                recorded.update(new_chats)
            for (_, done), result in zip(batch, stored):
                done.callback(result)
            self._committed(len(stored))

        def failed(failure: Any) -> None:
            for _, done in batch:
                done.errback(failure)

        work.addCallbacks(committed, failed)
        work.addBoth(self._written)

    def _committed(self, count: int) -> None:
        """Start a checkpoint once enough has been committed since the last one."""
        if self._checkpoint is None:
            return
        self._since_checkpoint += count
        if self._checkpointing or self._since_checkpoint < self._checkpoint_every:
            return
        self._since_checkpoint = 0
        self._checkpointing = True

        def done(result: Any) -> None:
            self._checkpointing = False
            if isinstance(result, Failure):
                self._log.warn(
                    "WAL checkpoint failed (the next one retries): {error}",
                    error=result.getErrorMessage(),
                )

        self._checkpoint().addBoth(done)

    def _written(self, _: Any) -> None:
        self._writing = False
        if self._queue:
            self._start_soon()
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            waiter.callback(None)


class Store:
    """The database, reached only through the store's own thread pools."""

    def __init__(
        self, reactor: Any, engine: Engine, pool: ThreadPool, writer_pool: ThreadPool | None = None,
        observe: Callable[[Deferred[Any]], Deferred[Any]] | None = None,
        origin: str | None = None,
    ) -> None:
        self._reactor = reactor
        self._engine = engine
        self._pool = pool
        # The cluster node name recorded with each message (None alone).
        self.origin = origin
        # On SQLite the WAL is copied back into the database by this pool's
        # thread, not the writer's (see _checkpoint_txn).
        checkpoint = self.checkpoint if engine.dialect.name == "sqlite" else None
        self.writer = MessageWriter(
            reactor, engine, writer_pool or pool, origin=origin, checkpoint=checkpoint
        )
        # Wraps each call's Deferred, to time it (see chateau.metrics).
        self._observe = observe or (lambda call: call)

    def _run(self, txn: Callable[..., T], *args: Any) -> Deferred[T]:
        return self._observe(
            deferToThreadPool(self._reactor, self._pool, in_transaction, self._engine, txn, *args)
        )

    def checkpoint(self) -> Deferred[tuple[int, int, int]]:
        """Copy SQLite's WAL back into the database; (busy, WAL pages, pages copied)."""
        return self._run(_checkpoint_txn)

    def ping(self) -> Deferred[None]:
        """One round trip to the database (for /health)."""
        return self._run(_ping_txn)

    # -- schema -------------------------------------------------------------

    def prepare_schema(self) -> Deferred[None]:
        """Create the schema if the database is empty; refuse an outdated one."""
        from chateau.schema import prepare

        return self._run(prepare)

    # -- users --------------------------------------------------------------

    def get_user(self, username: str) -> Deferred[UserRecord | None]:
        return self._run(get_user_txn, username)

    def create_user(
        self, username: str, password_hash: str | None, auth_method: str,
        display_name: str | None = None,
    ) -> Deferred[bool]:
        """Create an account; False when the name is already a user or a group."""
        return self._run(create_user_txn, username, password_hash, auth_method, display_name)

    def missing_users(self, usernames: Iterable[str]) -> Deferred[list[str]]:
        """Those of *usernames* that are not accounts, in the order given."""
        return self._run(_missing_users_txn, list(usernames))

    def user_exists(self, username: str) -> Deferred[bool]:
        return self._run(_user_exists_txn, username)

    def save_cursors(self, username: str, cursors: dict[Any, int]) -> Deferred[None]:
        """Move several of *username*'s per-origin cursors forward in one transaction.

        Key None (or ``ANY_ORIGIN``) is ``users.delivered_until``.
        """
        return self._run(_save_cursors_txn, [(username, origin, value) for origin, value in cursors.items()])

    def save_cursor_rows(self, rows: list[tuple[str, Any, int]]) -> Deferred[None]:
        """``(username, origin, id)`` rows, as :meth:`save_cursors`, for many users at once."""
        return self._run(_save_cursors_txn, list(rows))

    def delivery_cursors(self, username: str) -> Deferred[dict[str | None, int]]:
        """Per-origin cursors of *username*; key None is the base (and no-origin) cursor."""
        return self._run(_delivery_cursors_txn, username)

    def register_node(self, name: str) -> Deferred[None]:
        """Record a cluster node, so offline delivery knows to ask about its messages."""
        return self._run(_register_node_txn, name)

    def known_origins(self) -> Deferred[list[str]]:
        return self._run(_known_origins_txn)

    def disabled_among(self, usernames: Iterable[str]) -> Deferred[list[str]]:
        return self._run(_disabled_among_txn, list(usernames))

    # -- groups -------------------------------------------------------------

    def create_group(
        self, chatname: str, creator: str, members: Iterable[str],
        online: Iterable[str] = (),
    ) -> Deferred[bool]:
        """Create a group; False when the name is already a user or a group.

        Members not *online* are marked to be told of it when they sign in.
        """
        return self._run(
            _create_group_txn, chatname, creator, sorted(set(members)), set(online)
        )

    def take_group_notices(self, username: str) -> Deferred[list[GroupRecord]]:
        """Groups *username* was added to while offline; marks them told."""
        return self._run(_take_group_notices_txn, username)

    def load_groups(self) -> Deferred[list[GroupRecord]]:
        return self._run(_load_groups_txn)

    def remove_group_member(self, chatname: str, username: str) -> Deferred[None]:
        return self._run(_remove_group_member_txn, chatname, username)

    # -- messages -----------------------------------------------------------

    def add_message(
        self, chat: str, sender: str, content: str, recipient: str | None = None
    ) -> Deferred[StoredMessage]:
        """Commit a message; the Deferred fires only once it is durable."""
        return self.writer.add(chat, sender, content, recipient)

    def last_message_id(self, origin: str | None | object = ANY_ORIGIN) -> Deferred[int]:
        """The newest message id (of one origin node, in cluster mode)."""
        return self._run(_last_message_id_txn, origin)

    def history(self, chat: str, before: int | None, limit: int) -> Deferred[tuple[list[MessageRecord], bool]]:
        """Up to *limit* messages of *chat* older than *before*, newest first; and whether more exist."""
        return self._run(_history_txn, chat, before, limit)

    def missed_in_ranges(
        self, username: str, ranges: list[tuple[Any, int, int | None]], limit: int
    ) -> Deferred[list[MessageRecord]]:
        """Messages for *username* in any of *ranges*, oldest first.

        Each range is ``(origin, after, upto)``: that origin's messages with
        ids in (after, upto], every one committed so far when upto is None.
        """
        return self._run(_missed_in_ranges_txn, username, list(ranges), limit)

    def get_message(self, message_id: int) -> Deferred[MessageRecord | None]:
        return self._run(_get_message_txn, message_id)

    def edit_message(self, message_id: int, content: str) -> Deferred[None]:
        return self._run(_edit_message_txn, message_id, content)

    def delete_message(self, message_id: int) -> Deferred[None]:
        return self._run(_delete_message_txn, message_id)

    # -- sessions -----------------------------------------------------------

    def create_session(self, username: str, key_hash: str, lifetime: float) -> Deferred[None]:
        return self._run(_create_session_txn, username, key_hash, lifetime)

    def resume_session(self, key_hash: str) -> Deferred[UserRecord | None]:
        """The account of a live, unexpired key, unless the account is disabled."""
        return self._run(_resume_session_txn, key_hash)

    def revoke_session(self, key_hash: str) -> Deferred[None]:
        return self._run(_revoke_session_txn, key_hash)

    # -- contacts -----------------------------------------------------------

    def request_contact(self, requester: str, addressee: str) -> Deferred[str]:
        """"requested", "accepted" (they had asked us), "pending" or "already"."""
        return self._run(_request_contact_txn, requester, addressee)

    def accept_contact(self, addressee: str, requester: str) -> Deferred[bool]:
        return self._run(_accept_contact_txn, addressee, requester)

    def deny_contact(self, addressee: str, requester: str) -> Deferred[bool]:
        return self._run(_deny_contact_txn, addressee, requester)

    def remove_contact(self, username: str, other: str) -> Deferred[bool]:
        return self._run(_remove_contact_txn, username, other)

    def contact_book(self, username: str) -> Deferred[ContactBook]:
        return self._run(_contact_book_txn, username)


def _checkpoint_txn(connection: Connection) -> tuple[int, int, int]:
    """A passive checkpoint: it copies what it can and never waits for the writer.

    Run on the store's pool, so the fsyncs that end a checkpoint do not hold
    up the message writer, and with it every sender waiting for a commit.
    """
    busy, pages, copied = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    return int(busy), int(pages), int(copied)


def _ping_txn(connection: Connection) -> None:
    connection.execute(select(1))


# -- users --------------------------------------------------------------------

def _user_record(row: Any) -> UserRecord:
    return UserRecord(
        row.username, row.password_hash, row.auth_method, row.display_name,
        bool(row.disabled), int(row.delivered_until),
    )


def get_user_txn(connection: Connection, username: str) -> UserRecord | None:
    row = connection.execute(select(users).where(users.c.username == username)).first()
    return None if row is None else _user_record(row)


def _claim_name_txn(connection: Connection, name: str, kind: str) -> bool:
    """Reserve *name* in the shared namespace inside a savepoint."""
    try:
        with connection.begin_nested():
            connection.execute(insert(names).values(name=name, kind=kind))
    except IntegrityError:
        return False
    return True


def create_user_txn(
    connection: Connection, username: str, password_hash: str | None,
    auth_method: str, display_name: str | None,
) -> bool:
    if not _claim_name_txn(connection, username, "user"):
        return False
    last = connection.execute(select(func.max(messages.c.id))).scalar() or 0
    connection.execute(
        insert(users).values(
            username=username,
            password_hash=password_hash,
            auth_method=auth_method,
            display_name=display_name,
            disabled=False,
            created_at=now_millis(),
            delivered_until=last,
        )
    )
    return True


def _missing_users_txn(connection: Connection, usernames: list[str]) -> list[str]:
    if not usernames:
        return []
    found = set(
        connection.execute(
            select(users.c.username).where(users.c.username.in_(usernames))
        ).scalars()
    )
    return [name for name in usernames if name not in found]


def _user_exists_txn(connection: Connection, username: str) -> bool:
    return not _missing_users_txn(connection, [username])


def _set_delivered_until_txn(connection: Connection, usernames: list[str], message_id: int) -> None:
    """Move ``users.delivered_until`` forward (never back)."""
    if usernames:
        connection.execute(
            update(users)
            .where(users.c.username.in_(usernames) & (users.c.delivered_until < message_id))
            .values(delivered_until=message_id)
        )


def _upsert(connection: Connection, table: Table) -> Any:
    """An INSERT on *table* with the connection's ``ON CONFLICT`` clauses (PostgreSQL, SQLite)."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)


def _upsert_cursors(connection: Connection, rows: list[tuple[str, str, int]]) -> None:
    """Insert or raise per-origin cursors; a cursor never moves back."""
    statement = _upsert(connection, delivery_cursors)
    statement = statement.on_conflict_do_update(
        index_elements=[delivery_cursors.c.username, delivery_cursors.c.origin],
        set_={"delivered_until": statement.excluded.delivered_until},
        where=delivery_cursors.c.delivered_until < statement.excluded.delivered_until,
    )
    connection.execute(
        statement,
        [{"username": name, "origin": origin, "delivered_until": value}
         for name, origin, value in rows],
    )


def _save_cursors_txn(connection: Connection, rows: list[tuple[str, Any, int]]) -> None:
    named = []
    # users.delivered_until: one UPDATE per distinct value (usually one).
    plain: dict[int, list[str]] = {}
    for username, origin, value in rows:
        if origin is None or origin is ANY_ORIGIN:
            plain.setdefault(value, []).append(username)
        else:
            named.append((username, origin, value))
    for value, usernames in plain.items():
        _set_delivered_until_txn(connection, usernames, value)
    if named:
        _upsert_cursors(connection, named)


def _delivery_cursors_txn(connection: Connection, username: str) -> dict[str | None, int]:
    base = connection.execute(
        select(users.c.delivered_until).where(users.c.username == username)
    ).scalar()
    cursors: dict[str | None, int] = {None: int(base or 0)}
    for origin, value in connection.execute(
        select(delivery_cursors.c.origin, delivery_cursors.c.delivered_until)
        .where(delivery_cursors.c.username == username)
    ):
        cursors[origin] = int(value)
    return cursors


def _register_node_txn(connection: Connection, name: str) -> None:
    exists = connection.execute(
        select(cluster_nodes.c.name).where(cluster_nodes.c.name == name)
    ).first()
    if exists is None:
        try:
            with connection.begin_nested():
                connection.execute(insert(cluster_nodes).values(name=name, first_seen=now_millis()))
        except IntegrityError:
            pass  # another process registered it at the same moment


def _known_origins_txn(connection: Connection) -> list[str]:
    return list(connection.execute(select(cluster_nodes.c.name).order_by(cluster_nodes.c.name)).scalars())


def _disabled_among_txn(connection: Connection, usernames: list[str]) -> list[str]:
    if not usernames:
        return []
    return list(
        connection.execute(
            select(users.c.username).where(users.c.username.in_(usernames) & users.c.disabled)
        ).scalars()
    )


# -- groups -------------------------------------------------------------------

def _create_group_txn(
    connection: Connection, chatname: str, creator: str, members: list[str], online: set[str]
) -> bool:
    if not _claim_name_txn(connection, chatname, "group"):
        return False
    connection.execute(
        insert(groups).values(chatname=chatname, creator=creator, created_at=now_millis())
    )
    connection.execute(
        insert(group_members),
        [{"chatname": chatname, "username": m, "notified": m in online or m == creator}
         for m in members],
    )
    return True


def _load_groups_txn(connection: Connection) -> list[GroupRecord]:
    members: dict[str, set[str]] = {}
    for chatname, username in connection.execute(
        select(group_members.c.chatname, group_members.c.username)
    ):
        members.setdefault(chatname, set()).add(username)
    started = set(
        connection.execute(
            select(messages.c.chat).where(messages.c.chat.in_(select(groups.c.chatname))).distinct()
        ).scalars()
    )
    return [
        GroupRecord(row.chatname, row.creator, frozenset(members.get(row.chatname, ())),
                    row.chatname in started)
        for row in connection.execute(select(groups.c.chatname, groups.c.creator))
    ]


def _take_group_notices_txn(connection: Connection, username: str) -> list[GroupRecord]:
    mine = (group_members.c.username == username) & ~group_members.c.notified
    found = connection.execute(
        select(groups.c.chatname, groups.c.creator)
        .where(groups.c.chatname.in_(select(group_members.c.chatname).where(mine)))
        .order_by(groups.c.created_at)
    ).all()
    records = []
    for chatname, creator in found:
        members = connection.execute(
            select(group_members.c.username).where(group_members.c.chatname == chatname)
        ).scalars()
        records.append(GroupRecord(chatname, creator, frozenset(members), False))
    connection.execute(update(group_members).where(mine).values(notified=True))
    return records


def _remove_group_member_txn(connection: Connection, chatname: str, username: str) -> None:
    connection.execute(
        delete(group_members).where(
            (group_members.c.chatname == chatname) & (group_members.c.username == username)
        )
    )


# -- messages -----------------------------------------------------------------

def _add_messages_txn(
    connection: Connection, batch: list[tuple[str, str, str, str | None]],
    origin: str | None = None, new_chats: set[str] | None = None,
) -> list[StoredMessage]:
    """Insert a batch in one transaction; ids come back in the batch's order.

    PostgreSQL takes the batch as one statement; on SQLite the rows go
    through the driver's cursor (see :func:`_insert_messages_sqlite`).
    The sender and recipient of a direct message in one of *new_chats*
    (every direct chat of the batch when None) are recorded in
    direct_chats, in the same transaction, so offline delivery finds the
    message exactly when it is committed.
    """
    created = now_millis()
    timestamp = iso_timestamp(created)
    rows = [
        {"chat": chat, "recipient": recipient, "sender": sender, "content": content,
         "created_at": created, "edited": False, "deleted": False, "origin": origin}
        for chat, sender, content, recipient in batch
    ]
    if connection.dialect.name == "sqlite":
        ids = _insert_messages_sqlite(connection, rows)
    else:
        statement = insert(messages).returning(messages.c.id, sort_by_parameter_order=True)
        ids = connection.execute(statement, rows).scalars().all()
    members = {
        (name, chat)
        for chat, sender, _, recipient in batch
        if recipient is not None and (new_chats is None or chat in new_chats)
        for name in (sender, recipient)
    }
    if members:
        _record_direct_chats(connection, sorted(members))
    return [StoredMessage(int(message_id), timestamp) for message_id in ids]


def _record_direct_chats(connection: Connection, members: list[tuple[str, str]]) -> None:
    """Add ``(username, chat)`` rows to direct_chats; those already there stay as they are."""
    connection.execute(
        _upsert(connection, direct_chats).on_conflict_do_nothing(),
        [{"username": name, "chat": chat} for name, chat in members],
    )


# The hot INSERT on SQLite, compiled once from the table (named parameters).
_SQLITE_INSERT_MESSAGE = str(
    insert(messages).compile(
        dialect=sqlite_dialect.dialect(paramstyle="named"),
        column_keys=["chat", "recipient", "sender", "content", "created_at", "edited",
                     "deleted", "origin"],
    )
)


def _insert_messages_sqlite(connection: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert *rows* one by one on the DB-API cursor; their ids, in order.

    SQLite cannot return ordered ids from one multi-row INSERT, so
    SQLAlchemy's ordered insert-many runs one statement per row through its
    whole execution path: most of the writer thread's Python, all of it
    holding the GIL the reactor needs. The driver's own per-row execute
    (its statement cache, ``lastrowid``) gives the same ids in the same
    order for a fraction of that, inside the same transaction.
    """
    cursor = connection.connection.driver_connection.cursor()
    try:
        ids = []
        for row in rows:
            cursor.execute(_SQLITE_INSERT_MESSAGE, row)
            ids.append(cursor.lastrowid)
        return ids
    finally:
        cursor.close()


def _message_record(row: Any) -> MessageRecord:
    return MessageRecord(
        int(row.id), row.chat, row.recipient, row.sender, row.content,
        iso_timestamp(row.created_at), bool(row.edited), bool(row.deleted), row.origin,
    )


def _origin_filter(origin: Any) -> Any:
    if origin is ANY_ORIGIN:
        return true()
    if origin is None:
        return messages.c.origin.is_(None)
    return messages.c.origin == origin


def _last_message_id_txn(connection: Connection, origin: Any = ANY_ORIGIN) -> int:
    query = select(func.max(messages.c.id)).where(_origin_filter(origin))
    return int(connection.execute(query).scalar() or 0)


def _history_txn(
    connection: Connection, chat: str, before: int | None, limit: int
) -> tuple[list[MessageRecord], bool]:
    query = select(messages).where(messages.c.chat == chat)
    if before is not None:
        query = query.where(messages.c.id < before)
    rows = connection.execute(query.order_by(messages.c.id.desc()).limit(limit + 1)).all()
    return [_message_record(row) for row in rows[:limit]], len(rows) > limit


def _missed_in_ranges_txn(
    connection: Connection, username: str, ranges: list[tuple[Any, int, int | None]], limit: int
) -> list[MessageRecord]:
    if not ranges:
        return []
    # The user's groups and direct chats; each is read through ix_messages_chat_id.
    my_chats = union_all(
        select(group_members.c.chatname).where(group_members.c.username == username),
        select(direct_chats.c.chat).where(direct_chats.c.username == username),
    )
    wanted = or_(*[
        _origin_filter(origin) & (messages.c.id > after)
        & (true() if upto is None else messages.c.id <= upto)
        for origin, after, upto in ranges
    ])
    query = (
        select(messages)
        .where(
            # The lowest bound on its own lets each chat's part of the index
            # be read from there, whatever the ranges' origins.
            (messages.c.id > min(after for _, after, _ in ranges))
            & wanted
            & (messages.c.sender != username)
            & ~messages.c.deleted
            & messages.c.chat.in_(my_chats)
            & (messages.c.recipient.is_(None) | (messages.c.recipient == username))
        )
        .order_by(messages.c.id)
        .limit(limit)
    )
    return [_message_record(row) for row in connection.execute(query)]


def _get_message_txn(connection: Connection, message_id: int) -> MessageRecord | None:
    row = connection.execute(select(messages).where(messages.c.id == message_id)).first()
    return None if row is None else _message_record(row)


def _edit_message_txn(connection: Connection, message_id: int, content: str) -> None:
    connection.execute(
        update(messages).where(messages.c.id == message_id).values(content=content, edited=True)
    )


def _delete_message_txn(connection: Connection, message_id: int) -> None:
    connection.execute(
        update(messages).where(messages.c.id == message_id).values(content=None, deleted=True)
    )


# -- sessions -----------------------------------------------------------------

def _create_session_txn(connection: Connection, username: str, key_hash: str, lifetime: float) -> None:
    now = now_millis()
    connection.execute(
        delete(sessions).where((sessions.c.username == username) & (sessions.c.expires_at <= now))
    )
    connection.execute(
        insert(sessions).values(
            key_hash=key_hash, username=username, created_at=now,
            expires_at=now + int(lifetime * 1000),
        )
    )


def _resume_session_txn(connection: Connection, key_hash: str) -> UserRecord | None:
    row = connection.execute(
        select(users)
        .join(sessions, sessions.c.username == users.c.username)
        .where(
            (sessions.c.key_hash == key_hash)
            & (sessions.c.expires_at > now_millis())
            & ~users.c.disabled
        )
    ).first()
    return None if row is None else _user_record(row)


def _revoke_session_txn(connection: Connection, key_hash: str) -> None:
    connection.execute(delete(sessions).where(sessions.c.key_hash == key_hash))


def revoke_all_sessions_txn(connection: Connection, username: str) -> int:
    return connection.execute(delete(sessions).where(sessions.c.username == username)).rowcount


# -- contacts -----------------------------------------------------------------

def _pair_row(connection: Connection, first: str, second: str) -> Any:
    return connection.execute(
        select(contacts).where(
            ((contacts.c.requester == first) & (contacts.c.addressee == second))
            | ((contacts.c.requester == second) & (contacts.c.addressee == first))
        )
    ).first()


def _request_contact_txn(connection: Connection, requester: str, addressee: str) -> str:
    row = _pair_row(connection, requester, addressee)
    if row is None:
        connection.execute(
            insert(contacts).values(
                requester=requester, addressee=addressee, accepted=False,
                created_at=now_millis(),
            )
        )
        return "requested"
    if row.accepted:
        return "already"
    if row.requester == addressee:
        connection.execute(
            update(contacts)
            .where((contacts.c.requester == addressee) & (contacts.c.addressee == requester))
            .values(accepted=True)
        )
        return "accepted"
    return "pending"


def _accept_contact_txn(connection: Connection, addressee: str, requester: str) -> bool:
    result = connection.execute(
        update(contacts)
        .where(
            (contacts.c.requester == requester)
            & (contacts.c.addressee == addressee)
            & ~contacts.c.accepted
        )
        .values(accepted=True)
    )
    return result.rowcount == 1


def _deny_contact_txn(connection: Connection, addressee: str, requester: str) -> bool:
    result = connection.execute(
        delete(contacts).where(
            (contacts.c.requester == requester)
            & (contacts.c.addressee == addressee)
            & ~contacts.c.accepted
        )
    )
    return result.rowcount == 1


def _remove_contact_txn(connection: Connection, username: str, other: str) -> bool:
    result = connection.execute(
        delete(contacts).where(
            ((contacts.c.requester == username) & (contacts.c.addressee == other))
            | ((contacts.c.requester == other) & (contacts.c.addressee == username))
        )
    )
    return result.rowcount > 0


def _contact_book_txn(connection: Connection, username: str) -> ContactBook:
    accepted: list[str] = []
    pending: list[tuple[str, str, int]] = []
    rows = connection.execute(
        select(contacts).where(
            (contacts.c.requester == username) | (contacts.c.addressee == username)
        )
    )
    for row in rows:
        other = row.addressee if row.requester == username else row.requester
        if row.accepted:
            accepted.append(other)
        else:
            direction = "outgoing" if row.requester == username else "incoming"
            pending.append((other, direction, int(row.created_at)))
    return ContactBook(sorted(accepted), sorted(pending))
