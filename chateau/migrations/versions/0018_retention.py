"""Retention: a group's own message retention, and the claim of daily jobs.

``groups.retention_days`` (NULL: the server's ``[chat] retention_days``;
0: keep forever) is set by GroupUpdateRequest. ``scheduled_runs`` holds one
row per periodic job that only one node of a cluster may run at a time (the
daily retention purge): a node runs the job only after claiming its row
(chateau.store.retention.claim_run_txn).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("groups", sa.Column("retention_days", sa.Integer, nullable=True))
    op.create_table(
        "scheduled_runs",
        sa.Column("job", sa.String(32), primary_key=True),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("node", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("scheduled_runs")
    op.drop_column("groups", "retention_days")
