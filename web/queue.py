"""Enqueueing by task name. A broker that is down must not lose the job: the row is already
committed, so a failed publish only means the sweeper will enqueue it later."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from flask import current_app

from shared.celery_config import RUN_JOB_TASK

log = logging.getLogger(__name__)

# One broker connection per thread, kept between requests: opening one per upload (a TCP
# connect, a channel, a queue declaration) cost more CPU than the rest of the upload.
_local = threading.local()


def _connection(celery: Any) -> Any:
    conn = getattr(_local, "conn", None)
    if conn is None or getattr(_local, "app", None) is not celery:
        # Fail fast: a request must not hang on a dead broker when the sweeper will cover it.
        options = {**celery.conf.broker_transport_options, "max_retries": 0}
        conn = celery.connection_for_write(transport_options=options)
        _local.conn, _local.app = conn, celery
    return conn


def _drop_connection() -> None:
    conn = getattr(_local, "conn", None)
    _local.conn = None
    if conn is not None:
        try:
            conn.release()
        except Exception:  # already broken: nothing to close cleanly
            log.debug("closing a broken broker connection failed", exc_info=True)


def enqueue_jobs(job_ids: Iterable[str]) -> bool:
    """Publish one ``kseg.run_job`` message per id; False when the broker could not be reached.

    A publish that fails on the kept connection (say, the broker restarted since) is tried
    once more on a fresh one; a second failure leaves the jobs to the sweeper.
    """
    celery = current_app.extensions["celery"]
    queue = current_app.config["KSEG_SETTINGS"].queue
    pending = list(job_ids)
    for attempt in (1, 2):
        try:
            conn = _connection(celery)
            while pending:
                celery.send_task(
                    RUN_JOB_TASK, args=[pending[0]], queue=queue, connection=conn, retry=False
                )
                pending.pop(0)
            return True
        except Exception as exc:  # any broker failure: the sweeper enqueues it later
            _drop_connection()
            if attempt == 2:
                log.warning("broker unavailable, jobs stay queued for the sweeper: %s", exc)
    return False
