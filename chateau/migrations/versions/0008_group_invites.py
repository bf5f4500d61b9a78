"""Invite codes of groups: ``GroupInviteRequest`` makes one, ``GroupJoinRequest`` uses it.

Only a code's SHA-256 is stored (as for account invites, 0004). ``uses``
counts up as people join; ``max_uses`` NULL is unlimited. A code expires at
``expires_at``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "group_invites",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("chatname", sa.String(64), sa.ForeignKey("groups.chatname"), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("max_uses", sa.Integer, nullable=True),
        sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_group_invites_chatname", "group_invites", ["chatname"])


def downgrade() -> None:
    op.drop_index("ix_group_invites_chatname", "group_invites")
    op.drop_table("group_invites")
