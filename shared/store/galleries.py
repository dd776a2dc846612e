"""Galleries, their runs and schedules, and result retention — framework-free.

A run makes one job per gallery image (``only_stale`` skips images that already have a
succeeded result for the same parameters and the current algorithm version), and keeps its
counters as its jobs end. Schedules are claimed by a compare-and-set on ``next_run_at`` (and
``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so two beat processes never start the same slot
twice, and a beat that was down across several slots starts one catch-up run, not a burst;
a slot whose run would skip every image records no run at all. A run's jobs are batch
work: committed ``queued`` and handed to workers a window at a time by :mod:`shared.dispatch`
(callers top the batch window up, commit, and publish).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from kseg.shared.core.params import SegmentParams, parse_params
from kseg.shared.core.segment import ALGORITHM_VERSION
from kseg.shared.errors import InvalidParameterError
from kseg.shared.statuses import ACTIVE_STATUSES, RunStatus
from kseg.shared.store import jobs
from kseg.shared.store.db import newest_first
from kseg.shared.store.models import (
    Gallery,
    GalleryImage,
    Image,
    Job,
    Result,
    ResultOutput,
    Run,
    Schedule,
    utcnow,
)
from kseg.shared.store.runs import refresh_run
from kseg.shared.store.schedules import next_slot, parse_timezone, validate_cron
from kseg.shared.webhooks import NO_HOOK, Hook

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- galleries


def gallery_params(gallery: Gallery, overrides: dict[str, Any] | None = None) -> SegmentParams:
    """The gallery's default parameters with ``overrides`` on top, validated."""
    return parse_params({**(gallery.params or {}), **(overrides or {})})


def create_gallery(
    session: Session, owner_id: str, name: str, params: dict[str, Any] | None = None
) -> Gallery:
    name = _clean_name(name)
    gallery = Gallery(owner_id=owner_id, name=name, params=parse_params(params).canonical())
    session.add(gallery)
    session.flush()
    return gallery


def update_gallery(
    session: Session,
    gallery: Gallery,
    *,
    name: str | None = None,
    params: dict[str, Any] | None = None,
) -> Gallery:
    if name is not None:
        gallery.name = _clean_name(name)
    if params is not None:
        gallery.params = parse_params(params).canonical()
    gallery.updated_at = utcnow()
    session.flush()
    return gallery


def _clean_name(name: Any) -> str:
    text = " ".join(str(name or "").split())
    if not text:
        raise InvalidParameterError("name: give the gallery a name")
    if len(text) > 200:
        raise InvalidParameterError("name: at most 200 characters")
    return text


def add_images(session: Session, gallery: Gallery, images: list[Image]) -> list[Image]:
    """Add images (already the owner's) to a gallery; ones already in it are kept once."""
    present = set(
        session.scalars(
            select(GalleryImage.image_id).where(
                GalleryImage.gallery_id == gallery.id,
                GalleryImage.image_id.in_([image.id for image in images]),
            )
        )
    )
    now = utcnow()
    for image in images:
        if image.id not in present:
            session.add(GalleryImage(gallery_id=gallery.id, image_id=image.id, added_at=now))
            present.add(image.id)
    session.flush()
    return images


def remove_image(session: Session, gallery: Gallery, image_id: str) -> bool:
    removed = session.execute(
        delete(GalleryImage).where(
            GalleryImage.gallery_id == gallery.id, GalleryImage.image_id == image_id
        )
    )
    return removed.rowcount == 1  # type: ignore[attr-defined]


def image_count(session: Session, gallery_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(GalleryImage)
            .where(GalleryImage.gallery_id == gallery_id)
        )
        or 0
    )


def gallery_image_ids(session: Session, gallery_id: str) -> list[str]:
    return list(
        session.scalars(
            select(GalleryImage.image_id)
            .where(GalleryImage.gallery_id == gallery_id)
            .order_by(GalleryImage.added_at, GalleryImage.image_id)
        )
    )


def latest_jobs(
    session: Session, gallery_id: str, image_ids: Sequence[str] | None = None
) -> dict[str, Job]:
    """The newest job of this gallery for each of its images (for thumbnails); only for
    ``image_ids`` when given (a page of a 5,000-image gallery loads 5,000 jobs otherwise)."""
    if image_ids is not None and not image_ids:
        return {}
    where = [Job.gallery_id == gallery_id]
    if image_ids is not None:
        where.append(Job.image_id.in_(list(image_ids)))
    newest = (
        select(Job.image_id, func.max(Job.created_at).label("at"))
        .where(*where)
        .group_by(Job.image_id)
        .subquery()
    )
    rows = session.scalars(
        select(Job)
        .join(newest, (Job.image_id == newest.c.image_id) & (Job.created_at == newest.c.at))
        .where(*where)
    )
    return {job.image_id: job for job in rows}


