"""Message search: a full-text index of what people wrote.

PostgreSQL: ``messages.search_vector``, a stored generated tsvector of each
message's content (NULL for group events and change rows), so every insert,
edit and deletion updates it in the same statement, and the GIN index
``ix_messages_search_vector`` over it. SQLite: the FTS5 table
``messages_fts``, an external-content index of ``messages`` (it stores no
copy of the words), kept in step by triggers on insert, content update and
delete of messages, events and change rows left out.

Both are built for the ``simple`` language (words as written); a server
configured with another ``[search] language`` rebuilds them at start-up
(chateau.store.search.ensure_language). Existing messages are indexed here.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# The rows the index holds: what people wrote, not deleted.
_INDEXED = "{row}.changes IS NULL AND {row}.event IS NULL AND {row}.content IS NOT NULL"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
            "CASE WHEN changes IS NULL AND event IS NULL "
            "THEN to_tsvector('simple'::regconfig, coalesce(content, '')) END) STORED"
        )
        op.execute(
            "CREATE INDEX ix_messages_search_vector ON messages USING gin (search_vector)"
        )
        return
    op.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', "
        "content_rowid='id', columnsize=0, tokenize='unicode61 remove_diacritics 2')"
    )
    new, old = _INDEXED.format(row="new"), _INDEXED.format(row="old")
    op.execute(
        f"CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN {new} BEGIN "
        "INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content); END"
    )
    op.execute(
        f"CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN {old} BEGIN "
        "INSERT INTO messages_fts (messages_fts, rowid, content) "
        "VALUES ('delete', old.id, old.content); END"
    )
    op.execute(
        "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN "
        "INSERT INTO messages_fts (messages_fts, rowid, content) "
        f"SELECT 'delete', old.id, old.content WHERE {old}; "
        "INSERT INTO messages_fts (rowid, content) "
        f"SELECT new.id, new.content WHERE {new}; END"
    )
    op.execute(
        "INSERT INTO messages_fts (rowid, content) SELECT id, content FROM messages "
        f"WHERE {_INDEXED.format(row='messages')}"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_messages_search_vector")
        op.execute("ALTER TABLE messages DROP COLUMN search_vector")
        return
    for trigger in ("messages_fts_insert", "messages_fts_delete", "messages_fts_update"):
        op.execute(f"DROP TRIGGER {trigger}")
    op.execute("DROP TABLE messages_fts")
