"""A large chat history, built straight into a database for the read benchmarks.

The search and conversations benchmarks need one user with many
conversations over a million messages; sending those through the server
would take hours, so :func:`build` writes the rows directly, in big
batches (COPY on PostgreSQL, the driver's ``executemany`` on SQLite), into
a database whose schema Chateau's own migrations made (so search indexes
and triggers are kept up to date as they are in production).

What it builds, deterministically for a *seed*:

- ``users`` accounts ``u00000`` … (``u00000`` is the main user), all with
  the password :data:`PASSWORD`;
- *conversations* conversations of the main user, half groups (``g0000`` …,
  the main user and 3–20 others) and half direct chats with other users;
- *messages* messages spread over them, ``created_at`` increasing with the
  id, each of 3–20 words drawn from a fixed vocabulary with Zipf-like
  frequencies: ``vocabulary[0]`` is in most messages, the last words in a
  few hundred;
- every user's ``delivered_until`` at the newest id (signing in delivers
  nothing) and no read markers (``unread`` left to the caller: see
  :func:`mark_read`).

    python -m bench.dataset sqlite:////tmp/big.sqlite3 --messages 1000000
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import bcrypt

from chateau.names import skeleton
from chateau.store.engine import in_transaction, make_engine
from chateau.store.migrate import prepare
from chateau.store.records import direct_chat, now_millis

PASSWORD = "bench-password"
MAIN_USER = "u00000"
# Rows per executemany / COPY chunk.
BATCH = 20_000
VOCABULARY_SIZE = 8_000
# Zipf's exponent: frequencies fall as 1 / rank ** ZIPF.
ZIPF = 1.05
_SYLLABLES = [
    "ba", "ko", "ri", "mu", "te", "la", "pi", "so", "dan", "vel", "gor", "min", "tus", "ra",
    "ne", "fi", "zo", "lu", "cha", "pre", "wen", "dor", "kal", "sil",
]


@dataclass
class Dataset:
    """What a benchmark needs to use what :func:`build` wrote."""

    url: str
    main_user: str
    password: str
    users: list[str]
    # Group chatnames, and the other people of the main user's direct chats.
    groups: list[str]
    direct_peers: list[str]
    vocabulary: list[str]
    messages: int
    # Newest message id of each conversation (group chatname or direct chat key).
    last_ids: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def vocabulary(size: int = VOCABULARY_SIZE, seed: int = 1) -> list[str]:
    """*size* distinct made-up words of two to four syllables, most frequent first."""
    chooser = random.Random(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        word = "".join(chooser.choice(_SYLLABLES) for _ in range(chooser.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def build(
    url: str, users: int = 1000, conversations: int = 1000, messages: int = 1_000_000,
    seed: int = 1, vocabulary_size: int = VOCABULARY_SIZE,
) -> Dataset:
    """Create the schema at *url* (an empty database) and fill it; what was made."""
    if users < conversations // 2 + 21:
        raise ValueError("users: at least conversations / 2 + 21 (the direct chats' peers)")
    started = time.monotonic()
    chooser = random.Random(seed)
    words = vocabulary(vocabulary_size, seed)
    names = [f"u{n:05d}" for n in range(users)]
    others = names[1:]
    group_count = conversations // 2
    groups = [f"g{n:04d}" for n in range(group_count)]
    peers = others[: conversations - group_count]
    members = {g: [MAIN_USER, *chooser.sample(others, chooser.randint(3, 20))] for g in groups}
    # (chat key, recipient-of-sender function) for each conversation.
    chats: list[tuple[str, list[str], bool]] = [(g, members[g], False) for g in groups]
    chats += [(direct_chat(MAIN_USER, p), [MAIN_USER, p], True) for p in peers]
    engine = make_engine(url)
    try:
        in_transaction(engine, prepare)
        is_sqlite = engine.dialect.name == "sqlite"
        password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        now = now_millis()
        start = now - messages * 10 - 60_000
        in_transaction(engine, _write_people, names, password_hash, groups, members, peers, start)
        last_ids: dict[str, int] = {}
        rows = _message_rows(chooser, chats, words, messages, start, last_ids)
        if is_sqlite:
            for chunk in _chunks(rows, BATCH):
                in_transaction(engine, _insert_sqlite, chunk)
        else:
            in_transaction(engine, _copy_postgresql, rows)
        in_transaction(engine, _finish, messages)
    finally:
        engine.dispose()
    return Dataset(
        url=url, main_user=MAIN_USER, password=PASSWORD, users=names, groups=groups,
        direct_peers=peers, vocabulary=words, messages=messages, last_ids=last_ids,
        seconds=time.monotonic() - started,
    )


def mark_read(url: str, dataset: Dataset, unread: int) -> None:
    """Set the main user's read marker *unread* messages before each conversation's newest."""
    engine = make_engine(url)
    try:
        rows = [(dataset.main_user, chat, max(0, last - unread), now_millis())
                for chat, last in dataset.last_ids.items()]
        in_transaction(engine, _write_markers, rows)
    finally:
        engine.dispose()


def _write_markers(connection: Any, rows: list[tuple[Any, ...]]) -> None:
    connection.exec_driver_sql("DELETE FROM read_markers")
    _executemany(connection, "read_markers", ("username", "chat", "last_read_id", "updated_at"), rows)


def _chunks(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def _placeholder(connection: Any) -> str:
    return "?" if connection.dialect.name == "sqlite" else "%s"


def _executemany(connection: Any, table: str, columns: tuple[str, ...],
                 rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    marks = ", ".join([_placeholder(connection)] * len(columns))
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
    finally:
        cursor.close()


def _write_people(connection: Any, names: list[str], password_hash: str, groups: list[str],
                  members: dict[str, list[str]], peers: list[str], start: int) -> None:
    _executemany(connection, "names", ("name", "kind", "skeleton"),
                 [(n, "user", skeleton(n)) for n in names]
                 + [(g, "group", skeleton(g)) for g in groups])
    _executemany(
        connection, "users",
        ("username", "password_hash", "auth_method", "disabled", "created_at",
         "delivered_until", "revoked_at", "is_admin", "announced_until"),
        [(n, password_hash, "local", False, start, 0, 0, False, 0) for n in names],
    )
    _executemany(connection, "groups", ("chatname", "creator", "created_at"),
                 [(g, MAIN_USER, start) for g in groups])
    _executemany(
        connection, "group_members", ("chatname", "username", "notified", "role", "joined_at"),
        [(g, m, True, "owner" if m == MAIN_USER else "member", start)
         for g in groups for m in members[g]],
    )
    _executemany(connection, "direct_chats", ("username", "chat"),
                 [(n, direct_chat(MAIN_USER, p)) for p in peers for n in (MAIN_USER, p)])


def _message_rows(chooser: random.Random, chats: list[tuple[str, list[str], bool]],
                  words: list[str], count: int, start: int,
                  last_ids: dict[str, int]) -> Iterator[tuple[Any, ...]]:
    """(id, chat, recipient, sender, content, created_at) for every message, in id order."""
    weights = list(itertools.accumulate(1 / (rank + 1) ** ZIPF for rank in range(len(words))))
    pool: list[str] = []
    for message_id in range(1, count + 1):
        if len(pool) < 20:
            pool.extend(chooser.choices(words, cum_weights=weights, k=100_000))
        length = chooser.randint(3, 20)
        content = " ".join(pool[-length:])
        del pool[-length:]
        chat, people, direct = chats[chooser.randrange(len(chats))]
        sender = chooser.choice(people)
        recipient = (people[1] if sender == people[0] else people[0]) if direct else None
        last_ids[chat] = message_id
        yield (message_id, chat, recipient, sender, content, start + message_id * 10)


def _insert_sqlite(connection: Any, chunk: list[tuple[Any, ...]]) -> None:
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.executemany(
            "INSERT INTO messages (id, chat, recipient, sender, content, created_at, edited, deleted) "
            "VALUES (?, ?, ?, ?, ?, ?, 0, 0)", chunk,
        )
    finally:
        cursor.close()


def _copy_postgresql(connection: Any, rows: Iterator[tuple[Any, ...]]) -> None:
    cursor = connection.connection.driver_connection.cursor()
    try:
        with cursor.copy(
            "COPY messages (id, chat, recipient, sender, content, created_at, edited, deleted) "
            "FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row((*row, False, False))
    finally:
        cursor.close()


def _finish(connection: Any, last: int) -> None:
    """Nothing to deliver at sign-in; PostgreSQL's id sequence continues after the rows."""
    connection.exec_driver_sql(f"UPDATE users SET delivered_until = {int(last)}")
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('messages', 'id'), {max(int(last), 1)})"
        )
        connection.exec_driver_sql("ANALYZE")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dataset", description=__doc__.splitlines()[0])
    parser.add_argument("url", help="SQLAlchemy URL of an empty database")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    made = build(args.url, args.users, args.conversations, args.messages, args.seed)
    print(f"{made.messages} messages in {len(made.last_ids)} conversations, "
          f"{len(made.users)} users: {made.seconds:.1f} s (sign in as {made.main_user} / {made.password})")


if __name__ == "__main__":
    main()
