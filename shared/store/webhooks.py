"""Webhook deliveries: owners' secrets, claiming and sending one attempt, the sweep that wakes
up due deliveries, the listing — framework-free.

A delivery row (``shared.store.events`` records it with the status it tells of) is sent by
whoever claims it: a compare-and-set that counts the attempt and holds the row for a lease
(``locked_until``) while the POST is on its way, so two senders never send the same attempt at
once, and a sender killed mid-attempt lets the row go when the lease ends. The outcome is
written back by another compare-and-set on the attempt number: succeeded (a 2xx), due again
after the next pause of the backoff schedule, or failed once that is used up. The broker only
wakes senders up; the sweep (:func:`wake_due`) publishes again what is due and not held, so
a lost wake-up or a killed sender delays a delivery, never loses it. At least once: a sender
killed after the receiver answered but before the outcome was written sends again, with the
same event id.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kseg.shared import webhooks
from kseg.shared.settings import Settings
from kseg.shared.store.db import get_worker_sessionmaker, mark
from kseg.shared.store.models import Job, Run, WebhookDelivery, WebhookSecret, utcnow
from kseg.shared.store.objects import columns, isoz, job_object, plain, run_data

log = logging.getLogger(__name__)

D = WebhookDelivery
#: A wake-up that arrives this early (clocks, a countdown) still claims.
EARLY = timedelta(seconds=0.5)
#: The sweep leaves a just-due delivery this long to the wake-up published with it.
SWEEP_GRACE = timedelta(seconds=1)
#: The sweep publishes a wake-up for one delivery at most this often (a sender that is down
#: must not come back to a queue of thousands of copies).
REWAKE_AFTER = timedelta(seconds=60)
#: Succeeded and failed deliveries are deleted after this long (by the webhook sweep).
KEEP_FINISHED = timedelta(days=30)
#: How long ``run.finished`` waits past the soonest of its jobs' pending events.
RUN_WAITS_FOR_JOBS = 1.0


def lease_seconds(settings: Settings) -> float:
    """How long a claim holds a delivery: the POST's connect and answer timeouts, and some."""
    return 2 * settings.webhook_timeout + 5


# ---------------------------------------------------------------- secrets


def get_secret(session: Session, owner_id: str) -> str:
    """The owner's signing secret, made on first use."""
    secret = session.scalar(select(WebhookSecret.secret).where(WebhookSecret.owner_id == owner_id))
    if secret is not None:
        return secret
    made = webhooks.new_secret()
    try:
        with session.begin_nested():
            session.execute(insert(WebhookSecret).values(owner_id=owner_id, secret=made))
    except IntegrityError:  # made by a concurrent first use: that one is the secret
        pass
    found = session.scalar(select(WebhookSecret.secret).where(WebhookSecret.owner_id == owner_id))
    return found or made


def rotate_secret(session: Session, owner_id: str) -> str:
    """A new secret for the owner; deliveries attempted from now on are signed with it."""
    get_secret(session, owner_id)
    made = webhooks.new_secret()
    session.execute(
        update(WebhookSecret)
        .where(WebhookSecret.owner_id == owner_id)
        .values(secret=made, created_at=utcnow())
    )
    return made


# ---------------------------------------------------------------- one attempt


@dataclass(frozen=True)
class Claimed:
    """A delivery held for one attempt."""

    id: str
    event_id: str
    url: str
    body: bytes
    secret: str
    attempt: int


def render_body(session: Session, delivery: WebhookDelivery) -> str:
    """The event as JSON: ``{"id", "type", "created_at", "data"}`` with the job or run object
    (as the API answers it; only the id when the object was deleted before the first
    attempt)."""
    data: dict[str, Any] = {"id": delivery.object_id}
    if delivery.type.startswith("job."):
        job = session.get(Job, delivery.object_id)
        if job is not None:
            data = job_object(session, job)
    else:
        run = session.get(Run, delivery.object_id)
        if run is not None:
            data = plain(run_data(run))
    event = {
        "id": delivery.event_id,
        "type": delivery.type,
        "created_at": isoz(delivery.created_at),
        "data": data,
    }
    return json.dumps(event, separators=(",", ":"))


def claim(
    session: Session, delivery_id: str, *, lease: float, now: datetime | None = None
) -> tuple[Claimed | None, float | None]:
    """Hold a due delivery for one attempt (in the caller's transaction: commit before
    sending). Returns the claim, or None and, when the delivery must wait for its run's job
    events, the seconds to wait."""
    now = now or utcnow()
    due = (
        (D.id == delivery_id)
        & (D.status == "pending")
        & (D.next_attempt_at <= now + EARLY)
        & or_(D.locked_until.is_(None), D.locked_until < now)
    )
    row = session.execute(select(D.type, D.object_id).where(due)).first()
    if row is None:
        return None, None
    if row.type == "run.finished":
        # After its jobs' events: a receiver hears of the run's end last. It waits (without
        # counting an attempt) until the soonest of them is due, and a moment more.
        soonest = session.scalar(
            select(func.min(D.next_attempt_at)).where(
                D.run_id == row.object_id, D.status == "pending", D.type != "run.finished"
            )
        )
        if soonest is not None:
            wait = max(RUN_WAITS_FOR_JOBS, (soonest - now).total_seconds() + RUN_WAITS_FOR_JOBS)
            session.execute(
                update(D)
                .where(due)
                .values(next_attempt_at=now + timedelta(seconds=wait), woken_at=None)
                .execution_options(synchronize_session=False)
            )
            return None, wait
    held = session.execute(
        update(D)
        .where(due)
        .values(attempts=D.attempts + 1, locked_until=now + timedelta(seconds=lease))
        .execution_options(synchronize_session=False)
    )
    if held.rowcount != 1:  # type: ignore[attr-defined]  # another sender was first
        return None, None
    delivery = session.get(D, delivery_id, populate_existing=True)
    if delivery is None:  # pragma: no cover - held above
        return None, None
    if delivery.body is None:
        delivery.body = render_body(session, delivery)
        session.flush()
    return (
        Claimed(
            id=delivery.id,
            event_id=delivery.event_id,
            url=delivery.url,
            body=delivery.body.encode(),
            secret=get_secret(session, delivery.owner_id),
            attempt=delivery.attempts,
        ),
        None,
    )


