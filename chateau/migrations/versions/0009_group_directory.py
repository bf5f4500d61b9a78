"""The public group directory reads only public groups: an index on groups.visibility.

GroupDirectoryRequest lists public groups with their member counts in one
query; the index keeps it from reading every group. Nothing else changes:
a group's topic and settings have had their columns since 0006, and a
rename moves rows between existing tables.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_groups_visibility", "groups", ["visibility"])


def downgrade() -> None:
    op.drop_index("ix_groups_visibility", "groups")
