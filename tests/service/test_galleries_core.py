"""Galleries, runs, schedules and retention on real databases, with a controllable clock.

The scheduling tests drive ``run_due_schedules(now=…)`` directly: the clock is a parameter,
so a test can walk across slots and daylight-saving changes in milliseconds.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select, update

from kseg.shared.core.params import parse_params
from kseg.shared.store import galleries, jobs
from kseg.shared.store import images as image_store
from kseg.shared.store.auth import get_or_create_owner
from kseg.shared.store.db import get_sessionmaker
from kseg.shared.store.models import Gallery, Image, Job, Result, Run, Schedule
from kseg.shared.store.runner import run_job
from tests.conftest import Stack, wait_for

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def pg(pg_database: Callable[[str], str]) -> Iterator[Any]:
    url = pg_database("gal")
    yield get_sessionmaker(url)


def png(seed: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def make_gallery(maker: Any, n_images: int, **params: Any) -> tuple[str, str]:
    with maker.begin() as session:
        owner = get_or_create_owner(session, "gallery-owner")
        gallery = galleries.create_gallery(session, owner.id, "holiday", {"k": 4, **params})
        images = [
            image_store.store_image(session, owner.id, png(i), f"{i}.png")[0]
            for i in range(n_images)
        ]
        galleries.add_images(session, gallery, images)
        return owner.id, gallery.id


def runs_of(maker: Any, gallery_id: str) -> list[Run]:
    with maker() as session:
        return list(
            session.scalars(
                select(Run).where(Run.gallery_id == gallery_id).order_by(Run.created_at)
            )
        )


def tick(maker: Any, now: datetime) -> int:
    with maker.begin() as session:
        return len(galleries.run_due_schedules(session, now=now))


# ---------------------------------------------------------------- schedules


def test_every_five_minutes_fires_once_per_slot_with_two_concurrent_beats(pg: Any) -> None:
    _, gallery_id = make_gallery(pg, 1)
    start = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
    with pg.begin() as session:
        gallery = session.get(Gallery, gallery_id)
        galleries.set_schedule(
            session, gallery, cron="*/5 * * * *", timezone="UTC", params=None, now=start
        )
    started: list[int] = []
    lock = threading.Lock()
    # Two beats tick every 20 s of simulated time for one hour, concurrently.
    now = start
    for _ in range(180):
        now += timedelta(seconds=20)
        barrier = threading.Barrier(2)

        def beat(at: datetime = now, gate: threading.Barrier = barrier) -> None:
            gate.wait()
            n = tick(pg, at)
            with lock:
                started.append(n)

        threads = [threading.Thread(target=beat) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    runs = runs_of(pg, gallery_id)
    slots = sorted(run.scheduled_for for run in runs)
    expected = [start.replace(second=0) + timedelta(minutes=5 * i) for i in range(1, 13)]
    assert slots == expected, "exactly one run per five-minute slot"
    assert sum(started) == 12


def test_daily_berlin_schedule_across_both_dst_changes(pg: Any) -> None:
    _, gallery_id = make_gallery(pg, 1)
    # From before the spring change to after the autumn change, checking every 10 minutes
    # around each change (and the days between them in big steps).
    windows = [
        (datetime(2026, 3, 27, 12, tzinfo=UTC), datetime(2026, 4, 1, 12, tzinfo=UTC)),
        (datetime(2026, 10, 23, 12, tzinfo=UTC), datetime(2026, 10, 28, 12, tzinfo=UTC)),
    ]
    seen: list[datetime] = []
    for begin, end in windows:
        with pg.begin() as session:
            gallery = session.get(Gallery, gallery_id)
            galleries.set_schedule(
                session,
                gallery,
                cron="30 2 * * *",
                timezone="Europe/Berlin",
                params=None,
                now=begin,
            )
        now = begin
        while now < end:
            now += timedelta(minutes=10)
            tick(pg, now)
        seen = [run.scheduled_for for run in runs_of(pg, gallery_id)]
    local = [slot.astimezone(BERLIN) for slot in seen]
    days = [slot.date() for slot in local]
    assert len(days) == len(set(days)) == 10, "one run per day, no day twice, none missing"
    by_day = {slot.date().isoformat(): slot.strftime("%H:%M %Z") for slot in local}
    # Spring forward (29 March): 02:30 does not exist; the run happens at 03:30 CEST.
    assert by_day["2026-03-29"] == "03:30 CEST"
    assert by_day["2026-03-28"] == "02:30 CET" and by_day["2026-03-30"] == "02:30 CEST"
    # Fall back (25 October): 02:30 happens twice; the run happens once, at the first.
    assert by_day["2026-10-25"] == "02:30 CEST"
    assert by_day["2026-10-26"] == "02:30 CET"


def test_beat_down_across_slots_gives_one_catch_up_run(pg: Any) -> None:
    _, gallery_id = make_gallery(pg, 1)
    start = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    with pg.begin() as session:
        galleries.set_schedule(
            session,
            session.get(Gallery, gallery_id),
            cron="*/5 * * * *",
            timezone="UTC",
            params=None,
            now=start,
        )
    assert tick(pg, start + timedelta(hours=3)) == 1
    assert tick(pg, start + timedelta(hours=3, seconds=30)) == 0
    with pg() as session:
        schedule = session.scalar(select(Schedule).where(Schedule.gallery_id == gallery_id))
        assert schedule.next_run_at == start + timedelta(hours=3, minutes=5)


def test_disabled_schedule_never_fires(pg: Any) -> None:
    _, gallery_id = make_gallery(pg, 1)
    start = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    with pg.begin() as session:
        galleries.set_schedule(
            session,
            session.get(Gallery, gallery_id),
            cron="* * * * *",
            timezone="UTC",
            params=None,
            enabled=False,
            now=start,
        )
    assert tick(pg, start + timedelta(hours=1)) == 0


# ---------------------------------------------------------------- runs and retention


def _run_all(maker: Any, url: str, run_id: str, settings: Any) -> None:
    with maker() as session:
        ids = list(session.scalars(select(Job.id).where(Job.run_id == run_id)))
    for job_id in ids:
        run_job(job_id, settings=settings)


def test_retention_keeps_exactly_n_results(pg: Any) -> None:
    owner_id, gallery_id = make_gallery(pg, 2)
    params = parse_params({"k": 3, "outputs": "recolor"})
    with pg.begin() as session:
        image_ids = galleries.gallery_image_ids(session, gallery_id)
        for round_ in range(5):
            for image_id in image_ids:
                job = jobs.submit_job(
                    session, owner_id, session.get(Image, image_id), params, reuse=False
                )
                result = Result(
                    job_id=job.id,
                    image_id=image_id,
                    params_key=job.params_key,
                    algorithm_version="1",
                    meta={"round": round_},
                    created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=round_),
                )
                session.add(result)
                session.flush()
                session.execute(
                    update(Job)
                    .where(Job.id == job.id)
                    .values(status="succeeded", result_id=result.id)
                )
    with pg.begin() as session:
        assert galleries.prune_results(session, keep=3) == 4
    with pg() as session:
        for image_id in image_ids:
            rounds = sorted(
                r.meta["round"]
                for r in session.scalars(select(Result).where(Result.image_id == image_id))
            )
            assert rounds == [2, 3, 4], "the newest three stay"
        expired = session.scalar(
            select(func.count()).select_from(Job).where(Job.stage == "expired")
        )
        assert expired == 4
    with pg.begin() as session:
        assert galleries.prune_results(session, keep=3) == 0


def _wait_run(stack: Stack, run_id: str) -> Run:
    maker = get_sessionmaker(stack.settings.database_url)

    def ended() -> Run | None:
        with maker() as session:
            run = session.get(Run, run_id)
            return run if run is not None and run.status != "running" else None

    try:
        return wait_for(ended, 180, interval=0.2, what=f"run {run_id} to end")
    except AssertionError:
        print(stack.logs())
        raise


def _start(stack: Stack, gallery_id: str, only_stale: bool) -> str:
    from kseg.web.queue import commit_and_publish

    maker = get_sessionmaker(stack.settings.database_url)
    with maker() as session:
        gallery = session.get(Gallery, gallery_id)
        start = galleries.start_run(
            session,
            gallery,
            trigger="manual",
            params=galleries.gallery_params(gallery),
            only_stale=only_stale,
        )
        run_id = start.run.id
        with stack.app.app_context():
            assert commit_and_publish(session, "batch")
    return run_id


def test_twenty_image_run_then_only_stale_skips_all(stack: Stack) -> None:
    maker = get_sessionmaker(stack.settings.database_url)
    _, gallery_id = make_gallery(maker, 20, outputs="recolor")
    run = _wait_run(stack, _start(stack, gallery_id, only_stale=True))
    assert run.status == "succeeded"
    assert (run.total, run.succeeded, run.failed, run.skipped, run.queued, run.running) == (
        20,
        20,
        0,
        0,
        0,
        0,
    )
    again = _start(stack, gallery_id, only_stale=True)
    run2 = _wait_run(stack, again)
    assert run2.status == "succeeded"
    assert (run2.total, run2.skipped, run2.succeeded, run2.failed) == (20, 20, 0, 0)
    with maker() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.run_id == again)) == 0


def test_one_corrupt_image_makes_the_run_partial(stack: Stack) -> None:
    maker = get_sessionmaker(stack.settings.database_url)
    _, gallery_id = make_gallery(maker, 4, outputs="recolor")
    with maker.begin() as session:
        victim = galleries.gallery_image_ids(session, gallery_id)[2]
        # The stored bytes rot after upload (storage corruption): the core must refuse them.
        session.execute(
            update(Image).where(Image.id == victim).values(data=b"\x89PNG\r\n\x1a\nrot")
        )
    run = _wait_run(stack, _start(stack, gallery_id, only_stale=False))
    assert run.status == "partial"
    assert (run.total, run.succeeded, run.failed) == (4, 3, 1)
    with maker() as session:
        failed = session.scalars(
            select(Job).where(Job.run_id == run.id, Job.status == "failed")
        ).all()
    assert [job.image_id for job in failed] == [victim]
    assert failed[0].error_code and failed[0].error_message


def test_a_scheduled_tick_with_nothing_to_do_records_no_run(
    pg_database: Callable[[str], str], tmp_path: Any
) -> None:
    """A `*/2` schedule whose images are all up to date adds no run at each tick (it used to
    log "SUCCEEDED 2/2 done · 0 succeeded" every two minutes); a new image, or Run now, does
    record one. An image's current result counts wherever it came from, a single submission
    included: what the gallery's grid shows (`tile_jobs`) agrees with what runs skip."""
    from tests.conftest import service_env, settings_from

    url = pg_database("tick")
    maker = get_sessionmaker(url)
    settings = settings_from(service_env(url, "filesystem://", tmp_path / "instance"))
    owner_id, gallery_id = make_gallery(maker, 2, outputs="recolor")
    start = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
    with maker.begin() as session:
        galleries.set_schedule(
            session,
            session.get_one(Gallery, gallery_id),
            cron="*/2 * * * *",
            timezone="UTC",
            params=None,
            now=start,
        )

    def run_jobs_of(run_id: str) -> None:
        with maker() as session:
            ids = list(session.scalars(select(Job.id).where(Job.run_id == run_id)))
        assert ids
        for job_id in ids:
            assert run_job(job_id, settings=settings) == "succeeded"

    def next_run_at() -> datetime:
        with maker() as session:
            schedule = session.scalar(select(Schedule).where(Schedule.gallery_id == gallery_id))
            return schedule.next_run_at.replace(tzinfo=UTC)

    assert tick(maker, start + timedelta(minutes=2)) == 1
    (first,) = runs_of(maker, gallery_id)
    assert (first.total, first.skipped) == (2, 0)
    run_jobs_of(first.id)

    # Every image is up to date: ticks claim their slots but record no run.
    for minutes in (4, 6, 8):
        assert tick(maker, start + timedelta(minutes=minutes)) == 0
        assert next_run_at() == start.replace(second=0) + timedelta(minutes=minutes + 2)
    assert [run.id for run in runs_of(maker, gallery_id)] == [first.id]

    # A new image whose result came from a single submission with the same parameters is up
    # to date too: no run, and its tile shows that result, not "not run yet".
    with maker.begin() as session:
        gallery = session.get_one(Gallery, gallery_id)
        image, _ = image_store.store_image(session, owner_id, png(99), "99.png")
        galleries.add_images(session, gallery, [image])
        single = jobs.submit_job(session, owner_id, image, galleries.gallery_params(gallery))
        single_id, image_id = single.id, image.id
    assert run_job(single_id, settings=settings) == "succeeded"
    assert tick(maker, start + timedelta(minutes=10)) == 0
    with maker() as session:
        gallery = session.get_one(Gallery, gallery_id)
        shown = galleries.tile_jobs(
            session, gallery, galleries.gallery_image_ids(session, gallery_id)
        )
        assert shown[image_id].id == single_id and shown[image_id].status == "succeeded"
        assert {job.status for job in shown.values()} == {"succeeded"} and len(shown) == 3

    # Run now still records a run, all skipped.
    with maker.begin() as session:
        gallery = session.get_one(Gallery, gallery_id)
        manual = galleries.start_run(
            session,
            gallery,
            trigger="manual",
            params=galleries.gallery_params(gallery),
            only_stale=True,
        )
        assert manual.job_ids == [] and (manual.run.total, manual.run.skipped) == (3, 3)

    # An image with no current result: the next tick runs it alone.
    with maker.begin() as session:
        gallery = session.get_one(Gallery, gallery_id)
        image, _ = image_store.store_image(session, owner_id, png(100), "100.png")
        galleries.add_images(session, gallery, [image])
    assert tick(maker, start + timedelta(minutes=12)) == 1
    latest = runs_of(maker, gallery_id)[-1]
    assert (latest.trigger, latest.total, latest.skipped) == ("schedule", 4, 3)
