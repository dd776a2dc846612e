"""Fair scheduling through the real service: interactive work goes before a draining gallery
run, two owners' runs share the workers, the broker holds only a window of batch messages,
and a worker killed mid-batch loses nothing and runs nothing twice.

Each test runs on PostgreSQL + Redis and on the embedded default, with real Celery workers
(2 processes: a window of 2 × 2 = 4 jobs per class).
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from kseg.shared.messaging.celery_config import queue_name
from kseg.shared.store import galleries
from kseg.shared.store import images as image_store
from kseg.shared.store.db import get_sessionmaker
from kseg.shared.store.models import Gallery, Job, Result, WorkerHeartbeat, utcnow
from tests.conftest import IMAGES, Stack, build_stack, start_worker, wait_for
from tests.service.test_e2e import request, submit, wait_done
from tests.service.test_faults import busy_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW = 4


def noise_png(seed: int, side: int = 80) -> bytes:
    """A small photo-like image, distinct per seed (the service deduplicates equal bytes)."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, side, dtype=np.float32)
    img = np.stack([*np.meshgrid(base, base[::-1]), np.full((side, side), 90.0, np.float32)], -1)
    img += rng.normal(0, 30, img.shape).astype(np.float32)
    buf = io.BytesIO()
    PILImage.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def api(stack: Stack, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **stack.headers(token)}
    status, _, payload = request(stack, method, path, body=data, headers=headers)
    assert status < 300, (status, payload[:500])
    return json.loads(payload) if payload else None


def gallery_of(stack: Stack, images: list[bytes], token: str | None = None, **params: Any) -> str:
    """A gallery of the token's owner holding ``images`` (stored straight into the database:
    uploading hundreds through HTTP would only slow the test)."""
    gallery_id = api(stack, "POST", "/api/v1/galleries", {"name": "g", "params": params}, token)[
        "id"
    ]
    with get_sessionmaker(stack.settings.database_url).begin() as session:
        gallery = session.get(Gallery, gallery_id)
        assert gallery is not None
        stored = [
            image_store.store_image(session, gallery.owner_id, data, f"{i}.png")[0]
            for i, data in enumerate(images)
        ]
        galleries.add_images(session, gallery, stored)
    return str(gallery_id)


def start_run(stack: Stack, gallery_id: str, token: str | None = None) -> str:
    run = api(stack, "POST", f"/api/v1/galleries/{gallery_id}/runs", {"only_stale": False}, token)
    assert run["status"] == "running", run
    return str(run["id"])


def run_jobs(stack: Stack, run_id: str) -> list[Job]:
    with get_sessionmaker(stack.settings.database_url)() as session:
        return list(session.scalars(select(Job).where(Job.run_id == run_id)))


def status_counts(stack: Stack, run_id: str) -> dict[str, int]:
    with get_sessionmaker(stack.settings.database_url)() as session:
        rows = session.execute(
            select(Job.status, func.count()).where(Job.run_id == run_id).group_by(Job.status)
        )
        return {status: int(n) for status, n in rows}


def wait_run(
    stack: Stack, run_id: str, timeout: float = 240, token: str | None = None
) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        run = api(stack, "GET", f"/api/v1/runs/{run_id}", token=token)
        return run if run["status"] != "running" else None

    try:
        return wait_for(ended, timeout, interval=0.2, what=f"run {run_id} to end")  # type: ignore[no-any-return]
    except AssertionError:
        print(stack.logs())
        raise


def wait_workers(stack: Stack, processes: int = 2) -> None:
    """Until the workers' heartbeats report ``processes`` processes: the window's size."""

    def reported() -> int:
        with get_sessionmaker(stack.settings.database_url)() as session:
            return int(session.scalar(select(func.sum(WorkerHeartbeat.concurrency))) or 0)

    wait_for(lambda: reported() >= processes, 60, what="the workers' heartbeats")


def batch_messages(stack: Stack) -> int:
    """How many messages wait in the broker's batch queue right now."""
    name = queue_name(stack.settings, "batch")
    if stack.settings.broker_url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(stack.settings.broker_url)
        try:
            return int(client.llen(name))
        finally:
            client.close()
    folder = stack.settings.instance_dir / "broker" / "queue"
    return sum(
        1 for f in os.listdir(folder) if not f.startswith(".") and f.endswith(f".{name}.msg")
    )


