"""Owners, API tokens, images, jobs, results and worker heartbeats.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 00:49:58.705620
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kseg.shared.store.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_owners")),
        sa.UniqueConstraint("name", name=op.f("uq_owners_name")),
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.Column("seen_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.Column("jobs_done", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("hostname", name=op.f("pk_worker_heartbeats")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("one_time", sa.Boolean(), nullable=False),
        sa.Column("created_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.Column("last_used_at", kseg.shared.store.models.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", kseg.shared.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["owners.id"],
            name=op.f("fk_api_tokens_owner_id_owners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "images",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("format", sa.String(length=20), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("data", kseg.shared.store.models.Blob(), nullable=False),
        sa.Column("created_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["owners.id"], name=op.f("fk_images_owner_id_owners"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("owner_id", "sha256", name="uq_images_owner_sha256"),
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_images_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "results",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=False),
        sa.Column("params_key", sa.String(length=64), nullable=False),
        sa.Column("algorithm_version", sa.String(length=20), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_results_image_id_images"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
        sa.UniqueConstraint("job_id", name=op.f("uq_results_job_id")),
    )
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.create_index(
            "ix_results_image_params", ["image_id", "params_key", "created_at"], unique=False
        )

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("params_key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("result_id", sa.String(length=36), nullable=True),
        sa.Column("reused_from", sa.String(length=36), nullable=True),
        sa.Column("created_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.Column("queued_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.Column("started_at", kseg.shared.store.models.UTCDateTime(), nullable=True),
        sa.Column("finished_at", kseg.shared.store.models.UTCDateTime(), nullable=True),
        sa.Column("heartbeat_at", kseg.shared.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_jobs_image_id_images"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["owners.id"], name=op.f("fk_jobs_owner_id_owners"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["result_id"],
            ["results.id"],
            name=op.f("fk_jobs_result_id_results"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_dedup", ["owner_id", "image_id", "params_key", "status"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_jobs_image_id"), ["image_id"], unique=False)
        batch_op.create_index(
            "ix_jobs_owner_created", ["owner_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_jobs_status_queued_at", ["status", "queued_at"], unique=False)

    op.create_table(
        "result_outputs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("result_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("data", kseg.shared.store.models.Blob(), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_id"],
            ["results.id"],
            name=op.f("fk_result_outputs_result_id_results"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_outputs")),
        sa.UniqueConstraint("result_id", "name", name="uq_result_outputs_result_name"),
    )


def downgrade() -> None:
    # jobs refers to results, so it goes first.
    op.drop_table("result_outputs")
    op.drop_table("jobs")
    op.drop_table("results")
    op.drop_table("images")
    op.drop_table("api_tokens")
    op.drop_table("worker_heartbeats")
    op.drop_table("owners")
