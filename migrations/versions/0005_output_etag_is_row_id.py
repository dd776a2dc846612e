"""Result outputs lose their SHA-256: an output row never changes, so its id is the ETag.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("result_outputs") as batch:
        batch.drop_column("sha256")


def downgrade() -> None:
    with op.batch_alter_table("result_outputs") as batch:
        batch.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))
    bind = op.get_bind()
    outputs = sa.table(
        "result_outputs",
        sa.column("id", sa.String),
        sa.column("result_id", sa.String),
        sa.column("name", sa.String),
        sa.column("data", sa.LargeBinary),
        sa.column("payload_of", sa.String),
        sa.column("sha256", sa.String),
    )
    rows = bind.execute(
        sa.select(outputs.c.id, outputs.c.result_id, outputs.c.payload_of, outputs.c.data)
    ).all()
    for row in rows:
        png = bytes(row.data)
        if row.payload_of is not None:  # a head only: the rest is the holder's image data
            holder = bind.execute(
                sa.select(outputs.c.data).where(
                    outputs.c.result_id == row.result_id, outputs.c.name == row.payload_of
                )
            ).scalar_one()
            holder = bytes(holder)
            png += holder[_idat_offset(holder) :]
        bind.execute(
            sa.update(outputs)
            .where(outputs.c.id == row.id)
            .values(sha256=hashlib.sha256(png).hexdigest())
        )
    with op.batch_alter_table("result_outputs") as batch:
        batch.alter_column("sha256", existing_type=sa.String(length=64), nullable=False)


def _idat_offset(png: bytes) -> int:
    # Kept here, not imported from shared.render: a migration must not change with the code.
    pos = 8
    while pos + 8 <= len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        if png[pos + 4 : pos + 8] == b"IDAT":
            return pos
        pos += 12 + length
    raise ValueError("a stored output PNG without image data")
