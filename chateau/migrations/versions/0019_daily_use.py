"""Daily use: read markers, mentions, change rows and per-device sync positions.

``read_markers`` holds how far each user has read each conversation;
existing users start with everything delivered to them read (their
``delivered_until``), so an upgrade does not light up every old message as
unread. ``messages.mentions`` lists who a group message mentions;
``messages.changes`` marks the rows that record an edit or a deletion of
another message. ``sessions.sync_position`` is each session key's
SyncRequest position; existing keys start at their user's
``delivered_until``.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "read_markers",
        sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
        sa.Column("chat", sa.String(160), primary_key=True),
        sa.Column("last_read_id", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.add_column("messages", sa.Column("mentions", sa.Text, nullable=True))
    op.add_column("messages", sa.Column("changes", sa.BigInteger, nullable=True))
    op.add_column(
        "sessions",
        sa.Column("sync_position", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.execute(
        "UPDATE sessions SET sync_position = (SELECT users.delivered_until FROM users "
        "WHERE users.username = sessions.username)"
    )
    now = "(SELECT COALESCE(MAX(created_at), 0) FROM messages)"
    op.execute(
        "INSERT INTO read_markers (username, chat, last_read_id, updated_at) "
        f"SELECT group_members.username, group_members.chatname, users.delivered_until, {now} "
        "FROM group_members JOIN users ON users.username = group_members.username"
    )
    op.execute(
        "INSERT INTO read_markers (username, chat, last_read_id, updated_at) "
        f"SELECT direct_chats.username, direct_chats.chat, users.delivered_until, {now} "
        "FROM direct_chats JOIN users ON users.username = direct_chats.username"
    )


def downgrade() -> None:
    op.drop_column("sessions", "sync_position")
    op.drop_column("messages", "changes")
    op.drop_column("messages", "mentions")
    op.drop_table("read_markers")
