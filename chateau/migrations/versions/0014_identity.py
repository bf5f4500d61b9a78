"""Whom a held name is kept for.

A renamed directory user's old name is held (``names.kind`` "held" until
``held_until``) so that nobody else takes it while people still know them
by it. ``held_for`` is the directory id (``users.directory_id``) of the
account that had it: that account alone may take it back before the hold
ends (a uid renamed by mistake and renamed back). NULL for a hold kept for
nobody.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("names", sa.Column("held_for", sa.String(255), nullable=True))


def downgrade() -> None:
    op.drop_column("names", "held_for")
