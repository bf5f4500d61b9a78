"""The first schema: names, users, groups, messages, sessions, contacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "names",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("username", sa.String(64), sa.ForeignKey("names.name"), primary_key=True),
        sa.Column("password_hash", sa.String(128), nullable=True),
        sa.Column("auth_method", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(256), nullable=True),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("delivered_until", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "groups",
        sa.Column("chatname", sa.String(64), sa.ForeignKey("names.name"), primary_key=True),
        sa.Column("creator", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "group_members",
        sa.Column("chatname", sa.String(64), sa.ForeignKey("groups.chatname"), primary_key=True),
        sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
        sa.Column("notified", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_index("ix_group_members_username", "group_members", ["username"])
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("chat", sa.String(160), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=True),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("content", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("edited", sa.Boolean, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
    )
    op.create_index("ix_messages_chat_id", "messages", ["chat", "id"])
    op.create_index("ix_messages_recipient_id", "messages", ["recipient", "id"])
    op.create_table(
        "sessions",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_sessions_username", "sessions", ["username"])
    op.create_table(
        "contacts",
        sa.Column("requester", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
        sa.Column("addressee", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
        sa.Column("accepted", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_contacts_addressee", "contacts", ["addressee"])


def downgrade() -> None:
    for table in ("contacts", "sessions", "messages", "group_members", "groups", "users", "names"):
        op.drop_table(table)
