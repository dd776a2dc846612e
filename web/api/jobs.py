"""``/api/v1/jobs``: submit, read, list, cancel/delete, and download outputs."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, request
from sqlalchemy import select

from kseg.shared.core.params import OUTPUT_NAMES, SegmentParams, parse_params
from kseg.shared.statuses import JOB_STATUSES, JobStatus
from kseg.shared.store.events import delivery_id, job_delivery, run_delivery
from kseg.shared.store.images import store_image
from kseg.shared.store.jobs import delete_job, submit_job
from kseg.shared.store.models import Image, Job, ResultOutput, Run
from kseg.shared.store.outputs import output_png
from kseg.shared.store.quotas import check_active_jobs
from kseg.shared.webhooks import Hook
from kseg.web import limits
from kseg.web.api.auth import object_response, own, owned_page, owner_id
from kseg.web.api.blueprint import bp
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
from kseg.web.api.webhooks import wake, webhook_fields
from kseg.web.common.apidoc import (
    IF_NONE_MATCH,
    cached_file,
    header,
    json_response,
    query,
    ref,
    tagged,
    upload_request,
)
from kseg.web.common.errors import ApiError
from kseg.web.common.schemas import JobSubmitJson
from kseg.web.common.serialize import job_obj, jobs_objs, output_names
from kseg.web.db import get_session
from kseg.web.queue import commit_and_publish

ops = tagged("jobs")
CACHE_FOREVER = "private, max-age=31536000, immutable"
OUTPUT_ETAG = {"ETag": header("The output's id: an output never changes once stored.")}


def _own_job(job_id: str) -> Job:
    return own(Job, job_id, "job")


def succeeded_job(job_id: str, *, output: str | None = None, what: str = "outputs") -> Job:
    """The owner's job, or the contract's 404 (``output_not_found``) when ``output`` names no
    output or the job has not succeeded (it has no ``what`` yet)."""
    job = _own_job(job_id)
    if output is not None and output not in OUTPUT_NAMES:
        raise ApiError(
            404,
            "output_not_found",
            f"There is no output named {output!r}; outputs are {', '.join(OUTPUT_NAMES)}.",
        )
    if job.status != JobStatus.SUCCEEDED or job.result_id is None:
        raise ApiError(
            404,
            "output_not_found",
            f"Job {job_id} is {job.status}; its {what} exist once it has succeeded "
            "(poll GET /api/v1/jobs/<id>).",
        )
    return job


def _submission() -> tuple[Image, SegmentParams, bool, Hook]:
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
@ops.operation(
    "createJob",
    "Submit a segmentation job",
    description="Multipart: the image in part `file` and the parameters as form fields "
    "(`outputs` comma-separated or repeated). JSON: `image_id` of an uploaded image plus "
    "parameters. The job is stored before it is queued; when an identical job already "
    "succeeded (same image, parameters, algorithm version) and `reuse` is true, the new job is "
    "born `succeeded` with `reused_from` set.",
    request_body=upload_request("JobSubmitForm", "JobSubmitJson"),
    responses={
        "202": {
            **json_response(ref("JobOut"), "Accepted: the job object."),
            "headers": {"Location": header("URL of the job.")},
        }
    },
    errors=(400, 404, 413, 415, 422),
)
def create_job() -> tuple[Response, int, dict[str, str]]:
    session = get_session()
    settings = current_app.config["KSEG_SETTINGS"]
    with limits.submissions(owner_id()):
        check_active_jobs(session, owner_id(), 1, settings.quota_active_jobs)
        image, params, reuse, hook = _submission()
        job = submit_job(session, owner_id(), image, params, reuse=reuse, hook=hook)
    # The answer is built before the commit, which would expire the rows it reads.
    names = output_names(session, [job.result_id] if job.result_id else [])
    body = job_obj(job, names.get(job.result_id or "", []))
    job_id = job.id
    if job.status == JobStatus.QUEUED:
        # Broker down: the job stays queued, and the sweeper publishes it.
        commit_and_publish(session, "interactive")
    else:
        event = job_delivery(job)  # born succeeded (reused): its event is due now
        session.commit()
        wake([event])
    return jsonify(body), 202, {"Location": f"/api/v1/jobs/{job_id}"}


@bp.get("/jobs")
@ops.list(
    "listJobs",
    "List your jobs, newest first",
    parameters=[
        query(
            "status",
            f"Only jobs in these states (comma-separated): {', '.join(JOB_STATUSES)}.",
        ),
        query(
            "gallery_id",
            "Only jobs made by this gallery's runs (an unknown or another owner's gallery is "
            "a 404).",
        ),
        query(
            "image_id",
            "Only jobs on this image (an unknown or another owner's image is a 404).",
        ),
    ],
    model="JobList",
    errors=(400, 404, 422),  # an unknown gallery_id or image_id
)
def list_jobs() -> Response:
    criteria = []
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
        criteria.append(Job.status.in_(wanted))
    if gallery_id := request.args.get("gallery_id"):
        criteria.append(Job.gallery_id == own_gallery(gallery_id).id)
    if image_id := request.args.get("image_id"):
        criteria.append(Job.image_id == own_image(image_id).id)
    return owned_page(Job, jobs_objs, *criteria)


@bp.get("/jobs/<job_id>")
@ops.read(
    "getJob", "A job: status, progress, parameters and (when succeeded) result", model="JobOut"
)
def get_job(job_id: str) -> Response:
    return object_response(jobs_objs, _own_job(job_id))


@bp.delete("/jobs/<job_id>")
@ops.delete(
    "deleteJob",
    "Cancel a queued/running job, or delete a finished one, and its results",
    description="A queued or running job becomes `canceled` (its row stays); a finished job is "
    "removed. Results shared with another job are kept for it.",
)
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
@ops.operation(
    "getJobOutput",
    "A result image (PNG); cacheable forever (it never changes)",
    parameters=[IF_NONE_MATCH],
    responses=cached_file("image/png", "The PNG.", OUTPUT_ETAG),
)
def job_output(job_id: str, name: str) -> Response:
    session = get_session()
    job = succeeded_job(job_id, output=name)
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
