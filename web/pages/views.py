"""The pages: submit (``/``), a job (``/jobs/<id>``) and the history (``/jobs``).

Submitting uses the same service functions as ``POST /api/v1/jobs``: parameters are checked
with :func:`kseg.shared.core.params.parse_params`, images are stored with
:func:`kseg.shared.store.images.store_image` (the usable ones even when the form has errors,
so that the form can offer them again: :mod:`kseg.web.pages.uploads`), jobs created with
:func:`kseg.shared.store.jobs.submit_job`, committed, and only then published with
:func:`kseg.web.queue.commit_and_publish`. Jobs are shown through the API's own serializer, so
a page shows exactly what ``GET /api/v1/jobs/<id>`` answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import (
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import func, select

from kseg.shared.core.params import OUTPUT_NAMES, SegmentParams, parse_params
from kseg.shared.errors import InvalidParameterError, QuotaExceededError
from kseg.shared.settings import Settings
from kseg.shared.statuses import FINAL_STATUSES, JOB_STATUSES, JobStatus
from kseg.shared.store.events import delivery_id, run_delivery
from kseg.shared.store.images import delete_image
from kseg.shared.store.jobs import delete_job, submit_job
from kseg.shared.store.models import Image, Job, Run
from kseg.shared.store.quotas import check_active_jobs
from kseg.web import limits
from kseg.web.common import paging
from kseg.web.common.errors import ApiError
from kseg.web.common.owned import find_owned
from kseg.web.common.serialize import jobs_objs
from kseg.web.db import get_session
from kseg.web.pages import present, uploads
from kseg.web.pages.auth import login_required, owner_id
from kseg.web.pages.blueprint import bp, done
from kseg.web.queue import commit_and_publish, wake

HISTORY_PAGE = 24


def _settings() -> Settings:
    settings: Settings = current_app.config["KSEG_SETTINGS"]
    return settings


def _own_image(image_id: str | None) -> Image | None:
    return find_owned(Image, image_id, owner_id())


# ---------------------------------------------------------------- submit


def _submit_page(
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    image: Image | None = None,
    source: str = "upload",
    status: int = 200,
    got: uploads.Uploads | None = None,
) -> tuple[str, int]:
    """The submit form; ``got``: the images kept from this post (offered again by id, so a
    form error costs no upload) and the files it could not use."""
    settings = _settings()
    html = render_template(
        "submit.html",
        values=values,
        errors=errors or {},
        image=image,
        source=source if image is not None else "upload",
        kept=got.images if got else [],
        keep_field=uploads.KEEP_FIELD,
        skipped=got.skipped if got and got.images else [],
        fields=present.FIELDS,
        normalize_choices=present.NORMALIZE_CHOICES,
        color_space_choices=present.COLOR_SPACE_CHOICES,
        output_names=OUTPUT_NAMES,
        output_help=present.OUTPUT_HELP,
        max_bytes=settings.max_upload_bytes,
        max_size=present.human_bytes(settings.max_upload_bytes),
        max_pixels=f"{settings.max_image_pixels / 1e6:.0f}",
    )
    return html, status


@bp.get("/")
@login_required
def submit() -> Any:
    """The submit form; ``?image_id=…&k=…`` (from "run again") pre-fills it."""
    values = present.form_from(request.args, submitted=False)
    image = _own_image(request.args.get("image_id"))
    return _submit_page(values, image=image, source="image" if image else "upload")


def too_large_page() -> tuple[str, int]:
    """The submit form again, saying the upload was over the limit (413)."""
    limit = present.human_bytes(_settings().max_upload_bytes)
    errors = {
        "file": f"The upload is over the {limit} limit (all files together); "
        "choose fewer or smaller files."
    }
    return _submit_page(present.default_form(), errors, status=413)


@bp.post("/")
@login_required
def submit_post() -> Any:
    """One job per image: a "run again" image, or the uploads (new files and kept ones)."""
    values = present.form_from(request.form, submitted=True)
    errors: dict[str, str] = {}
    params = None
    try:
        params = parse_params(present.params_input(values))
    except InvalidParameterError as exc:
        field, text = present.field_error(exc.message)
        errors[field] = text
    if request.form.get("source", "upload") == "image":
        return _submit_image(values, errors, params)
    return _submit_uploads(values, errors, params)


def _submit_image(
    values: dict[str, Any], errors: dict[str, str], params: SegmentParams | None
) -> Any:
    """A job on an image stored before ("run again"), if it is still the owner's."""
    image = _own_image(request.form.get("image_id"))
    if image is None:
        errors["file"] = "That image is no longer available; choose a file instead."
        return _submit_page(values, errors, status=422)
    if errors or params is None:
        return _submit_page(values, errors, image, "image", status=422)

    def again(errors: dict[str, str], status: int) -> tuple[str, int]:
        return _submit_page(values, errors, image, "image", status=status)

    return _submit_jobs(values, params, uploads.Uploads(images=[image]), again)


