"""JSON errors for everything under ``/api/``: ``{"error": {"code", "message"}}``.

Handlers are registered on the blueprint (errors raised by its views) and on the app (errors
raised before a blueprint is known: unknown ``/api/`` paths, wrong methods, oversize bodies),
so no request under ``/api/`` ever gets an HTML page or a bare 500.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from werkzeug.exceptions import HTTPException

from kseg.shared.errors import KsegError, QuotaExceededError
from kseg.web.common.owned import plausible_id

log = logging.getLogger(__name__)

API_PREFIX = "/api/"

#: Every error ``code`` the API answers with: status and meaning. The OpenAPI document and
#: the README list these; ``tests/service/test_api_errors.py`` checks the source raises no
#: other (HTTP errors without an entry here get their reason phrase in snake_case).
ERROR_CODES: dict[str, tuple[int, str]] = {
    "bad_request": (400, "the request is malformed (syntax, headers, content)"),
    "malformed_json": (400, "the body is not a JSON object"),
    "unsupported_content_type": (400, "send multipart/form-data or application/json"),
    "missing_file": (400, "a multipart upload without its file part"),
    "too_many_files": (400, "more files than the endpoint takes"),
    "unexpected_file_part": (400, "a file part where none belongs"),
    "invalid_cursor": (400, "a paging cursor that is not one the API gave"),
    "missing_token": (401, "no Authorization header"),
    "invalid_token": (401, "a token that is malformed, unknown or revoked"),
    "unauthorized": (401, "not signed in"),
    "job_not_found": (404, "no such job for this token"),
    "image_not_found": (404, "no such image for this token"),
    "gallery_not_found": (404, "no such gallery for this token"),
    "run_not_found": (404, "no such run for this token"),
    "output_not_found": (404, "the job has no such output (yet)"),
    "schedule_not_found": (404, "the gallery has no schedule"),
    "not_found": (404, "no such endpoint"),
    "method_not_allowed": (405, "the endpoint does not take that method"),
    "not_acceptable": (406, "the endpoint answers JSON (or PNG)"),
    "conflict": (409, "a concurrent request changed the same object; retry"),
    "length_required": (411, "send a Content-Length"),
    "upload_too_large": (413, "the body is over the upload limit"),
    "image_too_large": (413, "the image has more pixels than the limit"),
    "unsupported_image": (415, "not an image format kseg reads"),
    "unsupported_media_type": (415, "a content type the endpoint does not take"),
    "invalid_parameter": (422, "a parameter out of range or of the wrong kind"),
    "unknown_field": (422, "a field the endpoint does not know"),
    "invalid_value": (422, "a value the database cannot store (control characters)"),
    "invalid_image": (422, "the bytes are not an image kseg can segment"),
    "empty_file": (422, "the file is empty"),
    "corrupt_image": (422, "the image is truncated or damaged"),
    "webhook_url_refused": (
        422,
        "a webhook URL that is malformed, does not resolve, or resolves to a non-public address",
    ),
    "rate_limited": (429, "too many requests or failed sign-ins in a window; see Retry-After"),
    "quota_exceeded": (
        429,
        "the owner's active jobs or stored bytes are over its quota; see Retry-After",
    ),
    "headers_too_large": (431, "the request line and headers are over 256 KB"),
    "internal_error": (500, "a bug on kseg's side; retry, report it if it persists"),
    "database_unavailable": (503, "the database is not answering; see Retry-After"),
}


class ApiError(Exception):
    """An error the API answers with: status, stable snake_case code, actionable message."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def not_found(what: str, ident: str, listing: str | None = None) -> ApiError:
    """404 ``<what>_not_found``; ``listing`` names where to list them (default: ``/<what>s``)."""
    shown = ident if plausible_id(ident) else ident[:64].encode("unicode_escape").decode()
    plural = what[:-1] + "ies" if what.endswith("y") else what + "s"
    return ApiError(
        404,
        f"{what}_not_found",
        f"No {what.replace('_', ' ')} with id {shown!r} exists for this token; "
        f"check the id (list yours with {listing or f'GET /api/v1/{plural}'}).",
    )


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


