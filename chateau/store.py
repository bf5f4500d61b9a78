"""Accounts, groups and messages in a SQL database, on a thread pool of their own.

Every public method returns a Deferred and runs its ``*_txn`` function in one
transaction on the store's :class:`~twisted.python.threadpool.ThreadPool`, so
no SQLAlchemy call ever runs on the reactor thread. ``*_txn`` functions take a
connection and return plain Python data, never a result proxy.
"""

from __future__ import annotations

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
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
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
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # A group's chatname, "@a:b" for the direct chat of a and b (sorted), or
    # a random pair's generated name.
    Column("chat", String(160), nullable=False),
    Column("sender", String(64), nullable=False),
    Column("content", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_messages_chat_id", "chat", "id"),
)


def direct_chat(first: str, second: str) -> str:
    """The stored chat key of the direct conversation between two users."""
    low, high = sorted((first, second))
    return f"@{low}:{high}"


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


def make_engine(url: str) -> Engine:
    """An engine for *url*; SQLite gets WAL so readers never block the writer."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def pool_size_for(url: str, threads: int) -> int:
    """SQLite has one writer at a time: more threads would only contend."""
    return 1 if make_url(url).get_backend_name() == "sqlite" else threads


def _now_millis() -> int:
    return int(time.time() * 1000)


class Store:
    """The database, reached only through the store's own thread pool."""

    def __init__(self, reactor: Any, engine: Engine, pool: ThreadPool) -> None:
        self._reactor = reactor
        self._engine = engine
        self._pool = pool

    def _run(self, txn: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, self._in_transaction, txn, *args)

    def _in_transaction(self, txn: Callable[..., T], *args: Any) -> T:
        with self._engine.begin() as connection:
            return txn(connection, *args)

    # -- schema -------------------------------------------------------------

    def create_schema(self) -> Deferred[None]:
        return self._run(_create_schema_txn)

    # -- users --------------------------------------------------------------

    def get_user(self, username: str) -> Deferred[UserRecord | None]:
        return self._run(_get_user_txn, username)

    def create_user(
        self, username: str, password_hash: str | None, auth_method: str,
        display_name: str | None = None,
    ) -> Deferred[bool]:
        """Create an account; False when the name is already a user or a group."""
        return self._run(_create_user_txn, username, password_hash, auth_method, display_name)

    def missing_users(self, usernames: Iterable[str]) -> Deferred[list[str]]:
        """Those of *usernames* that are not accounts, in the order given."""
        return self._run(_missing_users_txn, list(usernames))

    def user_exists(self, username: str) -> Deferred[bool]:
        return self._run(_user_exists_txn, username)

    # -- groups -------------------------------------------------------------

    def create_group(self, chatname: str, creator: str, members: Iterable[str]) -> Deferred[bool]:
        """Create a group; False when the name is already a user or a group."""
        return self._run(_create_group_txn, chatname, creator, sorted(set(members)))

    def load_groups(self) -> Deferred[list[GroupRecord]]:
        return self._run(_load_groups_txn)

    def remove_group_member(self, chatname: str, username: str) -> Deferred[None]:
        return self._run(_remove_group_member_txn, chatname, username)

    # -- messages -----------------------------------------------------------

    def add_message(self, chat: str, sender: str, content: str) -> Deferred[StoredMessage]:
        """Commit a message; the Deferred fires only once it is durable."""
        return self._run(_add_message_txn, chat, sender, content)


def _create_schema_txn(connection: Connection) -> None:
    metadata.create_all(connection)


def _get_user_txn(connection: Connection, username: str) -> UserRecord | None:
    row = connection.execute(select(users).where(users.c.username == username)).first()
    if row is None:
        return None
    return UserRecord(
        row.username, row.password_hash, row.auth_method, row.display_name, bool(row.disabled)
    )


def _claim_name_txn(connection: Connection, name: str, kind: str) -> bool:
    """Reserve *name* in the shared namespace inside a savepoint."""
    try:
        with connection.begin_nested():
            connection.execute(insert(names).values(name=name, kind=kind))
    except IntegrityError:
        return False
    return True


def _create_user_txn(
    connection: Connection, username: str, password_hash: str | None,
    auth_method: str, display_name: str | None,
) -> bool:
    if not _claim_name_txn(connection, username, "user"):
        return False
    connection.execute(
        insert(users).values(
            username=username,
            password_hash=password_hash,
            auth_method=auth_method,
            display_name=display_name,
            disabled=False,
            created_at=_now_millis(),
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


def _create_group_txn(
    connection: Connection, chatname: str, creator: str, members: list[str]
) -> bool:
    if not _claim_name_txn(connection, chatname, "group"):
        return False
    connection.execute(
        insert(groups).values(chatname=chatname, creator=creator, created_at=_now_millis())
    )
    connection.execute(
        insert(group_members), [{"chatname": chatname, "username": m} for m in members]
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


def _remove_group_member_txn(connection: Connection, chatname: str, username: str) -> None:
    connection.execute(
        delete(group_members).where(
            (group_members.c.chatname == chatname) & (group_members.c.username == username)
        )
    )


def _add_message_txn(
    connection: Connection, chat: str, sender: str, content: str
) -> StoredMessage:
    created = _now_millis()
    result = connection.execute(
        insert(messages).values(chat=chat, sender=sender, content=content, created_at=created)
    )
    (message_id,) = result.inserted_primary_key
    return StoredMessage(int(message_id), iso_timestamp(created))
