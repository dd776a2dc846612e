"""The dispatcher: which waiting job gets a place in the broker next — framework-free.

Work comes in two classes (``Job.queue``): **interactive** jobs, submitted one by one (API,
web form, ``kseg submit``), and **batch** jobs, made by gallery runs. Each class has its own
broker queue, and a worker process that takes both always takes waiting interactive work
first (the transports in ``web.broker`` and ``web.redis_broker`` read the queues in that order).

The database is the queue. A job is committed ``queued`` with ``dispatched_at`` unset, and
only a small **window** of each class is published at any time: per class, at most
``per_process`` × (worker processes taking that class) jobs are *in flight* (published and
not yet finished). Every job that ends tops its class's window up again (:func:`top_up`), as
do submissions, run starts and the sweeper. So a 10,000-image run puts a handful of messages
in the broker, not 10,000, and an interactive job waits at most for the jobs already running.

**Fair share.** A top-up fills the window one place at a time: to the owner with the fewest
jobs in flight (ties: the owner whose oldest waiting job is oldest), and within that owner to
the run (interactive jobs form one lane per owner) with the fewest in flight, oldest first
within it. With jobs of similar length this is round-robin across owners and across one
owner's runs; with jobs of different lengths each gets an equal share of the window. Two
owners' runs started together thus stay within one window of each other.

Top-ups of one class are serialised by a row lock on ``dispatch_locks`` (the write lock on
SQLite), so several web processes, workers and beats never overfill a window; the jobs are
marked by a compare-and-set and, on PostgreSQL, read with ``FOR UPDATE SKIP LOCKED`` (a job
being canceled meanwhile is passed over). Callers commit, then publish the ids handed back; a
publish that fails leaves them dispatched for the sweeper to publish again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, insert, literal_column, select, update
from sqlalchemy.orm import Session

from kseg.shared.settings import QUEUE_CLASSES
from kseg.shared.store.db import mark
from kseg.shared.store.models import DispatchLock, Job, WorkerHeartbeat, utcnow

#: Lane of a class: (owner id, run id); interactive jobs have no run, so one lane per owner.
LaneKey = tuple[str, str | None]

# Literal SQL, not bound values: the database can then use the partial indexes whose
# predicates these are (``ix_jobs_waiting``, ``ix_jobs_in_flight``).
_QUEUED: ColumnElement[str] = literal_column("'queued'")
WAITING = and_(Job.status == _QUEUED, Job.dispatched_at.is_(None))
IN_FLIGHT = and_(
    Job.status.in_([_QUEUED, literal_column("'running'")]), Job.dispatched_at.is_not(None)
)


@dataclass(frozen=True)
class Lane:
    """Waiting jobs of one owner's run (or of one owner's interactive submissions)."""

    owner_id: str
    run_id: str | None
    waiting: int
    oldest: datetime

    @property
    def key(self) -> LaneKey:
        return (self.owner_id, self.run_id)


def fair_order(lanes: Sequence[Lane], in_flight: Mapping[LaneKey, int], room: int) -> list[LaneKey]:
    """The lanes that get the next ``room`` places of a window, one entry per place, in the
    order their jobs are to be published.

    Pure: ``in_flight`` counts each lane's jobs already in the window (lanes with nothing
    waiting included: they count for their owner).
    """
    owner_load: dict[str, int] = {}
    for (owner, _run), n in in_flight.items():
        owner_load[owner] = owner_load.get(owner, 0) + n
    lane_load = {lane.key: in_flight.get(lane.key, 0) for lane in lanes}
    left = {lane.key: lane.waiting for lane in lanes if lane.waiting > 0}
    oldest = {lane.key: lane.oldest for lane in lanes}
    owner_oldest: dict[str, datetime] = {}
    for lane in lanes:
        if lane.owner_id not in owner_oldest or lane.oldest < owner_oldest[lane.owner_id]:
            owner_oldest[lane.owner_id] = lane.oldest
    order: list[LaneKey] = []
    while len(order) < room and left:
        owners = {key[0] for key in left}
        owner = min(owners, key=lambda o: (owner_load.get(o, 0), owner_oldest[o], o))
        key = min(
            (k for k in left if k[0] == owner),
            key=lambda k: (lane_load[k], oldest[k], k[1] or ""),
        )
        order.append(key)
        owner_load[owner] = owner_load.get(owner, 0) + 1
        lane_load[key] += 1
        left[key] -= 1
        if not left[key]:
            del left[key]
    return order


def window_size(
    session: Session, queue: str, *, per_process: int, stale_after: float, now: datetime
) -> int | None:
    """How many jobs of ``queue`` may be in flight: ``per_process`` for each worker process
    that takes that class (by their heartbeats; at least one process's worth, so a window is
    open before any worker has reported). None (no limit) when ``per_process`` < 1."""
    if per_process < 1:
        return None
    since = now - timedelta(seconds=stale_after)
    processes = 0
    for concurrency, queues in session.execute(
        select(WorkerHeartbeat.concurrency, WorkerHeartbeat.queues).where(
            WorkerHeartbeat.seen_at >= since
        )
    ):
        if queue in (queues or "").split(","):
            processes += int(concurrency or 0)
    return per_process * max(1, processes)


def in_flight_by_lane(session: Session, queue: str) -> dict[LaneKey, int]:
    """Jobs of ``queue`` published and not yet finished, by lane."""
    rows = session.execute(
        select(Job.owner_id, Job.run_id, func.count())
        .where(Job.queue == queue, IN_FLIGHT)
        .group_by(Job.owner_id, Job.run_id)
    )
    return {(owner, run): int(n) for owner, run, n in rows}


def waiting_lanes(session: Session, queue: str) -> list[Lane]:
    """The lanes of ``queue`` with jobs waiting for a place in the window."""
    rows = session.execute(
        select(Job.owner_id, Job.run_id, func.count(), func.min(Job.created_at))
        .where(Job.queue == queue, WAITING)
        .group_by(Job.owner_id, Job.run_id)
    )
    return [Lane(owner, run, int(n), oldest) for owner, run, n, oldest in rows]


def has_waiting(session: Session, queue: str) -> bool:
    """Whether any job of ``queue`` waits for a place (cheap: one partial-index probe)."""
    return (
        session.execute(select(Job.id).where(Job.queue == queue, WAITING).limit(1)).first()
        is not None
    )


def _lock(session: Session, queue: str, now: datetime) -> None:
    """Take the class's dispatch lock for the rest of the caller's transaction."""
    locked = session.execute(
        update(DispatchLock).where(DispatchLock.queue == queue).values(topped_up_at=now)
    )
    if locked.rowcount == 0:  # type: ignore[attr-defined]  # a class added since migrating
        session.execute(insert(DispatchLock).values(queue=queue, topped_up_at=now))


def top_up(
    session: Session,
    queue: str,
    *,
    per_process: int,
    stale_after: float,
    now: datetime | None = None,
) -> list[str]:
    """Fill ``queue``'s window from its waiting jobs, fairly; in the caller's transaction.

    Returns the ids now dispatched, in publishing order: commit, then publish them.
    """
    if queue not in QUEUE_CLASSES:
        raise ValueError(f"unknown queue class {queue!r}")
    now = now or utcnow()
    _lock(session, queue, now)  # first: on SQLite a write takes the lock, a read would not
    size = window_size(session, queue, per_process=per_process, stale_after=stale_after, now=now)
    flying = in_flight_by_lane(session, queue)
    room = None if size is None else size - sum(flying.values())
    if room is not None and room <= 0:
        return []
    lanes = waiting_lanes(session, queue)
    if not lanes:
        return []
    if room is None:
        room = sum(lane.waiting for lane in lanes)
    order = fair_order(lanes, flying, room)
    wanted: dict[LaneKey, int] = {}
    for key in order:
        wanted[key] = wanted.get(key, 0) + 1
    picked = {key: _next_jobs(session, queue, key, n) for key, n in wanted.items()}
    ids = [picked[key].pop(0) for key in order if picked[key]]
    if not ids:
        return []
    marked = mark(session, Job, ids, WAITING, dispatched_at=now)
    return [job_id for job_id in ids if job_id in marked]


def _next_jobs(session: Session, queue: str, lane: LaneKey, n: int) -> list[str]:
    owner, run = lane
    stmt = (
        select(Job.id)
        .where(
            Job.queue == queue,
            WAITING,
            Job.owner_id == owner,
            Job.run_id.is_(None) if run is None else Job.run_id == run,
        )
        .order_by(Job.created_at, Job.id)
        .limit(n)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.scalars(stmt))


def queue_stats(session: Session, now: datetime | None = None) -> dict[str, dict[str, float]]:
    """Per class: ``waiting`` (queued jobs, in the broker or not), ``in_broker`` (queued and
    published) and ``oldest_seconds`` (age of the oldest queued job; 0 when none)."""
    now = now or utcnow()
    stats = {q: {"waiting": 0.0, "in_broker": 0.0, "oldest_seconds": 0.0} for q in QUEUE_CLASSES}
    rows = session.execute(
        select(
            Job.queue,
            func.count(),
            func.count(Job.dispatched_at),
            func.min(Job.queued_at),
        )
        .where(Job.status == _QUEUED)
        .group_by(Job.queue)
    )
    for queue, n, published, oldest in rows:
        entry = stats.setdefault(queue, {})
        entry["waiting"] = float(n)
        entry["in_broker"] = float(published)
        entry["oldest_seconds"] = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
    return stats


__all__ = [
    "IN_FLIGHT",
    "WAITING",
    "Lane",
    "fair_order",
    "has_waiting",
    "in_flight_by_lane",
    "queue_stats",
    "top_up",
    "waiting_lanes",
    "window_size",
]
