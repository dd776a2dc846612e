"""Thumbnails: ``thumbnails``, a small WebP per original or output and size (issue 24).

Made on their first request and kept; each goes with its image or output (the foreign keys
cascade). Their bytes are WebP, already compressed, so on PostgreSQL they are stored without
TOAST compression, like the images and outputs (0003).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kseg.shared.store.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "thumbnails",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=True),
        sa.Column("output_id", sa.String(length=36), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("data", kseg.shared.store.models.Blob(), nullable=False),
        sa.Column("created_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "(image_id IS NULL) <> (output_id IS NULL)",
            name=op.f("ck_thumbnails_one_source"),
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_thumbnails_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["output_id"],
            ["result_outputs.id"],
            name=op.f("fk_thumbnails_output_id_result_outputs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_thumbnails")),
        sa.UniqueConstraint("image_id", "size", name="uq_thumbnails_image_size"),
        sa.UniqueConstraint("output_id", "size", name="uq_thumbnails_output_size"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE "thumbnails" ALTER COLUMN "data" SET STORAGE EXTERNAL')


def downgrade() -> None:
    op.drop_table("thumbnails")
