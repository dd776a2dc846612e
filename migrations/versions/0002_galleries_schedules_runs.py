"""Galleries, their images, schedules and runs; jobs learn their gallery and run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 01:07:01.240981
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kseg.shared.store.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "galleries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("created_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["owners.id"],
            name=op.f("fk_galleries_owner_id_owners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_galleries")),
    )
    with op.batch_alter_table("galleries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_galleries_owner_created", ["owner_id", "created_at", "id"], unique=False
        )

    op.create_table(
        "gallery_images",
        sa.Column("gallery_id", sa.String(length=36), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=False),
        sa.Column("added_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["gallery_id"],
            ["galleries.id"],
            name=op.f("fk_gallery_images_gallery_id_galleries"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_gallery_images_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("gallery_id", "image_id", name=op.f("pk_gallery_images")),
    )
    with op.batch_alter_table("gallery_images", schema=None) as batch_op:
        batch_op.create_index(
            "ix_gallery_images_gallery_added", ["gallery_id", "added_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_gallery_images_image_id"), ["image_id"], unique=False)

    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("gallery_id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("params_key", sa.String(length=64), nullable=False),
        sa.Column("only_stale", sa.Boolean(), nullable=False),
        sa.Column("scheduled_for", kseg.shared.store.models.UTCDateTime(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("created_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.Column("finished_at", kseg.shared.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["gallery_id"],
            ["galleries.id"],
            name=op.f("fk_runs_gallery_id_galleries"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["owners.id"], name=op.f("fk_runs_owner_id_owners"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_runs_gallery_created", ["gallery_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_runs_status", ["status"], unique=False)

    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("gallery_id", sa.String(length=36), nullable=False),
        sa.Column("cron", sa.String(length=120), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("only_stale", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", kseg.shared.store.models.UTCDateTime(), nullable=True),
        sa.Column("last_run_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["gallery_id"],
            ["galleries.id"],
            name=op.f("fk_schedules_gallery_id_galleries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("gallery_id", name=op.f("uq_schedules_gallery_id")),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index("ix_schedules_due", ["enabled", "next_run_at"], unique=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gallery_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("run_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_gallery_id"), ["gallery_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_run_id"), ["run_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_run_id_runs"), "runs", ["run_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_gallery_id_galleries"),
            "galleries",
            ["gallery_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_gallery_id_galleries"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_jobs_run_id_runs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_run_id"))
        batch_op.drop_index(batch_op.f("ix_jobs_gallery_id"))
        batch_op.drop_column("run_id")
        batch_op.drop_column("gallery_id")

    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_schedules_due")

    op.drop_table("schedules")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_status")
        batch_op.drop_index("ix_runs_gallery_created")

    op.drop_table("runs")
    with op.batch_alter_table("gallery_images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gallery_images_image_id"))
        batch_op.drop_index("ix_gallery_images_gallery_added")

    op.drop_table("gallery_images")
    with op.batch_alter_table("galleries", schema=None) as batch_op:
        batch_op.drop_index("ix_galleries_owner_created")

    op.drop_table("galleries")
