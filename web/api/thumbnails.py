"""Thumbnails (extension, issue 24): small WebP previews of an original and of a job's outputs,
for tiles and grids — ``GET /api/v1/images/<id>/thumbnail`` and
``GET /api/v1/jobs/<id>/outputs/<name>/thumbnail``, ``?size=`` one of
:data:`~kseg.shared.core.thumbnail.THUMBNAIL_SIZES` (the longer side, px; default 160).

Made on the first request and stored (:mod:`kseg.shared.store.thumbnails`); answered with a
strong ``ETag`` (the stored row's id) and ``304`` to a matching ``If-None-Match``. Owner-scoped
like everything else: another owner's image or job is a 404.
"""

from __future__ import annotations

from flask import Response, request

from kseg.shared.core.params import OUTPUT_NAMES
from kseg.shared.core.thumbnail import THUMBNAIL_SIZES
from kseg.shared.store.models import Job
from kseg.shared.store.thumbnails import (
    StoredThumbnail,
    image_thumbnail,
    output_thumbnail,
    thumbnail_data,
)
from kseg.web.api.auth import owner_id
from kseg.web.api.blueprint import bp
from kseg.web.api.errors import ApiError, not_found
from kseg.web.api.images import own_image
from kseg.web.db import get_session
from kseg.web.owned import find_owned

DEFAULT_SIZE = THUMBNAIL_SIZES[0]
#: A week, then revalidated with the ETag (a thumbnail never changes once made, but a later
#: kseg may make them differently).
CACHE = "private, max-age=604800"


def requested_size() -> int:
    raw = request.args.get("size")
    if raw is None:
        return DEFAULT_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size not in THUMBNAIL_SIZES:
        raise ApiError(
            422,
            "invalid_parameter",
            f"size: {raw[:20]!r} is not a thumbnail size; use one of "
            f"{', '.join(map(str, THUMBNAIL_SIZES))} (the longer side in pixels).",
        )
    return size


def _answer(stored: StoredThumbnail) -> Response:
    if request.if_none_match.contains_weak(stored.id):
        response = Response(status=304)
    else:
        response = Response(thumbnail_data(get_session(), stored.id), mimetype=stored.content_type)
    response.set_etag(stored.id)
    response.headers["Cache-Control"] = CACHE
    return response


@bp.get("/images/<image_id>/thumbnail")
def image_thumbnail_file(image_id: str) -> Response:
    image = own_image(image_id)
    size = requested_size()
    session = get_session()
    stored = image_thumbnail(session, image.id, size)
    if stored is None:  # pragma: no cover - deleted since own_image read it
        raise not_found("image", image_id)
    session.commit()  # a thumbnail made now is kept
    return _answer(stored)


@bp.get("/jobs/<job_id>/outputs/<name>/thumbnail")
def output_thumbnail_file(job_id: str, name: str) -> Response:
    job = find_owned(Job, job_id, owner_id())
    if job is None:
        raise not_found("job", job_id)
    if name not in OUTPUT_NAMES:
        raise ApiError(
            404,
            "output_not_found",
            f"There is no output named {name!r}; outputs are {', '.join(OUTPUT_NAMES)}.",
        )
    size = requested_size()
    if job.status != "succeeded" or job.result_id is None:
        raise ApiError(
            404,
            "output_not_found",
            f"Job {job_id} is {job.status}; its outputs exist once it has succeeded "
            "(poll GET /api/v1/jobs/<id>).",
        )
    session = get_session()
    stored = output_thumbnail(session, job.result_id, name, size)
    if stored is None:
        raise ApiError(
            404,
            "output_not_found",
            f"Job {job_id} did not render {name!r} (its params.outputs did not ask for it).",
        )
    session.commit()
    return _answer(stored)
