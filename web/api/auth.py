"""Bearer-token authentication for the API: ``Authorization: Bearer <token>``.

GET and HEAD requests without an Authorization header may instead carry the pages' session
cookie, whose server-side session must be live (:mod:`web.browser_session`: signed out means
401 here too): the pages poll jobs and load images that way.

``KSEG_API_TOKEN`` is made valid for the default owner on the first request (lazily, so an app
can start before the database is migrated). ``KSEG_AUTH_DISABLED`` makes every request the
default owner — only for a single-user local run.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from flask import Response, current_app, g, jsonify, request
from flask import session as cookie_session
from sqlalchemy import select

from kseg.shared.settings import Settings
from kseg.shared.store.auth import DEFAULT_OWNER, ensure_token, use_token
from kseg.web.browser_session import SESSION_ID, current_web_session
from kseg.web.common import paging
from kseg.web.common.errors import ApiError, not_found
from kseg.web.common.owned import default_owner_id, find_owned
from kseg.web.db import get_session
from kseg.web.limits import auth_failed

log = logging.getLogger(__name__)

PUBLIC_ENDPOINTS = {"api.openapi"}
_ENSURED = "kseg_api_token_ensured"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="kseg"'}


def _settings() -> Settings:
    settings: Settings = current_app.config["KSEG_SETTINGS"]
    return settings


def ensure_env_token() -> None:
    """Accept ``KSEG_API_TOKEN`` for the default owner, once per app; retried until it works."""
    settings = _settings()
    if not settings.api_token or current_app.extensions.get(_ENSURED):
        return
    session = get_session()
    try:
        ensure_token(session, DEFAULT_OWNER, settings.api_token)
        session.commit()
    except ValueError as exc:
        session.rollback()
        log.error("KSEG_API_TOKEN is not usable for %r: %s", DEFAULT_OWNER, exc)
    except Exception as exc:  # not migrated yet, a concurrent insert, database down: retry later
        session.rollback()
        log.warning("could not register KSEG_API_TOKEN yet: %s", exc)
        return
    current_app.extensions[_ENSURED] = True


def authenticate() -> None:
    """``before_request`` of the API blueprint: sets ``g.owner_id`` or answers 401."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.method == "OPTIONS":
        return
    if _settings().auth_disabled:
        g.owner_id = default_owner_id()
        return
    if (
        request.method in ("GET", "HEAD")
        and "Authorization" not in request.headers
        and SESSION_ID in cookie_session
    ):
        # The pages' session cookie, for reads only (polling, images): writes need a bearer
        # token, so a cookie can never be used to forge one. Its session must be live on the
        # server (one primary-key read); a signed-out one falls through to the 401 below.
        web_session = current_web_session()
        if web_session is not None:
            g.owner_id = web_session.owner_id
            return
    ensure_env_token()
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if not header:
        raise ApiError(
            401,
            "missing_token",
            "This endpoint needs a token: send 'Authorization: Bearer <token>' "
            "(create one with `kseg token create NAME`).",
            _CHALLENGE,
        )
    if scheme.lower() != "bearer" or not token.strip():
        auth_failed()
        raise ApiError(
            401,
            "invalid_token",
            "The Authorization header must be 'Bearer <token>'.",
            {"WWW-Authenticate": 'Bearer realm="kseg", error="invalid_request"'},
        )
    session = get_session()
    found, wrote = use_token(session, token.strip())
    if found is None:
        session.rollback()
        auth_failed()  # counted per client address: guessing tokens gets a 429 soon
        raise ApiError(
            401,
            "invalid_token",
            "The token is unknown or revoked; check it, or create a new one with "
            "`kseg token create NAME`.",
            {"WWW-Authenticate": 'Bearer realm="kseg", error="invalid_token"'},
        )
    if wrote:
        session.commit()  # last_used_at, or a spent one-time token
    # else the request goes on in the same transaction, on the same connection
    g.owner_id = found


def owner_id() -> str:
    return str(g.owner_id)


T = TypeVar("T")


def own(model: type[T], ident: str, what: str, listing: str | None = None) -> T:
    """The token owner's ``model`` row with id ``ident``, or the contract's 404 naming ``what``
    (another owner's row too)."""
    row = find_owned(model, ident, owner_id())
    if row is None:
        raise not_found(what, ident, listing)
    return row


def object_response(objs: paging.Serializer, row: Any) -> Response:
    """The API's answer for one row, serialised by ``objs`` as it is in a list."""
    return jsonify(objs(get_session(), [row])[0])


def owned_page(model: Any, objs: paging.Serializer, *criteria: Any) -> Response:
    """The API's answer for one page (``?limit``, ``?cursor``) of the token owner's ``model``
    rows that meet ``criteria``, newest first, each serialised by ``objs``."""
    page = paging.parse_page()
    stmt = select(model).where(model.owner_id == owner_id(), *criteria)
    return paging.respond(stmt, model, page, objs)
