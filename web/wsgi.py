"""WSGI entry point for other WSGI servers (``kseg web`` uses ``kseg.web.serve``): ``app``.
Refuses an un-migrated database."""

from __future__ import annotations

from kseg.shared.store.db import NotMigratedError, ensure_migrated
from kseg.web import create_app

try:
    ensure_migrated()
except NotMigratedError as exc:
    raise SystemExit(f"kseg: error: {exc}") from None

app = create_app()
