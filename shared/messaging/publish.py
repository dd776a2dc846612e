"""Publishing job messages, and looking into the broker's queues, for the web and the worker.

A broker that is down must not lose the job: the row is committed first, so a failed
publish only means the sweeper publishes it later (:mod:`kseg.shared.store.jobs`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from celery import Celery

from kseg.shared.messaging.app import settings_of
from kseg.shared.messaging.celery_config import DELIVER_TASK, RUN_JOB_TASK, WEBHOOKS, queue_name

log = logging.getLogger(__name__)

# One broker connection per thread, kept between requests: opening one per upload (a TCP
# connect, a channel, a queue declaration) cost more CPU than the rest of the upload.
_local = threading.local()


def _connection(celery: Celery) -> Any:
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


def _publish(celery: Celery, task: str, ids: Iterable[str], queue: str, **options: Any) -> bool:
    """Send one ``task`` message per id to the broker queue of ``queue``; False when the
    broker could not be reached.

    A publish that fails on the kept connection (say, the broker restarted since) is tried
    once more on a fresh one; a second failure leaves the rest to the sweeper.
    """
    name = queue_name(settings_of(celery), queue)
    pending = list(ids)
    for attempt in (1, 2):
        try:
            conn = _connection(celery)
            while pending:
                celery.send_task(
                    task, args=[pending[0]], queue=name, connection=conn, retry=False, **options
                )
                pending.pop(0)
            return True
        except Exception as exc:  # any broker failure: the sweeper publishes it later
            _drop_connection()
            if attempt == 2:
                log.warning("broker unavailable, %s waits for the sweeper: %s", task, exc)
    return False


def enqueue_jobs(celery: Celery, job_ids: Iterable[str], queue: str) -> bool:
    """Publish one ``kseg.run_job`` message per id to ``queue``'s broker queue; False when
    the broker could not be reached (the jobs stay queued for the sweeper)."""
    return _publish(celery, RUN_JOB_TASK, job_ids, queue, kwargs={"queue": queue})


def wake_deliveries(celery: Celery, delivery_ids: Iterable[str], countdown: float = 0) -> bool:
    """Wake the webhook senders up for these deliveries (after ``countdown`` s); False when
    the broker could not be reached. A lost wake-up only delays a delivery: the webhook
    sweep publishes again what is due."""
    return _publish(celery, DELIVER_TASK, delivery_ids, WEBHOOKS, countdown=countdown or None)


def held_job_ids(celery: Celery, queue: str) -> set[str] | None:
    """The ids of the jobs whose messages wait in ``queue``'s broker queue (not those taken by
    a worker); None when the broker cannot tell (a transport without a look-in, or down).

    The sweeper asks before publishing a job again, so a message that merely waits behind
    others is not duplicated. Cheap because the windows keep those queues short.
    """
    name = queue_name(settings_of(celery), queue)
    options = {**celery.conf.broker_transport_options, "max_retries": 0}  # never hang
    try:
        with celery.connection_for_read(transport_options=options) as conn:
            peek = getattr(conn.default_channel, "waiting_job_ids", None)
            return None if peek is None else set(peek(name))
    except Exception as exc:
        log.warning("could not look into the broker's %s queue: %s", name, exc)
        return None


__all__ = ["enqueue_jobs", "held_job_ids", "wake_deliveries"]