def _submit_uploads(
    values: dict[str, Any], errors: dict[str, str], params: SegmentParams | None
) -> Any:
    """Jobs on the posted files and kept images. The usable files are stored even when the
    form has errors, and the form offers them again: fixing a field never means choosing
    the files again. Unusable files are left out, with why; none usable is a form error."""
    db = get_session()
    files = [part for part in request.files.getlist("file") if part.filename]
    kept_ids = request.form.getlist(uploads.KEEP_FIELD)
    got = uploads.collect(db, owner_id(), kept_ids, files, _settings())
    problem = got.problem()
    status = 422
    if problem:
        errors["file"], status = problem
    if errors or params is None:
        if got.stored:
            db.commit()  # kept for the next try, as the API would keep an upload
        return _submit_page(values, errors, status=status if len(errors) == 1 else 422, got=got)

    def again(errors: dict[str, str], status: int) -> tuple[str, int]:
        if got.stored:
            db.commit()
        return _submit_page(values, errors, status=status, got=got)

    return _submit_jobs(values, params, got, again)


def _submit_jobs(
    values: dict[str, Any],
    params: SegmentParams,
    got: uploads.Uploads,
    again: Callable[[dict[str, str], int], tuple[str, int]],
) -> Any:
    """One job per image of ``got``, committed and published; the files left out are
    named on the next page. Over the active-jobs quota: ``again`` (the form, 429)."""
    db = get_session()
    me = owner_id()
    try:
        check_active_jobs(db, me, len(got.images), _settings().quota_active_jobs)
    except QuotaExceededError as exc:
        return again({"file": exc.message}, 429)
    with limits.submissions(me):  # over the limit: the 429 page (web.pages)
        # A first upload has no finished job to reuse: skip looking for one.
        jobs = [
            submit_job(db, me, image, params, reuse=values["reuse"] and image.id not in got.created)
            for image in got.images
        ]
    ids = [job.id for job in jobs]
    queued = [job.id for job in jobs if job.status == "queued"]
    if not queued:
        db.commit()
    elif not commit_and_publish(db, "interactive"):
        flash("The queue is not answering right now; your jobs will start shortly.", "warn")
    for line in got.skipped:
        flash(f"Left out {line}", "warn")
    if len(ids) == 1:
        return redirect(url_for("pages.job", job_id=ids[0]), 303)
    flash(f"Submitted {len(ids)} jobs.", "ok")
    return redirect(url_for("pages.history"), 303)


# ---------------------------------------------------------------- one job


def _own_job(job_id: str) -> Job:
    """The signed-in owner's job, or 404 (another owner's too)."""
    row = find_owned(Job, job_id, owner_id())
    if row is None:
        abort(404)
    return row


@bp.get("/jobs/<job_id>")
@login_required
def job(job_id: str) -> Any:
    row = _own_job(job_id)
    db = get_session()
    obj = jobs_objs(db, [row])[0]
    result = obj.get("result") or {}
    chart = None
    submit, image_id = url_for("pages.submit"), obj["image"]["id"]
    if result.get("k_scores"):
        chart = present.k_chart(result["k_scores"], int(result.get("k") or 0))
        for bar in chart.bars:  # each bar is a link: this image again at that k
            fixed = {**obj["params"], "k": bar["k"], "k_min": None, "k_max": None}
            bar["url"] = present.run_again_url(submit, image_id, fixed)
    outputs = result.get("outputs") or {}
    return render_template(
        "job.html",
        job=obj,
        result=result,
        outputs=outputs,
        output_help=present.OUTPUT_HELP,
        original=f"/api/v1/images/{obj['image']['id']}/file",
        palette=present.palette(result.get("clusters") or []),
        chart=chart,
        metrics=present.metrics(result) if result else [],
        timings=present.timings(result) if result else [],
        params=present.params_summary(obj["params"]),
        run_again=present.run_again_url(submit, image_id, obj["params"]),
        other_k=_other_k(row, result.get("k")),
        advice=present.advice((obj.get("error") or {}).get("code")),
        status_text=present.STATUS_TEXT,
        final=obj["status"] in FINAL_STATUSES,
    )


