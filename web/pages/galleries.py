"""The gallery pages: the list (``/galleries``), one gallery (``/galleries/<id>``) and one run
(``/runs/<id>``).

As on the other pages, every write is a CSRF-protected form post handled with the service
functions the JSON API uses (:mod:`kseg.shared.store.galleries`,
:func:`kseg.shared.store.images.store_image`), rows are committed before jobs are enqueued,
and everything shown goes through the API's own serializers (:mod:`kseg.web.common.serialize`)
and keyset paging (:mod:`kseg.web.common.paging`), so a page
shows what ``GET /api/v1/galleries/<id>`` answers. While a run is running the browser polls
``GET /api/v1/runs/<id>`` and ``GET /api/v1/galleries/<id>/images`` with the session cookie.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlencode
from zoneinfo import available_timezones

from croniter import CroniterError
from flask import abort, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.wrappers import Response

from kseg.shared.core.params import OUTPUT_NAMES
from kseg.shared.errors import InvalidParameterError
from kseg.shared.settings import TRUE, Settings
from kseg.shared.statuses import FINAL_STATUSES
from kseg.shared.store.db import newest_first
from kseg.shared.store.galleries import (
    add_images,
    create_gallery,
    delete_schedule,
    gallery_params,
    image_count,
    remove_image,
    set_schedule,
    start_run,
    update_gallery,
)
from kseg.shared.store.models import Gallery, GalleryImage, Image, Run, Schedule
from kseg.web.common import paging
from kseg.web.common.errors import ApiError
from kseg.web.common.owned import find_owned, plausible_id
from kseg.web.common.serialize import (
    BASE,
    galleries_objs,
    gallery_images_page,
    run_jobs_page,
    runs_objs,
)
from kseg.web.db import get_session
from kseg.web.pages import present, uploads
from kseg.web.pages.auth import current_owner, login_required, owner_id
from kseg.web.pages.blueprint import bp, done, error_page
from kseg.web.queue import commit_and_publish

GALLERY_PAGE = 50
GRID_PAGE = 48
RUNS_SHOWN = 10
RUN_JOBS_PAGE = paging.MAX_LIMIT
COVERS = 4

RUN_STATUS_TEXT = {
    "running": "Running",
    "succeeded": "Succeeded",
    "partial": "Partly failed",
    "failed": "Failed",
}
TRIGGER_TEXT = {"manual": "Run now", "schedule": "Scheduled"}
# Fields of these forms besides the parameters (whose labels are present.FIELDS').
LABELS = {"name": "Name", "cron": "Cron expression", "timezone": "Time zone", "file": "Images"}
SCHEDULE_DEFAULTS: dict[str, Any] = {
    "cron": "0 3 * * *",
    "timezone": "UTC",
    "enabled": True,
    "only_stale": True,
}
COUNTERS = ("succeeded", "failed", "running", "queued", "skipped")


def _settings() -> Settings:
    settings: Settings = current_app.config["KSEG_SETTINGS"]
    return settings


@functools.cache
def timezones() -> list[str]:
    """The IANA zones offered by the schedule form (it accepts any name ``zoneinfo`` knows)."""
    return sorted(zone for zone in available_timezones() if "/" in zone or zone == "UTC")


# ---------------------------------------------------------------- pure helpers


def counters(jobs: dict[str, int]) -> dict[str, Any]:
    """A run's counters for its bar: segment widths in percent, ``3/3 done`` and details."""
    total = int(jobs.get("total") or 0)
    done = sum(int(jobs.get(name) or 0) for name in ("succeeded", "failed", "skipped"))
    segments = [
        (name, round(int(jobs.get(name) or 0) / total * 100, 3) if total else 0.0)
        for name in COUNTERS
    ]
    details = [f"{int(jobs.get('succeeded') or 0)} succeeded"]
    for name, words in (
        ("failed", "failed"),
        ("skipped", "skipped (up to date)"),
        ("running", "running"),
    ):
        if jobs.get(name):
            details.append(f"{int(jobs[name])} {words}")
    # Queued jobs are fed to the workers a few at a time (shared.dispatch): those handed over
    # are next; the rest wait their turn behind them and behind interactive work.
    queued, handed = int(jobs.get("queued") or 0), int(jobs.get("dispatched") or 0)
    if handed:
        details.append(f"{handed} next in line")
    if queued - handed > 0:
        details.append(f"{queued - handed} waiting")
    return {
        "segments": segments,
        "text": f"{done}/{total} done",
        "detail": " · ".join(details),
        "label": f"{done} of {total} images done: " + ", ".join(details),
    }