def results_per_job(stack: Stack, job_ids: list[str]) -> dict[str, int]:
    with get_sessionmaker(stack.settings.database_url)() as session:
        rows = session.execute(
            select(Result.job_id, func.count())
            .where(Result.job_id.in_(job_ids))
            .group_by(Result.job_id)
        )
        return {job_id: int(n) for job_id, n in rows}


def wait_under_way(stack: Stack, run_id: str, succeeded: int) -> None:
    wait_for(
        lambda: status_counts(stack, run_id).get("succeeded", 0) >= succeeded,
        120,
        interval=0.02,
        what="the run to be under way",
    )


@pytest.fixture
def draining(stack: Stack) -> Iterator[tuple[Stack, str]]:
    """A 200-image gallery run, started and draining (some of its jobs done, most not)."""
    wait_workers(stack)
    gallery_id = gallery_of(stack, [noise_png(i) for i in range(200)], k=8, outputs=["recolor"])
    run_id = start_run(stack, gallery_id)
    wait_under_way(stack, run_id, 4)
    yield stack, run_id


def test_interactive_job_starts_before_a_draining_runs_remaining_jobs(
    draining: tuple[Stack, str],
) -> None:
    stack, run_id = draining
    job = submit(stack, (IMAGES / "baby.jpg").read_bytes(), "baby.jpg", k=8)
    # The API answers after it has published: from here on the message is in the broker.
    # (Its dispatched_at is stamped before the commit, a few ms earlier, and run jobs of a
    # few ms each may start in between: under load that made this test flaky in CI.)
    answered = utcnow()
    assert job["queue"] == "interactive"
    done = wait_done(stack, job["id"])
    assert done["status"] == "succeeded", done["error"]
    started = {j.id: j.started_at for j in run_jobs(stack, run_id)}
    with get_sessionmaker(stack.settings.database_url)() as session:
        row = session.get(Job, job["id"])
        assert row is not None
        began = row.started_at
    assert began is not None
    # The run's jobs that started while this one waited in the broker: at most those a
    # worker process had already taken when it was published (one per process).
    overtaking = [i for i, at in started.items() if at is not None and answered < at < began]
    assert len(overtaking) <= 2, (len(overtaking), began - answered)
    later = [i for i, at in started.items() if at is None or at > began]
    assert len(later) >= 100, "the run should still have been draining"
    assert wait_run(stack, run_id)["status"] == "succeeded"


def test_the_broker_holds_no_more_than_the_window_of_batch_messages(
    draining: tuple[Stack, str],
) -> None:
    stack, run_id = draining
    seen: list[int] = []
    while status_counts(stack, run_id).get("queued", 0) > 0:
        seen.append(batch_messages(stack))
        time.sleep(0.02)
    assert seen and max(seen) <= WINDOW, max(seen)
    assert max(seen) >= 1, "the window should have held messages while the run drained"
    run = wait_run(stack, run_id)
    assert run["status"] == "succeeded" and run["jobs"]["succeeded"] == 200


def test_two_owners_runs_started_together_progress_together(stack: Stack) -> None:
    wait_workers(stack)
    other = stack.new_token("second-owner")
    # Equal work for both (jobs of ~equal length), so that progress can be compared.
    first = gallery_of(stack, [noise_png(i, 160) for i in range(40)], k=8, outputs=["recolor"])
    second = gallery_of(
        stack, [noise_png(1000 + i, 160) for i in range(40)], token=other, k=8, outputs=["recolor"]
    )
    runs = [start_run(stack, first), start_run(stack, second, token=other)]
    gaps: list[int] = []
    finished = {"first": 0, "second": 0}
    while min(finished.values()) < 40:
        with get_sessionmaker(stack.settings.database_url)() as session:
            rows = dict(
                session.execute(
                    select(Job.run_id, func.count())
                    .where(Job.run_id.in_(runs), Job.status == "succeeded")
                    .group_by(Job.run_id)
                ).all()
            )
        finished = {"first": int(rows.get(runs[0], 0)), "second": int(rows.get(runs[1], 0))}
        gaps.append(finished["first"] - finished["second"])
        time.sleep(0.02)
        if len(gaps) > 20_000:
            pytest.fail(f"the runs did not finish: {finished}\n{stack.logs()}")
    # The run started first may take the whole window before the second starts: a head
    # start in jobs handed out of at most one window; after it, each place freed goes to the
    # owner with fewer jobs in flight. Finished counts lag handed-out ones by the jobs in
    # flight, which differ between owners by at most one window more. (A single FIFO queue
    # gives a gap of 40 here; WINDOW + 1 proved too tight for CI's timing noise.)
    assert max(abs(gap) for gap in gaps) <= 2 * WINDOW, (min(gaps), max(gaps))
    assert wait_run(stack, runs[0])["status"] == "succeeded"
    assert wait_run(stack, runs[1], token=other)["status"] == "succeeded"


