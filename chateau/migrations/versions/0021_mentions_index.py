"""An index of the messages that mention someone, for unread mentions.

A conversation's unread mentions (ConversationsRequest) were counted by
reading every unread message after the reader's marker and testing its
``mentions``: thousands of rows for a reader far behind, for a count that
is usually 0. ``ix_messages_mentioned`` is a partial index on (chat, id)
of only the rows whose ``mentions`` is set, so the count reads the few
messages that mention anyone.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

MENTIONED = sa.text("mentions IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_messages_mentioned", "messages", ["chat", "id"],
        sqlite_where=MENTIONED, postgresql_where=MENTIONED,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_mentioned", table_name="messages")
