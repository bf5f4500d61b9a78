"""Deprovisioning: when each directory account was last checked, and why it was shut out.

``users.directory_checked_at`` (ms) is the last successful check of a
directory account against the directory, or its last directory sign-in:
``[ldap] recheck_interval`` after it, the account is checked again while it
has live session keys or connections. Nodes claim due accounts by moving
this stamp forward in one ``UPDATE ... WHERE directory_checked_at < cutoff``,
so two nodes never check the same account in one interval.

``users.deprovisioned_at`` (ms) and ``deprovision_reason`` (missing,
disabled, not_in_group) mark an account the directory no longer lets in; a
directory sign-in that succeeds again clears them.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("directory_checked_at", sa.BigInteger, nullable=True))
    op.add_column("users", sa.Column("deprovisioned_at", sa.BigInteger, nullable=True))
    op.add_column("users", sa.Column("deprovision_reason", sa.String(16), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "deprovision_reason")
    op.drop_column("users", "deprovisioned_at")
    op.drop_column("users", "directory_checked_at")
