"""Worker process hooks: fresh database connections after fork, and the worker heartbeat."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery.signals import worker_process_init, worker_ready, worker_shutdown
from sqlalchemy import update

from kseg.shared.messaging.celery_config import WEBHOOKS, queue_class
from kseg.shared.settings import QUEUE_CLASSES, get_settings
from kseg.shared.store.db import dispose_all, get_beat_sessionmaker
from kseg.shared.store.models import WorkerHeartbeat, utcnow

log = logging.getLogger(__name__)
_stop = threading.Event()


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Connections inherited from the parent must not be shared with it.
    dispose_all()


def _consuming(consumer: Any) -> bool:
    connection = getattr(consumer, "connection", None)
    return connection is not None and bool(getattr(connection, "connected", True))


def _pool_of(consumer: Any) -> tuple[int, str]:
    """The worker's pool size and the classes of work it takes (comma-separated), as Celery
    runs it (``-c``, ``-Q``); the settings' values where Celery does not say."""
    settings = get_settings()
    concurrency = getattr(getattr(consumer, "controller", None), "concurrency", None)
    try:
        names = list(consumer.app.amqp.queues.consume_from or ())
    except AttributeError:
        names = []
    classes = [queue_class(name) for name in names]
    queues = [cls for cls in QUEUE_CLASSES if cls in classes]
    # A webhook sender (``kseg webhooks``) takes no class of work: its threads must not
    # count in the dispatch windows.
    if any(name.rpartition(".")[2] == WEBHOOKS for name in names):
        queues.append(WEBHOOKS)
    queues = queues or list(settings.worker_queues)
    return int(concurrency or settings.worker_concurrency), ",".join(queues)


def _beat(hostname: str, consumer: Any) -> None:
    settings = get_settings()
    maker = get_beat_sessionmaker(settings.database_url)
    started = utcnow()
    concurrency, queues = _pool_of(consumer)
    while not _stop.is_set():
        # A worker that lost its broker connection stops beating, so /readyz notices.
        if _consuming(consumer):
            try:
                with maker.begin() as session:
                    now = utcnow()
                    updated = session.execute(
                        update(WorkerHeartbeat)
                        .where(WorkerHeartbeat.hostname == hostname)
                        .values(
                            seen_at=now, pid=os.getpid(), concurrency=concurrency, queues=queues
                        )
                    )
                    if updated.rowcount == 0:  # type: ignore[attr-defined]
                        session.add(
                            WorkerHeartbeat(
                                hostname=hostname,
                                pid=os.getpid(),
                                started_at=started,
                                seen_at=now,
                                concurrency=concurrency,
                                queues=queues,
                            )
                        )
            except Exception:
                log.warning("worker heartbeat failed", exc_info=True)
        _stop.wait(settings.heartbeat_interval)


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    hostname = getattr(sender, "hostname", None) or f"worker@{os.uname().nodename}"
    threading.Thread(
        target=_beat, args=(hostname, sender), name="kseg-worker-heartbeat", daemon=True
    ).start()


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    _stop.set()
