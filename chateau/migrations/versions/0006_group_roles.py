"""Roles in groups, when each member joined, and each group's topic and settings.

``group_members.role`` is ``owner``, ``admin`` or ``member``; a group always
keeps an owner. Existing groups: the creator, if still a member, becomes the
owner; otherwise the first member by name (nobody else could have joined
later, so every member joined when the group was made). ``joined_at`` is the
group's creation time for existing members; ``muted_until`` is empty.
The topic and settings columns take the defaults every group had until now:
no topic, joined by invitation, private, only admins add, everyone sends.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("group_members") as batch:
        batch.add_column(sa.Column("role", sa.String(8), nullable=False, server_default="member"))
        batch.add_column(sa.Column("joined_at", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("muted_until", sa.BigInteger, nullable=True))
    with op.batch_alter_table("groups") as batch:
        batch.add_column(sa.Column("topic", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("join_rule", sa.String(8), nullable=False, server_default="invite"))
        batch.add_column(
            sa.Column("visibility", sa.String(8), nullable=False, server_default="private")
        )
        batch.add_column(
            sa.Column("who_can_add", sa.String(8), nullable=False, server_default="admins")
        )
        batch.add_column(
            sa.Column("who_can_send", sa.String(8), nullable=False, server_default="everyone")
        )
    op.execute(
        "UPDATE group_members SET joined_at = (SELECT created_at FROM groups "
        "WHERE groups.chatname = group_members.chatname)"
    )
    op.execute(
        "UPDATE group_members SET role = 'owner' WHERE username = (SELECT creator FROM groups "
        "WHERE groups.chatname = group_members.chatname)"
    )
    op.execute(
        "UPDATE group_members SET role = 'owner' WHERE username = ("
        "SELECT MIN(m.username) FROM group_members m WHERE m.chatname = group_members.chatname) "
        "AND NOT EXISTS (SELECT 1 FROM group_members o WHERE o.chatname = group_members.chatname "
        "AND o.role = 'owner')"
    )


def downgrade() -> None:
    with op.batch_alter_table("groups") as batch:
        for column in ("who_can_send", "who_can_add", "visibility", "join_rule", "topic"):
            batch.drop_column(column)
    with op.batch_alter_table("group_members") as batch:
        for column in ("muted_until", "joined_at", "role"):
            batch.drop_column(column)
