"""A gallery run's counters and end: recounted from its jobs (framework-free).

Both the job state machine (``shared.jobs``: a job canceled or deleted) and the galleries
(``shared.galleries``: a run started or swept) recount runs, so this sits below both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, case, func, select, true, update
from sqlalchemy.orm import Session, aliased

from kseg.shared.statuses import JOB_STATUSES, JobStatus, RunStatus
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
    if run.status == RunStatus.RUNNING and counts["queued"] == 0 and counts["running"] == 0:
        processed = counts["succeeded"] + failed
        if failed == 0:
            values["status"] = RunStatus.SUCCEEDED
        elif counts["succeeded"] == 0 and processed > 0:
            values["status"] = RunStatus.FAILED
        else:
            values["status"] = RunStatus.PARTIAL
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
        key = "failed" if status == JobStatus.CANCELED else status
        entry[key] = entry.get(key, 0) + int(n)
        if status == JobStatus.QUEUED:
            entry["dispatched"] = int(dispatched)
    return counts


#: The counters :func:`with_live_counts` adds, in this order, after the statement's columns.
LIVE_COUNTERS = ("queued", "dispatched", "running", "succeeded", "failed")
#: And the run's own state, after them.
RUN_STATE = ("status", "finished_at")


def with_live_counts(stmt: Select[Any], run_id: str) -> Select[Any]:
    """``stmt`` (rows of the run's jobs selected from ``Job``, say a page of them) with the
    run's live counters (:data:`LIVE_COUNTERS`, as :func:`live_counts` counts them) and its
    status and end (:data:`RUN_STATE`) added to every row: one statement, so one snapshot of
    the database — the counters a page shows agree with the rows it lists, even while the run
    drains (two queries would see jobs end in between)."""
    job = aliased(Job)
    one = case((job.status.in_(("failed", "canceled")), 1), else_=0)
    counts = (
        select(
            func.coalesce(func.sum(case((job.status == "queued", 1), else_=0)), 0).label("queued"),
            func.coalesce(
                func.sum(
                    case(((job.status == "queued") & job.dispatched_at.is_not(None), 1), else_=0)
                ),
                0,
            ).label("dispatched"),
            func.coalesce(func.sum(case((job.status == "running", 1), else_=0)), 0).label(
                "running"
            ),
            func.coalesce(func.sum(case((job.status == "succeeded", 1), else_=0)), 0).label(
                "succeeded"
            ),
            func.coalesce(func.sum(one), 0).label("failed"),
        )
        .where(job.run_id == run_id)
        .subquery("run_counts")
    )
    state = select(Run.status, Run.finished_at).where(Run.id == run_id).subquery("run_state")
    return (
        stmt.add_columns(*(counts.c[name] for name in LIVE_COUNTERS))
        .add_columns(*(state.c[name] for name in RUN_STATE))
        .join_from(Job, counts, true())
        .join_from(Job, state, true())
    )


def split_live_counts(row: Sequence[Any], width: int) -> tuple[dict[str, int], dict[str, Any]]:
    """The counters and the run's state of a row of :func:`with_live_counts` whose statement
    had ``width`` columns of its own."""
    extra = list(row[width:])
    counters = {name: int(value or 0) for name, value in zip(LIVE_COUNTERS, extra, strict=False)}
    state = dict(zip(RUN_STATE, extra[len(LIVE_COUNTERS) :], strict=False))
    return counters, state


def refresh_open_runs(session: Session, limit: int = 100) -> int:
    """Recount every still-running run (the sweeper's safety net); returns how many."""
    ids = list(session.scalars(select(Run.id).where(Run.status == RunStatus.RUNNING).limit(limit)))
    for run_id in ids:
        refresh_run(session, run_id)
    return len(ids)


__all__ = [
    "LIVE_COUNTERS",
    "RUN_STATE",
    "live_counts",
    "refresh_open_runs",
    "refresh_run",
    "refresh_runs",
    "split_live_counts",
    "with_live_counts",
]