def test_a_worker_killed_mid_batch_loses_nothing_and_runs_nothing_twice(stack: Stack) -> None:
    wait_workers(stack)
    gallery_id = gallery_of(
        stack, [busy_image(900 + 40 * i) for i in range(5)], k=64, outputs=["recolor"]
    )
    run_id = start_run(stack, gallery_id)

    def a_running_child() -> str | None:
        running = [j for j in run_jobs(stack, run_id) if j.status == "running" and j.worker]
        return running[0].worker if running else None

    holder = wait_for(a_running_child, 120, interval=0.02, what="a batch job to be running")
    os.kill(int(holder.rpartition(":")[2]), signal.SIGKILL)  # a pool child, mid-job
    # Then the whole worker, main process and pool, while the run still has work.
    worker = next(p for p in stack.processes if p.name == "worker")
    wait_for(a_running_child, 120, interval=0.02, what="the run to go on")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.popen.wait(10)
    stack.processes.append(start_worker(stack.env, stack.log_dir))

    run = wait_run(stack, run_id, timeout=300)
    assert run["status"] == "succeeded", (run, stack.logs())
    assert run["jobs"]["succeeded"] == 5
    rows = run_jobs(stack, run_id)
    assert results_per_job(stack, [j.id for j in rows]) == {j.id: 1 for j in rows}
    # Only the jobs that were running when a kill came were started again.
    assert sum(j.attempts for j in rows) <= 5 + 2 + 2, [j.attempts for j in rows]


def test_dedicated_workers_take_only_their_class(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database_url = request.getfixturevalue("pg_database")("classes")
    stack = build_stack(
        "postgres-redis", database_url, request.getfixturevalue("redis_url"), tmp_path, workers=0
    )
    try:
        stack.processes.append(
            start_worker({**stack.env, "KSEG_WORKER_QUEUES": "batch"}, stack.log_dir)
        )
        wait_workers(stack)
        gallery_id = gallery_of(stack, [noise_png(i) for i in range(6)], k=4, outputs=["recolor"])
        run_id = start_run(stack, gallery_id)
        job = submit(stack, noise_png(99), "solo.png", k=4)
        assert wait_run(stack, run_id)["status"] == "succeeded"
        # The batch-only worker never touched the interactive job.
        assert api(stack, "GET", f"/api/v1/jobs/{job['id']}")["status"] == "queued"
        with get_sessionmaker(database_url)() as session:
            beat = session.scalars(select(WorkerHeartbeat)).one()
            assert (beat.queues, beat.concurrency) == ("batch", 2)
        stack.processes.append(
            start_worker({**stack.env, "KSEG_WORKER_QUEUES": "interactive"}, stack.log_dir)
        )
        assert wait_done(stack, job["id"])["status"] == "succeeded"
    finally:
        stack.stop()


def test_a_batch_run_survives_a_broker_restart(
    own_redis: dict[str, Any], pg_database: Any, tmp_path: Path
) -> None:
    stack = build_stack("postgres-own-redis", pg_database("restart"), own_redis["url"], tmp_path)
    try:
        wait_workers(stack)
        gallery_id = gallery_of(stack, [noise_png(i, 200) for i in range(60)], k=16)
        run_id = start_run(stack, gallery_id)
        wait_under_way(stack, run_id, 3)
        own_redis["stop"]()  # its window's messages are gone with it
        own_redis["start"]()
        run = wait_run(stack, run_id, timeout=300)
        assert run["status"] == "succeeded" and run["jobs"]["succeeded"] == 60, run
        rows = run_jobs(stack, run_id)
        assert results_per_job(stack, [j.id for j in rows]) == {j.id: 1 for j in rows}
    finally:
        stack.stop()
