"""Removals from groups that the removed user has not been told of yet.

A member removed (or banned) while offline anywhere gets
``GroupRemovedRecv`` at their next sign-in, as an added member gets the
group's 201 notice; the row goes once it is pushed.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "removal_notices",
        sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
        sa.Column("chatname", sa.String(64), primary_key=True),
        sa.Column("removed_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("banned", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("removed_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("removal_notices")
