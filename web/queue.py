"""Dispatching from a web request. Jobs are not published one by one as they are made: a
request tops up its class's window (:func:`kseg.shared.store.dispatch.top_up`, which may hand
out an older job of another owner first), commits, and publishes what the top-up handed back
(:func:`commit_and_publish`; the publishing itself is :mod:`kseg.shared.messaging.publish`).
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy.orm import Session

from kseg.shared.messaging import publish
from kseg.shared.settings import Settings
from kseg.shared.store import dispatch


def top_up(session: Session, queue: str) -> list[str]:
    """Fill ``queue``'s window in the request's transaction; the ids to publish after it."""
    settings: Settings = current_app.config["KSEG_SETTINGS"]
    return dispatch.top_up(
        session,
        queue,
        per_process=settings.window_per_process,
        stale_after=settings.heartbeat_stale_after,
    )


def commit_and_publish(session: Session, queue: str) -> bool:
    """Top up ``queue``'s window, commit the request's transaction, then publish; False when
    the broker could not be reached (the jobs stay dispatched, and the sweeper publishes
    them again)."""
    ids = top_up(session, queue)
    session.commit()  # the rows are the truth: committed before any message is published
    return publish.enqueue_jobs(current_app.extensions["celery"], ids, queue)


def wake(delivery_ids: list[str | None]) -> None:
    """After the commit: wake the webhook senders up for deliveries the request's transaction
    may have recorded (a lost wake-up only waits for the webhook sweep)."""
    wanted = [ident for ident in delivery_ids if ident]
    if wanted:
        publish.wake_deliveries(current_app.extensions["celery"], wanted)
