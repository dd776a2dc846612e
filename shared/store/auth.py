"""Owners, bearer tokens and the pages' sessions. Only a token's SHA-256 is stored; the token
itself is shown once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, bindparam, delete, or_, select, update
from sqlalchemy.orm import Session

from kseg.shared.store.models import ApiToken, Owner, WebSession, utcnow

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
    elif existing.revoked_at is not None:
        # Revocation wins over the environment: a leaked token must stay dead.
        raise ValueError(
            "that token was revoked (`kseg token revoke`); set KSEG_API_TOKEN to a new "
            "token or unset it"
        )
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


# ---------------------------------------------------------------- web sessions

#: How stale a web session's ``last_seen_at`` may get before a request refreshes it: coarse,
#: so that browsing the pages writes to the database once in a while, not on every request.
SESSION_TOUCH_EVERY = timedelta(minutes=5)
#: The longest a session id may be (``WebSession.id``); a longer one is not looked up.
_SESSION_ID_MAX = 64


def start_web_session(
    session: Session, owner_id: str, token_id: str | None, max_idle: timedelta
) -> WebSession:
    """A new signed-in browser session for ``owner_id``, started with token ``token_id``.

    The owner's sessions already ended (signed out, revoked, idle longer than ``max_idle``)
    are deleted on the way, so the table holds about one row per signed-in browser."""
    now = utcnow()
    session.execute(
        delete(WebSession)
        .where(
            WebSession.owner_id == owner_id,
            or_(WebSession.revoked_at.is_not(None), WebSession.last_seen_at < now - max_idle),
        )
        .execution_options(synchronize_session=False)
    )
    row = WebSession(
        id=secrets.token_urlsafe(32),
        owner_id=owner_id,
        token_id=token_id,
        created_at=now,
        last_seen_at=now,
    )
    session.add(row)
    session.flush()
    return row


def live_web_session(
    session: Session, session_id: str, max_idle: timedelta
) -> tuple[WebSession | None, bool]:
    """``(row, wrote)`` for the session id a cookie holds: the row is None for an unknown,
    revoked or idle-expired session; ``wrote`` says whether the session now holds a refreshed
    ``last_seen_at`` to commit. One primary-key read (the owner joined in)."""
    if not session_id or len(session_id) > _SESSION_ID_MAX:
        return None, False
    row = session.get(WebSession, session_id)
    if row is None or row.revoked_at is not None:
        return None, False
    now = utcnow()
    idle = now - row.last_seen_at
    if idle > max_idle:
        return None, False
    if idle > SESSION_TOUCH_EVERY:
        row.last_seen_at = now
        return row, True
    return row, False


def end_web_session(session: Session, session_id: str) -> bool:
    """Sign a session out (revoke its row); False when it was not live."""
    return _revoke_sessions(session, WebSession.id == session_id) > 0


def end_web_sessions_of_token(session: Session, token_id: str) -> int:
    """Sign out every live session started with token ``token_id``; how many there were."""
    return _revoke_sessions(session, WebSession.token_id == token_id)


def _revoke_sessions(session: Session, which: ColumnElement[bool]) -> int:
    done = session.execute(
        update(WebSession)
        .where(which, WebSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


#: The shortest id prefix ``revoke_token`` accepts: ``kseg token list`` shows 8 characters.
MIN_ID_PREFIX = 4


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never the token itself, nor its hash."""

    id: str
    owner: str
    label: str
    one_time: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def status(self) -> str:
        """``active``, ``revoked``, or ``used`` (a one-time sign-in link already spent)."""
        if self.revoked_at is None:
            return "active"
        return "used" if self.one_time and self.last_used_at == self.revoked_at else "revoked"


def _info(token: ApiToken, owner_name: str) -> TokenInfo:
    return TokenInfo(
        id=token.id,
        owner=owner_name,
        label=token.name,
        one_time=token.one_time,
        created_at=token.created_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )


def list_tokens(
    session: Session, owner_name: str | None = None, *, include_revoked: bool = False
) -> list[TokenInfo]:
    """Tokens, oldest first: live ones only unless ``include_revoked`` (which also lists spent
    sign-in links); of one owner when ``owner_name`` is given."""
    stmt = select(ApiToken, Owner.name).join(Owner, ApiToken.owner_id == Owner.id)
    if owner_name is not None:
        stmt = stmt.where(Owner.name == owner_name)
    if not include_revoked:
        stmt = stmt.where(ApiToken.revoked_at.is_(None))
    rows = session.execute(stmt.order_by(ApiToken.created_at, ApiToken.id)).all()
    return [_info(token, name) for token, name in rows]


