"""End to end through the real service: web API → broker → real Celery worker → database.

Each test runs twice: on PostgreSQL + Redis, and on the embedded default (SQLite + kombu's
filesystem transport).
"""

from __future__ import annotations

import io
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from kseg.shared.store.db import get_sessionmaker
from kseg.shared.store.models import Job, Result
from tests.conftest import IMAGES, Stack, wait_for

pytestmark = pytest.mark.integration


def request(
    stack: Stack,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(stack.url(path), data=body, method=method)
    for key, value in {**stack.headers(), **(headers or {})}.items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "kseg-test-boundary-7d2f"
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    for name, (filename, data) in files.items():
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def submit(stack: Stack, data: bytes, filename: str = "img.jpg", **params: Any) -> dict[str, Any]:
    body, ctype = multipart({k: str(v) for k, v in params.items()}, {"file": (filename, data)})
    status, headers, payload = request(
        stack, "POST", "/api/v1/jobs", body=body, headers={"Content-Type": ctype}
    )
    assert status == 202, payload
    job = json.loads(payload)
    assert headers.get("Location", "").endswith(f"/api/v1/jobs/{job['id']}")
    return job


def get_job(stack: Stack, job_id: str) -> dict[str, Any]:
    status, _, payload = request(stack, "GET", f"/api/v1/jobs/{job_id}")
    assert status == 200, payload
    return json.loads(payload)


def wait_done(stack: Stack, job_id: str, timeout: float = 120) -> dict[str, Any]:
    progress: list[int] = []

    def done() -> dict[str, Any] | None:
        job = get_job(stack, job_id)
        progress.append(job["progress"])
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    try:
        job = wait_for(done, timeout, interval=0.1, what=f"job {job_id} to finish")
    except AssertionError:
        print(stack.logs())
        raise
    assert progress == sorted(progress), f"progress went down: {progress}"
    return job


def test_baby_k16_end_to_end(stack: Stack) -> None:
    original = (IMAGES / "baby.jpg").read_bytes()
    job = submit(stack, original, "baby.jpg", k=16)
    assert job["status"] in ("queued", "running", "succeeded")
    job = wait_done(stack, job["id"])
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    assert job["progress"] == 100
    assert set(result["outputs"]) == {"labels", "gray", "color", "recolor", "overlay"}

    rgb = np.asarray(Image.open(io.BytesIO(original)).convert("RGB"))
    h, w = rgb.shape[:2]
    assert (job["image"]["width"], job["image"]["height"]) == (w, h)
    images = {}
    for name, url in result["outputs"].items():
        status, headers, data = request(stack, "GET", url)
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert headers.get("ETag")
        images[name] = Image.open(io.BytesIO(data))
        assert images[name].size == (w, h), name
    labels = np.asarray(images["labels"])
    assert images["labels"].mode == "L"
    clusters = result["clusters"]
    assert len(clusters) == result["k"] == 16
    counts = np.bincount(labels.ravel(), minlength=16)
    assert [c["pixels"] for c in clusters] == counts.tolist()
    assert counts[0] == counts.max(), "label 0 must be the largest cluster"
    centres = np.array([c["rgb"] for c in clusters], dtype=np.uint8)
    recolor = np.asarray(images["recolor"].convert("RGB"))
    assert np.array_equal(recolor, centres[labels]), "recolor must paint every pixel its centre"
    # The contract: inertia = sum of squared RGB distances, mse = its mean per pixel.
    inertia = float(np.sum((recolor.astype(float) - rgb.astype(float)) ** 2))
    assert result["inertia"] == pytest.approx(inertia, rel=1e-6)
    assert result["mse"] == pytest.approx(inertia / (h * w), rel=1e-6)


def test_fifty_jobs_from_ten_threads_each_run_once(stack: Stack) -> None:
    small = Image.open(IMAGES / "baby.jpg").convert("RGB").resize((48, 64))
    buf = io.BytesIO()
    small.save(buf, "PNG")
    data = buf.getvalue()

    from kseg.shared.client import Client

    # The Python client, as a script would: a flood like this one meets the submissions rate
    # limit (429), whose Retry-After the client waits out before sending again.
    client = Client(stack.base_url, stack.token)

    def one(i: int) -> str:
        # Distinct seeds: distinct jobs, so none may reuse another's result.
        params = {"k": 4, "seed": i, "outputs": "recolor"}
        return str(client.submit(data, f"small-{i}.png", params)["id"])

    with ThreadPoolExecutor(10) as pool:
        ids = list(pool.map(one, range(50)))
    assert len(set(ids)) == 50
    maker = get_sessionmaker(stack.settings.database_url)

    def all_done() -> bool:
        with maker() as session:
            active = session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.id.in_(ids), Job.status.in_(("queued", "running")))
            )
        return active == 0

    try:
        wait_for(all_done, 240, interval=0.25, what="50 jobs to finish")
    except AssertionError:
        print(stack.logs())
        raise
    with maker() as session:
        rows = session.execute(select(Job.status, Job.attempts).where(Job.id.in_(ids))).all()
        results = session.execute(
            select(Result.job_id, func.count())
            .where(Result.job_id.in_(ids))
            .group_by(Result.job_id)
        ).all()
    assert [status for status, _ in rows] == ["succeeded"] * 50
    # attempts counts claims, and only a claim runs the core: exactly once each.
    assert [attempts for _, attempts in rows] == [1] * 50
    assert sorted(n for _, n in results) == [1] * 50
