"""Downloads of whole results: ``GET /api/v1/jobs/<id>/export.zip``, ``GET
/api/v1/runs/<id>/export.zip`` and a job's palette files, ``GET
/api/v1/jobs/<id>/palette.{json,css,gpl,ase}``.

A ZIP is streamed as it is written: ``manifest.json`` first (made from the jobs' metadata,
one query), then per job a folder ``<image stem>-<job id prefix>/`` with its ``result.json``
and each rendered ``<output>.png``, read from the database one at a time and handed to the
server before the next is read. PNGs are stored (they are compressed already), the JSON
deflated. So a 1,000-image run's export holds one PNG in memory at a time, whatever its size
(bench/bench_export.py measures it).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from flask import Response, stream_with_context
from sqlalchemy import select

from kseg.shared.core import palette as palettes
from kseg.shared.store.models import Image, Job, Run, utcnow
from kseg.shared.store.objects import isoz
from kseg.shared.store.outputs import output_png
from kseg.web.api.auth import own, owner_id
from kseg.web.api.blueprint import bp
from kseg.web.api.galleries import own_run
from kseg.web.api.jobs import succeeded_job
from kseg.web.common.apidoc import ref, tagged
from kseg.web.common.errors import ApiError
from kseg.web.common.serialize import jobs_objs, output_names, run_obj
from kseg.web.db import get_session

#: Jobs whose objects are built together (one query for their outputs' names).
BATCH = 50

job_ops, gallery_ops = tagged("jobs"), tagged("galleries")
ZIP_RESPONSE = {
    "200": {
        "description": "The ZIP.",
        "headers": {
            "Content-Disposition": {
                "description": "attachment; filename=…zip",
                "schema": {"type": "string"},
            }
        },
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    }
}
EXPORT_TEXT = (
    "Streamed as it is written: `manifest.json` at the root (the jobs, their folders and "
    "files), then per job a folder `<image filename stem>-<job id prefix>/` with "
    "`result.json` (the job's `result` plus `job_id`, `status`, `params`, `image`, `error`) "
    "and each rendered `<output>.png`. A job that did not succeed has only its "
    "`result.json`."
)


def _own_job(job_id: str) -> Job:
    return own(Job, job_id, "job")


class _Sink:
    """A write-only file for :class:`zipfile.ZipFile` that hands out what was written since
    last asked (it cannot seek: zipfile then writes data descriptors, as a stream needs)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def folder_name(filename: str, job_id: str) -> str:
    """``<image filename stem>-<job id prefix>``, safe as a path in any unzip tool."""
    stem = PurePosixPath(filename.replace("\\", "/")).stem
    stem = re.sub(r"[^A-Za-z0-9._ -]+", "_", stem).strip(" .") or "image"
    return f"{stem[:80]}-{job_id[:8]}"


def _entry(name: str, when: datetime | None, stored: bool) -> zipfile.ZipInfo:
    moment = (when or utcnow()).timetuple()[:6]
    info = zipfile.ZipInfo(name, date_time=max(moment, (1980, 1, 1, 0, 0, 0)))
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def _plan(where: Any) -> list[dict[str, Any]]:
    """The manifest's entries, oldest job first: per job its folder, status and files (from
    metadata only: one query for the jobs, one per 500 results for their outputs' names)."""
    session = get_session()
    rows = session.execute(
        select(Job.id, Job.status, Job.result_id, Image.filename)
        .join(Image, Image.id == Job.image_id)
        .where(where)
        .order_by(Job.created_at, Job.id)
    ).all()
    result_ids = [r.result_id for r in rows if r.status == "succeeded" and r.result_id]
    names: dict[str, list[str]] = {}
    for start in range(0, len(result_ids), 500):  # no IN list past a database's limit
        names.update(output_names(session, result_ids[start : start + 500]))
    plan = []
    for row in rows:
        outputs = names.get(row.result_id or "", []) if row.status == "succeeded" else []
        folder = folder_name(row.filename, row.id)
        plan.append(
            {
                "job_id": row.id,
                "status": row.status,
                "image": row.filename,
                "folder": folder + "/",
                "files": ["result.json", *(f"{name}.png" for name in outputs)],
                "outputs": outputs,
                "result_id": row.result_id,
            }
        )
    return plan


