"""The web pages: sign-in, submit, job, history, galleries — server-rendered Jinja, a little
plain JS.

Modules: :mod:`.auth` (sign-in with a token or a one-time link, sign-out, the signed-in
owner), :mod:`.account` (the owner's API tokens), :mod:`.views` (the pages),
:mod:`.galleries` (the gallery list, a gallery, a run), :mod:`.present` (pure helpers that
shape results for the templates: percentages, the k chart, parameter summaries).

The pages use the JSON API from the browser only for reading (progress polling and images),
authenticated by the session cookie (see :func:`web.api.auth.authenticate`); every write is a
CSRF-protected form post handled here with the same service functions the API uses.
"""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from kseg.web.pages import account, auth, galleries, views  # the views register on bp
from kseg.web.pages.blueprint import bp, error_page


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc: RequestEntityTooLarge) -> Any:
    """An upload over the limit: the form it came from again, saying so (413)."""
    if request.endpoint == "pages.submit_post":
        return views.too_large_page()
    if request.endpoint == "pages.gallery_upload":
        return galleries.too_large_page()
    return error_page(413, "Too large", "The request is over the upload limit.")


__all__ = ["account", "auth", "bp", "error_page", "galleries", "views"]
