"""Rows → the API's JSON objects (through the response models of :mod:`kseg.web.common.schemas`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kseg.shared.statuses import JobStatus, RunStatus
from kseg.shared.store.galleries import latest_jobs, tile_jobs
from kseg.shared.store.models import Gallery, GalleryImage, Image, Job, Run, Schedule
from kseg.shared.store.objects import (
    BASE,
    columns,
    events_list,
    job_data,
    output_names,
    output_url,
    result_data,
    run_data,
)
from kseg.shared.store.runs import live_counts, split_live_counts, with_live_counts
from kseg.shared.store.schedules import describe
from kseg.web.common import paging
from kseg.web.common.schemas import (
    GalleryImageOut,
    GalleryOut,
    ImageOut,
    JobOut,
    JobResult,
    RunOut,
    ScheduleOut,
)

log = logging.getLogger(__name__)


#: An image's columns its API object shows as they are.
IMAGE_COLUMNS = (
    "id", "filename", "width", "height", "content_type", "format", "size_bytes", "sha256",
    "created_at",
)  # fmt: skip


def _image_data(image: Image) -> dict[str, Any]:
    return {
        **columns(image, IMAGE_COLUMNS),
        "links": {"self": f"{BASE}/images/{image.id}", "file": f"{BASE}/images/{image.id}/file"},
    }


def image_obj(image: Image) -> dict[str, Any]:
    return ImageOut.model_validate(_image_data(image)).model_dump(mode="json")


def images_objs(_session: Session, images: Sequence[Image]) -> list[dict[str, Any]]:
    return [image_obj(image) for image in images]


def _result(job: Job, names: list[str]) -> dict[str, Any] | None:
    meta = result_data(job, names)
    if meta is None:
        return None
    try:
        return JobResult.model_validate(meta).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:  # the core's metadata drifted: still answer, but say so
        log.warning("result %s does not match the JobResult schema: %s", job.result_id, exc)
        return meta


def job_obj(job: Job, names: list[str] | None = None) -> dict[str, Any]:
    out = JobOut.model_validate(job_data(job)).model_dump(mode="json")
    out["result"] = _result(job, names or [])
    return out


def jobs_objs(session: Session, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    names = output_names(
        session, (j.result_id for j in jobs if j.status == JobStatus.SUCCEEDED and j.result_id)
    )
    return [job_obj(job, names.get(job.result_id or "", [])) for job in jobs]


# ---------------------------------------------------------------- galleries, schedules, runs


def run_obj(
    run: Run, live: dict[str, int] | None = None, state: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A run; ``live`` (:func:`kseg.shared.store.runs.live_counts`) replaces its stored
    counters, and ``state`` (``status``, ``finished_at``) its status and end as read with them
    (:func:`kseg.shared.store.runs.with_live_counts`)."""
    return RunOut.model_validate({**run_data(run, live), **(state or {})}).model_dump(mode="json")


