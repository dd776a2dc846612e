"""``/api/v1/galleries`` and ``/api/v1/runs``: galleries and their images, schedules and runs.

The data layer is :mod:`shared.galleries`; as for jobs, a run's rows are committed before its
jobs are enqueued, so a broker that is down only delays them (the sweeper enqueues them).
"""

from __future__ import annotations

from typing import Any

from croniter import CroniterError
from flask import Response, jsonify
from sqlalchemy import delete, select

from kseg.shared.errors import InvalidParameterError
from kseg.shared.store.events import run_delivery
from kseg.shared.store.galleries import (
    add_images,
    create_gallery,
    delete_schedule,
    gallery_params,
    remove_image,
    set_schedule,
    start_run,
    update_gallery,
)
from kseg.shared.store.models import Gallery, Image, Run, Schedule
from kseg.web.api.auth import object_response, own, owned_page, owner_id
from kseg.web.api.blueprint import bp
from kseg.web.api.images import store_uploads
from kseg.web.api.requests import body_kind, json_body, json_object, validate
from kseg.web.api.webhooks import wake, webhook_fields
from kseg.web.common import paging
from kseg.web.common.apidoc import (
    PAGING,
    json_request,
    json_response,
    ref,
    tagged,
    upload_request,
)
from kseg.web.common.errors import ApiError, not_found
from kseg.web.common.owned import plausible_id
from kseg.web.common.schemas import (
    GalleryCreate,
    GalleryImagesJson,
    GalleryUpdate,
    RunCreate,
    ScheduleIn,
)
from kseg.web.common.serialize import (
    BASE,
    galleries_objs,
    gallery_images_page,
    image_obj,
    run_jobs_page,
    runs_objs,
    schedule_obj,
)
from kseg.web.db import get_session
from kseg.web.queue import commit_and_publish

ops = tagged("galleries")
LOCATION = {"Location": {"description": "URL of the new object.", "schema": {"type": "string"}}}


def own_gallery(gallery_id: str) -> Gallery:
    return own(Gallery, gallery_id, "gallery")


def own_run(run_id: str) -> Run:
    return own(Run, run_id, "run", "GET /api/v1/galleries/<id>/runs")


# ---------------------------------------------------------------- galleries


@bp.post("/galleries")
@ops.operation(
    "createGallery",
    "Create a gallery: a name and default segmentation parameters",
    request_body=json_request("GalleryCreate"),
    responses={
        "201": {**json_response(ref("GalleryOut"), "Created: the gallery."), "headers": LOCATION}
    },
    errors=(400, 422),
)
def create_gallery_view() -> tuple[Response, int, dict[str, str]]:
    session = get_session()
    sub = validate(GalleryCreate, json_body())
    gallery = create_gallery(session, owner_id(), sub.name, sub.params)
    session.commit()
    location = f"{BASE}/galleries/{gallery.id}"
    return object_response(galleries_objs, gallery), 201, {"Location": location}


@bp.get("/galleries")
@ops.list("listGalleries", "List your galleries, newest first", model="GalleryList")
def list_galleries() -> Response:
    return owned_page(Gallery, galleries_objs)


@bp.get("/galleries/<gallery_id>")
@ops.read(
    "getGallery", "A gallery with its image count, schedule and newest run", model="GalleryOut"
)
def get_gallery(gallery_id: str) -> Response:
    return object_response(galleries_objs, own_gallery(gallery_id))


@bp.patch("/galleries/<gallery_id>")
@ops.operation(
    "updateGallery",
    "Rename a gallery and/or change its default parameters",
    description="`params` is merged over the current defaults (JSON merge patch); "
    '`"params": null` resets them to the contract\'s defaults.',
    request_body=json_request("GalleryUpdate"),
    responses={"200": json_response(ref("GalleryOut"), "The gallery.")},
    errors=(400, 422),
)
def patch_gallery(gallery_id: str) -> Response:
    """Rename and/or change the defaults; ``params`` is merged over the current ones (JSON
    merge patch: ``"params": null`` resets them to the contract's defaults)."""
    session = get_session()
    gallery = own_gallery(gallery_id)
    sub = validate(GalleryUpdate, json_body())
    given = sub.model_fields_set
    if "name" in given and sub.name is None:
        raise InvalidParameterError("name: a gallery needs a name; leave it out to keep it")
    params: dict[str, Any] | None = None
    if "params" in given:
        params = {**(gallery.params or {}), **sub.params} if sub.params is not None else {}
    update_gallery(session, gallery, name=sub.name, params=params)
    session.commit()
    return object_response(galleries_objs, gallery)