def tile_jobs(
    session: Session,
    gallery: Gallery,
    image_ids: Sequence[str],
    newest: dict[str, Job] | None = None,
) -> dict[str, Job]:
    """For each of these images of the gallery, the job whose state and result its tile shows,
    agreeing with the gallery's newest run:

    - the gallery's newest job for the image while it is queued or running;
    - else, when the newest run made that job, it (or a current result computed since);
    - else the image's current result (:func:`jobs.current_results`) for the parameters of the
      newest run or the gallery's defaults, wherever it came from: what a run skips as
      "already up to date" shows as done, not as "not run yet";
    - else the gallery's newest job (from an older run), if any.

    ``newest``: :func:`latest_jobs` of these images, when the caller has it already. Three
    queries for a page of images (and one for the jobs of current results made elsewhere)."""
    if not image_ids:
        return {}
    if newest is None:
        newest = latest_jobs(session, gallery.id, image_ids)
    last_run = session.execute(
        select(Run.id, Run.params_key)
        .where(Run.gallery_id == gallery.id)
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(1)
    ).first()
    keys = [jobs.params_key(gallery_params(gallery))]
    if last_run is not None and last_run.params_key:
        keys.insert(0, last_run.params_key)
    current_ids = jobs.current_results(session, gallery.owner_id, image_ids, keys)
    known = {job.id: job for job in newest.values()}
    missing = [job_id for job_id in current_ids.values() if job_id not in known]
    if missing:
        known.update(
            (job.id, job) for job in session.scalars(select(Job).where(Job.id.in_(missing)))
        )
    shown: dict[str, Job] = {}
    for image_id in image_ids:
        made = newest.get(image_id)
        current = known.get(current_ids.get(image_id, ""))
        if made is not None and (made.status in ACTIVE_STATUSES or current is None):
            shown[image_id] = made
        elif made is not None and last_run is not None and made.run_id == last_run.id:
            assert current is not None
            shown[image_id] = current if current.created_at > made.created_at else made
        elif current is not None:
            shown[image_id] = current
    return shown


# ---------------------------------------------------------------- runs


@dataclass
class RunStart:
    run: Run
    #: The jobs the run made (images skipped as up to date get none).
    job_ids: list[str] = field(default_factory=list)


@dataclass
class RunPlan:
    """What a run of a gallery would do: its images, oldest added first, and of those the
    ones to segment (with ``only_stale``, those without a current result)."""

    images: list[Image]
    to_segment: list[Image]

    @property
    def skipped(self) -> int:
        return len(self.images) - len(self.to_segment)


def plan_run(session: Session, gallery: Gallery, key: str, *, only_stale: bool) -> RunPlan:
    """The gallery's images and which a run with parameters ``key`` would segment. "Already
    up to date" is :func:`jobs.current_results`, as the gallery's grid shows it."""
    images = list(
        session.scalars(
            select(Image)
            .join(GalleryImage, GalleryImage.image_id == Image.id)
            .where(GalleryImage.gallery_id == gallery.id)
            .order_by(GalleryImage.added_at, Image.id)
        ).all()
    )
    if not only_stale:
        return RunPlan(images, list(images))
    current = jobs.current_results(session, gallery.owner_id, [i.id for i in images], [key])
    return RunPlan(images, [image for image in images if image.id not in current])


def start_run(
    session: Session,
    gallery: Gallery,
    *,
    trigger: str,
    params: SegmentParams,
    only_stale: bool,
    scheduled_for: datetime | None = None,
    plan: RunPlan | None = None,
    hook: Hook = NO_HOOK,
) -> RunStart:
    """Create a run and one job per image; skipped images (``only_stale``) get no job.
    ``plan``: the :func:`plan_run` already made for these parameters. With a ``hook``, the
    run's ``run.finished`` and its jobs' events go to its URL."""
    key = jobs.params_key(params)
    if plan is None:
        plan = plan_run(session, gallery, key, only_stale=only_stale)
    run = Run(
        gallery_id=gallery.id,
        owner_id=gallery.owner_id,
        trigger=trigger,
        status=RunStatus.RUNNING,
        params=params.canonical(),
        params_key=key,
        only_stale=only_stale,
        scheduled_for=scheduled_for,
        webhook_url=hook.url,
        webhook_events=hook.events,
    )
    session.add(run)
    session.flush()
    start = RunStart(run)
    run.total = len(plan.images)
    run.skipped = plan.skipped
    for image in plan.to_segment:
        # A run reprocesses: it computes afresh rather than reusing an older result.
        job = jobs.submit_job(
            session,
            gallery.owner_id,
            image,
            params,
            reuse=False,
            queue="batch",
            hook=hook,
        )
        job.gallery_id = gallery.id
        job.run_id = run.id
        start.job_ids.append(job.id)
    session.flush()
    refresh_run(session, run.id)
    return start


# ---------------------------------------------------------------- schedules