class TokenLookupError(LookupError):
    """No token, or more than one, matches what was given; the message says which."""


def revoke_token(session: Session, ident: str) -> tuple[TokenInfo, bool]:
    """Revoke the token ``ident`` names: the token itself (``kseg_…``), its id, or a unique
    prefix of its id (at least ``MIN_ID_PREFIX`` characters, as ``kseg token list`` shows).

    Returns ``(info, revoked_now)``; ``revoked_now`` is False for a token already revoked.
    Requests bearing it are refused from the commit on: every request looks its token up. The
    pages' sessions signed in with it (a spent sign-in link's too) are signed out.
    Raises :class:`TokenLookupError` when nothing, or more than one token, matches.
    """
    ident = ident.strip()
    stmt = select(ApiToken, Owner.name).join(Owner, ApiToken.owner_id == Owner.id)
    if ident.startswith("kseg_"):
        rows = session.execute(stmt.where(ApiToken.token_hash == hash_token(ident))).all()
    elif len(ident) < MIN_ID_PREFIX:
        raise TokenLookupError(
            f"give a token id or at least its first {MIN_ID_PREFIX} characters "
            "(`kseg token list` shows them), or the token itself"
        )
    else:
        rows = session.execute(
            stmt.where(ApiToken.id.startswith(ident.lower(), autoescape=True)).limit(10)
        ).all()
    if not rows:
        raise TokenLookupError(
            f"no token matches {ident[:12] + '…' if ident.startswith('kseg_') else ident!r}; "
            "`kseg token list --all` shows every token"
        )
    if len(rows) > 1:
        ids = ", ".join(token.id[:12] for token, _ in rows)
        raise TokenLookupError(f"{ident!r} matches several tokens ({ids}): give more of the id")
    token, owner_name = rows[0]
    return _revoke(session, token, owner_name)


def _revoke(session: Session, token: ApiToken, owner_name: str) -> tuple[TokenInfo, bool]:
    """Revoke ``token`` and sign out the pages signed in with it (see :func:`revoke_token`)."""
    end_web_sessions_of_token(session, token.id)
    if token.revoked_at is not None:
        return _info(token, owner_name), False
    # Compare-and-set: a concurrent revocation or a sign-in link's use keeps its own instant.
    done = session.execute(
        update(ApiToken)
        .where(ApiToken.id == token.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(token)
    return _info(token, owner_name), done.rowcount == 1  # type: ignore[attr-defined]


# ---------------------------------------------------------------- an owner's own tokens


def owner_tokens(session: Session, owner_id: str) -> list[TokenInfo]:
    """The live API tokens of one owner, newest first; one-time sign-in links are not listed
    (they are spent at once, and ``kseg login-link`` makes them)."""
    rows = session.execute(
        select(ApiToken, Owner.name)
        .join(Owner, ApiToken.owner_id == Owner.id)
        .where(
            ApiToken.owner_id == owner_id,
            ApiToken.revoked_at.is_(None),
            ApiToken.one_time.is_(False),
        )
        .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    ).all()
    return [_info(token, name) for token, name in rows]


def create_owner_token(session: Session, owner_id: str, label: str) -> tuple[TokenInfo, str]:
    """A new API token for the owner ``owner_id``: its info and the token itself, which is
    shown this once (only its hash is stored)."""
    owner = session.get_one(Owner, owner_id)
    token = new_token()
    row = ApiToken(owner_id=owner.id, name=label, token_hash=hash_token(token))
    session.add(row)
    session.flush()
    return _info(row, owner.name), token


def revoke_owner_token(
    session: Session, owner_id: str, token_id: str
) -> tuple[TokenInfo, bool] | None:
    """Revoke the token ``token_id`` of the owner ``owner_id`` (another owner's, or none:
    None), as :func:`revoke_token` does: requests bearing it answer 401 from the commit on,
    and the pages signed in with it are signed out."""
    if not token_id or len(token_id) > 36:
        return None
    found = session.execute(
        select(ApiToken, Owner.name)
        .join(Owner, ApiToken.owner_id == Owner.id)
        .where(ApiToken.id == token_id, ApiToken.owner_id == owner_id)
    ).first()
    if found is None:
        return None
    token, owner_name = found
    return _revoke(session, token, owner_name)
