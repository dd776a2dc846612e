"""Rate limits (Flask-Limiter): failed sign-ins and tokens per client address, submissions
per owner. Quotas are checked where work is stored (``shared.quotas``).

- **Failed authentication** (an unknown or revoked token, on the API or the sign-in page):
  ``KSEG_RATE_LIMIT_FAILED_AUTH`` per client address. Only failures count, but once over the
  limit every request from that address answers 429 until the window frees — a guesser gets
  nothing more, not even a 401. Health, readiness, metrics and static files stay open.
- **Submissions** (``POST /api/v1/jobs`` and the submit form, counted together):
  ``KSEG_RATE_LIMIT_SUBMISSIONS`` per owner.

Over a limit: 429, code ``rate_limited``, with ``Retry-After`` (seconds until the window
frees); the pages show the same as a page. The counters live in Redis when the broker is Redis
(every web process shares them), else in the web process's memory (the embedded default runs
one). A counter store that fails lets requests through (logged) rather than failing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address

from kseg.shared.settings import Settings

#: Paths a locked-out address may still reach: probes and the pages' assets.
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/static/")


def auth_failed() -> None:
    """Count this request against its address's failed-authentication limit (the limiter
    deducts after the response when this was called)."""
    g.kseg_auth_failed = True


def _counts_as_failure(_response: Any) -> bool:
    return bool(g.get("kseg_auth_failed"))


def _is_open() -> bool:
    return request.path.startswith(OPEN_PATHS)


def _on_breach(limit: RequestLimit) -> None:
    # Retry-After for the error handlers (web.common.errors, the pages' 429 page).
    g.kseg_retry_after = max(1, int(limit.reset_at - time.time()))


def retry_after() -> int:
    """Seconds the client is told to wait, for a 429 raised by a rate limit."""
    return int(g.get("kseg_retry_after", 1))


def init_app(app: Flask, settings: Settings) -> Limiter:
    """A limiter for ``app`` (one per app: tests build many apps with their own settings)."""
    limiter = Limiter(
        key_func=get_remote_address,
        app=app,
        storage_uri=settings.rate_limit_storage_url,
        # A Redis shared by several services (or test runs) keeps kseg's counters apart.
        key_prefix=f"{settings.queue}-limits",
        strategy="moving-window",
        application_limits=[settings.rate_limit_failed_auth]
        if settings.rate_limit_failed_auth
        else [],
        application_limits_deduct_when=_counts_as_failure,
        application_limits_exempt_when=_is_open,
        on_breach=_on_breach,
        swallow_errors=True,
        headers_enabled=False,
    )
    app.extensions["kseg_limiter"] = limiter
    return limiter


def submissions(owner_id: str) -> Any:
    """Context manager around a submission: counts it against the owner's limit, raising
    ``RateLimitExceeded`` (a 429) when over. Does nothing without a limit."""
    settings: Settings = current_app.config["KSEG_SETTINGS"]
    limiter: Limiter = current_app.extensions["kseg_limiter"]
    if not settings.rate_limit_submissions:
        return _Nothing()
    key: Callable[[], str] = lambda: f"owner:{owner_id}"  # noqa: E731
    return limiter.shared_limit(settings.rate_limit_submissions, "submissions", key_func=key)


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        return None


__all__ = ["auth_failed", "init_app", "retry_after", "submissions"]
