"""The audit log, and the columns a directory account's identity needs.

The moderation log becomes the audit log.
Every moderation action was already one row of ``moderation_log``; the
audit log keeps those rows and adds sign-ins, password changes, session
revocations, deprovisioning, exports and erasures, with the client's
address where a client made the change, and indexes to read one user's
rows (as actor or target).

``users.directory_id`` binds a directory account to its ``[ldap]
id_attribute`` (existing accounts are bound at their next sign-in), and
``names.held_until`` keeps a renamed user's old name (or an erased
account's) from being taken for a while.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_moderation_log_at", table_name="moderation_log")
    op.rename_table("moderation_log", "audit_log")
    op.add_column("audit_log", sa.Column("address", sa.String(64), nullable=True))
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"])
    op.create_index("ix_audit_log_target", "audit_log", ["target"])
    op.add_column("users", sa.Column("directory_id", sa.String(255), nullable=True))
    op.create_index("ux_users_directory_id", "users", ["directory_id"], unique=True)
    op.add_column("names", sa.Column("held_until", sa.BigInteger, nullable=True))


def downgrade() -> None:
    op.drop_column("names", "held_until")
    op.drop_index("ux_users_directory_id", table_name="users")
    op.drop_column("users", "directory_id")
    op.drop_index("ix_audit_log_target", table_name="audit_log")
    op.drop_index("ix_audit_log_actor", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_column("audit_log", "address")
    op.rename_table("audit_log", "moderation_log")
    op.create_index("ix_moderation_log_at", "moderation_log", ["at"])
