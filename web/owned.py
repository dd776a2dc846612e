"""The one owner-scoped lookup the API and the pages share: a row by id, only if it belongs to
the owner. Another owner's row, an unknown id and an implausible one (never looked up) are all
``None`` — the API answers that with its JSON 404, the pages with their 404 page."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from sqlalchemy import select

from kseg.web.db import get_session

T = TypeVar("T")

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def plausible_id(ident: str) -> bool:
    """Ids are UUIDs: anything else (too long, control characters, NUL) is not looked up."""
    return ID_PATTERN.fullmatch(ident) is not None


def find_owned(model: type[T], ident: str | None, owner_id: str) -> T | None:
    """The ``model`` row with id ``ident`` if ``owner_id`` owns it, else None."""
    if not ident or not plausible_id(ident):
        return None
    table: Any = model
    row: T | None = get_session().scalar(
        select(model).where(table.id == ident, table.owner_id == owner_id)
    )
    return row


__all__ = ["ID_PATTERN", "find_owned", "plausible_id"]
