"""``kseg token create|list|revoke`` and ``kseg login-link``: the owners' API tokens and
one-time sign-in links, in the service's database."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from kseg.shared.cli.processes import fail, require_migrated
from kseg.shared.settings import Settings, get_settings


def cmd_token_create(args: argparse.Namespace) -> int:
    from kseg.shared.store.auth import create_token
    from kseg.shared.store.db import session_scope

    settings = get_settings()
    if (code := require_migrated(settings)) is not None:
        return code
    with session_scope(settings.database_url) as session:
        token = create_token(session, args.name, args.label or args.name)
    print(token)
    print(
        f"kseg: token for owner {args.name!r}; it is shown only now. "
        f"Use it as: Authorization: Bearer <token>",
        file=sys.stderr,
    )
    return 0


def _when(instant: datetime | None) -> str:
    return "-" if instant is None else instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def cmd_token_list(args: argparse.Namespace) -> int:
    from kseg.shared.cli.tables import format_table
    from kseg.shared.store.auth import list_tokens
    from kseg.shared.store.db import session_scope

    settings = get_settings()
    if (code := require_migrated(settings)) is not None:
        return code
    with session_scope(settings.database_url) as session:
        tokens = list_tokens(session, args.owner, include_revoked=args.all)
    if not tokens:
        whose = f" for owner {args.owner!r}" if args.owner else ""
        hint = "" if args.all else " (--all also lists revoked ones)"
        print(
            f"kseg: no tokens{whose}{hint}; create one with `kseg token create NAME`",
            file=sys.stderr,
        )
        return 0
    rows = [("ID", "OWNER", "LABEL", "KIND", "CREATED (UTC)", "LAST USED", "STATUS")]
    rows += [
        (
            token.id[:8],
            token.owner,
            token.label,
            "sign-in link" if token.one_time else "token",
            _when(token.created_at),
            _when(token.last_used_at),
            token.status,
        )
        for token in tokens
    ]
    print(format_table(rows))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from kseg.shared.store.auth import TokenLookupError, revoke_token
    from kseg.shared.store.db import session_scope

    settings = get_settings()
    if (code := require_migrated(settings)) is not None:
        return code
    try:
        with session_scope(settings.database_url) as session:
            token, revoked_now = revoke_token(session, args.token)
    except TokenLookupError as exc:
        return fail(str(exc))
    what = f"token {token.id[:8]} (owner {token.owner!r}, label {token.label!r})"
    if revoked_now:
        print(f"kseg: revoked {what}; requests bearing it now answer 401")
    else:
        print(f"kseg: {what} was already revoked on {_when(token.revoked_at)} UTC")
    return 0


def sign_in_link(settings: Settings, base_url: str, owner: str | None = None) -> str:
    """A fresh one-time sign-in link to the pages at ``base_url`` for ``owner`` (default: the
    default owner), minted in the database of ``settings``; it works once."""
    from kseg.shared.store.auth import DEFAULT_OWNER, create_token
    from kseg.shared.store.db import session_scope

    with session_scope(settings.database_url) as session:
        token = create_token(session, owner or DEFAULT_OWNER, "sign-in link", one_time=True)
    return f"{base_url.rstrip('/')}/login/{token}"


def _owner_exists(settings: Settings, name: str) -> bool:
    from sqlalchemy import select

    from kseg.shared.store.db import session_scope
    from kseg.shared.store.models import Owner

    with session_scope(settings.database_url) as session:
        return session.scalar(select(Owner.id).where(Owner.name == name)) is not None


def cmd_login_link(args: argparse.Namespace) -> int:
    """``kseg login-link``: a fresh one-time sign-in link, e.g. after signing out."""
    settings = get_settings()
    if (code := require_migrated(settings)) is not None:
        return code
    if args.owner and not _owner_exists(settings, args.owner):
        return fail(
            f"no owner {args.owner!r}; `kseg token list --all` shows the owners, "
            f"`kseg token create {args.owner}` makes one"
        )
    base = args.url or settings.service_url()
    print(sign_in_link(settings, base, args.owner))
    whose = f"owner {args.owner!r}" if args.owner else "the default owner"
    print(
        f"kseg: a one-time sign-in link for {whose}; it works once (run `kseg login-link` "
        "again for another)",
        file=sys.stderr,
    )
    return 0
