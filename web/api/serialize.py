"""Rows → the API's JSON objects (through the response models of :mod:`web.api.schemas`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import Image, Job, ResultOutput
from shared.params import OUTPUT_NAMES
from web.api.schemas import ImageOut, JobOut, JobResult

log = logging.getLogger(__name__)

BASE = "/api/v1"


def isoz(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` suffix."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def output_url(job_id: str, name: str) -> str:
    return f"{BASE}/jobs/{job_id}/outputs/{name}.png"


def image_obj(image: Image) -> dict[str, Any]:
    data = {
        "id": image.id,
        "filename": image.filename,
        "width": image.width,
        "height": image.height,
        "content_type": image.content_type,
        "format": image.format,
        "size_bytes": image.size_bytes,
        "sha256": image.sha256,
        "created_at": image.created_at,
        "links": {"self": f"{BASE}/images/{image.id}", "file": f"{BASE}/images/{image.id}/file"},
    }
    return ImageOut.model_validate(data).model_dump(mode="json")


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


def _result(job: Job, names: list[str]) -> dict[str, Any] | None:
    if job.status != "succeeded" or job.result is None:
        return None
    meta = dict(job.result.meta or {})
    meta["outputs"] = {name: output_url(job.id, name) for name in names}
    try:
        return JobResult.model_validate(meta).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:  # the core's metadata drifted: still answer, but say so
        log.warning("result %s does not match the JobResult schema: %s", job.result.id, exc)
        return meta


def job_obj(job: Job, names: list[str] | None = None) -> dict[str, Any]:
    error = None
    if job.error_code or job.error_message:
        error = {
            "code": job.error_code or "failed",
            "message": job.error_message or "The job failed.",
        }
    image = job.image
    data = {
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
        "links": {"self": f"{BASE}/jobs/{job.id}", "image": f"{BASE}/images/{image.id}"},
    }
    out = JobOut.model_validate(data).model_dump(mode="json")
    out["result"] = _result(job, names or [])
    return out


def jobs_objs(session: Session, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    names = output_names(
        session, (j.result_id for j in jobs if j.status == "succeeded" and j.result_id)
    )
    return [job_obj(job, names.get(job.result_id or "", [])) for job in jobs]