def _zip_stream(manifest: dict[str, Any], plan: list[dict[str, Any]]) -> Iterator[bytes]:
    session = get_session()
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", allowZip64=True)
    now = utcnow()
    archive.writestr(
        _entry("manifest.json", now, stored=False), json.dumps(manifest, indent=2) + "\n"
    )
    yield sink.take()
    for start in range(0, len(plan), BATCH):
        batch = plan[start : start + BATCH]
        jobs = {
            job.id: job
            for job in session.scalars(select(Job).where(Job.id.in_([e["job_id"] for e in batch])))
        }
        objects = {obj["id"]: obj for obj in jobs_objs(session, list(jobs.values()))}
        for entry in batch:
            obj = objects.get(entry["job_id"])
            if obj is None:  # deleted since the manifest was written
                continue
            folder = entry["folder"]
            finished = jobs[entry["job_id"]].finished_at
            result = {
                "job_id": obj["id"],
                "status": obj["status"],
                "params": obj["params"],
                "image": obj["image"],
                "error": obj["error"],
                "finished_at": obj["finished_at"],
                **(obj["result"] or {}),
            }
            archive.writestr(
                _entry(folder + "result.json", finished, stored=False),
                json.dumps(result, indent=2) + "\n",
            )
            yield sink.take()
            result_id = entry["result_id"]
            for name in entry["outputs"] if obj["status"] == "succeeded" else []:
                png = output_png(session, result_id, name)
                if png is None:  # expired since the manifest was written
                    continue
                archive.writestr(_entry(f"{folder}{name}.png", finished, stored=True), png)
                del png
                yield sink.take()
        # Nothing of this batch stays in the session: memory stays bounded by one batch.
        session.expunge_all()
        session.rollback()
    archive.close()
    yield sink.take()


def _zip_response(manifest: dict[str, Any], plan: list[dict[str, Any]], filename: str) -> Response:
    response = Response(
        stream_with_context(_zip_stream(manifest, plan)), mimetype="application/zip"
    )
    response.headers.set("Content-Disposition", "attachment", filename=filename)
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _manifest_jobs(plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("job_id", "status", "image", "folder", "files")
    return [{key: entry[key] for key in keys} for entry in plan]


@bp.get("/jobs/<job_id>/export.zip")
@job_ops.operation(
    "exportJob",
    "The job's outputs and result.json as one ZIP",
    description=EXPORT_TEXT,
    responses=ZIP_RESPONSE,
)
def export_job(job_id: str) -> Response:
    job = _own_job(job_id)
    plan = _plan(Job.id == job.id)
    manifest = {
        "kind": "job",
        "exported_at": isoz(utcnow()),
        "job_id": job.id,
        "jobs": _manifest_jobs(plan),
    }
    return _zip_response(manifest, plan, folder_name(job.image.filename, job.id) + ".zip")


@bp.get("/runs/<run_id>/export.zip")
@gallery_ops.operation(
    "exportRun",
    "Every job of the run: outputs and result.json, as one ZIP",
    description=EXPORT_TEXT + " Images the run skipped (`only_stale`) are not in it.",
    responses=ZIP_RESPONSE,
)
def export_run(run_id: str) -> Response:
    run: Run = own_run(run_id)
    plan = _plan((Job.run_id == run.id) & (Job.owner_id == owner_id()))
    manifest = {
        "kind": "run",
        "exported_at": isoz(utcnow()),
        "run": run_obj(run),
        "jobs": _manifest_jobs(plan),
    }
    return _zip_response(manifest, plan, f"kseg-run-{run.id[:8]}.zip")


@bp.get("/jobs/<job_id>/palette.<fmt>")
@job_ops.operation(
    "getJobPalette",
    "The job's cluster colours as a palette file (label order)",
    responses={
        "200": {
            "description": "The palette.",
            "content": {
                "application/json": {"schema": {"type": "array", "items": ref("PaletteColor")}},
                "text/css": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
def job_palette(job_id: str, fmt: str) -> Response:
    if fmt not in palettes.FORMATS:
        _own_job(job_id)  # another owner's job is a 404 whatever the format
        raise ApiError(
            404,
            "output_not_found",
            f"There is no palette format {fmt!r}; use one of {', '.join(palettes.FORMATS)}.",
        )
    job = succeeded_job(job_id, what="palette files")
    assert job.result is not None  # succeeded
    clusters = (job.result.meta or {}).get("clusters") or []
    stem = PurePosixPath(job.image.filename).stem or "kseg"
    data = palettes.encode(fmt, clusters, title=f"{stem} (kseg, k={len(clusters)})")
    response = Response(data, mimetype=palettes.FORMATS[fmt].split(";")[0])
    if fmt != "json":
        response.headers["Content-Type"] = palettes.FORMATS[fmt]
        response.headers.set(
            "Content-Disposition", "attachment", filename=f"{folder_name(stem, job.id)}.{fmt}"
        )
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response
