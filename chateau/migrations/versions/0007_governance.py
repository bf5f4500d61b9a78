"""The shared ground of group governance, personal safety and moderation.

- ``messages.event``: a system event of a group ("bob added carol"), as JSON
  (``{"event": ..., "user": ..., "by": ..., ...}``); NULL for every message a
  person wrote. The row's content is the event in words, so a client that
  knows nothing of events still shows something true.
- ``group_bans``: who may not come back to a group, by any path, until unbanned.
- ``reports``: what users report, with a snapshot of what they reported, so
  that deleting a message afterwards hides nothing from moderators.
- ``users.is_admin``: server admins (``chateau-admin user admin NAME``).
- ``moderation_log``: every moderation action: who, what, whom, when, why.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (SQLite has them): rebuilding users or messages would
    # copy every row, and users is the parent of several foreign keys.
    op.add_column("messages", sa.Column("event", sa.Text, nullable=True))
    op.add_column(
        "users", sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.create_table(
        "group_bans",
        sa.Column("chatname", sa.String(64), sa.ForeignKey("groups.chatname"), primary_key=True),
        sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
        sa.Column("banned_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("banned_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("reporter", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("username", sa.String(64), nullable=True),
        sa.Column("chatname", sa.String(160), nullable=True),
        sa.Column("message_id", sa.BigInteger, nullable=True),
        sa.Column("snapshot", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(8), nullable=False, server_default="open"),
        sa.Column("resolved_by", sa.String(64), nullable=True),
        sa.Column("resolved_at", sa.BigInteger, nullable=True),
        sa.Column("action", sa.String(32), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
    )
    op.create_index("ix_reports_status_id", "reports", ["status", "id"])
    op.create_index("ix_reports_reporter_username", "reports", ["reporter", "username"])
    op.create_table(
        "moderation_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(160), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("ix_moderation_log_at", "moderation_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_moderation_log_at", "moderation_log")
    op.drop_table("moderation_log")
    op.drop_index("ix_reports_reporter_username", "reports")
    op.drop_index("ix_reports_status_id", "reports")
    op.drop_table("reports")
    op.drop_table("group_bans")
    # Plain DROP COLUMNs (SQLite has them since 3.35), as the upgrade adds them.
    op.drop_column("users", "is_admin")
    op.drop_column("messages", "event")
