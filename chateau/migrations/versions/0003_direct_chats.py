"""Offline delivery of direct messages through each user's direct chats.

The index on messages.recipient goes: it cost every commit a second index
page per direct chat. Users' direct chats are filled in from the messages
already stored.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "direct_chats",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("chat", sa.String(160), primary_key=True),
    )
    op.execute(
        "INSERT INTO direct_chats (username, chat) "
        "SELECT recipient, chat FROM messages WHERE recipient IS NOT NULL "
        "UNION SELECT sender, chat FROM messages WHERE recipient IS NOT NULL"
    )
    op.drop_index("ix_messages_recipient_id", table_name="messages")


def downgrade() -> None:
    op.create_index("ix_messages_recipient_id", "messages", ["recipient", "id"])
    op.drop_table("direct_chats")
