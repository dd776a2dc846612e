"""The JSON API, ``/api/v1`` (contract: ``shared/API.md``; schema: ``/api/v1/openapi.json``).

Modules: :mod:`.auth` (bearer tokens), :mod:`.errors` (JSON errors), :mod:`.requests` (bodies),
:mod:`.schemas` (pydantic models), :mod:`.serialize` (rows → JSON), :mod:`.paging` (cursors),
and the views in :mod:`.jobs`, :mod:`.images`, :mod:`.galleries` and :mod:`.openapi`.
"""

from __future__ import annotations

from flask import Blueprint
from flask.sansio.blueprints import BlueprintSetupState

from web.api.auth import authenticate
from web.api.errors import handle_any, register_app_handlers

bp = Blueprint("api", __name__, url_prefix="/api/v1")
bp.before_request(authenticate)
bp.register_error_handler(Exception, handle_any)


@bp.record_once
def _on_register(state: BlueprintSetupState) -> None:
    register_app_handlers(state.app)


from web.api import galleries, images, jobs, openapi  # noqa: E402  (views register on bp)

__all__ = ["bp", "galleries", "images", "jobs", "openapi"]