@bp.delete("/galleries/<gallery_id>")
@ops.delete(
    "deleteGallery",
    "Delete a gallery with its membership, schedule and runs",
    description="The images and the jobs stay (the jobs lose `gallery_id` and `run_id`).",
)
def delete_gallery(gallery_id: str) -> tuple[str, int]:
    """Removes the gallery, its membership, schedule and runs; images and jobs stay."""
    session = get_session()
    gallery = own_gallery(gallery_id)
    session.execute(delete(Gallery).where(Gallery.id == gallery.id))
    session.commit()
    return "", 204


# ---------------------------------------------------------------- gallery images


def _images_by_id(ids: list[str]) -> list[Image]:
    """The owner's images with these ids, in the order given; 404 naming the first unknown."""
    for ident in ids:
        if not plausible_id(ident):
            raise not_found("image", ident)
    wanted = set(ids)
    found = {
        image.id: image
        for image in get_session().scalars(
            select(Image).where(Image.id.in_(wanted), Image.owner_id == owner_id())
        )
    }
    for ident in ids:
        if ident not in found:
            raise not_found("image", ident)
    return [found[ident] for ident in ids]


@bp.post("/galleries/<gallery_id>/images")
@ops.operation(
    "addGalleryImages",
    "Add images: upload them (parts `file`) or name uploaded ones",
    description="Multipart: one or more parts `file`, uploaded all or nothing as with POST "
    "/api/v1/images. JSON: `image_ids` of your images (an unknown id is a 404 and adds none). "
    "Images already in the gallery stay in it once.",
    request_body=upload_request("ImageUploadForm", "GalleryImagesJson"),
    responses={"201": json_response(ref("ImageList"), "The images, in the order given.")},
    errors=(400, 413, 415, 422),
)
def add_gallery_images(gallery_id: str) -> tuple[Response, int]:
    """Multipart ``file`` parts (uploaded all or nothing) or JSON ``{"image_ids": [...]}``;
    images already in the gallery stay in it once."""
    session = get_session()
    gallery = own_gallery(gallery_id)
    if body_kind() == "multipart":
        images = store_uploads()
    else:
        sub = validate(GalleryImagesJson, json_object())
        images = _images_by_id(sub.image_ids)
    add_images(session, gallery, images)
    session.commit()
    return jsonify({"items": [image_obj(image) for image in images]}), 201


@bp.get("/galleries/<gallery_id>/images")
@ops.list(
    "listGalleryImages",
    "The gallery's images, newest added first, each with its newest job",
    model="GalleryImageList",
)
def list_gallery_images(gallery_id: str) -> Response:
    """Newest added first, each with the gallery's newest job for it."""
    page = paging.parse_page()
    items, cursor = gallery_images_page(get_session(), own_gallery(gallery_id), page)
    return jsonify({"items": items, "next": cursor})


@bp.delete("/galleries/<gallery_id>/images/<image_id>")
@ops.delete("removeGalleryImage", "Take an image out of the gallery (the image itself stays)")
def remove_gallery_image(gallery_id: str, image_id: str) -> tuple[str, int]:
    """Takes the image out of the gallery; the image itself (and its jobs) stay."""
    session = get_session()
    gallery = own_gallery(gallery_id)
    if not plausible_id(image_id) or not remove_image(session, gallery, image_id):
        raise not_found("image", image_id, f"GET /api/v1/galleries/{gallery.id}/images")
    session.commit()
    return "", 204


# ---------------------------------------------------------------- schedule


def _own_schedule(gallery: Gallery) -> Schedule:
    schedule = get_session().scalar(select(Schedule).where(Schedule.gallery_id == gallery.id))
    if schedule is None:
        raise ApiError(
            404,
            "schedule_not_found",
            f"Gallery {gallery.id} has no schedule; create one with "
            f"PUT /api/v1/galleries/{gallery.id}/schedule.",
        )
    return schedule


