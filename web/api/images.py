"""``/api/v1/images``: upload (deduplicated per owner by content), metadata, original bytes,
deletion."""

from __future__ import annotations

from flask import Response, current_app, jsonify, request

from kseg.shared.core.imageio import probe_image
from kseg.shared.errors import ImageError
from kseg.shared.store.db import fetch_blob
from kseg.shared.store.images import delete_image, store_image
from kseg.shared.store.models import Image
from kseg.web.api.auth import own, owned_page, owner_id
from kseg.web.api.blueprint import bp
from kseg.web.api.requests import body_kind, file_parts, form_fields
from kseg.web.common import apidoc as doc
from kseg.web.common.errors import ApiError
from kseg.web.common.serialize import image_obj, images_objs
from kseg.web.db import get_session

ops = doc.tagged("images")
IMAGE_ETAG = {"ETag": doc.header("The original's SHA-256 (hex).")}


def own_image(image_id: str) -> Image:
    return own(Image, image_id, "image")


def store_uploads() -> list[Image]:
    """Store the multipart request's ``file`` parts (one image each, in order), all or
    nothing: every file is checked before any is stored. The caller commits."""
    parts = file_parts(many=True)
    extra = form_fields()
    if extra:
        raise ApiError(
            422,
            "unknown_field",
            f"Unknown form field {next(iter(extra))!r}; only parts named 'file' are accepted.",
        )
    session = get_session()
    settings = current_app.config["KSEG_SETTINGS"]
    blobs = [(part.filename, part.read()) for part in parts]
    if len(blobs) > 1:
        # Check every file before storing any: all or nothing, on every backend (a savepoint
        # is no guarantee of that on SQLite's driver).
        for index, (filename, data) in enumerate(blobs):
            try:
                probe_image(data, max_pixels=settings.max_image_pixels)
            except ImageError as exc:
                label = filename or f"part {index + 1}"
                raise type(exc)(f"{label}: {exc.message}", code=exc.code) from exc
    items = []
    for filename, data in blobs:
        image, _ = store_image(
            session,
            owner_id(),
            data,
            filename,
            max_pixels=settings.max_image_pixels,
            max_stored_bytes=settings.quota_stored_bytes,
        )
        items.append(image)
    return items


@bp.post("/images")
@ops.operation(
    "uploadImages",
    "Upload one or more images (parts `file`)",
    description="The same bytes uploaded twice by one owner give the same image id. All or "
    "nothing: one unusable file rejects the whole request.",
    request_body=doc.upload_request("ImageUploadForm"),
    responses={
        "201": doc.json_response(doc.ref("ImageList"), "The images, one per part, in order.")
    },
    errors=(400, 413, 415, 422),
)
def upload_images() -> tuple[Response, int]:
    """All or nothing: one bad file rejects the request and stores none of them."""
    if body_kind() != "multipart":
        raise ApiError(
            400,
            "unsupported_content_type",
            "Upload images as multipart/form-data, each in a part named 'file'.",
        )
    items = store_uploads()
    get_session().commit()
    return jsonify({"items": [image_obj(image) for image in items]}), 201


@bp.get("/images")
@ops.list("listImages", "List your images, newest first (extension)", model="ImageList")
def list_images() -> Response:
    return owned_page(Image, images_objs)


@bp.get("/images/<image_id>")
@ops.read("getImage", "Image metadata", model="ImageOut")
def get_image(image_id: str) -> Response:
    return jsonify(image_obj(own_image(image_id)))


@bp.delete("/images/<image_id>")
@ops.delete(
    "deleteImage",
    "Delete an image, every job on it and their results",
    description="Also removes the image from its galleries. A job on it that a worker is still "
    "running is dropped: the worker stores nothing. Uploading the same bytes again makes a new "
    "image.",
)
def remove_image(image_id: str) -> tuple[str, int]:
    """The image, every job on it and their results, and its place in galleries: ``204``."""
    session = get_session()
    delete_image(session, own_image(image_id).id)
    session.commit()
    return "", 204


@bp.get("/images/<image_id>/file")
@ops.operation(
    "getImageFile",
    "The original bytes as uploaded, with their content type",
    responses={
        "200": {
            "description": "The original file.",
            "headers": IMAGE_ETAG,
            "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        "304": {"description": "Not modified.", "headers": IMAGE_ETAG},
    },
)
def image_file(image_id: str) -> Response:
    image = own_image(image_id)
    if request.if_none_match.contains_weak(image.sha256):
        response = Response(status=304)
    else:
        data = fetch_blob(get_session(), Image.data, id=image.id)
        response = Response(data, mimetype=image.content_type)
        response.headers.set("Content-Disposition", "inline", filename=image.filename)
    response.set_etag(image.sha256)
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return response
