"""Keyset paging, newest first: ``?limit=`` and an opaque ``?cursor=``.

The cursor is the urlsafe base64 of ``[created_at, id]`` of the last item served; the next page
holds the rows strictly older in ``(created_at, id)`` order, so inserts and deletes between
pages neither repeat nor skip rows.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Response, jsonify, request
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from kseg.web.common.errors import ApiError
from kseg.web.common.owned import plausible_id
from kseg.web.db import get_session

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class Page:
    limit: int
    after: tuple[datetime, str] | None


def parse_page() -> Page:
    raw = request.args.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        try:
            limit = int(raw.strip())
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(
                422,
                "invalid_parameter",
                f"limit: must be an integer 1..{MAX_LIMIT}, not {raw!r}.",
            )
    cursor = request.args.get("cursor")
    return Page(limit, decode_cursor(cursor) if cursor else None)


def encode_cursor(created_at: datetime, ident: str) -> str:
    stamp = created_at.astimezone(UTC).isoformat()
    raw = json.dumps([stamp, ident], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, ident = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None or not isinstance(ident, str) or not plausible_id(ident):
            raise ValueError
        return when.astimezone(UTC), ident
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        raise ApiError(
            400,
            "invalid_cursor",
            "cursor: not a cursor this API issued; pass the 'next' value of the previous "
            "page unchanged, or omit it to start from the newest.",
        ) from None


def apply(
    stmt: Select[Any], model: Any, page: Page, *, at: Any = None, ident: Any = None
) -> Select[Any]:
    """Order newest first and start after the cursor; fetches one extra row to see the end.

    The order is ``(model.created_at, model.id)``, or the columns ``at`` and ``ident``."""
    at = model.created_at if at is None else at
    ident = model.id if ident is None else ident
    if page.after is not None:
        when, last = page.after
        stmt = stmt.where(or_(at < when, and_(at == when, ident < last)))
    return stmt.order_by(at.desc(), ident.desc()).limit(page.limit + 1)


def finish(
    rows: list[Any], page: Page, key: Callable[[Any], tuple[datetime, str]] | None = None
) -> tuple[list[Any], str | None]:
    """The page's rows and the next cursor; ``key`` gives a row's ``(at, ident)`` when the
    page was not ordered by ``created_at`` and ``id``."""
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[: page.limit]
    last = rows[-1]
    return rows, encode_cursor(*(key(last) if key else (last.created_at, last.id)))


def fetch(
    session: Session, stmt: Select[Any], model: Any, page: Page
) -> tuple[list[Any], str | None]:
    """One page of ``model`` rows from ``stmt``, newest first, and the next cursor."""
    rows = list(session.scalars(apply(stmt, model, page)).unique())
    return finish(rows, page)


Serializer = Callable[[Session, list[Any]], list[dict[str, Any]]]


def respond(stmt: Select[Any], model: Any, page: Page, objs: Serializer) -> Response:
    """The API's answer for one page: ``{"items": objs(session, rows), "next": cursor}``."""
    session = get_session()
    rows, cursor = fetch(session, stmt, model, page)
    return jsonify({"items": objs(session, rows), "next": cursor})
