"""The pages' blueprint: security headers on every page, the error pages (404, 429, 500 and
an expired form), and :func:`error_page` for views. The views (:mod:`.auth`, :mod:`.views`,
:mod:`.galleries`) register on it; the package imports them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, flash, redirect, render_template, request
from flask.sansio.blueprints import BlueprintSetupState
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from kseg.web.common.errors import handle_any
from kseg.web.db import get_session
from kseg.web.limits import retry_after
from kseg.web.pages import present

bp = Blueprint("pages", __name__)

# No inline script, nothing from another origin. Inline style attributes carry the palette's
# colours and the bar widths, so style-src allows them.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    # /login/<token> must not leak through Referer (it is spent anyway, but still).
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def done(message: str, to: str) -> Response:
    """The end of a form that changed something: commit, say what was done on the next page,
    and send the browser there (303, so a reload does not post again)."""
    get_session().commit()
    flash(message, "ok")
    return redirect(to, 303)


def _on_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def error_page(status: int, title: str, message: str, hint: str | None = None) -> Response:
    html = render_template("error.html", status=status, title=title, message=message, hint=hint)
    response = Response(html, status=status, mimetype="text/html")
    for key, value in _CSP_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


_CSP_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> Response:
    return error_page(
        400,
        "The form expired",
        "This form could not be accepted: its security token is missing or out of date "
        f"({exc.description.rstrip('.')}).",
        "Go back, reload the page and send the form again.",
    )


#: The app-wide error pages (unknown page URLs get them too): title, what happened, what to
#: do (``{wait}``: the seconds of Retry-After).
_ERROR_PAGES: dict[int, tuple[str, str, str]] = {
    404: (
        "Not found",
        "There is nothing here — or it belongs to someone else.",
        "Check the address, or find your jobs in the history.",
    ),
    429: (  # a rate limit (web.limits)
        "Slow down",
        "Too many attempts from here in a short time: too many sign-ins with a wrong token, "
        "or too many submissions.",
        "Wait {wait} seconds, then try again.",
    ),
    500: (
        "Something went wrong",
        "The page could not be shown because of an error on our side.",
        "Try again in a moment; if it keeps happening, tell the operator (see /readyz).",
    ),
}


def _app_error(exc: Exception) -> Any:
    """404, 429 and 500 anywhere: the API's JSON under ``/api/``, the page elsewhere."""
    if _on_api(request.path):
        return handle_any(exc)
    code = exc.code if isinstance(exc, HTTPException) else 500
    status = code if code in _ERROR_PAGES else 500
    title, message, hint = _ERROR_PAGES[status]
    wait = retry_after() if status == 429 else 0
    response = error_page(status, title, message, hint.format(wait=wait))
    if status == 429:
        response.headers["Retry-After"] = str(wait)
    return response


@bp.record_once
def _on_register(state: BlueprintSetupState) -> None:
    app: Flask = state.app
    # App-wide, so unknown page URLs get the page too; /api/ keeps its JSON errors.
    for status in _ERROR_PAGES:
        app.register_error_handler(status, _app_error)
    app.jinja_env.filters["when"] = present.when
    app.jinja_env.filters["percent"] = present.percent
    app.jinja_env.filters["ms"] = present.ms
    app.jinja_env.filters["thumb"] = present.thumb
