"""Owners and bearer tokens. Only a token's SHA-256 is stored; the token itself is shown once."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from shared.models import ApiToken, Owner, utcnow

DEFAULT_OWNER = "default"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "kseg_" + secrets.token_urlsafe(32)


def get_or_create_owner(session: Session, name: str) -> Owner:
    owner = session.scalar(select(Owner).where(Owner.name == name))
    if owner is None:
        owner = Owner(name=name)
        session.add(owner)
        session.flush()
    return owner


def create_token(
    session: Session, owner_name: str, token_name: str | None = None, *, one_time: bool = False
) -> str:
    """Create a token for ``owner_name`` (creating the owner if needed); returns the token."""
    owner = get_or_create_owner(session, owner_name)
    token = new_token()
    session.add(
        ApiToken(
            owner_id=owner.id,
            name=token_name or owner_name,
            token_hash=hash_token(token),
            one_time=one_time,
        )
    )
    session.flush()
    return token


def ensure_token(session: Session, owner_name: str, token: str, token_name: str = "env") -> Owner:
    """Accept ``token`` for ``owner_name`` (``KSEG_API_TOKEN``): idempotent."""
    owner = get_or_create_owner(session, owner_name)
    digest = hash_token(token)
    existing = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if existing is None:
        session.add(ApiToken(owner_id=owner.id, name=token_name, token_hash=digest))
        session.flush()
    elif existing.owner_id != owner.id:
        raise ValueError("that token already belongs to another owner")
    return owner


#: Built once: every API request runs it, and building it anew cost more than running it.
_LIVE_TOKEN = select(ApiToken).where(
    ApiToken.token_hash == bindparam("b_hash"), ApiToken.revoked_at.is_(None)
)


def use_token(session: Session, token: str) -> tuple[str | None, bool]:
    """``(owner id, wrote)`` for a presented token: the id is None for an unknown or revoked
    token; ``wrote`` says whether the session now holds a change to commit (a spent one-time
    token, a refreshed ``last_used_at``). One query for a valid token used recently."""
    if not token:
        return None, False
    row = session.scalar(_LIVE_TOKEN, {"b_hash": hash_token(token)})
    if row is None:
        return None, False
    now = utcnow()
    if row.one_time:
        # Compare-and-set, so two concurrent uses of one link cannot both sign in.
        spent = session.execute(
            update(ApiToken)
            .where(ApiToken.id == row.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now, last_used_at=now)
        )
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            return None, True
        return row.owner_id, True
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=5):
        # Coarse on purpose: a write on every request would serialise SQLite.
        row.last_used_at = now
        return row.owner_id, True
    return row.owner_id, False


def owner_for_token(session: Session, token: str) -> Owner | None:
    """The owner a presented token belongs to, or None. A one-time token is spent here."""
    owner_id, _ = use_token(session, token)
    return None if owner_id is None else session.get(Owner, owner_id)
