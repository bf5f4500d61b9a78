"""The schema comes from the packaged Alembic migrations, and start-up guards it."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from chateau import schema
from chateau.store import make_engine, metadata


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
