"""Names that look alike: every name's UTS #39 skeleton, and the flagged ones.

names.skeleton gets a unique index, so a new name confusable with an
existing one is refused. Existing names are never renamed: when several
already share a skeleton, the oldest (by creation time, then name) holds it
and the others keep working with a NULL skeleton and a row in
name_collisions, which `chateau-admin names collisions` lists and the server
warns of at start-up.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

import time

import sqlalchemy as sa
from alembic import op

from chateau.names import skeleton

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SKELETON_LENGTH = 512

names = sa.table(
    "names", sa.column("name", sa.String), sa.column("skeleton", sa.String),
)
users = sa.table("users", sa.column("username", sa.String), sa.column("created_at", sa.BigInteger))
groups = sa.table("groups", sa.column("chatname", sa.String), sa.column("created_at", sa.BigInteger))
collisions = sa.table(
    "name_collisions",
    sa.column("name", sa.String), sa.column("confusable_with", sa.String),
    sa.column("skeleton", sa.String), sa.column("flagged_at", sa.BigInteger),
)


def upgrade() -> None:
    op.add_column("names", sa.Column("skeleton", sa.String(SKELETON_LENGTH), nullable=True))
    op.create_table(
        "name_collisions",
        sa.Column("name", sa.String(64), sa.ForeignKey("names.name"), primary_key=True),
        sa.Column("confusable_with", sa.String(64), sa.ForeignKey("names.name"),
                  nullable=False),
        sa.Column("skeleton", sa.String(SKELETON_LENGTH), nullable=False),
        sa.Column("flagged_at", sa.BigInteger, nullable=False),
    )
    connection = op.get_bind()
    created = sa.func.coalesce(users.c.created_at, groups.c.created_at, 0)
    rows = connection.execute(
        sa.select(names.c.name, created)
        .select_from(
            names.outerjoin(users, users.c.username == names.c.name)
            .outerjoin(groups, groups.c.chatname == names.c.name)
        )
        .order_by(created, names.c.name)
    ).all()
    holders: dict[str, str] = {}
    held: list[dict[str, str]] = []
    flagged: list[dict[str, object]] = []
    flagged_at = int(time.time() * 1000)
    for name, _created in rows:
        shape = skeleton(name)
        holder = holders.setdefault(shape, name)
        if holder == name:
            held.append({"key": name, "shape": shape})
        else:
            flagged.append({"name": name, "confusable_with": holder, "skeleton": shape,
                            "flagged_at": flagged_at})
    if held:
        connection.execute(
            sa.update(names).where(names.c.name == sa.bindparam("key"))
            .values(skeleton=sa.bindparam("shape")),
            held,
        )
    if flagged:
        connection.execute(sa.insert(collisions), flagged)
    op.create_index("ux_names_skeleton", "names", ["skeleton"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_names_skeleton", table_name="names")
    op.drop_table("name_collisions")
    with op.batch_alter_table("names") as batch:
        batch.drop_column("skeleton")
