"""SQLite: the message writer indexes its batch for search in one statement.

Migration 0020 kept ``messages_fts`` in step with an AFTER INSERT trigger,
whose FTS5 insert, run once per row inside the writer's INSERT, cost the
writer about 12 µs more per message than one statement indexing the whole
batch after it (docs/performance.md). The trigger now stands aside while
the marker table ``messages_fts_by_writer`` has a row: the message writer
adds one at the start of its transaction, indexes the batch itself after
its INSERT (chateau.store.messages.add_messages_txn) and removes the row
before it commits, so no other transaction ever sees it. Every other
insert is indexed by the trigger as before, and edits and deletions by
theirs. PostgreSQL is unchanged (its generated column is computed by the
INSERT itself).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_INDEXED = "new.changes IS NULL AND new.event IS NULL AND new.content IS NOT NULL"
_BODY = "BEGIN INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content); END"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("CREATE TABLE messages_fts_by_writer (marker INTEGER)")
    op.execute("DROP TRIGGER messages_fts_insert")
    op.execute(
        f"CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN {_INDEXED} "
        f"AND NOT EXISTS (SELECT 1 FROM messages_fts_by_writer) {_BODY}"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP TRIGGER messages_fts_insert")
    op.execute(f"CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN {_INDEXED} {_BODY}")
    op.execute("DROP TABLE messages_fts_by_writer")
