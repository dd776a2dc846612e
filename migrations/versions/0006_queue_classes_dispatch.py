"""Two classes of work and a dispatch window: jobs gain ``queue`` and ``dispatched_at``,
worker heartbeats their pool size and classes, and ``dispatch_locks`` one row per class.

Jobs already queued or running were published by the code before this one: they count as
dispatched (since they were queued), so the sweeper publishes again any whose message went to
the old single queue, which no worker reads any more.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kseg.shared.store.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

WAITING = "status = 'queued' AND dispatched_at IS NULL"
IN_FLIGHT = "status IN ('queued', 'running') AND dispatched_at IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("queue", sa.String(length=16), nullable=False, server_default="interactive")
        )
        batch.add_column(
            sa.Column("dispatched_at", kseg.shared.store.models.UTCDateTime(), nullable=True)
        )
    jobs = sa.table(
        "jobs",
        sa.column("queue", sa.String),
        sa.column("run_id", sa.String),
        sa.column("status", sa.String),
        sa.column("queued_at", sa.DateTime),
        sa.column("dispatched_at", sa.DateTime),
    )
    op.execute(jobs.update().where(jobs.c.run_id.is_not(None)).values(queue="batch"))
    op.execute(
        jobs.update()
        .where(jobs.c.status.in_(("queued", "running")))
        .values(dispatched_at=jobs.c.queued_at)
    )
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("queue", server_default=None)
    for name, columns, where in (
        ("ix_jobs_waiting", ["queue", "owner_id", "run_id", "created_at"], WAITING),
        ("ix_jobs_in_flight", ["queue", "owner_id", "run_id"], IN_FLIGHT),
    ):
        op.create_index(
            name,
            "jobs",
            columns,
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )
    with op.batch_alter_table("worker_heartbeats") as batch:
        batch.add_column(sa.Column("concurrency", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("queues", sa.String(length=64), nullable=False, server_default="")
        )
    with op.batch_alter_table("worker_heartbeats") as batch:
        batch.alter_column("concurrency", server_default=None)
        batch.alter_column("queues", server_default=None)
    locks = op.create_table(
        "dispatch_locks",
        sa.Column("queue", sa.String(length=16), nullable=False),
        sa.Column("topped_up_at", kseg.shared.store.models.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("queue", name=op.f("pk_dispatch_locks")),
    )
    op.bulk_insert(locks, [{"queue": "interactive"}, {"queue": "batch"}])


def downgrade() -> None:
    op.drop_table("dispatch_locks")
    with op.batch_alter_table("worker_heartbeats") as batch:
        batch.drop_column("queues")
        batch.drop_column("concurrency")
    op.drop_index("ix_jobs_in_flight", table_name="jobs")
    op.drop_index("ix_jobs_waiting", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("dispatched_at")
        batch.drop_column("queue")