#: How many results at other k the job page shows side by side.
OTHER_K_SHOWN = 8


def _other_k(row: Job, k: Any) -> list[dict[str, Any]]:
    """The owner's newest succeeded job on the same image for each other k, by k: the job
    page's side-by-side (the API has the same as ``GET /api/v1/jobs?image_id=…``)."""
    db = get_session()
    stmt = (
        select(Job)
        .where(Job.owner_id == row.owner_id, Job.image_id == row.image_id, Job.id != row.id)
        .where(Job.status == JobStatus.SUCCEEDED)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(4 * OTHER_K_SHOWN)
    )
    by_k: dict[int, dict[str, Any]] = {}
    for item in jobs_objs(db, list(db.scalars(stmt))):
        other = (item.get("result") or {}).get("k")
        if isinstance(other, int) and other != k and other not in by_k:
            item["thumbnail"] = present.thumbnail_url(item, present.GRID_THUMB)
            by_k[other] = item
    return [by_k[n] for n in sorted(by_k)[:OTHER_K_SHOWN]]


@bp.post("/jobs/<job_id>/delete")
@login_required
def job_delete(job_id: str) -> Any:
    """As ``DELETE /api/v1/jobs/<id>``: an active job is canceled, a finished one removed."""
    row = _own_job(job_id)
    db = get_session()
    filename = row.image.filename
    run_id = row.run_id
    outcome = delete_job(db, row)
    events = [delivery_id(job_id, "job.canceled")] if outcome == "canceled" else []
    if outcome == "canceled" and run_id:
        events.append(run_delivery(db.get(Run, run_id)))
    db.commit()
    wake(events)
    if outcome == "canceled":
        flash(f"Canceled the job on {filename}.", "ok")
        return redirect(url_for("pages.job", job_id=job_id), 303)
    flash(f"Deleted the job on {filename} and its result images.", "ok")
    return redirect(url_for("pages.history"), 303)


@bp.post("/images/<image_id>/delete")
@login_required
def image_delete(image_id: str) -> Any:
    """As ``DELETE /api/v1/images/<id>``: the photo, its jobs and results, its gallery places."""
    image = _own_image(image_id)
    if image is None:
        abort(404)
    db = get_session()
    filename = image.filename
    jobs = delete_image(db, image.id)
    return done(
        f"Deleted {filename} and its {jobs} job{'s' if jobs != 1 else ''}.",
        url_for("pages.history"),
    )


# ---------------------------------------------------------------- history


@bp.get("/jobs")
@login_required
def history() -> Any:
    status = request.args.get("status", "")
    if status not in JOB_STATUSES:
        status = ""
    try:
        limit = max(1, min(paging.MAX_LIMIT, int(request.args.get("limit", HISTORY_PAGE))))
    except ValueError:
        limit = HISTORY_PAGE
    shown_limit = limit if limit != HISTORY_PAGE else None
    after = None
    cursor = request.args.get("cursor")
    if cursor:
        try:
            after = paging.decode_cursor(cursor)
        except ApiError:
            flash("That page link is not valid any more; here are your newest jobs.", "warn")
    db = get_session()
    me = owner_id()
    stmt = select(Job).where(Job.owner_id == me)
    if status:
        stmt = stmt.where(Job.status == status)
    page = paging.Page(limit, after)
    rows, next_cursor = paging.fetch(db, stmt, Job, page)
    items = jobs_objs(db, rows)
    counts = dict(
        db.execute(
            select(Job.status, func.count()).where(Job.owner_id == me).group_by(Job.status)
        ).all()
    )
    for item in items:
        item["thumbnail"] = present.thumbnail_url(item)
        item["summary"] = present.params_summary(item["params"])
    return render_template(
        "history.html",
        items=items,
        status=status,
        statuses=JOB_STATUSES,
        status_text=present.STATUS_TEXT,
        counts=counts,
        total=sum(counts.values()),
        next_url=(
            url_for("pages.history", status=status or None, limit=shown_limit, cursor=next_cursor)
            if next_cursor
            else None
        ),
        first_url=(
            url_for("pages.history", status=status or None, limit=shown_limit) if cursor else None
        ),
        final=FINAL_STATUSES,
    )
