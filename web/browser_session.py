"""The pages' sign-in, kept on the server: the session cookie holds only a session id.

Flask's cookie session (signed, HttpOnly, SameSite=Lax) carries the id of a
:class:`shared.models.WebSession` row (plus flask-wtf's CSRF token and flashed messages),
never an owner id nor a token. Every request that needs the signed-in owner reads that row by
primary key and accepts only a live one, so signing out — which revokes the row — ends the
session for every copy of the cookie, and ``kseg token revoke`` ends the sessions started
with that token. A cookie from before server-side sessions (an owner id, no session id) signs
nobody in.

Used by the pages (:mod:`web.pages.auth`) and by the API's cookie path for reads
(:func:`web.api.auth.authenticate`).
"""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, g, session

from kseg.shared.store.auth import end_web_session, live_web_session, start_web_session
from kseg.shared.store.models import WebSession
from kseg.web.db import get_session

#: The cookie session's key for the session id.
SESSION_ID = "sid"
#: What cookies from before server-side sessions held instead; dropped when seen.
_LEGACY_OWNER_ID = "owner_id"
_CACHE = "kseg_web_session"


def _max_idle() -> timedelta:
    # The cookie's own lifetime (PERMANENT_SESSION_LIFETIME, refreshed on every request): a
    # session idle for longer is over on the server too.
    lifetime: timedelta = current_app.permanent_session_lifetime
    return lifetime


def current_web_session() -> WebSession | None:
    """The request's live web session (its owner loaded), or None; read once per request.

    A cookie naming a session that is not live any more loses that id, so the browser stops
    sending it."""
    if _CACHE in g:
        cached: WebSession | None = g.get(_CACHE)
        return cached
    row: WebSession | None = None
    session.pop(_LEGACY_OWNER_ID, None)  # marks the cookie changed only when it was there
    session_id = session.get(SESSION_ID)
    if isinstance(session_id, str):
        db = get_session()
        row, wrote = live_web_session(db, session_id, _max_idle())
        if row is None:
            session.pop(SESSION_ID, None)
        elif wrote:
            db.commit()  # a refreshed last_seen_at, once every few minutes
    setattr(g, _CACHE, row)
    return row


def sign_in(owner_id: str, token_id: str | None) -> None:
    """Start a web session for ``owner_id`` (signed in with token ``token_id``) and put its
    id in a fresh cookie session (a new CSRF token too)."""
    db = get_session()
    row = start_web_session(db, owner_id, token_id, _max_idle())
    db.commit()
    session.clear()
    session[SESSION_ID] = row.id
    session.permanent = True
    setattr(g, _CACHE, row)


def sign_out() -> None:
    """End the request's web session on the server, and empty the cookie session."""
    session_id = session.get(SESSION_ID)
    if isinstance(session_id, str):
        db = get_session()
        end_web_session(db, session_id)
        db.commit()
    session.clear()
    setattr(g, _CACHE, None)