def field_error(message: str) -> tuple[str, str]:
    """Like :func:`present.field_error`, and also for the name, cron and time zone fields."""
    head, sep, rest = message.partition(": ")
    if not (sep and head in LABELS):
        return present.field_error(message)
    text = rest.strip()
    text = text[:1].upper() + text[1:]
    if text and text[-1] not in ".!?":
        text += "."
    return head, text


def form_values(params: dict[str, Any]) -> dict[str, Any]:
    """The parameter form's values for a gallery's canonical parameters."""
    args: MultiDict[str, Any] = MultiDict(
        [(key, params[key]) for key in present.PARAM_KEYS if params.get(key) is not None]
    )
    args.setlist("outputs", list(params.get("outputs") or OUTPUT_NAMES))
    return present.form_from(args, submitted=False)


def _form_context() -> dict[str, Any]:
    """What the shared parameter fields (``_param_fields.html``) need."""
    return {
        "fields": present.FIELDS,
        "labels": {**{name: f.label for name, f in present.FIELDS.items()}, **LABELS},
        "normalize_choices": present.NORMALIZE_CHOICES,
        "color_space_choices": present.COLOR_SPACE_CHOICES,
        "output_names": OUTPUT_NAMES,
        "output_help": present.OUTPUT_HELP,
        "status_text": present.STATUS_TEXT,
        "run_status_text": RUN_STATUS_TEXT,
        "trigger_text": TRIGGER_TEXT,
    }


# ---------------------------------------------------------------- lookups


def _own_gallery(gallery_id: str) -> Gallery:
    """The signed-in owner's gallery, or the 404 page (another owner's too)."""
    gallery = find_owned(Gallery, gallery_id, owner_id())
    if gallery is None:
        abort(404)
    return gallery


def _own_run(run_id: str) -> Run:
    run = find_owned(Run, run_id, owner_id())
    if run is None:
        abort(404)
    return run


def _page(limit: int) -> tuple[paging.Page, str | None]:
    """The page asked for by ``?cursor=``; a cursor that is not valid starts over."""
    cursor = request.args.get("cursor") or None
    after = None
    if cursor:
        try:
            after = paging.decode_cursor(cursor)
        except ApiError:
            flash("That page link is not valid any more; here is the first page.", "warn")
            cursor = None
    return paging.Page(limit, after), cursor


def _covers(db: Session, gallery_ids: list[str]) -> dict[str, list[str]]:
    """Up to four newest images of each gallery, as thumbnail URLs (one query)."""
    if not gallery_ids:
        return {}
    newest = (
        newest_first(
            GalleryImage.gallery_id,
            GalleryImage.image_id,
            per=GalleryImage.gallery_id,
            by=(GalleryImage.added_at, GalleryImage.image_id),
        ).where(GalleryImage.gallery_id.in_(gallery_ids))
    ).subquery()
    covers: dict[str, list[str]] = {}
    for gallery_id, image_id in db.execute(
        select(newest.c.gallery_id, newest.c.image_id)
        .where(newest.c.rank <= COVERS)
        .order_by(newest.c.gallery_id, newest.c.rank)
    ):
        covers.setdefault(gallery_id, []).append(
            present.thumb(f"{BASE}/images/{image_id}/file", present.GRID_THUMB)
        )
    return covers


def _run_view(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "counters": counters(obj["jobs"])}


# ---------------------------------------------------------------- the list


