"""Session keys become devices a user can see and revoke; users get a status text.

``sessions.id`` is a public name for a key (16 hex characters, random, never
derived from the key): SessionListRequest shows it and SessionRevokeRequest
takes it. Existing keys get a random one each. ``last_used_at`` (ms) is set at
sign-in and resume and refreshed while the key is in use, at most every few
minutes; existing keys start with their creation time. ``address`` and
``client_name`` are where the key was last used from and what the client
called itself (unknown for existing keys). ``users.status_text`` is the
short text a user shows next to their name (ProfileRequest).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nothing refers to sessions, so SQLite may rebuild it (a batch) to make
    # the new id NOT NULL once every existing key has one.
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("id", sa.String(16), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("address", sa.String(64), nullable=True))
        batch.add_column(sa.Column("client_name", sa.String(64), nullable=True))
    connection = op.get_bind()
    sessions = sa.table(
        "sessions", sa.column("key_hash", sa.String), sa.column("id", sa.String),
        sa.column("created_at", sa.BigInteger), sa.column("last_used_at", sa.BigInteger),
    )
    key_hashes = [row.key_hash for row in connection.execute(sa.select(sessions.c.key_hash))]
    for key_hash in key_hashes:
        connection.execute(
            sa.update(sessions).where(sessions.c.key_hash == key_hash)
            .values(id=secrets.token_hex(8), last_used_at=sessions.c.created_at)
        )
    with op.batch_alter_table("sessions") as batch:
        batch.alter_column("id", existing_type=sa.String(16), nullable=False)
        batch.create_index("ux_sessions_id", ["id"], unique=True)
    # A plain ADD COLUMN: rebuilding users (a batch on SQLite) would trip the
    # foreign keys that point at it.
    op.add_column("users", sa.Column("status_text", sa.String(140), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "status_text")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ux_sessions_id")
        for column in ("client_name", "address", "last_used_at", "id"):
            batch.drop_column(column)
