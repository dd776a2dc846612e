"""A gallery run's counters and end: recounted from its jobs (framework-free).

Both the job state machine (``shared.jobs``: a job canceled or deleted) and the galleries
(``shared.galleries``: a run started or swept) recount runs, so this sits below both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from kseg.shared.statuses import JOB_STATUSES
from kseg.shared.store.events import record_run_event
from kseg.shared.store.models import Job, Run, utcnow


def refresh_run(session: Session, run_id: str) -> Run | None:
    """Recount a run's jobs and, when none is active, end it: ``succeeded`` (no failures),
    ``partial`` (some failed) or ``failed`` (every processed image failed), recording its
    ``run.finished`` webhook event."""
    # Lock the run row first (a no-op write: a row lock on PostgreSQL, the write lock on
    # SQLite), so that two workers finishing at once recount one after the other; otherwise
    # the one that counted first could write its stale counts last.
    locked = session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(queued=Run.queued)
        .execution_options(synchronize_session=False)
    )
    if locked.rowcount != 1:  # type: ignore[attr-defined]
        return None
    counts = dict.fromkeys(JOB_STATUSES, 0)
    for status, n in session.execute(
        select(Job.status, func.count()).where(Job.run_id == run_id).group_by(Job.status)
    ):
        counts[status] = int(n)
    run = session.get(Run, run_id, populate_existing=True)
    if run is None:  # pragma: no cover - locked above
        return None
    failed = counts["failed"] + counts["canceled"]
    values: dict[str, Any] = {
        "queued": counts["queued"],
        "running": counts["running"],
        "succeeded": counts["succeeded"],
        "failed": failed,
    }
    if run.status == "running" and counts["queued"] == 0 and counts["running"] == 0:
        processed = counts["succeeded"] + failed
        if failed == 0:
            values["status"] = "succeeded"
        elif counts["succeeded"] == 0 and processed > 0:
            values["status"] = "failed"
        else:
            values["status"] = "partial"
        values["finished_at"] = utcnow()
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    run = session.get(Run, run_id, populate_existing=True)
    if run is not None and "status" in values:
        # Ended now: ``run.finished`` goes with it (after its last job's event).
        record_run_event(session, run)
    return run


def refresh_runs(session: Session, run_ids: Sequence[str | None]) -> None:
    """Recount gallery runs whose jobs were just canceled or deleted (None: no run)."""
    for run_id in run_ids:
        if run_id:
            refresh_run(session, run_id)


def live_counts(session: Session, run_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """The job counters of these runs as their jobs are now, in one query: ``queued``,
    ``dispatched`` (of the queued, those handed to the broker: next in line), ``running``,
    ``succeeded`` and ``failed`` (canceled ones included). A running run's stored counters
    are only as fresh as its last job's end; pages and the API show these instead."""
    counts = {
        run_id: dict.fromkeys(("queued", "dispatched", "running", "succeeded", "failed"), 0)
        for run_id in run_ids
    }
    if not counts:
        return counts
    rows = session.execute(
        select(Job.run_id, Job.status, func.count(), func.count(Job.dispatched_at))
        .where(Job.run_id.in_(list(counts)))
        .group_by(Job.run_id, Job.status)
    )
    for run_id, status, n, dispatched in rows:
        entry = counts[run_id]
        key = "failed" if status == "canceled" else status
        entry[key] = entry.get(key, 0) + int(n)
        if status == "queued":
            entry["dispatched"] = int(dispatched)
    return counts


def refresh_open_runs(session: Session, limit: int = 100) -> int:
    """Recount every still-running run (the sweeper's safety net); returns how many."""
    ids = list(session.scalars(select(Run.id).where(Run.status == "running").limit(limit)))
    for run_id in ids:
        refresh_run(session, run_id)
    return len(ids)


__all__ = ["live_counts", "refresh_open_runs", "refresh_run", "refresh_runs"]
