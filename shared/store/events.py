"""Webhook events recorded with the status they tell of — framework-free.

Whatever records a job's or a run's final status (the completion, a failure, a cancel, the
sweeper) calls in here in the same transaction, so an event exists exactly when its status
was committed: the outbox pattern. A delivery's id is derived from its object and event type
(:func:`delivery_id`), so whoever committed the status can publish the sender's wake-up
without reading the row back, and a second insert for the same event is a no-op.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    String,
    bindparam,
    exists,
    insert,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session

from kseg.shared.store.models import Job, Run, UTCDateTime, WebhookDelivery, utcnow
from kseg.shared.webhooks import JOB_EVENT_OF_STATUS, wants

_NAMESPACE = uuid.UUID("6f1d2a5c-9b7e-4c1a-8f3d-2e5b7a9c0d14")

_deliveries = WebhookDelivery.__table__
_jobs = Job.__table__


def delivery_id(object_id: str, event_type: str) -> str:
    """The id of the delivery of ``event_type`` for a job or run (the same every time)."""
    return str(uuid.uuid5(_NAMESPACE, f"{object_id}/{event_type}"))


def event_id(object_id: str, event_type: str) -> str:
    """The event's id, the receivers' de-duplication key (``Kseg-Event-Id``)."""
    return "evt_" + uuid.uuid5(_NAMESPACE, f"event:{object_id}/{event_type}").hex


def _job_event_insert(event_type: str, status: str) -> Any:
    """``INSERT … SELECT`` of the delivery of a job's final status, from the job row: nothing
    when the job has no webhook URL, its filter leaves this event out, it is not in
    ``status``, or the delivery exists already."""
    col = _jobs.c
    d = _deliveries.c
    wanted = or_(
        col.webhook_events.is_(None),
        (literal(",") + col.webhook_events + literal(",")).like(f"%,{event_type},%"),
    )
    source = select(
        bindparam("b_id", type_=String()),
        bindparam("b_event", type_=String()),
        col.owner_id,
        literal(event_type, type_=String()),
        col.id,
        col.run_id,
        col.webhook_url,
        literal_column("'pending'"),
        literal_column("0"),
        bindparam("b_now", type_=UTCDateTime()),
        bindparam("b_now", type_=UTCDateTime()),
    ).where(
        col.id == bindparam("b_job_id"),
        col.status == literal_column(f"'{status}'"),
        col.webhook_url.is_not(None),
        wanted,
        ~exists().where(d.object_id == col.id, d.type == literal(event_type, type_=String())),
    )
    return insert(_deliveries).from_select(
        [
            "id",
            "event_id",
            "owner_id",
            "type",
            "object_id",
            "run_id",
            "url",
            "status",
            "attempts",
            "next_attempt_at",
            "created_at",
        ],
        source,
    )


#: Built once per event type (as the completion's other statements).
JOB_EVENT_INSERTS = {
    event_type: _job_event_insert(event_type, status)
    for status, event_type in JOB_EVENT_OF_STATUS.items()
}


def job_event_params(job_id: str, status: str, now: datetime | None = None) -> dict[str, Any]:
    """The parameters of :data:`JOB_EVENT_INSERTS` ``[event of status]`` for one job."""
    event_type = JOB_EVENT_OF_STATUS[status]
    return {
        "b_id": delivery_id(job_id, event_type),
        "b_event": event_id(job_id, event_type),
        "b_job_id": job_id,
        "b_now": now or utcnow(),
    }


def record_job_event(
    session: Session, job_id: str, status: str, now: datetime | None = None
) -> str | None:
    """Record the event of a job that has just reached ``status`` (succeeded, failed or
    canceled), in the caller's transaction; its delivery id, or None when the job wants no
    such event."""
    event_type = JOB_EVENT_OF_STATUS.get(status)
    if event_type is None:
        return None
    params = job_event_params(job_id, status, now)
    inserted = session.connection().execute(JOB_EVENT_INSERTS[event_type], params)
    return params["b_id"] if inserted.rowcount == 1 else None


def record_run_event(session: Session, run: Run, now: datetime | None = None) -> str | None:
    """Record ``run.finished`` for a run that has just ended, in the caller's transaction;
    its delivery id, or None when the run wants none."""
    if not run.webhook_url or not wants(run.webhook_events, "run.finished"):
        return None
    ident = delivery_id(run.id, "run.finished")
    if session.get(WebhookDelivery, ident) is not None:
        return None
    now = now or utcnow()
    session.execute(
        insert(WebhookDelivery).values(
            id=ident,
            event_id=event_id(run.id, "run.finished"),
            owner_id=run.owner_id,
            type="run.finished",
            object_id=run.id,
            url=run.webhook_url,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    return ident


def job_delivery(job: Job) -> str | None:
    """The delivery a job's final status may have made (None: it has no webhook or is not
    final); for publishing the wake-up after the commit."""
    event_type = JOB_EVENT_OF_STATUS.get(job.status)
    if not job.webhook_url or event_type is None or not wants(job.webhook_events, event_type):
        return None
    return delivery_id(job.id, event_type)


def run_delivery(run: Run | None) -> str | None:
    """The ``run.finished`` delivery of a run that ended (None otherwise)."""
    if run is None or run.status == "running" or not run.webhook_url:
        return None
    if not wants(run.webhook_events, "run.finished"):
        return None
    return delivery_id(run.id, "run.finished")


__all__ = [
    "JOB_EVENT_INSERTS",
    "delivery_id",
    "event_id",
    "job_delivery",
    "job_event_params",
    "record_job_event",
    "record_run_event",
    "run_delivery",
]
