"""``/api/v1/webhooks``: the owner's signing secret and the deliveries listing; and reading
``webhook_url`` / ``webhook_events`` where a job, run or schedule is made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from kseg.shared import webhooks
from kseg.shared.settings import Settings
from kseg.shared.store import webhooks as webhook_store
from kseg.shared.store.models import WebhookDelivery
from kseg.web.api.auth import owner_id
from kseg.web.api.blueprint import bp
from kseg.web.common import paging
from kseg.web.common.apidoc import json_response, query, ref, tagged
from kseg.web.common.errors import ApiError
from kseg.web.common.schemas import DeliveryOut, WebhookSecret
from kseg.web.db import get_session
from kseg.web.queue import wake

__all__ = ["wake", "webhook_fields"]

DELIVERY_STATUSES = ("pending", "succeeded", "failed")
ops = tagged("webhooks")
SECRET = {
    "200": json_response(ref("WebhookSecret"), "The secret that signs attempts made from now on.")
}


def webhook_fields(url: Any, events: Any) -> webhooks.Hook:
    """``webhook_url`` and ``webhook_events`` as stored: the URL checked (malformed, or
    resolving to an address that is not public: 422 ``webhook_url_refused``), the events
    canonical."""
    if url is None or (isinstance(url, str) and not url.strip()):
        if events not in (None, "", []):
            webhooks.parse_events(events)  # still a 422 for an unknown name
        return webhooks.NO_HOOK
    settings: Settings = current_app.config["KSEG_SETTINGS"]
    checked = webhooks.check_url(str(url), allow_private=settings.webhook_allow_private)
    return webhooks.Hook(checked, webhooks.parse_events(events))


def _secret_response(secret_of: Callable[[Session, str], str]) -> Response:
    """The owner's secret as ``secret_of`` gives it (made or replaced: committed first)."""
    session = get_session()
    secret = secret_of(session, owner_id())
    session.commit()
    return jsonify(WebhookSecret(secret=secret).model_dump())


@bp.get("/webhooks/secret")
@ops.operation(
    "getWebhookSecret",
    "Your webhook signing secret (made on first use)",
    description="Every delivery carries `Kseg-Signature: t=<unix seconds>,"
    'v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`; verify it and reject old timestamps '
    "(see Webhooks in the README).",
    responses=SECRET,
)
def get_webhook_secret() -> Response:
    return _secret_response(webhook_store.get_secret)


@bp.post("/webhooks/secret/rotate")
@ops.operation("rotateWebhookSecret", "Replace your webhook signing secret", responses=SECRET)
def rotate_webhook_secret() -> Response:
    return _secret_response(webhook_store.rotate_secret)


@bp.get("/webhooks/deliveries")
@ops.list(
    "listWebhookDeliveries",
    "Your webhook deliveries, newest first, with their attempts",
    model="DeliveryList",
    parameters=[
        query(
            "status",
            "Only deliveries in this state.",
            type="string",
            enum=["pending", "succeeded", "failed"],
        )
    ],
)
def list_deliveries() -> Response:
    page = paging.parse_page()
    stmt = select(WebhookDelivery).where(WebhookDelivery.owner_id == owner_id())
    raw = request.args.get("status")
    if raw:
        if raw not in DELIVERY_STATUSES:
            raise ApiError(
                422,
                "invalid_parameter",
                f"status: {raw!r} is not a delivery status; use one of "
                f"{', '.join(DELIVERY_STATUSES)}.",
            )
        stmt = stmt.where(WebhookDelivery.status == raw)
    rows, cursor = paging.fetch(get_session(), stmt, WebhookDelivery, page)
    items = [
        DeliveryOut.model_validate(webhook_store.delivery_data(row)).model_dump(mode="json")
        for row in rows
    ]
    return jsonify({"items": items, "next": cursor})
