"""Signing in to the pages: the API's owners and tokens, and a session kept on the server.

A token pasted into the form, or a one-time link ``/login/<token>`` (``kseg up`` prints one,
``kseg login-link`` makes a fresh one),
is exchanged for a server-side session (:mod:`web.browser_session`) whose id alone goes in the
session cookie (signed, HttpOnly, SameSite=Lax); the token never does. Sign-out is a
CSRF-protected POST that ends the session on the server, so a copy of the cookie taken
before signs nobody in afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from kseg.shared.settings import Settings
from kseg.shared.store.auth import hash_token, owner_for_token
from kseg.shared.store.models import ApiToken, Owner
from kseg.web import browser_session
from kseg.web.common.owned import default_owner_id
from kseg.web.db import get_session
from kseg.web.limits import auth_failed
from kseg.web.pages.blueprint import bp

F = TypeVar("F", bound=Callable[..., Any])


def _settings() -> Settings:
    settings: Settings = current_app.config["KSEG_SETTINGS"]
    return settings


def current_owner() -> Owner | None:
    """The signed-in owner (cached per request): that of the cookie's live server-side
    session, read with it in one query; a signed-out, revoked or unknown session is None."""
    if "page_owner" in g:
        owner: Owner | None = g.page_owner
        return owner
    owner = None
    if _settings().auth_disabled:
        owner = get_session().get(Owner, default_owner_id())
    else:
        row = browser_session.current_web_session()
        owner = None if row is None else row.owner
    g.page_owner = owner
    return owner


def owner_id() -> str:
    owner = current_owner()
    if owner is None:  # pragma: no cover - views are wrapped in login_required
        raise RuntimeError("no owner signed in")
    return owner.id


def login_required(view: F) -> F:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_owner() is None:
            return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def _owner_for_template() -> Owner | None:
    """For the page header; an error page must render even with the database down."""
    try:
        return current_owner()
    except Exception:
        return None


@bp.app_context_processor
def _inject_owner() -> dict[str, Any]:
    # Called lazily from templates; the API renders none.
    return {"signed_in_owner": _owner_for_template, "auth_disabled": _settings().auth_disabled}


def _safe_next(target: str | None) -> str:
    """Only a path on this site: no scheme, no host, no ``//evil`` or ``/\\evil``."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return url_for("pages.submit")
    if any(ch in target for ch in "\\\r\n") or target.startswith("/login"):
        return url_for("pages.submit")
    return target


def _sign_in(owner: Owner, token_id: str | None, next_url: str | None) -> Response:
    # A fresh cookie session (and CSRF token) for the new owner, holding only the session id;
    # commits the request's transaction (a spent sign-in link, a token's last use) with it.
    browser_session.sign_in(owner.id, token_id)
    g.page_owner = owner
    flash(f"Signed in as {owner.name}.", "ok")
    return redirect(_safe_next(next_url))


def _login_page(error: str | None = None, status: int = 200, token_error: bool = False) -> Any:
    next_url = request.values.get("next", "")
    html = render_template("login.html", error=error, token_error=token_error, next_url=next_url)
    return html, status


@bp.get("/login")
def login() -> Any:
    if current_owner() is not None:
        return redirect(_safe_next(request.args.get("next")))
    return _login_page()


@bp.post("/login")
def login_post() -> Any:
    token = (request.form.get("token") or "").strip()
    if not token:
        return _login_page("Paste your token to sign in.", 400, token_error=True)
    db = get_session()
    owner = owner_for_token(db, token)
    if owner is None:
        db.rollback()
        auth_failed()  # counted per client address (web.limits)
        return _login_page(
            "That token is not valid: it is unknown, revoked or already used. "
            "Check it, or create a new one with `kseg token create NAME`.",
            403,
            token_error=True,
        )
    token_id = db.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(token)))
    return _sign_in(owner, token_id, request.form.get("next"))  # commits


@bp.get("/login/<token>")
def login_link(token: str) -> Any:
    """A one-time sign-in link. Only one-time tokens work here: a long-lived token does not
    belong in a URL (browser history, logs), and is refused so nobody gets used to it."""
    db = get_session()
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    owner = owner_for_token(db, token) if row is not None and row.one_time else None
    if owner is None:
        db.rollback()
        auth_failed()
        return _login_page(
            "This sign-in link is not valid any more: each link works once. "
            "Get a fresh one by running `kseg login-link` where kseg runs (no restart "
            "needed), or sign in with your token below.",
            403,
        )
    # The link is spent in the same commit as the session starts.
    return _sign_in(owner, row.id if row is not None else None, None)


@bp.post("/logout")
def logout() -> Response:
    browser_session.sign_out()  # on the server: every copy of the cookie is signed out
    g.page_owner = None
    flash("Signed out.", "ok")
    return redirect(url_for("pages.login"))