@bp.get("/galleries")
@login_required
def galleries(
    name: str = "",
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> tuple[str, int]:
    db = get_session()
    page, cursor = _page(GALLERY_PAGE)
    stmt = select(Gallery).where(Gallery.owner_id == owner_id())
    rows, next_cursor = paging.fetch(db, stmt, Gallery, page)
    items = galleries_objs(db, rows)
    covers = _covers(db, [item["id"] for item in items])
    for item in items:
        item["covers"] = covers.get(item["id"], [])
        item["summary"] = present.params_summary(item["params"])
        if item["last_run"]:
            item["last_run"] = _run_view(item["last_run"])
    errors = errors or {}
    html = render_template(
        "galleries.html",
        items=items,
        name=name,
        values=values or present.default_form(),
        errors=errors,
        params_open=any(key not in ("name", "_form") for key in errors),
        next_url=url_for("pages.galleries", cursor=next_cursor) if next_cursor else None,
        first_url=url_for("pages.galleries") if cursor else None,
        **_form_context(),
    )
    return html, status


@bp.post("/galleries")
@login_required
def gallery_create() -> Any:
    db = get_session()
    name = (request.form.get("name") or "")[:400]
    values = present.form_from(request.form, submitted=True)
    try:
        gallery = create_gallery(db, owner_id(), name, present.params_input(values))
    except InvalidParameterError as exc:
        db.rollback()
        field, text = field_error(exc.message)
        return galleries(name, values, {field: text}, 422)
    return done(
        f"Created the gallery {gallery.name}. Add images to it below.",
        url_for("pages.gallery", gallery_id=gallery.id),
    )


# ---------------------------------------------------------------- one gallery


def _gallery_page(
    gallery: Gallery,
    *,
    errors: dict[str, str] | None = None,
    name: str | None = None,
    values: dict[str, Any] | None = None,
    schedule_form: dict[str, Any] | None = None,
    status: int = 200,
) -> tuple[str, int]:
    """The gallery page; a failed form post passes what was sent and its ``errors``."""
    db = get_session()
    obj = galleries_objs(db, [gallery])[0]
    errors = errors or {}

    # The grid: the query of GET /api/v1/galleries/<id>/images (which the page polls),
    # newest added first, each image with the gallery's newest job for it.
    page, cursor = _page(GRID_PAGE)
    tiles, next_cursor = gallery_images_page(db, gallery, page)
    for tile in tiles:
        # What the newest run agrees with: its job, or the image's current result however
        # it was made (shared.galleries.tile_jobs); "not run yet" only without either.
        job = tile["current_job"]
        full = (job or {}).get("recolor_url") or tile["links"]["file"]
        tile["thumbnail"] = present.thumb(full, present.GRID_THUMB)
        tile["href"] = url_for("pages.job", job_id=job["id"]) if job else tile["links"]["file"]

    runs_page = paging.Page(RUNS_SHOWN, None)
    runs_stmt = select(Run).where(Run.gallery_id == gallery.id)
    run_rows, more_runs = paging.fetch(db, runs_stmt, Run, runs_page)
    runs = [_run_view(obj) for obj in runs_objs(db, run_rows)]
    older_runs = 0
    if more_runs:
        older_runs = int(
            db.scalar(select(func.count()).select_from(Run).where(Run.gallery_id == gallery.id))
            or 0
        ) - len(runs)

    schedule = obj["schedule"]
    if schedule_form is None:
        schedule_form = (
            {key: schedule[key] for key in SCHEDULE_DEFAULTS} if schedule else SCHEDULE_DEFAULTS
        )
    live = any(run["status"] == "running" for run in runs) or any(
        tile["current_job"] and tile["current_job"]["status"] not in FINAL_STATUSES
        for tile in tiles
    )
    grid_query = {"limit": GRID_PAGE, "cursor": cursor} if cursor else {"limit": GRID_PAGE}
    settings = _settings()
    html = render_template(
        "gallery.html",
        gallery=obj,
        tiles=tiles,
        runs=runs,
        older_runs=older_runs,
        schedule=schedule,
        schedule_form=schedule_form,
        timezones=timezones(),
        name=obj["name"] if name is None else name,
        values=values or form_values(obj["params"]),
        summary=present.params_summary(obj["params"]),
        errors=errors,
        settings_open=any(key not in ("file", "cron", "timezone") for key in errors),
        live=live,
        grid_url=f"{BASE}/galleries/{gallery.id}/images?{urlencode(grid_query)}",
        next_url=(
            url_for("pages.gallery", gallery_id=gallery.id, cursor=next_cursor)
            if next_cursor
            else None
        ),
        first_url=url_for("pages.gallery", gallery_id=gallery.id) if cursor else None,
        max_bytes=settings.max_upload_bytes,
        max_size=present.human_bytes(settings.max_upload_bytes),
        max_pixels=f"{settings.max_image_pixels / 1e6:.0f}",
        **_form_context(),
    )
    return html, status


def _to(gallery: Gallery, anchor: str = "") -> str:
    return url_for("pages.gallery", gallery_id=gallery.id) + anchor


def _back(gallery: Gallery, anchor: str = "") -> Response:
    return redirect(_to(gallery, anchor), 303)


@bp.get("/galleries/<gallery_id>")
@login_required
def gallery(gallery_id: str) -> Any:
    return _gallery_page(_own_gallery(gallery_id))


def too_large_page() -> Any:
    """The gallery page again, saying the upload was over the limit (413). Called from the
    error handler, before the view ran: signed out or not found is the plain 413 page."""
    gallery_id = str((request.view_args or {}).get("gallery_id", ""))
    found = find_owned(Gallery, gallery_id, owner_id()) if current_owner() is not None else None
    if found is None:
        return error_page(413, "Too large", "The request is over the upload limit.")
    limit = present.human_bytes(_settings().max_upload_bytes)
    errors = {
        "file": f"The upload is over the {limit} limit (all files together); "
        "add fewer or smaller files at a time."
    }
    return _gallery_page(found, errors=errors, status=413)


@bp.post("/galleries/<gallery_id>/images")
@login_required
def gallery_upload(gallery_id: str) -> Any:
    """Adds the uploaded images to the gallery; a file that is not a usable image is left
    out and named, the rest are added (as on the submit page)."""
    gallery = _own_gallery(gallery_id)
    files: list[FileStorage] = [part for part in request.files.getlist("file") if part.filename]
    db = get_session()
    got = uploads.collect(db, owner_id(), (), files, _settings())
    if (problem := got.problem()) is not None:  # no usable image: nothing was stored
        db.rollback()
        return _gallery_page(gallery, errors={"file": problem[0]}, status=problem[1])
    before = image_count(db, gallery.id)
    images = got.images
    add_images(db, gallery, images)
    added = image_count(db, gallery.id) - before
    db.commit()
    message = f"Added {added} image{'' if added == 1 else 's'}."
    if added < len(images):
        message += f" {len(images) - added} {'was' if len(images) - added == 1 else 'were'}"
        message += " in the gallery already."
    if added:
        message += " Run the gallery to segment them."
    flash(message, "ok")
    for line in got.skipped:
        flash(f"Left out {line}", "warn")
    return _back(gallery, "#images")


@bp.post("/galleries/<gallery_id>/images/<image_id>/remove")
@login_required
def gallery_remove_image(gallery_id: str, image_id: str) -> Any:
    """Takes an image out of the gallery; the image and its jobs stay."""
    gallery = _own_gallery(gallery_id)
    db = get_session()
    if not plausible_id(image_id):
        abort(404)
    filename = db.scalar(
        select(Image.filename).where(Image.id == image_id, Image.owner_id == owner_id())
    )
    if filename is None or not remove_image(db, gallery, image_id):
        abort(404)
    return done(
        f"Removed {filename} from the gallery (the image and its results are kept).",
        _to(gallery, "#images"),
    )


@bp.post("/galleries/<gallery_id>/settings")
@login_required
def gallery_settings(gallery_id: str) -> Any:
    """Rename and set the default parameters."""
    gallery = _own_gallery(gallery_id)
    db = get_session()
    name = (request.form.get("name") or "")[:400]
    values = present.form_from(request.form, submitted=True)
    try:
        update_gallery(db, gallery, name=name, params=present.params_input(values))
    except InvalidParameterError as exc:
        db.rollback()
        field, text = field_error(exc.message)
        return _gallery_page(gallery, errors={field: text}, name=name, values=values, status=422)
    return done("Saved the name and the default parameters.", _to(gallery))


@bp.post("/galleries/<gallery_id>/runs")
@login_required
def gallery_run(gallery_id: str) -> Any:
    """Run now: a job per image with the gallery's parameters (``only_stale`` skips current
    ones), committed before it is enqueued."""
    gallery = _own_gallery(gallery_id)
    db = get_session()
    if image_count(db, gallery.id) == 0:
        flash("This gallery has no images yet: add some, then run it.", "warn")
        return _back(gallery)
    only_stale = request.form.get("only_stale") in TRUE
    start = start_run(
        db, gallery, trigger="manual", params=gallery_params(gallery), only_stale=only_stale
    )
    run = start.run
    queued, skipped = len(start.job_ids), int(run.skipped or 0)
    if not commit_and_publish(db, "batch"):
        flash("The queue is not answering right now; the run will start shortly.", "warn")
    message = f"Started a run: {queued} image{'' if queued == 1 else 's'} to segment"
    if skipped:
        message += f", {skipped} skipped (already up to date)"
    flash(message + ".", "ok")
    return _back(gallery)


@bp.post("/galleries/<gallery_id>/schedule")
@login_required
def gallery_schedule(gallery_id: str) -> Any:
    """Create or replace the schedule; a bad cron or time zone is shown next to its field."""
    gallery = _own_gallery(gallery_id)
    db = get_session()
    form = request.form
    sent = {
        "cron": " ".join((form.get("cron") or "").split())[:200],
        "timezone": (form.get("timezone") or "").strip()[:200],
        "enabled": form.get("enabled") in TRUE,
        "only_stale": form.get("only_stale") in TRUE,
    }
    existing = db.scalar(select(Schedule).where(Schedule.gallery_id == gallery.id))
    errors: dict[str, str] = {}
    if len(sent["cron"]) > 120:
        errors["cron"] = "At most 120 characters."
    else:
        try:
            set_schedule(
                db,
                gallery,
                cron=sent["cron"],
                timezone=sent["timezone"],
                # Parameters set over the API stay; none means the gallery's at each run.
                params=existing.params if existing else None,
                enabled=sent["enabled"],
                only_stale=sent["only_stale"],
            )
        except InvalidParameterError as exc:
            field, text = field_error(exc.message)
            errors[field] = text
        except CroniterError:  # well-formed but never due, e.g. "0 0 30 2 *" (30 February)
            errors["cron"] = f"'{sent['cron']}' never matches a date; check its day and month."
    if errors:
        db.rollback()
        return _gallery_page(gallery, errors=errors, schedule_form=sent, status=422)
    return done("Saved the schedule.", _to(gallery, "#schedule"))


@bp.post("/galleries/<gallery_id>/schedule/delete")
@login_required
def gallery_schedule_delete(gallery_id: str) -> Any:
    gallery = _own_gallery(gallery_id)
    db = get_session()
    if delete_schedule(db, gallery):
        db.commit()
        flash("Removed the schedule; the gallery runs only when you run it.", "ok")
    return _back(gallery, "#schedule")


@bp.post("/galleries/<gallery_id>/delete")
@login_required
def gallery_delete(gallery_id: str) -> Any:
    """As ``DELETE /api/v1/galleries/<id>``: the gallery, its schedule and runs go; the images
    and their jobs stay."""
    gallery = _own_gallery(gallery_id)
    db = get_session()
    name = gallery.name
    db.execute(delete(Gallery).where(Gallery.id == gallery.id))
    return done(
        f"Deleted the gallery {name}; its images and their results are kept.",
        url_for("pages.galleries"),
    )


# ---------------------------------------------------------------- one run


@bp.get("/runs/<run_id>")
@login_required
def run(run_id: str) -> Any:
    row = _own_run(run_id)
    db = get_session()
    gallery = galleries_objs(db, [db.get_one(Gallery, row.gallery_id)])[0]
    page, cursor = _page(RUN_JOBS_PAGE)
    # The counters and the rows in one statement, as GET /api/v1/runs/<id>/jobs (which the
    # page polls) answers them: they agree while the run drains.
    run_data, items, next_cursor = run_jobs_page(db, row, owner_id(), page)
    obj = _run_view(run_data)
    for item in items:
        item["thumbnail"] = present.thumbnail_url(item)
    jobs_query = {"limit": RUN_JOBS_PAGE, "cursor": cursor} if cursor else {"limit": RUN_JOBS_PAGE}
    return render_template(
        "run.html",
        run=obj,
        gallery=gallery,
        items=items,
        params=present.params_summary(obj["params"]),
        jobs_url=f"{BASE}/runs/{row.id}/jobs?{urlencode(jobs_query)}",
        final=FINAL_STATUSES,
        next_url=url_for("pages.run", run_id=row.id, cursor=next_cursor) if next_cursor else None,
        first_url=url_for("pages.run", run_id=row.id) if cursor else None,
        **_form_context(),
    )
