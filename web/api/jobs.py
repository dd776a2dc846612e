"""``/api/v1/jobs``: submit, read, list, cancel/delete, and download outputs."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, request
from sqlalchemy import select

from kseg.shared.core.params import OUTPUT_NAMES, SegmentParams, parse_params
from kseg.shared.statuses import JOB_STATUSES
from kseg.shared.store.events import delivery_id, job_delivery, run_delivery
from kseg.shared.store.images import store_image
from kseg.shared.store.jobs import delete_job, submit_job
from kseg.shared.store.models import Image, Job, ResultOutput, Run
from kseg.shared.store.outputs import output_png
from kseg.shared.store.quotas import check_active_jobs
from kseg.web import limits
from kseg.web.api import paging
from kseg.web.api.auth import owner_id
from kseg.web.api.blueprint import bp
from kseg.web.api.errors import ApiError, not_found
from kseg.web.api.galleries import own_gallery
from kseg.web.api.images import own_image
from kseg.web.api.requests import (
    body_kind,
    file_parts,
    form_fields,
    json_object,
    parse_bool,
    validate,
)
from kseg.web.api.schemas import JobSubmitJson
from kseg.web.api.serialize import job_obj, jobs_objs, output_names
from kseg.web.api.webhooks import wake, webhook_fields
from kseg.web.db import get_session
from kseg.web.owned import find_owned
from kseg.web.queue import commit_and_publish

CACHE_FOREVER = "private, max-age=31536000, immutable"


def _own_job(job_id: str) -> Job:
    job = find_owned(Job, job_id, owner_id())
    if job is None:
        raise not_found("job", job_id)
    return job


def _submission() -> tuple[Image, SegmentParams, bool, tuple[str | None, str | None]]:
    session = get_session()
    settings = current_app.config["KSEG_SETTINGS"]
    if body_kind() == "multipart":
        part = file_parts(many=False)[0]
        fields = form_fields()
        reuse = parse_bool("reuse", fields.pop("reuse", None))
        hook = webhook_fields(fields.pop("webhook_url", None), fields.pop("webhook_events", None))
        params = parse_params(fields)  # before storing anything: a bad k stores no image
        image, created = store_image(
            session,
            owner_id(),
            part.read(),
            part.filename,
            max_pixels=settings.max_image_pixels,
            max_stored_bytes=settings.quota_stored_bytes,
        )
        # A first upload has no finished job to reuse: skip looking for one.
        return image, params, reuse and not created, hook
    body: dict[str, Any] = json_object()
    sub = validate(JobSubmitJson, body)
    hook = webhook_fields(sub.webhook_url, sub.webhook_events)
    params = parse_params(
        sub.model_dump(exclude={"image_id", "reuse", "webhook_url", "webhook_events"})
    )
    return own_image(sub.image_id), params, sub.reuse, hook


@bp.post("/jobs")
def create_job() -> tuple[Response, int, dict[str, str]]:
    session = get_session()
    settings = current_app.config["KSEG_SETTINGS"]
    with limits.submissions(owner_id()):
        check_active_jobs(session, owner_id(), 1, settings.quota_active_jobs)
        image, params, reuse, (hook_url, hook_events) = _submission()
        job = submit_job(
            session,
            owner_id(),
            image,
            params,
            reuse=reuse,
            webhook_url=hook_url,
            webhook_events=hook_events,
        )
    # The answer is built before the commit, which would expire the rows it reads.
    names = output_names(session, [job.result_id] if job.result_id else [])
    body = job_obj(job, names.get(job.result_id or "", []))
    job_id = job.id
    if job.status == "queued":
        # Broker down: the job stays queued, and the sweeper publishes it.
        commit_and_publish(session, "interactive")
    else:
        event = job_delivery(job)  # born succeeded (reused): its event is due now
        session.commit()
        wake([event])
    return jsonify(body), 202, {"Location": f"/api/v1/jobs/{job_id}"}


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    return jsonify(jobs_objs(get_session(), [_own_job(job_id)])[0])


@bp.get("/jobs")
def list_jobs() -> Response:
    page = paging.parse_page()
    stmt = select(Job).where(Job.owner_id == owner_id())
    raw_status = request.args.get("status")
    if raw_status:
        wanted = [s.strip() for s in raw_status.split(",") if s.strip()]
        bad = [s for s in wanted if s not in JOB_STATUSES]
        if bad or not wanted:
            raise ApiError(
                422,
                "invalid_parameter",
                f"status: {bad[0] if bad else raw_status!r} is not a job status; use one or "
                f"more (comma-separated) of {', '.join(JOB_STATUSES)}.",
            )
        stmt = stmt.where(Job.status.in_(wanted))
    gallery_id = request.args.get("gallery_id")
    if gallery_id:
        stmt = stmt.where(Job.gallery_id == own_gallery(gallery_id).id)
    image_id = request.args.get("image_id")
    if image_id:
        stmt = stmt.where(Job.image_id == own_image(image_id).id)
    session = get_session()
    rows, cursor = paging.fetch(session, stmt, Job, page)
    return jsonify({"items": jobs_objs(session, rows), "next": cursor})


@bp.delete("/jobs/<job_id>")
def remove_job(job_id: str) -> tuple[str, int]:
    session = get_session()
    job = _own_job(job_id)
    run_id = job.run_id
    if delete_job(session, job) == "canceled":
        events = [delivery_id(job_id, "job.canceled")]
        if run_id:
            events.append(run_delivery(session.get(Run, run_id)))
        session.commit()
        wake(events)
    else:
        session.commit()
    return "", 204


@bp.get("/jobs/<job_id>/outputs/<name>.png")
def job_output(job_id: str, name: str) -> Response:
    session = get_session()
    job = _own_job(job_id)
    if name not in OUTPUT_NAMES:
        raise ApiError(
            404,
            "output_not_found",
            f"There is no output named {name!r}; outputs are {', '.join(OUTPUT_NAMES)}.",
        )
    if job.status != "succeeded" or job.result_id is None:
        raise ApiError(
            404,
            "output_not_found",
            f"Job {job_id} is {job.status}; its outputs exist once it has succeeded "
            "(poll GET /api/v1/jobs/<id>).",
        )
    # Output rows never change: the row's id is a strong validator.
    etag = session.scalar(
        select(ResultOutput.id).where(
            ResultOutput.result_id == job.result_id, ResultOutput.name == name
        )
    )
    if etag is None:
        raise ApiError(
            404,
            "output_not_found",
            f"Job {job_id} did not render {name!r} (its params.outputs did not ask for it); "
            "submit a job with that output.",
        )
    if request.if_none_match.contains_weak(etag):
        response = Response(status=304)
    else:
        response = Response(output_png(session, job.result_id, name), mimetype="image/png")
    response.set_etag(etag)
    response.headers["Cache-Control"] = CACHE_FOREVER
    return response
