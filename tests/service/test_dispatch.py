"""The dispatcher on real databases: windows, fair share across owners and runs, the lock.

No broker and no worker here: these drive :func:`shared.dispatch.top_up` directly and read
the rows it marks. The service-level behaviour (a real worker taking interactive work first,
the broker's queue staying within the window) is in ``test_scheduling.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from kseg.shared.core.params import parse_params
from kseg.shared.store import dispatch, galleries, jobs
from kseg.shared.store import images as image_store
from kseg.shared.store.auth import get_or_create_owner
from kseg.shared.store.db import get_sessionmaker
from kseg.shared.store.dispatch import Lane, fair_order
from kseg.shared.store.models import Job, WorkerHeartbeat, utcnow
from tests.service.test_galleries_core import png

T0 = datetime(2026, 12, 1, tzinfo=UTC)


# ---------------------------------------------------------------- the policy alone


def lane(owner: str, run: str | None, waiting: int, minute: int) -> Lane:
    return Lane(owner, run, waiting, T0 + timedelta(minutes=minute))


def test_equal_owners_alternate_oldest_first() -> None:
    lanes = [lane("b", "rb", 50, 1), lane("a", "ra", 50, 0)]
    assert fair_order(lanes, {}, 4) == [("a", "ra"), ("b", "rb"), ("a", "ra"), ("b", "rb")]


def test_an_owner_with_work_in_flight_waits_for_the_other_to_catch_up() -> None:
    lanes = [lane("a", "ra", 100, 0), lane("b", "rb", 100, 5)]
    # a already holds the whole window of 4: b gets every free place until they are even.
    order = fair_order(lanes, {("a", "ra"): 3}, 4)
    assert order == [("b", "rb"), ("b", "rb"), ("b", "rb"), ("a", "ra")]


def test_one_owners_runs_share_that_owners_part() -> None:
    lanes = [lane("a", "r1", 10, 0), lane("a", "r2", 10, 1), lane("b", "r3", 10, 2)]
    order = fair_order(lanes, {}, 4)
    # Owners alternate (a, b, a, b) and a's two places go to its two runs in turn.
    assert [key[0] for key in order] == ["a", "b", "a", "b"]
    assert [key for key in order if key[0] == "a"] == [("a", "r1"), ("a", "r2")]


def test_a_lane_runs_dry_and_the_rest_take_its_places() -> None:
    lanes = [lane("a", None, 1, 0), lane("b", None, 5, 1)]
    assert fair_order(lanes, {}, 4) == [("a", None), ("b", None), ("b", None), ("b", None)]
    assert fair_order(lanes, {}, 0) == []


# ---------------------------------------------------------------- on the databases


@pytest.fixture(params=["postgres", "sqlite"])
def maker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "postgres":
        make: Callable[[str], str] = request.getfixturevalue("pg_database")
        url = make("dispatch")
    else:
        url = str(request.getfixturevalue("sqlite_url"))
    yield get_sessionmaker(url)


def make_run(maker: Any, owner: str, n_images: int, seed: int = 0) -> str:
    """A gallery run of ``n_images`` batch jobs for ``owner``; returns the run id."""
    with maker.begin() as session:
        owner_id = get_or_create_owner(session, owner).id
        gallery = galleries.create_gallery(session, owner_id, f"g-{owner}-{seed}", {"k": 2})
        images = [
            image_store.store_image(session, owner_id, png(seed * 1000 + i, 8), f"{i}.png")[0]
            for i in range(n_images)
        ]
        galleries.add_images(session, gallery, images)
        start = galleries.start_run(
            session, gallery, trigger="manual", params=parse_params({"k": 2}), only_stale=False
        )
        return start.run.id


def submit(maker: Any, owner: str, n: int) -> list[str]:
    """``n`` interactive jobs of ``owner`` (not yet dispatched)."""
    with maker.begin() as session:
        owner_id = get_or_create_owner(session, owner).id
        out = []
        for i in range(n):
            image, _ = image_store.store_image(
                session, owner_id, png(hash(owner) % 997 + i, 8), "i.png"
            )
            out.append(jobs.submit_job(session, owner_id, image, parse_params({"k": 2})).id)
        return out


def top_up(maker: Any, queue: str, per_process: int = 2) -> list[str]:
    with maker.begin() as session:
        return dispatch.top_up(session, queue, per_process=per_process, stale_after=30)


def finish(maker: Any, job_ids: list[str]) -> None:
    with maker.begin() as session:
        session.execute(
            update(Job).where(Job.id.in_(job_ids)).values(status="succeeded", finished_at=utcnow())
        )


def in_flight(maker: Any, queue: str) -> int:
    with maker() as session:
        return sum(dispatch.in_flight_by_lane(session, queue).values())


def run_of(maker: Any, job_ids: list[str]) -> list[str | None]:
    with maker() as session:
        rows = dict(session.execute(select(Job.id, Job.run_id).where(Job.id.in_(job_ids))).all())
    return [rows[i] for i in job_ids]


def test_a_run_is_fed_one_window_at_a_time(maker: Any) -> None:
    run = make_run(maker, "alice", 10)
    first = top_up(maker, "batch")
    assert len(first) == 2  # no worker has reported: one process's worth
    assert top_up(maker, "batch") == []  # full
    finish(maker, first[:1])
    second = top_up(maker, "batch")
    assert len(second) == 1 and second[0] not in first
    with maker() as session:
        waiting = session.scalar(
            select(func.count()).select_from(Job).where(Job.run_id == run, dispatch.WAITING)
        )
    assert waiting == 7
    # Interactive work has a window of its own.
    assert len(top_up(maker, "interactive")) == 0  # nothing waiting there
    assert len(submit(maker, "alice", 3)) == 3
    assert len(top_up(maker, "interactive")) == 2


def test_the_window_grows_with_the_worker_processes_taking_the_class(maker: Any) -> None:
    make_run(maker, "alice", 30)
    with maker.begin() as session:
        now = utcnow()
        session.add_all(
            [
                WorkerHeartbeat(
                    hostname="w1", pid=1, concurrency=3, queues="interactive,batch", seen_at=now
                ),
                WorkerHeartbeat(hostname="w2", pid=2, concurrency=4, queues="batch", seen_at=now),
                WorkerHeartbeat(
                    hostname="w3", pid=3, concurrency=8, queues="interactive", seen_at=now
                ),
                # Gone quiet: no longer counts.
                WorkerHeartbeat(
                    hostname="w4",
                    pid=4,
                    concurrency=16,
                    queues="batch",
                    seen_at=now - timedelta(minutes=5),
                ),
            ]
        )
    assert len(top_up(maker, "batch")) == 2 * (3 + 4)
    assert in_flight(maker, "batch") == 14


def test_no_window_dispatches_everything(maker: Any) -> None:
    make_run(maker, "alice", 12)
    assert len(top_up(maker, "batch", per_process=0)) == 12


def test_two_owners_runs_are_interleaved_and_kept_even(maker: Any) -> None:
    big = make_run(maker, "alice", 40, seed=1)
    small = make_run(maker, "bob", 30, seed=2)
    first = top_up(maker, "batch", per_process=4)  # a window of 4
    assert sorted(run_of(maker, first)) == sorted([big, big, small, small])
    assert run_of(maker, first)[:2] in ([big, small], [small, big])  # interleaved, not a block
    # Jobs end in the order they were published: every freed place goes to whichever owner
    # has fewer in flight, so the two stay even and their progress within a window.
    finished = {big: 0, small: 0}
    flying = list(first)
    for _ in range(20):
        done = flying.pop(0)
        finish(maker, [done])
        finished[run_of(maker, [done])[0]] += 1  # type: ignore[index]
        flying += top_up(maker, "batch", per_process=4)
        with maker() as session:
            lanes = dispatch.in_flight_by_lane(session, "batch")
        counts = {run: n for (_owner, run), n in lanes.items()}
        assert abs(counts.get(big, 0) - counts.get(small, 0)) <= 1, counts
    assert abs(finished[big] - finished[small]) <= 4


def test_canceled_and_deleted_jobs_leave_the_window(maker: Any) -> None:
    make_run(maker, "alice", 6)
    first = top_up(maker, "batch")
    with maker.begin() as session:
        jobs.delete_job(session, session.get(Job, first[0]))  # cancels it
    again = top_up(maker, "batch")
    assert len(again) == 1


def test_concurrent_top_ups_never_overfill_the_window(maker: Any) -> None:
    make_run(maker, "alice", 60)
    make_run(maker, "bob", 60, seed=3)
    barrier = threading.Barrier(8)
    handed: list[str] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            barrier.wait(10)
            for _ in range(5):
                handed.extend(top_up(maker, "batch", per_process=3))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(handed) == len(set(handed)) == 3
    assert in_flight(maker, "batch") == 3


def test_queue_stats_by_class(maker: Any) -> None:
    make_run(maker, "alice", 5)
    submit(maker, "bob", 2)
    top_up(maker, "batch")
    with maker() as session:
        stats = dispatch.queue_stats(session, now=utcnow() + timedelta(seconds=10))
    assert stats["batch"]["waiting"] == 5 and stats["batch"]["in_broker"] == 2
    assert stats["interactive"]["waiting"] == 2 and stats["interactive"]["in_broker"] == 0
    assert 9 < stats["batch"]["oldest_seconds"] < 60
