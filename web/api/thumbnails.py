"""Thumbnails (extension, issue 24): small WebP previews of an original and of a job's outputs,
for tiles and grids — ``GET /api/v1/images/<id>/thumbnail`` and
``GET /api/v1/jobs/<id>/outputs/<name>/thumbnail``, ``?size=`` one of
:data:`~kseg.shared.core.thumbnail.THUMBNAIL_SIZES` (the longer side, px; default 160).

Made on the first request and stored (:mod:`kseg.shared.store.thumbnails`); answered with a
strong ``ETag`` (the stored row's id) and ``304`` to a matching ``If-None-Match``. Owner-scoped
like everything else: another owner's image or job is a 404.
"""

from __future__ import annotations

from typing import Any

from flask import Response, request

from kseg.shared.core.thumbnail import THUMBNAIL_SIZES
from kseg.shared.store.thumbnails import (
    StoredThumbnail,
    image_thumbnail,
    output_thumbnail,
    thumbnail_data,
)
from kseg.web.api.blueprint import bp
from kseg.web.api.images import own_image
from kseg.web.api.jobs import succeeded_job
from kseg.web.common.apidoc import IF_NONE_MATCH, cached_file, header, operation, query
from kseg.web.common.errors import ApiError, not_found
from kseg.web.db import get_session

DEFAULT_SIZE = THUMBNAIL_SIZES[0]
#: A week, then revalidated with the ETag (a thumbnail never changes once made, but a later
#: kseg may make them differently).
CACHE = "private, max-age=604800"


ETAG = {"ETag": header("The stored thumbnail's id: it never changes once made.")}
CACHED = (
    " Made on the first request and stored; cacheable (`Cache-Control: private`, a strong "
    "`ETag`, 304 to a matching `If-None-Match`)."
)


def thumbnail_operation(operation_id: str, tag: str, summary: str, description: str) -> Any:
    """The OpenAPI of a thumbnail route."""
    return operation(
        operation_id,
        summary,
        tag=tag,
        description=description + CACHED,
        parameters=[
            query(
                "size",
                "The longer side in pixels (never enlarged): "
                + " or ".join(map(str, THUMBNAIL_SIZES))
                + f" (default {DEFAULT_SIZE}).",
                type="integer",
                enum=list(THUMBNAIL_SIZES),
            ),
            IF_NONE_MATCH,
        ],
        responses=cached_file("image/webp", "The thumbnail.", ETAG),
        errors=(422,),
    )


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
@thumbnail_operation(
    "getImageThumbnail",
    "images",
    "A small WebP preview of the original (extension)",
    "Oriented and flattened as it was segmented (transparency on white).",
)
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
@thumbnail_operation(
    "getJobOutputThumbnail",
    "jobs",
    "A small WebP preview of a result image (extension)",
    "The `labels` map (machine-readable, nearly black) is shown painted in the `color` "
    "output's palette. 404 until the job has succeeded.",
)
def output_thumbnail_file(job_id: str, name: str) -> Response:
    job = succeeded_job(job_id, output=name)
    size = requested_size()
    assert job.result_id is not None  # succeeded
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
