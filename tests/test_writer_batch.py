"""The message writer's batch insert, on SQLite and PostgreSQL.

Each database takes the batch its own way (PostgreSQL: one statement of
arrays, pipelined with the lock that orders ids; SQLite: the driver's
cursor, row by row), and both must give each row its id in the batch's
order, store every column as given, and index the batch for search.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from chateau.store import migrate
from chateau.store.engine import in_transaction, make_engine
from chateau.store.messages import add_messages_txn
from chateau.store.tables import direct_chats, messages


def test_a_batch_gets_ids_in_its_order_with_every_column(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as c:
            migrate.prepare(c)
        batch = [
            ("club", "ann", f"hello number {n} zebra{n}", None) for n in range(5)
        ] + [
            ("@ann:ben", "ann", "direct words", "ben"),
            ("club", "ann", "ann added cat", None, json.dumps({"event": "added"})),
            ("club", "ben", "hi @ann", None, None, '["ann"]'),
        ]
        first = in_transaction(engine, add_messages_txn, batch, "node-a", {"@ann:ben"})
        second = in_transaction(engine, add_messages_txn, batch[:2], None, set())
        ids = [stored.id for stored in first + second]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        with engine.connect() as c:
            rows = {row.id: row for row in c.execute(select(messages))}
            chats = set(c.execute(select(direct_chats.c.username, direct_chats.c.chat)))
        for stored, item in zip(first + second, batch + batch[:2]):
            row = rows[stored.id]
            assert (row.chat, row.sender, row.content, row.recipient) == item[:4]
            assert row.event == (item[4] if len(item) > 4 else None)
            assert row.mentions == (item[5] if len(item) > 5 else None)
            assert not row.edited and not row.deleted and row.changes is None
        assert {rows[s.id].origin for s in first} == {"node-a"}
        assert {rows[s.id].origin for s in second} == {None}
        assert len({s.timestamp for s in first}) == 1
        assert chats == {("ann", "@ann:ben"), ("ben", "@ann:ben")}
        # Indexed for search at once, the event left out.
        with engine.connect() as c:
            if c.dialect.name == "postgresql":
                found = c.execute(text(
                    "SELECT id FROM messages WHERE search_vector @@ plainto_tsquery('simple', "
                    "'zebra3')")).scalars().all()
                events = c.execute(text(
                    "SELECT count(*) FROM messages WHERE event IS NOT NULL "
                    "AND search_vector IS NOT NULL")).scalar()
            else:
                found = c.execute(text(
                    "SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'zebra3'"
                )).scalars().all()
                events = c.execute(text(
                    "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'added'"
                )).scalar()
        assert found == [first[3].id]
        assert events == 0
    finally:
        engine.dispose()


def test_a_failed_batch_leaves_nothing_and_the_next_one_goes_in(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as c:
            migrate.prepare(c)
        # A chat name longer than the column allows: PostgreSQL refuses the statement.
        bad = [("club", "ann", "fine", None), ("x" * 500, "ann", "too long a chat", None)]
        if engine.dialect.name == "postgresql":
            with pytest.raises(DBAPIError):
                in_transaction(engine, add_messages_txn, bad, None, set())
        else:
            in_transaction(engine, add_messages_txn, bad, None, set())
        good = in_transaction(engine, add_messages_txn, [("club", "ann", "after", None)], None, set())
        with engine.connect() as c:
            contents = c.execute(select(messages.c.content).order_by(messages.c.id)).scalars().all()
        if engine.dialect.name == "postgresql":
            assert contents == ["after"]
        else:  # SQLite does not check VARCHAR lengths: both went in
            assert contents == ["fine", "too long a chat", "after"]
        assert good[0].id > 0
    finally:
        engine.dispose()
