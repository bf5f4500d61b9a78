"""Invite codes, the per-account revocation stamp, and groups by creator.

``invites`` holds the codes of ``[auth] registration = invite`` (as their
SHA-256). ``users.revoked_at`` is stamped whenever an account's session keys
are revoked; every node polls it to close the connections that used them.
``ix_groups_creator_created_at`` counts the groups a user created lately.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invites",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("revoked_at", sa.BigInteger, nullable=False, server_default="0")
        )
    op.create_index("ix_users_revoked_at", "users", ["revoked_at"])
    op.create_index("ix_groups_creator_created_at", "groups", ["creator", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_groups_creator_created_at", table_name="groups")
    op.drop_index("ix_users_revoked_at", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("revoked_at")
    op.drop_table("invites")
