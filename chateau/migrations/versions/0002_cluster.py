"""Cluster mode: a message's origin node, per-origin delivery cursors, the nodes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("origin", sa.String(64), nullable=True))
    op.create_table(
        "delivery_cursors",
        sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
        sa.Column("origin", sa.String(64), primary_key=True),
        sa.Column("delivered_until", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "cluster_nodes",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("first_seen", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cluster_nodes")
    op.drop_table("delivery_cursors")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("origin")
