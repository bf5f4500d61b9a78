"""The database schema's version: Alembic migrations shipped in the package.

The migrations live in ``chateau/migrations/`` and build the tables of
chateau.store.tables; this module checks and applies them.

Decision: start-up creates the schema on an empty database (so a fresh
install needs no extra step) but refuses to run on a database whose schema
is older than this code, with a line naming ``chateau-admin db upgrade``.
Upgrading is the operator's explicit step, taken after a backup.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

UPGRADE_COMMAND = "chateau-admin db upgrade"


class SchemaOutOfDate(Exception):
    """The database needs ``chateau-admin db upgrade`` before this code can use it."""


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", "chateau:migrations")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def table_names(connection: Connection) -> set[str]:
    """The tables the database has, whoever made them."""
    return set(inspect(connection).get_table_names())


def upgrade(connection: Connection) -> None:
    """Bring the schema to the newest revision (``chateau-admin db upgrade``)."""
    command.upgrade(_alembic_config(connection), "head")


# Any constant: serialises schema checks of nodes starting at the same moment.
_SCHEMA_LOCK = 0x43686174


def prepare(connection: Connection) -> None:
    """Create the schema on an empty database; refuse an outdated one."""
    if connection.dialect.name == "postgresql":
        # Several nodes of a cluster may start together on an empty database:
        # one creates the schema, the others wait and find it done.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
    current = current_revision(connection)
    head = head_revision()
    if current == head:
        return
    if current is None:
        if table_names(connection) & {"users", "groups", "messages"}:
            raise SchemaOutOfDate(
                "the database has Chateau tables but no schema version; "
                f"run `{UPGRADE_COMMAND}` after checking it"
            )
        upgrade(connection)
        return
    raise SchemaOutOfDate(
        f"the database schema is at revision {current} but this Chateau needs {head}: "
        f"back it up, then run `{UPGRADE_COMMAND}`"
    )


def upgrade_to_head(connection: Connection) -> tuple[str | None, str]:
    """Apply the packaged migrations; the revisions before and after."""
    before = current_revision(connection)
    upgrade(connection)
    after = current_revision(connection)
    assert after is not None
    return before, after
