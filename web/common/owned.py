"""Owners, as the API and the pages both need them: the default owner, and the one
owner-scoped lookup (a row by id, only if it belongs to the owner). Another owner's row, an
unknown id and an implausible one (never looked up) are all ``None`` — the API answers that
with its JSON 404, the pages with their 404 page."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from kseg.shared.store.auth import DEFAULT_OWNER, get_or_create_owner
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


def default_owner_id() -> str:
    """The default owner's id (created on first use): everyone is that owner when
    ``KSEG_AUTH_DISABLED`` is set, on the API and on the pages."""
    session = get_session()
    for attempt in range(2):
        try:
            owner = get_or_create_owner(session, DEFAULT_OWNER)
            session.commit()
            return owner.id
        except IntegrityError:  # created concurrently by another request
            session.rollback()
            if attempt:
                raise
    raise AssertionError("unreachable")


__all__ = ["ID_PATTERN", "default_owner_id", "find_owned", "plausible_id"]
