"""The API's blueprint, ``/api/v1``: bearer-token authentication before every view, and the
contract's JSON errors for whatever a view raises. The views (:mod:`.jobs`, :mod:`.images`,
:mod:`.galleries`, :mod:`.openapi`) register on it; the package imports them.
"""

from __future__ import annotations

from flask import Blueprint
from flask.sansio.blueprints import BlueprintSetupState

from kseg.web.api.auth import authenticate
from kseg.web.common.errors import handle_any, register_app_handlers

bp = Blueprint("api", __name__, url_prefix="/api/v1")
bp.before_request(authenticate)
bp.register_error_handler(Exception, handle_any)


@bp.record_once
def _on_register(state: BlueprintSetupState) -> None:
    register_app_handlers(state.app)