def record(
    session: Session,
    claimed: Claimed,
    outcome: webhooks.Outcome,
    *,
    backoff: Sequence[float],
    now: datetime | None = None,
) -> float | None:
    """Write an attempt's outcome (only if the claim still holds: same attempt number).
    Returns the seconds until the next attempt, None when there is none."""
    now = now or utcnow()
    values: dict[str, Any] = {
        "locked_until": None,
        "last_status_code": outcome.status,
        "last_error": outcome.error,
    }
    delay: float | None = None
    if outcome.ok:
        values.update(status="succeeded", next_attempt_at=None, finished_at=now)
    elif claimed.attempt > len(backoff):
        values.update(status="failed", next_attempt_at=None, finished_at=now)
    else:
        delay = float(backoff[claimed.attempt - 1])
        values.update(next_attempt_at=now + timedelta(seconds=delay), woken_at=None)
    session.execute(
        update(D)
        .where(D.id == claimed.id, D.attempts == claimed.attempt, D.status == "pending")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return delay


@dataclass(frozen=True)
class Attempt:
    """What :func:`deliver` did: ``sent`` (an attempt was made), its ``outcome``, and
    ``retry_in``: seconds until the delivery is due again (None: it is not)."""

    sent: bool
    outcome: webhooks.Outcome | None = None
    retry_in: float | None = None


def deliver(delivery_id: str, settings: Settings) -> Attempt:
    """Make one attempt of a delivery if it is due and nobody holds it: claim, POST (signed
    now), record."""
    maker = get_worker_sessionmaker(settings.database_url)
    with maker.begin() as session:
        claimed, wait = claim(session, delivery_id, lease=lease_seconds(settings))
    if claimed is None:
        return Attempt(False, retry_in=wait)
    timestamp = int(time.time())
    headers = {
        webhooks.EVENT_ID_HEADER: claimed.event_id,
        webhooks.SIGNATURE_HEADER: webhooks.sign(claimed.secret, claimed.body, timestamp),
    }
    try:
        outcome = webhooks.post(
            claimed.url,
            claimed.body,
            headers,
            timeout=settings.webhook_timeout,
            allow_private=settings.webhook_allow_private,
        )
    except Exception as exc:  # a bug, not the receiver's: still an attempt, recorded
        log.exception("webhook %s: the POST failed unexpectedly", claimed.event_id)
        outcome = webhooks.Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
    with maker.begin() as session:
        retry_in = record(session, claimed, outcome, backoff=settings.webhook_backoff)
    log.info(
        "webhook %s attempt %d to %s: %s",
        claimed.event_id,
        claimed.attempt,
        claimed.url,
        "ok" if outcome.ok else outcome.error,
    )
    return Attempt(True, outcome, retry_in)


# ---------------------------------------------------------------- the sweep


def wake_due(session: Session, *, now: datetime | None = None, limit: int = 500) -> list[str]:
    """Deliveries due, not held by a sender, and not woken up lately (their wake-up was lost,
    or their sender died): marked woken now; the caller commits, then publishes them.
    Read with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two sweeps share them out."""
    now = now or utcnow()
    due = (
        (D.status == "pending")
        & (D.next_attempt_at <= now - SWEEP_GRACE)
        & or_(D.locked_until.is_(None), D.locked_until < now)
        & or_(D.woken_at.is_(None), D.woken_at < now - REWAKE_AFTER)
    )
    stmt = select(D.id).where(due).order_by(D.next_attempt_at).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    ids = list(session.scalars(stmt))
    if not ids:
        return []
    woken = mark(session, D, ids, due, woken_at=now)
    return [i for i in ids if i in woken]


def prune(session: Session, *, now: datetime | None = None, limit: int = 1000) -> int:
    """Delete deliveries finished more than :data:`KEEP_FINISHED` ago; returns how many."""
    now = now or utcnow()
    ids = list(
        session.scalars(
            select(D.id)
            .where(D.status.in_(("succeeded", "failed")), D.finished_at < now - KEEP_FINISHED)
            .limit(limit)
        )
    )
    if ids:
        session.execute(delete(D).where(D.id.in_(ids)))
    return len(ids)


# ---------------------------------------------------------------- reading


#: A delivery's columns its API object shows as they are.
DELIVERY_COLUMNS = (
    "id", "event_id", "type", "url", "status", "last_status_code", "last_error",
    "next_attempt_at", "created_at", "object_id", "finished_at",
)  # fmt: skip


def delivery_data(delivery: WebhookDelivery) -> dict[str, Any]:
    return {**columns(delivery, DELIVERY_COLUMNS), "attempts": int(delivery.attempts or 0)}


__all__ = [
    "Attempt",
    "Claimed",
    "claim",
    "deliver",
    "delivery_data",
    "get_secret",
    "lease_seconds",
    "prune",
    "record",
    "render_body",
    "rotate_secret",
    "wake_due",
]
