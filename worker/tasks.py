"""Celery tasks. They carry ids only; the job row is the truth."""

from __future__ import annotations

import logging

from celery import Celery, shared_task
from celery import current_app as current_celery
from celery.exceptions import SoftTimeLimitExceeded

from kseg.shared.messaging import publish
from kseg.shared.messaging.app import settings_of
from kseg.shared.messaging.celery_config import (
    DELIVER_TASK,
    RUN_JOB_TASK,
    SCHEDULES_TASK,
    SWEEP_TASK,
    WEBHOOK_SWEEP_TASK,
)
from kseg.shared.settings import QUEUE_CLASSES, Settings
from kseg.shared.store import dispatch, galleries, runner, runs
from kseg.shared.store import sweep as sweep_mod
from kseg.shared.store import webhooks as webhook_store
from kseg.shared.store.db import get_beat_sessionmaker, get_worker_sessionmaker
from kseg.shared.store.events import delivery_id

log = logging.getLogger(__name__)


def _celery() -> Celery:
    app: Celery = current_celery._get_current_object()
    return app


def _settings() -> Settings:
    return settings_of(_celery())


def enqueue_jobs(job_ids: list[str], queue: str) -> bool:
    return publish.enqueue_jobs(_celery(), job_ids, queue)


def held_job_ids(queue: str) -> set[str] | None:
    return publish.held_job_ids(_celery(), queue)


def wake_deliveries(ids: list[str], countdown: float = 0) -> bool:
    return publish.wake_deliveries(_celery(), ids, countdown)


@shared_task(
    name=RUN_JOB_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=5,
)
def run_job(self, job_id: str, queue: str | None = None) -> str:  # type: ignore[no-untyped-def]
    """Run one job of class ``queue``, then top that class's window up (before this task is
    acknowledged, so the next job is in the broker by the time this process is free again).

    Database hiccups are retried with exponential backoff; bad images are not (they fail the
    job at once with the core's error)."""
    settings = _settings()
    try:
        outcome = runner.run_job(
            job_id,
            settings=settings,
            timeout_errors=(SoftTimeLimitExceeded,),
            on_events=wake_deliveries,
        )
    except runner.TRANSIENT_ERRORS as exc:
        countdown = min(2**self.request.retries, 60)
        log.warning("job %s: transient error, retry in %ss: %s", job_id, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown) from exc
    # A message from before the classes existed names none: top both up.
    for name in (queue,) if queue in QUEUE_CLASSES else QUEUE_CLASSES:
        _top_up(settings, name, check_first=True)
    return outcome


def _top_up(settings: Settings, queue: str, *, check_first: bool = False) -> int:
    """Top ``queue``'s window up in a transaction of its own and publish what it handed out;
    a failure is logged (the sweeper tops every window up too). Returns how many were sent."""
    try:
        if check_first:
            # Most job ends find nothing waiting (an idle interactive class): one cheap read
            # on an autocommit connection instead of a transaction with a lock.
            with get_beat_sessionmaker(settings.database_url)() as session:
                if not dispatch.has_waiting(session, queue):
                    return 0
        with get_worker_sessionmaker(settings.database_url).begin() as session:
            ids = dispatch.top_up(
                session,
                queue,
                per_process=settings.window_per_process,
                stale_after=settings.heartbeat_stale_after,
            )
    except Exception:
        log.warning("could not top up the %s window", queue, exc_info=True)
        return 0
    enqueue_jobs(ids, queue)
    return len(ids)


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> dict[str, int]:
    """Re-enqueue jobs the broker lost and jobs whose worker died; fail those out of attempts."""
    settings = _settings()
    maker = get_worker_sessionmaker(settings.database_url)
    with maker.begin() as session:
        report = sweep_mod.sweep(
            session,
            queued_stale_after=settings.queued_stale_after,
            running_stale_after=settings.heartbeat_stale_after,
            max_attempts=settings.max_attempts,
            in_broker=held_job_ids,
        )
    for queue in QUEUE_CLASSES:
        enqueue_jobs([i for i in report.to_enqueue if report.queues.get(i) == queue], queue)
    if report.failed:  # their job.failed events, if they want them (the webhook sweep too)
        wake_deliveries([delivery_id(i, "job.failed") for i in report.failed])
    # Windows that nothing topped up (a worker killed before it could, workers added).
    dispatched = {queue: _top_up(settings, queue) for queue in QUEUE_CLASSES}
    with maker.begin() as session:
        # Runs whose jobs ended without the worker recounting (canceled, swept) end here.
        runs.refresh_open_runs(session)
    with maker.begin() as session:
        pruned = galleries.prune_results(session, settings.result_retention)
    if pruned:
        log.info("retention: deleted %d old results", pruned)
    if report.to_enqueue or report.failed:
        log.info(
            "sweep: re-enqueued %d lost and %d stalled jobs, failed %d",
            len(report.requeued_queued),
            len(report.requeued_running),
            len(report.failed),
        )
    return {
        "requeued_queued": len(report.requeued_queued),
        "requeued_running": len(report.requeued_running),
        "failed": len(report.failed),
        **{f"dispatched_{queue}": n for queue, n in dispatched.items()},
    }


@shared_task(name=SCHEDULES_TASK, ignore_result=True)
def run_schedules() -> int:
    """Start a run for every gallery schedule whose slot has come (one beat tick)."""
    settings = _settings()
    with get_worker_sessionmaker(settings.database_url).begin() as session:
        started = galleries.run_due_schedules(session)
        made = sum(len(start.job_ids) for start in started)
        ids = (
            dispatch.top_up(
                session,
                "batch",
                per_process=settings.window_per_process,
                stale_after=settings.heartbeat_stale_after,
            )
            if made
            else []
        )
    enqueue_jobs(ids, "batch")  # a failure leaves them to the sweeper
    if started:
        log.info("schedules: started %d runs (%d jobs)", len(started), made)
    return len(started)


#: A wake-up for a retry due within this many seconds is published with a countdown (the
#: sender holds it until then); a later one is left to the webhook sweep, since the broker
#: would redeliver a message held longer than its visibility timeout.
COUNTDOWN_UP_TO = 300.0


@shared_task(
    name=DELIVER_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def deliver_webhook(delivery: str) -> bool:
    """One attempt of a webhook delivery, if it is due and no other sender holds it (runs on
    ``kseg webhooks``, never on a worker that segments). Returns whether it was sent."""
    attempt = webhook_store.deliver(delivery, _settings())
    if attempt.retry_in is not None and attempt.retry_in <= COUNTDOWN_UP_TO:
        wake_deliveries([delivery], countdown=attempt.retry_in)
    return attempt.sent


@shared_task(name=WEBHOOK_SWEEP_TASK, ignore_result=True)
def sweep_webhooks() -> int:
    """Wake up deliveries that are due and whose wake-up was lost (a broker restart, a sender
    killed mid-attempt whose claim has run out)."""
    settings = _settings()
    with get_worker_sessionmaker(settings.database_url).begin() as session:
        ids = webhook_store.wake_due(session)
        webhook_store.prune(session)
    if ids:
        wake_deliveries(ids)
        log.info("webhooks: woke up %d due deliveries", len(ids))
    return len(ids)
