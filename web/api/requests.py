"""Reading request bodies: multipart forms and JSON, with 400 for malformed and 422 for invalid."""

from __future__ import annotations

import json
from typing import Any

from flask import request
from pydantic import BaseModel, ValidationError
from werkzeug.datastructures import FileStorage

from kseg.shared.errors import InvalidParameterError
from kseg.shared.settings import TRUE
from kseg.web.common.errors import ApiError

MULTIPART = "multipart/form-data"
FALSE = {"0", "false", "no", "off"}


def body_kind() -> str:
    """``"multipart"`` or ``"json"``; anything else is a 400 naming what to send."""
    mimetype = request.mimetype
    if mimetype == MULTIPART:
        return "multipart"
    if _is_json(mimetype):
        return "json"
    shown = mimetype or "none"
    raise ApiError(
        400,
        "unsupported_content_type",
        f"Content-Type {shown!r} is not accepted here: send multipart/form-data "
        "(the image as part 'file') or application/json.",
    )


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def json_body(*, optional: bool = False) -> dict[str, Any]:
    """The JSON object body of a JSON-only endpoint; with ``optional``, no body at all is ``{}``."""
    if optional and not request.get_data(cache=True).strip():
        return {}
    if not _is_json(request.mimetype):
        shown = request.mimetype or "none"
        raise ApiError(
            400,
            "unsupported_content_type",
            f"Content-Type {shown!r} is not accepted here: send a JSON object as application/json.",
        )
    return json_object()


def json_object() -> dict[str, Any]:
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(
            400, "malformed_json", f"The body is not valid UTF-8 JSON ({exc}); fix its syntax."
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", "The JSON body must be an object ({...}).")
    return data


def describe(exc: ValidationError) -> str:
    """One clear line from pydantic's first error (as :func:`shared.params.parse_params`)."""
    first = exc.errors()[0]
    loc = first.get("loc", ())
    where = str(loc[0]) if loc else ""
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidParameterError(describe(exc)) from None


def form_fields(*, multi: frozenset[str] = frozenset({"outputs"})) -> dict[str, Any]:
    """The non-file form fields; a repeated ``outputs`` is joined, other repeats are 422."""
    form = request.form
    data: dict[str, Any] = {}
    for key in form:
        values = form.getlist(key)
        if key in multi:
            data[key] = ",".join(values)
        elif len(values) > 1:
            raise InvalidParameterError(f"{key}: given {len(values)} times; give it once")
        else:
            data[key] = values[0]
    return data


def parse_bool(name: str, raw: Any, default: bool = True) -> bool:
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise InvalidParameterError(f"{name}: must be true or false, not {raw!r}")


def file_parts(*, many: bool) -> list[FileStorage]:
    """The parts named ``file``; 400 when there is none (or, unless ``many``, several)."""
    if "file" in request.form:
        raise ApiError(
            400,
            "missing_file",
            "Part 'file' was sent as a text field; send it as a file (with a filename).",
        )
    unexpected = [key for key in request.files if key != "file"]
    if unexpected:
        raise ApiError(
            400,
            "unexpected_file_part",
            f"Unexpected file part {unexpected[0]!r}; send images as parts named 'file'.",
        )
    parts = request.files.getlist("file")
    if not parts:
        raise ApiError(
            400,
            "missing_file",
            "No image: send it as the multipart/form-data part named 'file'.",
        )
    if not many and len(parts) > 1:
        raise ApiError(
            400,
            "too_many_files",
            "One image per job: send one part 'file' (upload several with POST /api/v1/images "
            "and submit a job per image_id).",
        )
    return parts