def runs_objs(session: Session, runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Runs, those still running with their counters as their jobs are now (one query)."""
    live = live_counts(session, [run.id for run in runs if run.status == RunStatus.RUNNING])
    return [run_obj(run, live.get(run.id)) for run in runs]


def schedule_obj(schedule: Schedule) -> dict[str, Any]:
    next_run_at = schedule.next_run_at if schedule.enabled else None
    description = describe(schedule.cron, schedule.timezone, next_run_at)
    if not schedule.enabled:
        description += ", disabled"
    data = {
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "params": dict(schedule.params) if schedule.params else None,
        "enabled": bool(schedule.enabled),
        "only_stale": bool(schedule.only_stale),
        "next_run_at": next_run_at,
        "description": description,
        "last_run_id": schedule.last_run_id,
        "webhook_url": schedule.webhook_url,
        "webhook_events": events_list(schedule.webhook_events),
        "created_at": schedule.created_at,
        "updated_at": schedule.updated_at,
    }
    return ScheduleOut.model_validate(data).model_dump(mode="json")


def galleries_objs(session: Session, galleries: Sequence[Gallery]) -> list[dict[str, Any]]:
    """Gallery objects with image count, schedule and newest run: four queries for a page."""
    ids = [gallery.id for gallery in galleries]
    if not ids:
        return []
    counts = dict(
        session.execute(
            select(GalleryImage.gallery_id, func.count())
            .where(GalleryImage.gallery_id.in_(ids))
            .group_by(GalleryImage.gallery_id)
        ).all()
    )
    schedules = {
        s.gallery_id: s
        for s in session.scalars(select(Schedule).where(Schedule.gallery_id.in_(ids)))
    }
    newest = (
        select(Run.gallery_id, func.max(Run.created_at).label("at"))
        .where(Run.gallery_id.in_(ids))
        .group_by(Run.gallery_id)
        .subquery()
    )
    last_runs: dict[str, Run] = {}
    for run in session.scalars(
        select(Run)
        .join(newest, (Run.gallery_id == newest.c.gallery_id) & (Run.created_at == newest.c.at))
        .order_by(Run.id)
    ):
        last_runs[run.gallery_id] = run  # same instant: the larger id, as the paging order
    last = {obj["id"]: obj for obj in runs_objs(session, list(last_runs.values()))}
    out = []
    for gallery in galleries:
        schedule = schedules.get(gallery.id)
        last_run = last_runs.get(gallery.id)
        data = {
            "id": gallery.id,
            "name": gallery.name,
            "params": dict(gallery.params or {}),
            "image_count": int(counts.get(gallery.id, 0)),
            "schedule": schedule_obj(schedule) if schedule else None,
            "last_run": last[last_run.id] if last_run else None,
            "created_at": gallery.created_at,
            "updated_at": gallery.updated_at,
            "links": {
                "self": f"{BASE}/galleries/{gallery.id}",
                "images": f"{BASE}/galleries/{gallery.id}/images",
                "runs": f"{BASE}/galleries/{gallery.id}/runs",
                "schedule": f"{BASE}/galleries/{gallery.id}/schedule",
                "jobs": f"{BASE}/jobs?gallery_id={gallery.id}",
            },
        }
        out.append(GalleryOut.model_validate(data).model_dump(mode="json"))
    return out


def _latest_job(job: Job, names: list[str]) -> dict[str, Any]:
    succeeded = job.status == JobStatus.SUCCEEDED and job.result_id is not None
    outputs = {name: output_url(job.id, name) for name in names} if succeeded else {}
    return {
        "id": job.id,
        "status": job.status,
        "progress": max(0, min(100, int(job.progress or 0))),
        "run_id": job.run_id,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "recolor_url": outputs.get("recolor"),
        "outputs": outputs,
        "links": {"self": f"{BASE}/jobs/{job.id}"},
    }


def gallery_images_objs(
    session: Session,
    rows: Sequence[tuple[Image, datetime]],
    latest: dict[str, Job],
    current: dict[str, Job] | None = None,
) -> list[dict[str, Any]]:
    """``(image, added_at)`` rows with the gallery's newest job of each image and the job the
    gallery shows for it (:func:`kseg.shared.store.galleries.tile_jobs`)."""
    current = current or {}
    jobs = [latest[image.id] for image, _ in rows if image.id in latest]
    jobs += [current[image.id] for image, _ in rows if image.id in current]
    names = output_names(
        session, (j.result_id for j in jobs if j.status == JobStatus.SUCCEEDED and j.result_id)
    )

    def brief(job: Job | None) -> dict[str, Any] | None:
        return _latest_job(job, names.get(job.result_id or "", [])) if job else None

    out = []
    for image, added_at in rows:
        data = {
            **_image_data(image),
            "added_at": added_at,
            "latest_job": brief(latest.get(image.id)),
            "current_job": brief(current.get(image.id)),
        }
        out.append(GalleryImageOut.model_validate(data).model_dump(mode="json"))
    return out


def gallery_images_page(
    session: Session, gallery: Gallery, page: paging.Page
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a gallery's images, newest added first, each with the gallery's newest
    job for it (shared by the API and the gallery page)."""
    stmt = (
        select(Image, GalleryImage.added_at)
        .join(GalleryImage, GalleryImage.image_id == Image.id)
        .where(GalleryImage.gallery_id == gallery.id)
    )
    stmt = paging.apply(stmt, Image, page, at=GalleryImage.added_at, ident=Image.id)
    rows = [(image, added_at) for image, added_at in session.execute(stmt)]
    rows, cursor = paging.finish(rows, page, key=lambda row: (row[1], row[0].id))
    ids = [image.id for image, _ in rows]
    newest = latest_jobs(session, gallery.id, ids)
    shown = tile_jobs(session, gallery, ids, newest)
    return gallery_images_objs(session, rows, newest, shown), cursor


def run_jobs_page(
    session: Session, run: Run, owner: str, page: paging.Page
) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """The run object and one page of its jobs, read in one statement
    (:func:`kseg.shared.store.runs.with_live_counts`): the counters agree with the rows while
    jobs end (shared by the API and the run page)."""
    stmt = paging.apply(select(Job).where(Job.run_id == run.id, Job.owner_id == owner), Job, page)
    rows = session.execute(with_live_counts(stmt, run.id)).all()
    if rows:
        counters, state = split_live_counts(rows[0], 1)
    else:  # no job on this page: nothing the counters could disagree with
        counters, state = live_counts(session, [run.id])[run.id], None
    jobs, cursor = paging.finish([row[0] for row in rows], page)
    return run_obj(run, counters, state), jobs_objs(session, jobs), cursor
