"""The schema comes from the packaged Alembic migrations, and start-up guards it."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from chateau import schema
from chateau.store import _add_messages_txn, make_engine, messages, metadata


def test_migrations_build_exactly_the_schema_the_code_uses(database_url):
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            schema.prepare(connection)
            assert schema.current_revision(connection) == schema.head_revision()
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
        assert differences == []
        with engine.begin() as connection:
            schema.prepare(connection)  # idempotent on an up-to-date database
    finally:
        engine.dispose()


def test_an_older_schema_is_refused_with_the_upgrade_command(database_url):
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            schema.prepare(connection)
            connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
        with engine.begin() as connection:
            with pytest.raises(schema.SchemaOutOfDate) as info:
                schema.prepare(connection)
        assert "chateau-admin db upgrade" in str(info.value)
    finally:
        engine.dispose()


def test_a_message_batch_gets_database_ids_in_batch_order_with_its_origin(database_url):
    """The writer's batch INSERT (the DB-API cursor on SQLite) numbers rows in order."""
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            schema.prepare(connection)
        batch = [("@a:b", "a", f"m{n}", "b" if n % 2 else None) for n in range(25)]
        with engine.begin() as connection:
            first = _add_messages_txn(connection, batch[:3], None)
        with engine.begin() as connection:
            stored = _add_messages_txn(connection, batch, "node-1")
        ids = [message.id for message in stored]
        assert ids == sorted(ids) and len(set(ids)) == len(batch)
        assert ids[0] > first[-1].id
        with engine.connect() as connection:
            rows = connection.execute(
                select(messages.c.id, messages.c.content, messages.c.recipient,
                       messages.c.origin, messages.c.edited, messages.c.deleted)
                .where(messages.c.id.in_(ids)).order_by(messages.c.id)
            ).all()
        assert [(row.id, row.content, row.recipient) for row in rows] == [
            (message_id, content, recipient)
            for message_id, (_, _, content, recipient) in zip(ids, batch)
        ]
        assert {(row.origin, row.edited, row.deleted) for row in rows} == {("node-1", False, False)}
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_with_a_long_checkpoint_interval(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.sqlite3'}")
    try:
        with engine.connect() as connection:
            def pragma(name: str) -> object:
                return connection.exec_driver_sql(f"PRAGMA {name}").scalar()

            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 1  # NORMAL
            assert pragma("wal_autocheckpoint") == 10000
            assert pragma("journal_size_limit") == 64 * 1024 * 1024
            assert pragma("foreign_keys") == 1
    finally:
        engine.dispose()
