"""Operators: server-wide bans, announcements, and notices to every node.

- ``users.banned_until`` / ``users.ban_reason``: a server-wide ban; NULL when
  not banned, the largest 64-bit integer for "until unbanned".
- ``users.announced_until``: the newest announcement given to the user.
- ``announcements``: what server admins announced.
- ``admin_notices``: changes every node must act on (an announcement, a
  message deleted or a group deleted by ``chateau-admin``), polled by each
  node (chateau.notices).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs: users is the parent of several foreign keys.
    op.add_column("users", sa.Column("banned_until", sa.BigInteger, nullable=True))
    op.add_column("users", sa.Column("ban_reason", sa.Text, nullable=True))
    op.add_column(
        "users",
        sa.Column("announced_until", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "announcements",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
    )
    op.create_table(
        "admin_notices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_admin_notices_at", "admin_notices", ["at"])


def downgrade() -> None:
    op.drop_index("ix_admin_notices_at", "admin_notices")
    op.drop_table("admin_notices")
    op.drop_table("announcements")
    # Plain DROP COLUMNs (SQLite has them since 3.35): rebuilding users would
    # break the foreign keys that point at it.
    for column in ("announced_until", "ban_reason", "banned_until"):
        op.drop_column("users", column)
