"""Celery tasks. They carry ids only; the job row is the truth."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app

from shared import galleries, jobs, runner
from shared.celery_config import RUN_JOB_TASK, SCHEDULES_TASK, SWEEP_TASK
from shared.db import get_worker_sessionmaker
from shared.settings import Settings

log = logging.getLogger(__name__)


def _settings() -> Settings:
    settings: Settings = current_app.config["KSEG_SETTINGS"]
    return settings


@shared_task(
    name=RUN_JOB_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=5,
)
def run_job(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    """Run one job. Database hiccups are retried with exponential backoff; bad images are not
    (they fail the job at once with the core's error)."""
    try:
        return runner.run_job(job_id, settings=_settings(), timeout_errors=(SoftTimeLimitExceeded,))
    except runner.TRANSIENT_ERRORS as exc:
        countdown = min(2**self.request.retries, 60)
        log.warning("job %s: transient error, retry in %ss: %s", job_id, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> dict[str, int]:
    """Re-enqueue jobs the broker lost and jobs whose worker died; fail those out of attempts."""
    settings = _settings()
    maker = get_worker_sessionmaker(settings.database_url)
    with maker.begin() as session:
        report = jobs.sweep(
            session,
            queued_stale_after=settings.queued_stale_after,
            running_stale_after=settings.heartbeat_stale_after,
            max_attempts=settings.max_attempts,
        )
    _enqueue(report.to_enqueue)
    with maker.begin() as session:
        # Runs whose jobs ended without the worker recounting (canceled, swept) end here.
        galleries.refresh_open_runs(session)
    with maker.begin() as session:
        pruned = galleries.prune_results(session, settings.result_retention)
    if pruned:
        log.info("retention: deleted %d old results", pruned)
    if report.to_enqueue or report.failed:
        log.info(
            "sweep: re-enqueued %d queued and %d stalled jobs, failed %d",
            len(report.requeued_queued),
            len(report.requeued_running),
            len(report.failed),
        )
    return {
        "requeued_queued": len(report.requeued_queued),
        "requeued_running": len(report.requeued_running),
        "failed": len(report.failed),
    }


@shared_task(name=SCHEDULES_TASK, ignore_result=True)
def run_schedules() -> int:
    """Start a run for every gallery schedule whose slot has come (one beat tick)."""
    settings = _settings()
    with get_worker_sessionmaker(settings.database_url).begin() as session:
        started = galleries.run_due_schedules(session)
        ids = [job_id for start in started for job_id in start.to_enqueue]
    _enqueue(ids)
    if started:
        log.info("schedules: started %d runs (%d jobs)", len(started), len(ids))
    return len(started)


def _enqueue(job_ids: list[str]) -> None:
    """Publish jobs; a failure leaves them queued in the database for the next sweep."""
    if not job_ids:
        return
    celery = current_app.extensions["celery"]
    queue = _settings().queue
    try:
        with celery.connection_for_write() as conn:
            for job_id in job_ids:
                celery.send_task(RUN_JOB_TASK, args=[job_id], queue=queue, connection=conn)
    except Exception:
        log.warning("could not enqueue %d jobs; the sweeper will", len(job_ids), exc_info=True)
