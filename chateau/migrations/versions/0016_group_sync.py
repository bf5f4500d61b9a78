"""Groups synced from the directory.

``groups.directory_dn`` is the DN of the directory group a synced group
follows (NULL: an ordinary group); unique, so one directory group is never
two chat groups. ``group_sync_runs`` holds one row: when a node last
started a sync, so that one node at a time runs it in a cluster
(chateau.store.group_sync.claim_run_txn).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("groups", sa.Column("directory_dn", sa.Text, nullable=True))
    op.create_index("ux_groups_directory_dn", "groups", ["directory_dn"], unique=True)
    runs = op.create_table(
        "group_sync_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("node", sa.String(64), nullable=False, server_default=""),
    )
    op.bulk_insert(runs, [{"id": 1, "started_at": 0, "node": ""}])


def downgrade() -> None:
    op.drop_table("group_sync_runs")
    op.drop_index("ux_groups_directory_dn", table_name="groups")
    op.drop_column("groups", "directory_dn")
