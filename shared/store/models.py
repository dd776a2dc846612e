"""The data model: owners, tokens and web sessions, images, jobs, results and worker heartbeats.

SQLAlchemy 2 typed models. The database is the truth: the broker only wakes workers up, so
every job's state lives in its row. Times are stored as naive UTC and handed out as aware UTC.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from kseg.shared.statuses import JobStatus, RunStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no time zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use shared.models.utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Blob(TypeDecorator[bytes]):
    """Image bytes: BYTEA on PostgreSQL, BLOB elsewhere."""

    impl = LargeBinary
    cache_ok = True


# Stable constraint names, so Alembic migrations name them the same on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        bytes: Blob(),
    }


class Owner(Base):
    __tablename__ = "owners"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="owner")


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # One-time tokens (sign-in links) are spent by their first use.
    one_time: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    owner: Mapped[Owner] = relationship(back_populates="tokens")


class WebSession(Base):
    """A signed-in browser: the pages' session cookie holds only this row's ``id``.

    Sign-out revokes the row, so a copy of the cookie signs nobody in afterwards; revoking the
    token it was started with (``kseg token revoke``) revokes it too. Each request reads it by
    primary key.
    """

    __tablename__ = "web_sessions"

    #: ``secrets.token_urlsafe(32)``: 43 characters.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    #: The token it was started with; None once that token is gone.
    token_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="SET NULL"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Refreshed coarsely (a write on every request would serialise SQLite).
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    #: Loaded with the row: the pages need the owner's name on every request.
    owner: Mapped[Owner] = relationship(lazy="joined", innerjoin=True)


class Image(Base):
    """An uploaded original; the same bytes uploaded twice by one owner are one image."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("owner_id", "sha256", name="uq_images_owner_sha256"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    format: Mapped[str] = mapped_column(String(20))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(Blob(), deferred=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One segmentation request; the row is the truth about its state."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner_id", "created_at", "id"),
        Index("ix_jobs_status_queued_at", "status", "queued_at"),
        Index("ix_jobs_dedup", "owner_id", "image_id", "params_key", "status"),
        # The two small sets the dispatcher reads on every top-up (``shared.dispatch``):
        # jobs waiting in the database for a place in the broker, and jobs in flight
        # (published and not yet finished). Partial, so a finished history costs them nothing.
        Index(
            "ix_jobs_waiting",
            "queue",
            "owner_id",
            "run_id",
            "created_at",
            postgresql_where=text("status = 'queued' AND dispatched_at IS NULL"),
            sqlite_where=text("status = 'queued' AND dispatched_at IS NULL"),
        ),
        Index(
            "ix_jobs_in_flight",
            "queue",
            "owner_id",
            "run_id",
            postgresql_where=text("status IN ('queued', 'running') AND dispatched_at IS NOT NULL"),
            sqlite_where=text("status IN ('queued', 'running') AND dispatched_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON())
    # SHA-256 of the canonical params JSON: equal requests have equal keys.
    params_key: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    #: ``interactive`` (submitted one by one) or ``batch`` (made by a gallery run).
    queue: Mapped[str] = mapped_column(String(16), default="interactive")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    stage: Mapped[str | None] = mapped_column(String(16), default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255), default=None)
    result_id: Mapped[str | None] = mapped_column(
        ForeignKey("results.id", ondelete="SET NULL"), default=None
    )
    # Set when this job reused the result of an earlier identical job instead of computing.
    reused_from: Mapped[str | None] = mapped_column(String(36), default=None)
    # Set for jobs made by a gallery run.
    gallery_id: Mapped[str | None] = mapped_column(
        ForeignKey("galleries.id", ondelete="SET NULL"), default=None, index=True
    )
    run_id: Mapped[str | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: When its message was last published; None while it waits in the database for a place
    #: in its class's window (``shared.dispatch``).
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Where its final status is POSTed (``shared.store.webhooks``); the events wanted,
    #: comma-separated (None: all that apply).
    webhook_url: Mapped[str | None] = mapped_column(Text, default=None)
    webhook_events: Mapped[str | None] = mapped_column(String(200), default=None)

    image: Mapped[Image] = relationship(lazy="joined")
    result: Mapped[Result | None] = relationship(foreign_keys=[result_id], lazy="joined")


class Result(Base):
    """The metadata of one computed segmentation; its PNGs are :class:`ResultOutput` rows."""

    __tablename__ = "results"
    __table_args__ = (Index("ix_results_image_params", "image_id", "params_key", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # The job that computed it; one result per computing job, enforced by the unique key.
    job_id: Mapped[str] = mapped_column(String(36), unique=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    params_key: Mapped[str] = mapped_column(String(64))
    algorithm_version: Mapped[str] = mapped_column(String(20))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    outputs: Mapped[list[ResultOutput]] = relationship(
        back_populates="result", cascade="all, delete-orphan", passive_deletes=True
    )


class ResultOutput(Base):
    """One rendered PNG of a result.

    Outputs that share their image data (``labels``, ``color`` and ``recolor`` are the same
    label map under different palettes) store it once: a row with ``payload_of`` set holds
    only its PNG's head (:func:`shared.render.split_png`) and takes the rest from output
    ``payload_of`` of the same result. ``size_bytes`` is the whole PNG's. A row never changes
    once written, so its ``id`` is the download's ``ETag`` (hashing ~1.5 MB of PNGs per 1 MP
    job cost the worker ~1 ms for a validator the id already is).
    """

    __tablename__ = "result_outputs"
    __table_args__ = (UniqueConstraint("result_id", "name", name="uq_result_outputs_result_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    result_id: Mapped[str] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(Blob(), deferred=True)
    payload_of: Mapped[str | None] = mapped_column(String(16), default=None)

    result: Mapped[Result] = relationship(back_populates="outputs")


class WorkerHeartbeat(Base):
    """Written by every worker process every few seconds; ``/readyz`` and the sweeper read it."""

    __tablename__ = "worker_heartbeats"

    hostname: Mapped[str] = mapped_column(String(255), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    #: Its pool's processes and the classes of work it takes (comma-separated): the
    #: dispatcher sizes each class's window by the processes that take it.
    concurrency: Mapped[int] = mapped_column(Integer, default=0)
    queues: Mapped[str] = mapped_column(String(64), default="")


class DispatchLock(Base):
    """One row per class of work, locked by every top-up of that class's window, so that
    top-ups by many web and worker processes never overfill it (``shared.dispatch``)."""

    __tablename__ = "dispatch_locks"

    queue: Mapped[str] = mapped_column(String(16), primary_key=True)
    topped_up_at: Mapped[datetime | None] = mapped_column(default=None)


# ---------------------------------------------------------------- galleries (issue 5)


class Gallery(Base):
    """A named set of an owner's images with default segmentation parameters."""

    __tablename__ = "galleries"
    __table_args__ = (Index("ix_galleries_owner_created", "owner_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSON())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class GalleryImage(Base):
    __tablename__ = "gallery_images"
    __table_args__ = (Index("ix_gallery_images_gallery_added", "gallery_id", "added_at"),)

    gallery_id: Mapped[str] = mapped_column(
        ForeignKey("galleries.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[str] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class Schedule(Base):
    """When a gallery is reprocessed: a cron expression read in an IANA time zone."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_due", "enabled", "next_run_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    gallery_id: Mapped[str] = mapped_column(
        ForeignKey("galleries.id", ondelete="CASCADE"), unique=True
    )
    cron: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64))
    # None: the gallery's parameters at the time of each run.
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON(), default=None)
    only_stale: Mapped[bool] = mapped_column(Boolean, default=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[datetime | None] = mapped_column(default=None)
    last_run_id: Mapped[str | None] = mapped_column(String(36), default=None)
    #: Given to each run it starts.
    webhook_url: Mapped[str | None] = mapped_column(Text, default=None)
    webhook_events: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    """One reprocessing of a gallery: a job per image; counters kept as jobs end."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_gallery_created", "gallery_id", "created_at", "id"),
        Index("ix_runs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    gallery_id: Mapped[str] = mapped_column(ForeignKey("galleries.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING)
    params: Mapped[dict[str, Any]] = mapped_column(JSON())
    params_key: Mapped[str] = mapped_column(String(64))
    only_stale: Mapped[bool] = mapped_column(Boolean, default=True)
    # The schedule slot this run is for (scheduled runs only).
    scheduled_for: Mapped[datetime | None] = mapped_column(default=None)
    total: Mapped[int] = mapped_column(Integer, default=0)
    queued: Mapped[int] = mapped_column(Integer, default=0)
    running: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    #: ``run.finished`` goes there, and its jobs' events (which copy both).
    webhook_url: Mapped[str | None] = mapped_column(Text, default=None)
    webhook_events: Mapped[str | None] = mapped_column(String(200), default=None)


# ---------------------------------------------------------------- webhooks (issue 25)


class WebhookSecret(Base):
    """An owner's signing secret (``Kseg-Signature``); made on first use, replaced by a
    rotation."""

    __tablename__ = "webhook_secrets"

    owner_id: Mapped[str] = mapped_column(
        ForeignKey("owners.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event to POST to one URL, and how its attempts went: the outbox row the senders
    claim (``shared.store.webhooks``). Made in the transaction that records the final status
    it tells of; the broker only wakes a sender up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("object_id", "type", name="uq_webhook_deliveries_object_type"),
        Index("ix_webhook_deliveries_owner_created", "owner_id", "created_at", "id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    event_id: Mapped[str] = mapped_column(String(40), unique=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    #: ``job.succeeded``, ``job.failed``, ``job.canceled`` or ``run.finished``.
    type: Mapped[str] = mapped_column(String(32))
    #: The job or run it tells of (no foreign key: the event outlives a deleted job).
    object_id: Mapped[str] = mapped_column(String(36))
    #: The run of a job event: ``run.finished`` waits for its jobs' events.
    run_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    #: When the next attempt is due (None once succeeded or given up).
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    #: A sender holds the delivery until then (its claim); a sender killed mid-attempt lets
    #: it go by this time.
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    #: When the sweeper last published a wake-up for it.
    woken_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The JSON body, rendered at the first attempt and sent unchanged by every later one.
    body: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


# ---------------------------------------------------------------- thumbnails (issue 24)


class Thumbnail(Base):
    """A small WebP preview of an original (``image_id``) or of an output (``output_id``) at
    one of :data:`kseg.shared.core.thumbnail.THUMBNAIL_SIZES`, made on its first request and
    kept: one row per object and size (the unique keys), gone with its object (the foreign
    keys cascade). Its bytes never change, so its ``id`` is its ``ETag``.
    """

    __tablename__ = "thumbnails"
    __table_args__ = (
        UniqueConstraint("image_id", "size", name="uq_thumbnails_image_size"),
        UniqueConstraint("output_id", "size", name="uq_thumbnails_output_size"),
        CheckConstraint("(image_id IS NULL) <> (output_id IS NULL)", name="one_source"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    image_id: Mapped[str | None] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), default=None
    )
    output_id: Mapped[str | None] = mapped_column(
        ForeignKey("result_outputs.id", ondelete="CASCADE"), default=None
    )
    size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(Blob(), deferred=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