_HTTP_MESSAGES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is malformed; check its syntax and content type."),
    401: ("unauthorized", "Send a valid token as 'Authorization: Bearer <token>'."),
    404: ("not_found", "No such endpoint; see GET /api/v1/openapi.json for the API."),
    405: ("method_not_allowed", "This endpoint does not accept that method; see the Allow header."),
    406: ("not_acceptable", "This endpoint answers JSON (or PNG for image downloads)."),
    411: ("length_required", "Send a Content-Length header with the request body."),
    415: ("unsupported_media_type", "Send multipart/form-data or application/json."),
}


def _snake(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "error"


def http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        size = f" of {limit:,} bytes" if limit else ""
        return error_response(
            413,
            "upload_too_large",
            f"The request body is over the upload limit{size}; send a smaller file "
            "(or ask the operator to raise KSEG_MAX_UPLOAD_BYTES).",
        )
    if status == 429:  # a rate limit (web.limits)
        from kseg.web.limits import retry_after

        wait = retry_after()
        return error_response(
            429,
            "rate_limited",
            f"Too many requests ({exc.description}); wait {wait} s (Retry-After) and retry.",
            {"Retry-After": str(wait)},
        )
    if status >= 500:
        if status == 500:
            original = getattr(exc, "original_exception", None)
            if original is not None:
                return unexpected_error(original)
        code, message = _snake(exc.name), exc.description or exc.name
        return error_response(status, code, message)
    code, default = _HTTP_MESSAGES.get(status, (_snake(exc.name), exc.description or exc.name))
    message = default
    if status == 400 and exc.description and not exc.description.startswith("The browser"):
        message = f"{exc.description} {default}".strip()
    headers: dict[str, str] = {}
    for key, value in exc.get_headers():
        if key.lower() in {"allow", "www-authenticate", "retry-after"}:
            headers[key] = value
    return error_response(status, code, message, headers)


def kseg_error(exc: KsegError) -> Response:
    if isinstance(exc, QuotaExceededError):
        return error_response(
            exc.status, exc.code, exc.message, {"Retry-After": str(exc.retry_after)}
        )
    return error_response(exc.status, exc.code, exc.message)


def api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def database_error(exc: Exception) -> Response:
    log.warning("database unavailable: %s", exc)
    return error_response(
        503,
        "database_unavailable",
        "The database is not answering; retry in a few seconds (operators: check /readyz).",
        {"Retry-After": "5"},
    )


def unexpected_error(exc: BaseException) -> Response:
    if isinstance(exc, DataError):  # a value validation let through that the database refuses
        log.warning("database refused a value on %s %s: %s", request.method, request.path, exc)
        return error_response(
            422,
            "invalid_value",
            "A value in the request cannot be stored (e.g. it contains a NUL character); "
            "remove control characters and retry.",
        )
    if isinstance(exc, IntegrityError):  # lost a race with a concurrent request
        log.warning("integrity error on %s %s: %s", request.method, request.path, exc)
        return error_response(
            409, "conflict", "A concurrent request changed the same object; retry the request."
        )
    if isinstance(exc, (OperationalError, InterfaceError, ProgrammingError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        # down, unreachable, or not migrated yet (a missing table)
        return database_error(exc)  # type: ignore[arg-type]
    if isinstance(exc, SQLAlchemyError) and "connect" in str(exc).lower():
        return database_error(exc)  # type: ignore[arg-type]
    log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(
        500,
        "internal_error",
        "Something went wrong on our side; retry, and report it if it persists.",
    )


def handle_any(exc: Exception) -> Any:
    """The one handler: JSON under ``/api/``, Flask's default elsewhere."""
    on_api = request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")
    if isinstance(exc, ApiError):
        return api_error(exc)
    if isinstance(exc, KsegError):
        return kseg_error(exc)
    if isinstance(exc, HTTPException):
        return http_error(exc) if on_api else exc
    if not on_api:
        raise exc  # Flask's own handling (and the page's blueprint handlers) apply
    return unexpected_error(exc)


def register_app_handlers(app: Flask) -> None:
    """App-level handlers, for errors no blueprint sees (routing, size limit)."""
    app.register_error_handler(HTTPException, handle_any)
    app.register_error_handler(Exception, handle_any)
