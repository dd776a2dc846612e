"""The sweeper's pass over the jobs: publish again what the broker lost, take back jobs whose
worker died, fail those out of attempts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from kseg.shared.statuses import JobStatus
from kseg.shared.store.events import record_job_event
from kseg.shared.store.models import (
    Job,
    utcnow,
)


@dataclass
class SweepReport:
    requeued_queued: list[str]
    requeued_running: list[str]
    failed: list[str]
    #: The class (``Job.queue``) of every job to publish again.
    queues: dict[str, str] = field(default_factory=dict)

    @property
    def to_enqueue(self) -> list[str]:
        return self.requeued_queued + self.requeued_running


def sweep(
    session: Session,
    *,
    queued_stale_after: float,
    running_stale_after: float,
    max_attempts: int,
    now: datetime | None = None,
    limit: int = 500,
    in_broker: Callable[[str], set[str] | None] | None = None,
) -> SweepReport:
    """Find jobs the broker lost, and hand them back for publishing again:

    - ``queued`` jobs published more than ``queued_stale_after`` seconds ago whose message the
      broker no longer holds (it restarted with nothing on disk, or the publish failed).
      ``in_broker(queue)`` says which job ids the broker holds for a class (None: it cannot
      tell, and every such job is published again; a duplicate message is harmless, the
      claim runs a job once). Jobs waiting for a place in their window were never published
      and are the dispatcher's, not the sweeper's.
    - ``running`` jobs whose worker stopped heart-beating: back to ``queued`` (a stalled job
      that used up its attempts fails with a clear error instead).

    ``dispatched_at`` of each is bumped (so the next sweep waits again).
    """
    now = now or utcnow()
    report = SweepReport([], [], [])
    old_dispatch = now - timedelta(seconds=queued_stale_after)
    stale = session.execute(
        select(Job.id, Job.queue, Job.dispatched_at)
        .where(Job.status == JobStatus.QUEUED, Job.dispatched_at < old_dispatch)
        .order_by(Job.dispatched_at)
        .limit(limit)
    ).all()
    held: dict[str, set[str] | None] = {}
    for job_id, queue, dispatched_at in stale:
        if in_broker is not None and queue not in held:
            held[queue] = in_broker(queue)
        if job_id in (held.get(queue) or ()):
            continue  # still waiting in the broker: not lost
        bumped = session.execute(
            update(Job)
            .where(
                Job.id == job_id, Job.status == JobStatus.QUEUED, Job.dispatched_at == dispatched_at
            )
            .values(dispatched_at=now)
            .execution_options(synchronize_session=False)
        )
        if bumped.rowcount == 1:  # type: ignore[attr-defined]
            report.requeued_queued.append(job_id)
            report.queues[job_id] = queue

    old_beat = now - timedelta(seconds=running_stale_after)
    stalled = session.execute(
        select(Job.id, Job.queue, Job.attempts, Job.heartbeat_at)
        .where(
            Job.status == JobStatus.RUNNING,
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < old_beat),
        )
        .limit(limit)
    ).all()
    for job_id, queue, attempts, beat in stalled:
        same = (Job.id == job_id) & (Job.status == JobStatus.RUNNING)
        same &= Job.heartbeat_at.is_(None) if beat is None else Job.heartbeat_at == beat
        if attempts >= max_attempts:
            values: dict[str, Any] = {
                "status": JobStatus.FAILED,
                "error_code": "worker_lost",
                "error_message": (
                    f"The worker running this job stopped {attempts} times; it will not be "
                    "retried. Try again with a smaller max_side, or contact the operator."
                ),
                "finished_at": now,
                "worker": None,
            }
        else:
            # Published again at once: it keeps its place in its window.
            values = {
                "status": JobStatus.QUEUED,
                "worker": None,
                "queued_at": now,
                "dispatched_at": now,
            }
        moved = session.execute(
            update(Job).where(same).values(**values).execution_options(synchronize_session=False)
        )
        if moved.rowcount == 1:  # type: ignore[attr-defined]
            if values["status"] == JobStatus.FAILED:
                report.failed.append(job_id)
                record_job_event(session, job_id, "failed", now)
            else:
                report.requeued_running.append(job_id)
                report.queues[job_id] = queue
    return report


__all__ = ["SweepReport", "sweep"]
