"""Personal safety: blocks, users' settings, and random pairs never to be made again.

- ``blocks``: who blocks whom. The blocker receives nothing from the blocked
  person any more (live, at catch-up, in history).
- ``user_settings``: a row only for users who changed a setting; no row
  means the defaults (chateau.safety.DEFAULT_SETTINGS).
- ``random_avoid``: pairs of users random chat never pairs again (one left
  a random chat with the other, or blocked them), in either order.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blocks",
        sa.Column("blocker", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
        sa.Column("blocked", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_blocks_blocked", "blocks", ["blocked"])
    op.create_table(
        "user_settings",
        sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), primary_key=True),
        sa.Column("direct_messages", sa.String(8), nullable=False, server_default="everyone"),
        sa.Column("presence", sa.String(8), nullable=False, server_default="everyone"),
        sa.Column("random_chat", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("read_receipts", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_table(
        "random_avoid",
        sa.Column("a", sa.String(64), primary_key=True),
        sa.Column("b", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_random_avoid_b", "random_avoid", ["b"])


def downgrade() -> None:
    op.drop_index("ix_random_avoid_b", "random_avoid")
    op.drop_table("random_avoid")
    op.drop_table("user_settings")
    op.drop_index("ix_blocks_blocked", "blocks")
    op.drop_table("blocks")
