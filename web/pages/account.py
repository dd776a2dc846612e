"""The account page (``/account``): the signed-in owner's API tokens — list, create, revoke.

A token is shown once, in the answer to the form that created it (never stored, only its
hash), with a copy button and a ready ``curl`` line; the list shows each token's name, when it
was made and last used. Revoking is a CSRF-protected POST, as every other form: requests
bearing the token answer 401 from then on, and the pages signed in with it are signed out
(:func:`kseg.shared.store.auth.revoke_owner_token`, what ``kseg token revoke`` does).
One-time sign-in links are not listed: ``kseg login-link`` makes a fresh one.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from kseg.shared.store.auth import TokenInfo, create_owner_token, owner_tokens, revoke_owner_token
from kseg.shared.store.objects import isoz
from kseg.web import browser_session
from kseg.web.db import get_session
from kseg.web.pages.auth import login_required, owner_id
from kseg.web.pages.blueprint import bp

#: The longest token name the form takes (``ApiToken.name``).
NAME_MAX = 200


def _token_view(info: TokenInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.label,
        "created_at": isoz(info.created_at),
        "last_used_at": isoz(info.last_used_at),
    }


def _clean_name(raw: str) -> tuple[str, str | None]:
    """The name as stored (one line, spaces collapsed) and what is wrong with it, if anything."""
    name = " ".join("".join(ch if ch.isprintable() else " " for ch in raw).split())
    if not name:
        return name, "Give the token a name, say what will use it (“backup script”)."
    if len(name) > NAME_MAX:
        return name[:NAME_MAX], f"At most {NAME_MAX} characters."
    return name, None


@bp.get("/account")
@login_required
def account(
    *, created: dict[str, Any] | None = None, name: str = "", error: str | None = None
) -> tuple[str, int]:
    """The account page; the token form's answers show it again with what happened."""
    db = get_session()
    tokens = [_token_view(info) for info in owner_tokens(db, owner_id())]
    html = render_template(
        "account.html", tokens=tokens, created=created, name=name, error=error, name_max=NAME_MAX
    )
    return html, 422 if error else 200


@bp.post("/account/tokens")
@login_required
def account_token_create() -> Any:
    """Create a token and show it, this once (the answer is not cached: ``no-store``)."""
    name, error = _clean_name(request.form.get("name") or "")
    if error:
        return account(name=name, error=error)
    db = get_session()
    info, token = create_owner_token(db, owner_id(), name)
    db.commit()
    created = {**_token_view(info), "token": token}
    return account(created=created)


@bp.post("/account/tokens/<token_id>/revoke")
@login_required
def account_token_revoke(token_id: str) -> Any:
    db = get_session()
    here = browser_session.current_web_session()
    signed_in_with = here.token_id if here is not None else None
    done = revoke_owner_token(db, owner_id(), token_id)
    if done is None:
        abort(404)
    info, _ = done
    db.commit()
    flash(f"Revoked the token “{info.label}”: requests bearing it now answer 401.", "ok")
    if signed_in_with == info.id:
        # This browser signed in with it, so its session ended with it.
        flash("This browser had signed in with that token, so it is signed out.", "warn")
        return redirect(url_for("pages.login"), 303)
    return redirect(url_for("pages.account"), 303)