def set_schedule(
    session: Session,
    gallery: Gallery,
    *,
    cron: str,
    timezone: str,
    params: dict[str, Any] | None,
    enabled: bool = True,
    only_stale: bool = True,
    now: datetime | None = None,
    hook: Hook = NO_HOOK,
) -> Schedule:
    """Create or replace the gallery's schedule; computes ``next_run_at``."""
    cron = validate_cron(cron)
    parse_timezone(timezone)
    canonical = parse_params({**(gallery.params or {}), **params}).canonical() if params else None
    now = now or utcnow()
    upcoming = next_slot(cron, timezone, now)  # also refuses a cron that never matches
    schedule = session.scalar(select(Schedule).where(Schedule.gallery_id == gallery.id))
    if schedule is None:
        schedule = Schedule(gallery_id=gallery.id, created_at=now)
        session.add(schedule)
    schedule.cron = cron
    schedule.timezone = timezone.strip()
    schedule.params = canonical
    schedule.enabled = bool(enabled)
    schedule.only_stale = bool(only_stale)
    schedule.webhook_url, schedule.webhook_events = hook
    schedule.next_run_at = upcoming if enabled else None
    schedule.updated_at = now
    session.flush()
    return schedule


def delete_schedule(session: Session, gallery: Gallery) -> bool:
    removed = session.execute(delete(Schedule).where(Schedule.gallery_id == gallery.id))
    return removed.rowcount == 1  # type: ignore[attr-defined]


def run_due_schedules(session: Session, *, now: datetime | None = None) -> list[RunStart]:
    """One beat tick: start a run for every enabled schedule whose slot has come.

    Each due schedule is claimed by moving ``next_run_at`` from the value read to the next
    slot after ``now`` — a compare-and-set whose row count says who won. Missed slots (beat
    was down) collapse into this one catch-up run.
    """
    now = now or utcnow()
    query = (
        select(Schedule.id, Schedule.next_run_at)
        .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
        .order_by(Schedule.next_run_at)
        .limit(100)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    started: list[RunStart] = []
    for schedule_id, slot in session.execute(query).all():
        schedule = session.get(Schedule, schedule_id)
        if schedule is None:
            continue
        following = next_slot(schedule.cron, schedule.timezone, now)
        claimed = session.execute(
            update(Schedule)
            .where(Schedule.id == schedule_id, Schedule.next_run_at == slot)
            .values(next_run_at=following)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another beat took this slot
        gallery = session.get(Gallery, schedule.gallery_id)
        if gallery is None:
            continue
        params = parse_params(schedule.params) if schedule.params else gallery_params(gallery)
        plan = plan_run(session, gallery, jobs.params_key(params), only_stale=schedule.only_stale)
        if not plan.to_segment:
            # Nothing to do: no run is recorded (a `*/2` schedule would otherwise add a
            # "0 succeeded, 5 skipped" run every two minutes). Manual runs always record one.
            log.info(
                "schedule of gallery %s, slot %s: %s; no run recorded",
                gallery.id,
                slot,
                f"all {len(plan.images)} images up to date" if plan.images else "no images",
            )
            continue
        start = start_run(
            session,
            gallery,
            trigger="schedule",
            params=params,
            only_stale=schedule.only_stale,
            scheduled_for=slot,
            plan=plan,
            hook=Hook(schedule.webhook_url, schedule.webhook_events),
        )
        session.execute(
            update(Schedule)
            .where(Schedule.id == schedule_id)
            .values(last_run_id=start.run.id)
            .execution_options(synchronize_session=False)
        )
        started.append(start)
    return started


# ---------------------------------------------------------------- retention


def prune_results(session: Session, keep: int, *, limit: int = 500) -> int:
    """Keep the newest ``keep`` results per image and parameters; delete older ones (their
    PNGs too). Jobs that pointed at a deleted result stay, with ``result`` gone and stage
    ``expired``. Returns how many results were deleted."""
    if keep < 1:
        return 0
    newest = newest_first(
        Result.id, per=(Result.image_id, Result.params_key), by=(Result.created_at, Result.id)
    ).subquery()
    doomed = list(session.scalars(select(newest.c.id).where(newest.c.rank > keep).limit(limit)))
    if not doomed:
        return 0
    session.execute(
        update(Job)
        .where(Job.result_id.in_(doomed))
        .values(result_id=None, stage="expired")
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(ResultOutput).where(ResultOutput.result_id.in_(doomed)))
    session.execute(delete(Result).where(Result.id.in_(doomed)))
    return len(doomed)


__all__ = [
    "ALGORITHM_VERSION",
    "RunPlan",
    "RunStart",
    "add_images",
    "create_gallery",
    "delete_schedule",
    "gallery_image_ids",
    "gallery_params",
    "image_count",
    "latest_jobs",
    "plan_run",
    "prune_results",
    "remove_image",
    "run_due_schedules",
    "set_schedule",
    "start_run",
    "tile_jobs",
    "update_gallery",
]
