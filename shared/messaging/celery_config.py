"""Celery settings derived from kseg's settings: a plain dict, so ``shared`` needs no Celery.

Design notes (each one a lesson about Celery's defaults):
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task killed mid-run (even by SIGKILL)
  goes back to the queue instead of being lost; the job row's attempt cap stops poison messages.
- ``visibility_timeout`` above the hard time limit, or Redis redelivers a still-running task.
- ``worker_prefetch_multiplier=1``: a long job must not hold other jobs hostage in a prefetch,
  and a worker process that becomes free reads its queues afresh, interactive first.
- One queue per class of work (``<KSEG_QUEUE>.interactive``, ``<KSEG_QUEUE>.batch``): a
  deployment can run workers for one class only (``kseg worker --queues batch``).
- The embedded broker (kombu's filesystem transport) polls; its interval is tuned down from
  1 s so a small job does not wait most of a second for pick-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kseg.shared.settings import QUEUE_CLASSES, Settings

RUN_JOB_TASK = "kseg.run_job"
SWEEP_TASK = "kseg.sweep"
SCHEDULES_TASK = "kseg.run_schedules"
DELIVER_TASK = "kseg.deliver_webhook"
WEBHOOK_SWEEP_TASK = "kseg.sweep_webhooks"
#: The queue of the webhook senders (``kseg webhooks``): never read by a worker that runs
#: segmentations, so a slow receiver holds no job up.
WEBHOOKS = "webhooks"


def queue_name(settings: Settings, queue: str) -> str:
    """The broker queue of a class of work: ``<KSEG_QUEUE>.interactive``, ``….batch``."""
    return f"{settings.queue}.{queue}"


def queue_class(name: str) -> str | None:
    """The class of work a broker queue carries (None for another queue)."""
    cls = name.rpartition(".")[2]
    return cls if cls in QUEUE_CLASSES else None


def queue_rank(name: str) -> int:
    """The order in which a worker reads its queues: interactive work first, then batch, then
    any other queue."""
    cls = queue_class(name)
    return QUEUE_CLASSES.index(cls) if cls else len(QUEUE_CLASSES)


def broker_dirs(settings: Settings) -> dict[str, str]:
    root = settings.instance_dir / "broker"
    return {"in": str(root / "queue"), "out": str(root / "queue"), "control": str(root / "control")}


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration; for the filesystem broker this also creates its folders."""
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if settings.broker_url.startswith("filesystem://"):
        dirs = broker_dirs(settings)
        for folder in dirs.values():
            Path(folder).mkdir(parents=True, exist_ok=True)
        transport = {
            "data_folder_in": dirs["in"],
            "data_folder_out": dirs["out"],
            "control_folder": dirs["control"],
            "polling_interval": settings.broker_polling_interval,
            # Consumed messages are deleted, so the broker's store does not grow.
            "store_processed": False,
        }
    elif settings.embedded_broker:
        transport = {"polling_interval": settings.broker_polling_interval}
    webhooks = queue_name(settings, WEBHOOKS)
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 3,
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": queue_name(settings, "interactive"),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_prefetch_multiplier": settings.worker_prefetch,
        "worker_concurrency": settings.worker_concurrency,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_enable_remote_control": not settings.embedded_broker,
        "broker_pool_limit": 10,
        "timezone": "UTC",
        "task_routes": {
            DELIVER_TASK: {"queue": webhooks},
            WEBHOOK_SWEEP_TASK: {"queue": webhooks},
        },
        "beat_schedule": {
            "kseg-sweep": {"task": SWEEP_TASK, "schedule": settings.sweep_interval},
            "kseg-schedules": {"task": SCHEDULES_TASK, "schedule": settings.schedule_tick},
            "kseg-webhooks": {
                "task": WEBHOOK_SWEEP_TASK,
                "schedule": settings.webhook_sweep_interval,
                # A sweep not taken by then is superseded by the next one.
                "options": {"expires": max(1.0, settings.webhook_sweep_interval * 3)},
            },
        },
    }
