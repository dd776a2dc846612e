"""The job state machine on real databases: guarded transitions, attempts, the sweeper."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, text

from kseg.shared.core.params import parse_params
from kseg.shared.core.segment import Segmentation
from kseg.shared.store import jobs, outputs
from kseg.shared.store import sweep as sweep_mod
from kseg.shared.store.auth import get_or_create_owner
from kseg.shared.store.db import get_sessionmaker
from kseg.shared.store.models import Image, Job, Result, utcnow


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        make: Callable[[str], str] = request.getfixturevalue("pg_database")
        return make("state")
    return str(request.getfixturevalue("sqlite_url"))


@pytest.fixture
def session_factory(db_url: str) -> Iterator[Any]:
    yield get_sessionmaker(db_url)


def _image(session: Any, owner_id: str, tag: str = "a") -> Image:
    image = Image(
        owner_id=owner_id,
        sha256=tag * 64,
        filename="x.png",
        content_type="image/png",
        format="PNG",
        size_bytes=3,
        width=2,
        height=2,
        data=b"abc",
    )
    session.add(image)
    session.flush()
    return image


def _job(maker: Any, **params: Any) -> str:
    with maker.begin() as session:
        owner = get_or_create_owner(session, "alice")
        image = session.scalar(select(Image).where(Image.owner_id == owner.id)) or _image(
            session, owner.id
        )
        job = jobs.submit_job(session, owner.id, image, parse_params(params), reuse=False)
        return job.id


def _fake_segmentation() -> Segmentation:
    return Segmentation(
        width=2,
        height=2,
        labels=np.zeros((2, 2), np.uint8),
        centers=np.zeros((1, 3), np.uint8),
        outputs={"labels": b"png-bytes"},
        result={"k": 1, "inertia": 0.0, "mse": 0.0, "psnr": None, "n_iter": 1, "clusters": []},
    )


def _claim(maker: Any, job_id: str, worker: str, **kw: Any) -> jobs.Claim:
    kw.setdefault("max_attempts", 3)
    kw.setdefault("stale_after", 30)
    with maker.begin() as session:
        return jobs.claim_job(session, job_id, worker, **kw)


def test_only_one_worker_claims_a_job(session_factory: Any) -> None:
    job_id = _job(session_factory)
    assert _claim(session_factory, job_id, "w1").claimed
    second = _claim(session_factory, job_id, "w2")
    assert not second.claimed and second.reason == "busy"


def test_finished_job_is_never_run_again_nor_stored_twice(session_factory: Any) -> None:
    job_id = _job(session_factory)
    assert _claim(session_factory, job_id, "w1").claimed
    with session_factory.begin() as session:
        jobs.complete_job(session, job_id, "w1", _fake_segmentation(), {"total": 1})
    again = _claim(session_factory, job_id, "w2")
    assert (again.claimed, again.reason) == (False, "finished")
    # A second completion (a duplicated message that slipped through) must not store twice.
    with pytest.raises(Exception), session_factory.begin() as session:  # noqa: B017
        jobs.complete_job(session, job_id, "w1", _fake_segmentation(), {"total": 1})
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 1
        assert session.get(Job, job_id).status == "succeeded"


def test_stale_running_job_is_taken_over_and_the_old_holder_loses_it(session_factory: Any) -> None:
    job_id = _job(session_factory)
    assert _claim(session_factory, job_id, "w1").claimed
    later = utcnow() + timedelta(seconds=60)
    takeover = _claim(session_factory, job_id, "w2", now=later)
    assert takeover.claimed and takeover.attempts == 2
    with pytest.raises(jobs.JobLostError), session_factory.begin() as session:
        jobs.complete_job(session, job_id, "w1", _fake_segmentation(), {})
    with pytest.raises(jobs.JobLostError), session_factory.begin() as session:
        jobs.report_progress(session, job_id, "w1", "fit", 50)


def test_dead_holder_is_taken_over_at_once(session_factory: Any) -> None:
    job_id = _job(session_factory)
    assert _claim(session_factory, job_id, "host:1").claimed
    assert not _claim(session_factory, job_id, "host:2").claimed
    assert _claim(session_factory, job_id, "host:2", dead_workers=["host:1"]).claimed


def test_attempt_cap_fails_a_poison_job(session_factory: Any) -> None:
    job_id = _job(session_factory)
    now = utcnow()
    for attempt in range(3):
        claim = _claim(session_factory, job_id, f"w{attempt}", now=now + timedelta(minutes=attempt))
        assert claim.claimed, claim
    final = _claim(session_factory, job_id, "w9", now=now + timedelta(minutes=10))
    assert (final.claimed, final.reason) == (False, "exhausted")
    with session_factory() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed" and job.error_code == "too_many_attempts"


def test_progress_never_decreases(session_factory: Any) -> None:
    job_id = _job(session_factory)
    assert _claim(session_factory, job_id, "w1").claimed
    seen = []
    for stage, pct in [("decode", 10), ("fit", 60), ("fit", 40), ("render", 90)]:
        with session_factory.begin() as session:
            jobs.report_progress(session, job_id, "w1", stage, pct)
        with session_factory() as session:
            seen.append(session.get(Job, job_id).progress)
    assert seen == [10, 60, 60, 90]


def _dispatch(maker: Any, *job_ids: str) -> None:
    """Mark jobs published, as a top-up of their window does."""
    with maker.begin() as session:
        session.execute(
            Job.__table__.update().where(Job.id.in_(job_ids)).values(dispatched_at=utcnow())
        )


def test_sweeper_requeues_lost_messages_and_stalled_jobs(session_factory: Any) -> None:
    lost = _job(session_factory, seed=1)
    stalled = _job(session_factory, seed=2)
    fresh_running = _job(session_factory, seed=3)
    waiting = _job(session_factory, seed=4)  # never published: the dispatcher's, not lost
    held = _job(session_factory, seed=5)  # published, and still in the broker
    _dispatch(session_factory, lost, held)
    assert _claim(session_factory, stalled, "w1").claimed
    assert _claim(session_factory, fresh_running, "w2").claimed
    with session_factory.begin() as session:
        # The fresh one keeps beating; the stalled one does not.
        session.execute(
            Job.__table__.update()
            .where(Job.id == fresh_running)
            .values(heartbeat_at=utcnow() + timedelta(seconds=100))
        )
    now = utcnow() + timedelta(seconds=100)
    with session_factory.begin() as session:
        report = sweep_mod.sweep(
            session,
            queued_stale_after=60,
            running_stale_after=30,
            max_attempts=3,
            now=now,
            in_broker=lambda queue: {held} if queue == "interactive" else set(),
        )
    assert report.requeued_queued == [lost]
    assert report.requeued_running == [stalled]
    assert report.queues == {lost: "interactive", stalled: "interactive"}
    with session_factory() as session:
        assert session.get(Job, stalled).status == "queued"
        assert session.get(Job, stalled).dispatched_at == now  # published again at once
        assert session.get(Job, fresh_running).status == "running"
        assert session.get(Job, waiting).dispatched_at is None
    # Right after a sweep the same jobs are not swept again (dispatched_at was bumped).
    with session_factory.begin() as session:
        again = sweep_mod.sweep(
            session, queued_stale_after=60, running_stale_after=30, max_attempts=3, now=now
        )
    # Without a look into the broker, the one it holds is published again (harmless: the
    # claim runs a job once); the others wait for the next period.
    assert again.to_enqueue == [held]


def test_sweeper_fails_a_stalled_job_out_of_attempts(session_factory: Any) -> None:
    job_id = _job(session_factory)
    now = utcnow()
    for attempt in range(3):
        assert _claim(session_factory, job_id, f"w{attempt}", now=now + timedelta(minutes=attempt))
    with session_factory.begin() as session:
        report = sweep_mod.sweep(
            session,
            queued_stale_after=60,
            running_stale_after=30,
            max_attempts=3,
            now=now + timedelta(hours=1),
        )
    assert report.failed == [job_id]
    with session_factory() as session:
        assert session.get(Job, job_id).error_code == "worker_lost"


def test_cancel_then_delete(session_factory: Any) -> None:
    job_id = _job(session_factory)
    with session_factory.begin() as session:
        assert jobs.delete_job(session, session.get(Job, job_id)) == "canceled"
    assert _claim(session_factory, job_id, "w1").reason == "finished"
    with session_factory.begin() as session:
        assert jobs.delete_job(session, session.get(Job, job_id)) == "deleted"
    with session_factory() as session:
        assert session.get(Job, job_id) is None


def test_running_job_writes_its_stage_and_progress_to_the_row(db_url: str) -> None:
    from dataclasses import replace

    from kseg.shared.settings import get_settings
    from kseg.shared.store import runner

    maker = get_sessionmaker(db_url)
    job_id = _job(maker)
    settings = replace(get_settings(), database_url=db_url)
    seen: list[tuple[str | None, int]] = []

    def slow_segment(data: bytes, params: Any, *, progress: Any, **_: Any) -> Segmentation:
        # Report a stage, then keep "computing" until the row shows it: the monitor thread
        # must write it while the core is still busy.
        progress("fit", 40)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with maker() as session:
                row = session.execute(select(Job.stage, Job.progress).where(Job.id == job_id)).one()
            if row.stage == "fit":
                seen.append((row.stage, row.progress))
                break
            time.sleep(0.02)
        return _fake_segmentation()

    assert runner.run_job(job_id, settings=settings, worker="w1", segment_fn=slow_segment) == (
        "succeeded"
    )
    assert seen == [("fit", 40)], "the running job's stage never reached the database"
    with maker() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.stage, job.progress) == ("succeeded", "done", 100)


def test_claim_with_image_reads_the_bytes_and_stores_the_same_instants(
    session_factory: Any,
) -> None:
    job_id = _job(session_factory, k=3)
    before = utcnow().replace(microsecond=0)
    with session_factory.begin() as session:
        if session.connection().dialect.name == "postgresql":
            # A session time zone far from UTC: a datetime bound without the column type's
            # processing (as timestamptz) would be stored 9 hours off.
            session.execute(text("SET LOCAL TIME ZONE 'Asia/Tokyo'"))
        first = jobs.claim_job(
            session, job_id, "w1", max_attempts=3, stale_after=30, with_image=True
        )
    assert first.claimed and first.attempts == 1
    assert first.image_data == b"abc" and first.params is not None and first.params["k"] == 3
    with session_factory() as session:
        job = session.get(Job, job_id)
        assert job.status == "running" and job.worker == "w1"
        # Stored as this instant in UTC, whatever path (binary cursor or not) wrote it.
        assert before <= job.started_at <= utcnow() and job.heartbeat_at == job.started_at
    assert not _claim(session_factory, job_id, "w2", with_image=True).claimed  # still fresh
    later = utcnow() + timedelta(seconds=60)  # w1 stopped beating: w2 takes it over
    takeover = _claim(session_factory, job_id, "w2", now=later, with_image=True)
    assert takeover.claimed and takeover.attempts == 2 and takeover.image_data == b"abc"
    with session_factory() as session:
        job = session.get(Job, job_id)
        assert job.worker == "w2" and abs(job.heartbeat_at - later) < timedelta(seconds=1)
        assert job.started_at < later  # the first start is kept


def test_completion_stores_the_result_and_its_outputs_as_given(session_factory: Any) -> None:
    """The completion (on PostgreSQL three statements in one pipelined round trip) stores the
    metadata, every output PNG (shared payloads stored once) and the instants unchanged."""
    from kseg.shared.core.render import render_outputs

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, (40, 60), dtype=np.uint8)
    centers = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250]], np.uint8)
    rgb = centers[labels]
    names = ["labels", "gray", "color", "recolor", "overlay"]
    seg = Segmentation(
        width=60,
        height=40,
        labels=labels,
        centers=centers,
        outputs=render_outputs(names, labels, centers, rgb),
        result={"k": 3, "inertia": 1.5, "mse": 0.1, "psnr": 42.0, "n_iter": 4, "clusters": []},
    )
    job_id = _job(session_factory, k=3)
    assert _claim(session_factory, job_id, "w1").claimed
    before = utcnow().replace(microsecond=0)
    with session_factory.begin() as session:
        if session.connection().dialect.name == "postgresql":
            session.execute(text("SET LOCAL TIME ZONE 'Asia/Tokyo'"))  # see the claim's test
        result_id = jobs.complete_job(session, job_id, "w1", seg, {"total": 7.5})
    with session_factory() as session:
        job = session.get(Job, job_id)
        assert job is not None and (job.status, job.result_id) == ("succeeded", result_id)
        assert before <= job.finished_at <= utcnow()
        result = session.get(Result, result_id)
        assert result is not None and result.job_id == job_id
        assert result.meta == {**seg.result, "timings_ms": {"total": 7.5}}
        assert before <= result.created_at <= utcnow()
        for name in names:
            assert outputs.output_png(session, result_id, name) == seg.outputs[name], name
        stored = session.scalar(
            text("SELECT sum(length(data)) FROM result_outputs WHERE result_id = :r"),
            {"r": result_id},
        )
        assert stored < sum(len(png) for png in seg.outputs.values())  # payloads shared


def test_a_refused_completion_leaves_no_result_behind(session_factory: Any) -> None:
    job_id = _job(session_factory)
    assert _claim(session_factory, job_id, "w1").claimed
    with session_factory.begin() as session:  # canceled by its owner while running
        session.execute(text("UPDATE jobs SET status = 'canceled' WHERE id = :j"), {"j": job_id})
    with pytest.raises(jobs.JobLostError), session_factory.begin() as session:
        jobs.complete_job(session, job_id, "w1", _fake_segmentation(), {})
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 0
        assert session.scalar(text("SELECT count(*) FROM result_outputs")) == 0
        assert session.get(Job, job_id).status == "canceled"


def test_jobs_running_at_once_in_one_process_each_write_their_progress(db_url: str) -> None:
    """Monitor threads are reused between jobs, never shared by two running at once."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from kseg.shared.settings import get_settings
    from kseg.shared.store import runner

    maker = get_sessionmaker(db_url)
    ids = [_job(maker, seed=i) for i in range(3)]
    settings = replace(get_settings(), database_url=db_url)
    all_running = threading.Barrier(len(ids), timeout=10)
    seen: dict[str, int] = {}

    def slow_segment(data: bytes, params: Any, *, progress: Any, **_: Any) -> Segmentation:
        all_running.wait()  # every job is in its core before any reports
        job_id = next(i for i in ids if params.seed == ids.index(i))
        progress("fit", 30 + params.seed)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and job_id not in seen:
            with maker() as session:
                row = session.execute(select(Job.stage, Job.progress).where(Job.id == job_id)).one()
            if row.stage == "fit":
                seen[job_id] = row.progress
            time.sleep(0.02)
        all_running.wait()  # nobody finishes before every row showed its progress
        return _fake_segmentation()

    def monitors() -> int:
        return sum(t.name == "kseg-monitor" for t in threading.enumerate())

    counts = []
    for _ in range(2):  # the second round runs on the threads the first one left
        seen.clear()
        all_running.reset()
        with maker.begin() as session:
            session.execute(
                text(
                    "UPDATE jobs SET status = 'queued', worker = NULL, result_id = NULL,"
                    " stage = NULL, progress = 0"
                )
            )
            session.execute(text("DELETE FROM results"))
        with ThreadPoolExecutor(len(ids)) as pool:
            outcomes = list(
                pool.map(
                    lambda i: runner.run_job(
                        i, settings=settings, worker=f"w-{i}", segment_fn=slow_segment
                    ),
                    ids,
                )
            )
        assert outcomes == ["succeeded"] * len(ids)
        assert seen == {job_id: 30 + n for n, job_id in enumerate(ids)}
        counts.append(monitors())
    assert counts[0] >= len(ids) and counts[1] == counts[0]
