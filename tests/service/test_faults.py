"""Nothing is lost: a worker killed mid-job, a broker stopped and started again.

These tests start their own worker processes (and, for the broker test, their own
``redis-server`` on a free port) and end them by pid; the machine's shared services are never
touched.
"""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from kseg.shared.store.db import get_sessionmaker
from kseg.shared.store.models import Job, Result
from tests.conftest import (
    Stack,
    build_stack,
    start_worker,
    wait_for,
)
from tests.service.test_e2e import submit, wait_done

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def busy_image(side: int = 1400) -> bytes:
    """A noisy image with ~a million distinct colours: enough work to be caught mid-job."""
    rng = np.random.default_rng(7)
    base = np.linspace(0, 255, side, dtype=np.float32)
    img = np.stack([*np.meshgrid(base, base[::-1]), np.full((side, side), 128, np.float32)], -1)
    img += rng.normal(0, 40, img.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def job_row(stack: Stack, job_id: str) -> Job:
    with get_sessionmaker(stack.settings.database_url)() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def result_count(stack: Stack, job_id: str) -> int:
    with get_sessionmaker(stack.settings.database_url)() as session:
        return int(
            session.scalar(select(func.count()).select_from(Result).where(Result.job_id == job_id))
            or 0
        )


def test_worker_child_killed_mid_job_still_succeeds_once(stack: Stack) -> None:
    job = submit(stack, busy_image(), "noise.png", k=64, outputs="recolor,labels")

    def running_holder() -> str | None:
        row = job_row(stack, job["id"])
        if row.status == "succeeded":
            pytest.fail("the job finished before it could be killed; make busy_image bigger")
        return row.worker if row.status == "running" and row.worker else None

    holder = wait_for(running_holder, 60, interval=0.02, what="the job to start running")
    pid = int(holder.rpartition(":")[2])
    os.kill(pid, signal.SIGKILL)

    done = wait_done(stack, job["id"], timeout=180)
    assert done["status"] == "succeeded", (done["error"], stack.logs())
    row = job_row(stack, job["id"])
    assert row.attempts == 2, "the killed attempt and the one that finished"
    assert row.worker != holder
    assert result_count(stack, job["id"]) == 1


def test_whole_worker_killed_mid_job_is_recovered_by_the_sweeper(stack: Stack) -> None:
    job = submit(stack, busy_image(), "noise.png", k=64, outputs="recolor")
    worker = next(p for p in stack.processes if p.name == "worker")

    def running() -> bool:
        return job_row(stack, job["id"]).status == "running"

    wait_for(running, 60, interval=0.02, what="the job to start running")
    os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool: nothing acks
    worker.popen.wait(10)
    stack.processes.append(start_worker(stack.env, stack.log_dir))

    done = wait_done(stack, job["id"], timeout=180)
    assert done["status"] == "succeeded", (done["error"], stack.logs())
    assert result_count(stack, job["id"]) == 1


def test_broker_down_during_submission_then_back(
    own_redis: dict[str, Any], pg_database: Callable[[str], str], tmp_path: Path
) -> None:
    stack = build_stack("postgres-own-redis", pg_database("broker"), own_redis["url"], tmp_path)
    try:
        small = Image.open(Path(__file__).parents[2].parent / "shared/images/baby.jpg")
        own_redis["stop"]()
        ids = []
        for seed in range(10):
            buf = io.BytesIO()
            small.convert("RGB").resize((40, 53)).save(buf, "PNG")
            ids.append(submit(stack, buf.getvalue(), f"b{seed}.png", k=4, seed=seed)["id"])
        assert all(job_row(stack, i).status == "queued" for i in ids)
        own_redis["start"]()
        for job_id in ids:
            assert wait_done(stack, job_id, timeout=120)["status"] == "succeeded", stack.logs()
        assert all(result_count(stack, i) == 1 for i in ids)
    finally:
        stack.stop()
