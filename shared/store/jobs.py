"""Jobs and images as stored facts: upload, submit, the guarded state machine, cancel.

The job row is the truth. Every change of a job's status is a compare-and-set
(``UPDATE … WHERE status IN (…)``) whose row count is checked, so a redelivered or duplicated
broker message can never run a finished job again or leave two result sets. Nothing here
talks to a broker: callers commit, then enqueue the ids these functions hand back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kseg.shared.core.params import SegmentParams
from kseg.shared.core.segment import ALGORITHM_VERSION, Segmentation
from kseg.shared.statuses import ACTIVE_STATUSES, FINAL_STATUSES, JOB_STATUSES, JobStatus
from kseg.shared.store.db import binary_row, fetch_blob, newest_first, pipelined
from kseg.shared.store.events import JOB_EVENT_INSERTS, job_event_params, record_job_event
from kseg.shared.store.models import Image, Job, Result, ResultOutput, new_id, utcnow
from kseg.shared.store.outputs import output_rows
from kseg.shared.store.runs import refresh_runs
from kseg.shared.webhooks import NO_HOOK, Hook


class JobLostError(RuntimeError):
    """The job is no longer this worker's to finish (canceled, or taken over after a stall)."""


def params_key(params: SegmentParams) -> str:
    """SHA-256 of the canonical parameters: equal requests get equal keys."""
    text = json.dumps(params.canonical(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- images


_jobs = Job.__table__
_results = Result.__table__
#: Prebuilt, as every statement run per upload or per job: building a statement and its
#: cache key anew cost more CPU than executing it (measured).
_REUSABLE = (
    select(_jobs.c.id, _results.c.id)
    .join(_results, _jobs.c.result_id == _results.c.id)
    .where(
        _jobs.c.owner_id == bindparam("b_owner"),
        _jobs.c.image_id == bindparam("b_image"),
        _jobs.c.params_key == bindparam("b_key"),
        _jobs.c.status == JobStatus.SUCCEEDED,
        _results.c.algorithm_version == ALGORITHM_VERSION,
    )
    .order_by(_jobs.c.finished_at.desc())
    .limit(1)
)


def find_reusable_result(
    session: Session, owner_id: str, image_id: str, key: str
) -> tuple[Job, Result] | None:
    """The newest succeeded job of this owner for the same image and parameters, if its result
    was computed by the current algorithm version."""
    # Ids first, entities only when found: most submissions find nothing, and an ORM query
    # for two entities cost several times the round trip (measured per upload).
    row = (
        session.connection()
        .execute(_REUSABLE, {"b_owner": owner_id, "b_image": image_id, "b_key": key})
        .first()
    )
    if row is None:
        return None
    job, result = session.get(Job, row[0]), session.get(Result, row[1])
    return None if job is None or result is None else (job, result)


#: Image ids per query of :func:`current_results` (bind parameters stay well under limits).
_CURRENT_CHUNK = 500


def current_results(
    session: Session, owner_id: str, image_ids: Sequence[str], keys: Sequence[str]
) -> dict[str, str]:
    """Each image's *current result*: ``{image id: job id}`` of its newest succeeded job of
    this owner with parameters ``keys`` (any of them) whose result the current algorithm
    version computed — what :func:`find_reusable_result` finds for one image, wherever the job
    came from (a gallery run, a single submission, a reuse). An image without one is absent.

    Gallery runs skip images that have one ("already up to date"), and a gallery's grid
    shows it, so the two always agree. One query per 500 images."""
    found: dict[str, str] = {}
    ids, keys = list(dict.fromkeys(image_ids)), list(dict.fromkeys(keys))
    if not ids or not keys:
        return found
    for start in range(0, len(ids), _CURRENT_CHUNK):
        newest = (
            newest_first(Job.image_id, Job.id, per=Job.image_id, by=(Job.finished_at, Job.id))
            .join(Result, Job.result_id == Result.id)
            .where(
                Job.owner_id == owner_id,
                Job.image_id.in_(ids[start : start + _CURRENT_CHUNK]),
                Job.params_key.in_(keys),
                Job.status == "succeeded",
                Result.algorithm_version == ALGORITHM_VERSION,
            )
        ).subquery()
        found.update(
            (image_id, job_id)
            for image_id, job_id in session.execute(
                select(newest.c.image_id, newest.c.id).where(newest.c.rank == 1)
            )
        )
    return found


def submit_job(
    session: Session,
    owner_id: str,
    image: Image,
    params: SegmentParams,
    *,
    reuse: bool = True,
    queue: str = "interactive",
    hook: Hook = NO_HOOK,
) -> Job:
    """Create a job row of class ``queue``. With ``reuse``, an identical finished job's result
    is shared and the new job is born ``succeeded`` (``reused_from`` says which job computed
    it); otherwise the job is ``queued``, waiting for a place in its class's window: the
    caller tops the window up (:func:`shared.dispatch.top_up`), commits, and publishes.

    With a ``hook``, its final status is POSTed to the hook's URL; a job born succeeded
    records its event at once."""
    key = params_key(params)
    now = utcnow()
    job = Job(
        owner_id=owner_id,
        image_id=image.id,
        params=params.canonical(),
        params_key=key,
        status=JobStatus.QUEUED,
        queue=queue,
        created_at=now,
        queued_at=now,
        webhook_url=hook.url,
        webhook_events=hook.events,
    )
    job.image = image
    found = find_reusable_result(session, owner_id, image.id, key) if reuse else None
    if found is not None:
        source, result = found
        job.status = JobStatus.SUCCEEDED
        job.progress = 100
        job.stage = "reused"
        job.result_id = result.id
        job.result = result
        job.reused_from = source.id
        job.started_at = now
        job.finished_at = now
    session.add(job)
    session.flush()
    if hook.url and job.status == "succeeded":
        record_job_event(session, job.id, "succeeded", now)
    return job


# ---------------------------------------------------------------- worker side


def _running_by(job_id: Any, worker: Any) -> Any:
    """The job is running and held by ``worker`` (values, or bind parameters)."""
    return (Job.id == job_id) & (Job.status == JobStatus.RUNNING) & (Job.worker == worker)


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim_job`."""

    claimed: bool
    reason: str  # "claimed", "finished", "missing", "busy", "exhausted"
    attempts: int = 0
    #: What running the job needs, read by the claiming statement itself (claimed only).
    params: dict[str, Any] | None = None
    image_id: str | None = None
    params_key: str | None = None
    run_id: str | None = None
    #: The image's bytes, when the claim was asked to read them (``with_image``).
    image_data: bytes | None = None
    #: Where the job's final status goes (None: no webhook).
    webhook_url: str | None = None


def _claimable(dead_workers: bool) -> Any:
    """The job (``b_job_id``) is queued, or running but its holder stopped heart-beating
    before ``b_stale`` (or, with ``dead_workers``, is one of ``b_dead``)."""
    col = _jobs.c
    lost = or_(col.heartbeat_at.is_(None), col.heartbeat_at < bindparam("b_stale"))
    if dead_workers:
        lost = or_(lost, col.worker.in_(bindparam("b_dead", expanding=True)))
    return (col.id == bindparam("b_job_id")) & (
        (col.status == JobStatus.QUEUED) | ((col.status == JobStatus.RUNNING) & lost)
    )


def _claim_statement(*, dead_workers: bool) -> Any:
    col = _jobs.c
    return (
        update(_jobs)
        .where(_claimable(dead_workers), col.attempts < bindparam("b_max"))
        .values(
            status=JobStatus.RUNNING,
            attempts=col.attempts + 1,
            worker=bindparam("b_worker"),
            stage="decode",
            started_at=func.coalesce(col.started_at, bindparam("b_now", type_=col.started_at.type)),
            heartbeat_at=bindparam("b_now"),
            # A job claimed without having been dispatched (a stray message) counts as in
            # flight from now on, as every running job does.
            dispatched_at=func.coalesce(
                col.dispatched_at, bindparam("b_now", type_=col.dispatched_at.type)
            ),
        )
        .returning(
            col.attempts, col.params, col.image_id, col.params_key, col.run_id, col.webhook_url
        )
    )


_CLAIM = _claim_statement(dead_workers=False)
#: The claim that also returns the image's bytes: on PostgreSQL, one round trip for both.
_CLAIM_WITH_IMAGE = _CLAIM.returning(
    select(Image.data).where(Image.id == _jobs.c.image_id).scalar_subquery()
)


def claim_job(
    session: Session,
    job_id: str,
    worker: str,
    *,
    max_attempts: int,
    stale_after: float,
    dead_workers: Sequence[str] = (),
    now: datetime | None = None,
    with_image: bool = False,
) -> Claim:
    """Move a job to ``running`` for ``worker`` if nobody else may hold it.

    A job can be claimed when it is queued, or when it is running but its holder stopped
    heart-beating (``stale_after`` seconds) or is known dead (``dead_workers``). Each claim
    counts one attempt; past ``max_attempts`` the job fails instead of running again (a poison
    image that kills its worker every time must not loop forever).

    With ``with_image``, a claim also reads the image's bytes (``Claim.image_data``; None if
    the image row is gone).
    """
    now = now or utcnow()
    stale = now - timedelta(seconds=stale_after)
    values = {"b_job_id": job_id, "b_worker": worker, "b_now": now, "b_stale": stale}
    # UPDATE … RETURNING: the claim and what the run needs in one round trip. The usual
    # statement is built once (building it cost more CPU than running it, per job).
    data: Any = None
    if with_image and not dead_workers and session.connection().dialect.name == "postgresql":
        # The image's bytes in the same statement; bytea must come on a binary cursor.
        claimed = binary_row(session, _CLAIM_WITH_IMAGE, {**values, "b_max": max_attempts})
        if claimed is not None:
            *claimed, data = claimed
    else:
        stmt = _CLAIM
        if dead_workers:
            stmt = _claim_statement(dead_workers=True)
            values["b_dead"] = list(dead_workers)
        claimed = session.execute(stmt, {**values, "b_max": max_attempts}).first()
        if claimed is not None and with_image:
            data = fetch_blob(session, Image.data, id=claimed.image_id)
    if claimed is not None:
        attempts, params, image_id, key, run_id, webhook_url = claimed
        return Claim(
            True,
            "claimed",
            attempts,
            params=params,
            image_id=image_id,
            params_key=key,
            run_id=run_id,
            image_data=None if data is None else bytes(data),
            webhook_url=webhook_url,
        )
    row = session.execute(select(Job.status, Job.attempts).where(Job.id == job_id)).first()
    if row is None:
        return Claim(False, "missing")
    status, attempts = row
    if status in FINAL_STATUSES:
        return Claim(False, "finished", attempts)
    exhausted = session.execute(
        update(_jobs)
        .where(_claimable(bool(dead_workers)), _jobs.c.attempts >= bindparam("b_max"))
        .values(
            status=JobStatus.FAILED,
            error_code="too_many_attempts",
            error_message=(
                f"The job was started {attempts} times and its worker was lost each time "
                "(it may crash the worker); it will not be retried. Try a smaller max_side."
            ),
            finished_at=now,
            worker=None,
        ),
        {**values, "b_max": max_attempts},
    )
    if exhausted.rowcount == 1:  # type: ignore[attr-defined]
        record_job_event(session, job_id, "failed", now)
        return Claim(False, "exhausted", attempts)
    return Claim(False, "busy", attempts)


def report_progress(session: Session, job_id: str, worker: str, stage: str, percent: int) -> None:
    """Record progress (never lowering it) and the job's heartbeat; raise
    :class:`JobLostError` when the job is no longer this worker's."""
    percent = max(0, min(100, int(percent)))
    result = session.execute(
        update(Job)
        .where(_running_by(job_id, worker))
        .values(
            progress=case((Job.progress < percent, percent), else_=Job.progress),
            stage=stage,
            heartbeat_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise JobLostError(job_id)


def touch_job(session: Session, job_id: str, worker: str) -> bool:
    """Heartbeat of a running job; False when it is no longer this worker's."""
    result = session.execute(
        update(Job)
        .where(_running_by(job_id, worker))
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


_SUCCEED = (
    update(_jobs)
    .where(_running_by(bindparam("b_job_id"), bindparam("b_worker")))
    .values(
        status=JobStatus.SUCCEEDED,
        progress=100,
        stage="done",
        result_id=bindparam("b_result_id"),
        finished_at=bindparam("b_now"),
        heartbeat_at=bindparam("b_now"),
        error_code=None,
        error_message=None,
    )
)


_INSERT_RESULT = insert(_results)
_INSERT_OUTPUTS = insert(ResultOutput.__table__)


def complete_job(
    session: Session,
    job_id: str,
    worker: str,
    seg: Segmentation,
    timings: dict[str, Any],
    *,
    claim: Claim | None = None,
) -> str:
    """Store the result and mark the job succeeded, atomically; returns the result id.

    ``claim`` (this run's :class:`Claim`) saves reading the job's image and parameters again.
    Raises :class:`JobLostError` (and the caller's transaction must roll back) when the job was
    canceled or taken over meanwhile, so a result set is written only by the job's holder.
    """
    if claim is not None and claim.image_id is not None and claim.params_key is not None:
        image_id, params_key = claim.image_id, claim.params_key
    else:
        job = session.get(Job, job_id)
        if job is None:
            raise JobLostError(job_id)
        image_id, params_key = job.image_id, job.params_key
    meta = dict(seg.result)
    meta["timings_ms"] = timings
    result_id = new_id()
    now = utcnow()  # the result's creation and the job's end: one statement batch
    result_row = {
        "id": result_id,
        "job_id": job_id,
        "image_id": image_id,
        "params_key": params_key,
        "algorithm_version": ALGORITHM_VERSION,
        "meta": meta,
        "created_at": now,
    }
    outputs = output_rows(result_id, seg.outputs) if seg.outputs else []
    succeed = {"b_job_id": job_id, "b_worker": worker, "b_result_id": result_id, "b_now": now}
    # The webhook event goes with the status it tells of (skipped when the claim says the
    # job has no webhook: most jobs).
    event = claim is None or claim.webhook_url is not None
    event_step = (JOB_EVENT_INSERTS["job.succeeded"], [job_event_params(job_id, "succeeded", now)])
    # Prebuilt Core statements on the session's connection, not ORM objects or ORM-enabled
    # statements: the worker never reads these rows back, and the ORM's bookkeeping cost more
    # CPU than the statements themselves (measured per job).
    connection = session.connection()
    try:
        if connection.dialect.name == "postgresql":
            # All in one round trip: between two jobs of this worker process.
            steps: list[tuple[Any, list[dict[str, Any]]]] = [(_INSERT_RESULT, [result_row])]
            steps += [(_INSERT_OUTPUTS, outputs)] if outputs else []
            steps += [(_SUCCEED, [succeed])]
            steps += [event_step] if event else []
            done = pipelined(session, steps, count=len(steps) - 1 - int(event))
        else:
            connection.execute(_INSERT_RESULT, result_row)
            if outputs:
                connection.execute(_INSERT_OUTPUTS, outputs)
            done = connection.execute(_SUCCEED, succeed).rowcount  # type: ignore[attr-defined]
            if done == 1 and event:
                connection.execute(event_step[0], event_step[1][0])
    except IntegrityError as exc:
        # The job row is gone (its result's foreign key fails) or already has a result set
        # (the unique job_id): either way this run's result is not wanted.
        raise JobLostError(job_id) from exc
    if done != 1:
        raise JobLostError(job_id)
    return result_id


def fail_job(
    session: Session, job_id: str, code: str, message: str, *, worker: str | None = None
) -> bool:
    """Mark a job failed with a user-facing error; only from an active state (and only by its
    holder when ``worker`` is given). Returns whether this call failed it."""
    cond = Job.id == job_id
    cond &= Job.status.in_(ACTIVE_STATUSES) if worker is None else _running_by(job_id, worker)
    result = session.execute(
        update(Job)
        .where(cond)
        .values(
            status=JobStatus.FAILED,
            error_code=code,
            error_message=message,
            finished_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    record_job_event(session, job_id, "failed")
    return True


def release_job(session: Session, job_id: str, worker: str) -> bool:
    """Hand a running job back to the queue (transient failure; it will be retried)."""
    result = session.execute(
        update(Job)
        .where(_running_by(job_id, worker))
        .values(status=JobStatus.QUEUED, worker=None, queued_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


# ---------------------------------------------------------------- cancel / delete


def delete_job(session: Session, job: Job) -> str:
    """``DELETE /jobs/<id>``: an active job is canceled (its row stays, ``canceled``); a finished
    one is removed. Either way its results go, unless another job reuses them, and its gallery
    run is recounted (a canceled job counts as failed; the run may end now).
    Returns ``"canceled"`` or ``"deleted"``."""
    run_id = job.run_id
    canceled = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_(ACTIVE_STATUSES))
        .values(status=JobStatus.CANCELED, finished_at=utcnow(), worker=None)
        .execution_options(synchronize_session=False)
    )
    result_id = session.scalar(select(Job.result_id).where(Job.id == job.id))
    own_result = session.scalar(select(Result.id).where(Result.job_id == job.id))
    if canceled.rowcount == 1:  # type: ignore[attr-defined]
        outcome = "canceled"
        session.execute(update(Job).where(Job.id == job.id).values(result_id=None))
        record_job_event(session, job.id, "canceled")
    else:
        outcome = "deleted"
        session.execute(delete(Job).where(Job.id == job.id))
    for rid in {result_id, own_result} - {None}:
        users = session.scalar(select(func.count()).select_from(Job).where(Job.result_id == rid))
        if not users:
            session.execute(delete(ResultOutput).where(ResultOutput.result_id == rid))
            session.execute(delete(Result).where(Result.id == rid))
    session.expire_all()
    refresh_runs(session, [run_id])
    return outcome


# ---------------------------------------------------------------- sweeper


def job_counts(session: Session) -> dict[str, int]:
    """Jobs by status, for metrics."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    counts = dict.fromkeys(JOB_STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


__all__ = [
    "Claim",
    "JobLostError",
    "claim_job",
    "complete_job",
    "current_results",
    "delete_job",
    "fail_job",
    "find_reusable_result",
    "job_counts",
    "params_key",
    "release_job",
    "report_progress",
    "submit_job",
    "touch_job",
]
