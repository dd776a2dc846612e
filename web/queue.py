"""Enqueueing by task name. A broker that is down must not lose the job: the row is already
committed, so a failed publish only means the sweeper will enqueue it later."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flask import current_app

from shared.celery_config import RUN_JOB_TASK

log = logging.getLogger(__name__)


def enqueue_jobs(job_ids: Iterable[str]) -> bool:
    """Publish one ``kseg.run_job`` message per id; False when the broker could not be reached."""
    celery = current_app.extensions["celery"]
    queue = current_app.config["KSEG_SETTINGS"].queue
    # Fail fast: a request must not hang on a dead broker when the sweeper will cover it.
    options = {**celery.conf.broker_transport_options, "max_retries": 0}
    try:
        with celery.connection_for_write(transport_options=options) as conn:
            for job_id in job_ids:
                celery.send_task(
                    RUN_JOB_TASK, args=[job_id], queue=queue, connection=conn, retry=False
                )
    except Exception as exc:  # any broker failure: the sweeper enqueues it later
        log.warning("broker unavailable, jobs stay queued for the sweeper: %s", exc)
        return False
    return True
