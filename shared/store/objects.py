"""Rows → the contract's job and run objects as plain dicts — framework-free.

The API (``web.api.serialize``) validates these through its response models; the webhook
sender (``shared.store.webhooks``) sends them as an event's ``data``, so a receiver gets the
object ``GET /api/v1/jobs/<id>`` answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kseg.shared.core.params import OUTPUT_NAMES
from kseg.shared.store.models import Job, ResultOutput, Run

BASE = "/api/v1"


def isoz(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` suffix."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def columns(row: Any, names: Iterable[str]) -> dict[str, Any]:
    """``{name: row.name}`` for each of ``names``: the plain columns of an object."""
    return {name: getattr(row, name) for name in names}


def output_url(job_id: str, name: str) -> str:
    return f"{BASE}/jobs/{job_id}/outputs/{name}.png"


def output_names(session: Session, result_ids: Iterable[str]) -> dict[str, list[str]]:
    """Names of the stored outputs of each result, in the contract's order (one query)."""
    ids = sorted(set(result_ids))
    names: dict[str, list[str]] = {rid: [] for rid in ids}
    if not ids:
        return names
    for rid, name in session.execute(
        select(ResultOutput.result_id, ResultOutput.name).where(ResultOutput.result_id.in_(ids))
    ):
        names[rid].append(name)
    order = {name: i for i, name in enumerate(OUTPUT_NAMES)}
    for rid in names:
        names[rid].sort(key=lambda n: (order.get(n, len(order)), n))
    return names


def result_data(job: Job, names: list[str]) -> dict[str, Any] | None:
    """A succeeded job's ``result``: the stored metadata plus its outputs' URLs."""
    if job.status != "succeeded" or job.result is None:
        return None
    meta = dict(job.result.meta or {})
    meta["outputs"] = {name: output_url(job.id, name) for name in names}
    return meta


def events_list(events: str | None) -> list[str] | None:
    return events.split(",") if events else None


def job_data(job: Job) -> dict[str, Any]:
    """A job's fields (``result`` left None: :func:`result_data`); datetimes as datetimes."""
    error = None
    if job.error_code or job.error_message:
        error = {
            "code": job.error_code or "failed",
            "message": job.error_message or "The job failed.",
        }
    image = job.image
    return {
        "id": job.id,
        "status": job.status,
        "progress": max(0, min(100, int(job.progress or 0))),
        "stage": job.stage,
        "attempts": int(job.attempts or 0),
        "params": dict(job.params or {}),
        "image": {
            "id": image.id,
            "filename": image.filename,
            "width": image.width,
            "height": image.height,
        },
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "error": error if job.status == "failed" else None,
        "result": None,
        "reused_from": job.reused_from,
        "gallery_id": job.gallery_id,
        "run_id": job.run_id,
        "queue": job.queue,
        "webhook_url": job.webhook_url,
        "webhook_events": events_list(job.webhook_events),
        "links": {"self": f"{BASE}/jobs/{job.id}", "image": f"{BASE}/images/{image.id}"},
    }


def run_data(run: Run, live: dict[str, int] | None = None) -> dict[str, Any]:
    """A run's fields; ``live`` (:func:`kseg.shared.store.runs.live_counts`) replaces its
    stored counters."""
    counters = {
        name: int(getattr(run, name) or 0)
        for name in ("total", "queued", "running", "succeeded", "failed", "skipped")
    }
    counters["dispatched"] = 0
    if live is not None:
        counters.update(live)
    return {
        "id": run.id,
        "gallery_id": run.gallery_id,
        "trigger": run.trigger,
        "status": run.status,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "jobs": counters,
        "params": dict(run.params or {}),
        "only_stale": bool(run.only_stale),
        "scheduled_for": run.scheduled_for,
        "webhook_url": run.webhook_url,
        "webhook_events": events_list(run.webhook_events),
        "links": {
            "self": f"{BASE}/runs/{run.id}",
            "gallery": f"{BASE}/galleries/{run.gallery_id}",
            "jobs": f"{BASE}/runs/{run.id}/jobs",
            "export": f"{BASE}/runs/{run.id}/export.zip",
        },
    }


def plain(value: Any) -> Any:
    """``value`` with its datetimes as the API writes them (for ``json.dumps``)."""
    if isinstance(value, datetime):
        return isoz(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def job_object(session: Session, job: Job) -> dict[str, Any]:
    """The job object as JSON-ready data (what the API answers for it)."""
    names = output_names(session, [job.result_id] if job.result_id else [])
    data = job_data(job)
    result = result_data(job, names.get(job.result_id or "", []))
    if result is not None:
        data["result"] = {key: value for key, value in result.items() if value is not None}
    return dict(plain(data))


__all__ = [
    "BASE",
    "events_list",
    "isoz",
    "job_data",
    "job_object",
    "output_names",
    "output_url",
    "plain",
    "result_data",
    "run_data",
]
