"""Per-owner quotas: jobs submitted one by one that are still active, and bytes of uploads.

Both are soft bounds checked before a submission or upload is stored, in the caller's
transaction: two requests of one owner racing may pass together and end a few over, which a
quota meant to stop floods (not to bill) can allow. Gallery runs are not counted against the
active-jobs quota: they are the way to bulk work, and the dispatch window already bounds them
(``shared.dispatch``).
"""

from __future__ import annotations

from sqlalchemy import func, literal_column, select
from sqlalchemy.orm import Session

from kseg.shared.errors import QuotaExceededError
from kseg.shared.store.dispatch import IN_FLIGHT, WAITING
from kseg.shared.store.models import Image, Job

#: Seconds a client is told to wait when over the active-jobs quota: about what a few jobs
#: take to finish, so a waiting client (``kseg submit``) tries again soon.
ACTIVE_RETRY_AFTER = 5
#: Waiting does not free stored bytes; the client is told to come back much later.
STORED_RETRY_AFTER = 3600


def active_interactive_jobs(session: Session, owner_id: str) -> int:
    """The owner's interactive jobs that are queued or running: those waiting for a place in
    the window plus those in flight, two counts on the partial indexes of the dispatcher."""
    total = 0
    for state in (WAITING, IN_FLIGHT):
        stmt = (
            select(func.count())
            .select_from(Job)
            .where(Job.queue == literal_column("'interactive'"), Job.owner_id == owner_id, state)
        )
        total += int(session.scalar(stmt) or 0)
    return total


def stored_bytes(session: Session, owner_id: str) -> int:
    """Bytes of the owner's uploaded images (results are derived, and pruned by retention)."""
    return int(
        session.scalar(select(func.sum(Image.size_bytes)).where(Image.owner_id == owner_id)) or 0
    )


#: What an owner over a quota is told: why, which setting, and what to do.
ACTIVE_MESSAGE = (
    "You have {active} jobs queued or running, and at most {limit} may be "
    "(KSEG_QUOTA_ACTIVE_JOBS); retry after some have finished (Retry-After), or put bulk work "
    "in a gallery and start a run: runs are not limited this way."
)
STORED_MESSAGE = (
    "Your images take {stored} and this upload {adding}, over your {limit} "
    "(KSEG_QUOTA_STORED_MB); delete images you no longer need (DELETE /api/v1/images/<id>, "
    "or on the history page) and upload again."
)


def check_active_jobs(session: Session, owner_id: str, adding: int, limit: int) -> None:
    """Raise :class:`QuotaExceededError` when ``adding`` more jobs would put the owner over
    ``limit`` active interactive jobs (0: no limit)."""
    if limit <= 0 or adding <= 0:
        return
    active = active_interactive_jobs(session, owner_id)
    if active + adding > limit:
        message = ACTIVE_MESSAGE.format(active=active, limit=limit)
        raise QuotaExceededError(message, retry_after=ACTIVE_RETRY_AFTER)


def check_stored_bytes(session: Session, owner_id: str, adding: int, limit: int) -> None:
    """Raise :class:`QuotaExceededError` when storing ``adding`` more bytes would put the
    owner's uploads over ``limit`` bytes (0: no limit)."""
    if limit <= 0:
        return
    stored = stored_bytes(session, owner_id)
    if stored + adding > limit:
        message = STORED_MESSAGE.format(stored=_mb(stored), adding=_mb(adding), limit=_mb(limit))
        raise QuotaExceededError(message, retry_after=STORED_RETRY_AFTER)


def _mb(n: int) -> str:
    return f"{n / 1024**2:,.1f} MB"


__all__ = [
    "ACTIVE_RETRY_AFTER",
    "STORED_RETRY_AFTER",
    "active_interactive_jobs",
    "check_active_jobs",
    "check_stored_bytes",
    "stored_bytes",
]