@bp.put("/galleries/<gallery_id>/schedule")
@ops.operation(
    "putSchedule",
    "Create or replace the gallery's reprocessing schedule",
    description="The cron expression is matched on the wall clock of `timezone`. Around "
    "daylight-saving changes a skipped local time runs shifted forward by the gap, and a "
    "repeated one runs once, at its first occurrence. A bad cron expression or time zone is a "
    "422.",
    request_body=json_request("ScheduleIn"),
    responses={"200": json_response(ref("ScheduleOut"), "The schedule, with `next_run_at`.")},
    errors=(400, 422),
)
def put_schedule(gallery_id: str) -> Response:
    """Create or replace the schedule; a bad cron expression or time zone is a 422."""
    session = get_session()
    gallery = own_gallery(gallery_id)
    sub = validate(ScheduleIn, json_body())
    hook = webhook_fields(sub.webhook_url, sub.webhook_events)
    try:
        schedule = set_schedule(
            session,
            gallery,
            cron=sub.cron,
            timezone=sub.timezone,
            params=sub.params,
            enabled=sub.enabled,
            only_stale=sub.only_stale,
            hook=hook,
        )
    except CroniterError:  # well-formed but never due, e.g. "0 0 30 2 *" (30 February)
        raise InvalidParameterError(
            f"cron: {sub.cron!r} never matches a date; check its day and month fields"
        ) from None
    session.commit()
    return jsonify(schedule_obj(schedule))


@bp.get("/galleries/<gallery_id>/schedule")
@ops.read("getSchedule", "The gallery's schedule (404 when it has none)", model="ScheduleOut")
def get_schedule(gallery_id: str) -> Response:
    return jsonify(schedule_obj(_own_schedule(own_gallery(gallery_id))))


@bp.delete("/galleries/<gallery_id>/schedule")
@ops.delete("deleteSchedule", "Remove the gallery's schedule")
def remove_schedule(gallery_id: str) -> tuple[str, int]:
    session = get_session()
    gallery = own_gallery(gallery_id)
    if not delete_schedule(session, gallery):
        _own_schedule(gallery)  # none: the 404
    session.commit()
    return "", 204


# ---------------------------------------------------------------- runs


@bp.post("/galleries/<gallery_id>/runs")
@ops.operation(
    "createRun",
    "Reprocess the gallery now: a job per image",
    description="`params` are merged over the gallery's defaults. With `only_stale` (the "
    "default), images that already have a succeeded result for the same parameters and the "
    "current algorithm version get no job and count as `skipped`. The jobs are stored before "
    "they are queued; an empty body is fine.",
    request_body=json_request("RunCreate", required=False),
    responses={"202": {**json_response(ref("RunOut"), "Accepted: the run."), "headers": LOCATION}},
    errors=(400, 422),
)
def create_run(gallery_id: str) -> tuple[Response, int, dict[str, str]]:
    """Reprocess the gallery now: a job per image (``only_stale`` skips current ones)."""
    session = get_session()
    gallery = own_gallery(gallery_id)
    sub = validate(RunCreate, json_body(optional=True))
    params = gallery_params(gallery, sub.params)
    hook = webhook_fields(sub.webhook_url, sub.webhook_events)
    start = start_run(
        session, gallery, trigger="manual", params=params, only_stale=sub.only_stale, hook=hook
    )
    run = start.run
    body = runs_objs(session, [run])[0]
    event = run_delivery(run)  # every image skipped: the run ended at once
    # Broker down: the jobs stay queued, and the sweeper publishes them.
    commit_and_publish(session, "batch")
    wake([event])
    return jsonify(body), 202, {"Location": f"{BASE}/runs/{run.id}"}


@bp.get("/galleries/<gallery_id>/runs")
@ops.list("listRuns", "The gallery's runs, newest first", model="RunList")
def list_runs(gallery_id: str) -> Response:
    return owned_page(Run, runs_objs, Run.gallery_id == own_gallery(gallery_id).id)


@bp.get("/runs/<run_id>")
@ops.read("getRun", "A run: status and how many of its jobs are in each state", model="RunOut")
def get_run(run_id: str) -> Response:
    return object_response(runs_objs, own_run(run_id))


@bp.get("/runs/<run_id>/jobs")
@ops.operation(
    "listRunJobs",
    "The run's jobs, newest first, and the run (extension)",
    description="A page of the run's jobs and, as `run`, the run object with counters counted "
    "in the same statement, so that they agree with the jobs listed.",
    parameters=PAGING,
    responses={"200": json_response(ref("RunJobList"), "A page of jobs, and the run.")},
    errors=(400, 422),
)
def list_run_jobs(run_id: str) -> Response:
    """A page of the run's jobs, and the run counted in the same statement (``run``)."""
    page = paging.parse_page()
    run, items, cursor = run_jobs_page(get_session(), own_run(run_id), owner_id(), page)
    return jsonify({"items": items, "next": cursor, "run": run})
