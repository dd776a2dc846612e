#!/usr/bin/env python
"""What the dispatch window costs a worker per job: the CPU time of one top-up.

Every job that ends tops its class's window up (``worker.tasks._top_up``): a read for waiting
jobs, then one transaction that locks the class, counts what is in flight and hands out the
next place fairly (``shared.dispatch.top_up``). This script times exactly that — no broker,
no clustering — against a database holding a run of ``--jobs`` waiting jobs, ending one job
in flight before each top-up as a worker would. CPU time of this process is what a worker
process pays per job; it is stable where the service's jobs/minute drift ±15 % from run to
run (bench/README.md, "the window's cost").

    python bench/bench_topup.py                 # SQLite, and PostgreSQL if it answers
    python bench/bench_topup.py --jobs 5000 --backend postgres
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def fill(url: str, jobs: int) -> None:
    """An owner, one image, a worker heartbeat of 2 processes and ``jobs`` waiting batch jobs."""
    from sqlalchemy import insert

    from kseg.shared.store.db import get_worker_sessionmaker
    from kseg.shared.store.models import Image, Job, Owner, WorkerHeartbeat, new_id, utcnow

    with get_worker_sessionmaker(url).begin() as session:
        owner = Owner(name="bench")
        session.add(owner)
        session.flush()
        image = Image(
            owner_id=owner.id, sha256="0" * 64, filename="a.png", content_type="image/png",
            format="PNG", size_bytes=1, width=1, height=1, data=b"",
        )  # fmt: skip
        session.add(image)
        session.add(WorkerHeartbeat(hostname="bench", pid=1, concurrency=2, queues="batch"))
        session.flush()
        now = utcnow()
        rows = [
            {"id": new_id(), "owner_id": owner.id, "image_id": image.id, "params": {},
             "params_key": "k", "queue": "batch", "created_at": now, "queued_at": now}
            for _ in range(jobs)
        ]  # fmt: skip
        session.execute(insert(Job), rows)


def measure(url: str, jobs: int) -> dict[str, float]:
    """Top up after each job end until the run is drained; CPU and wall ms per top-up."""
    from sqlalchemy import select, update

    from kseg.shared.store import dispatch
    from kseg.shared.store.db import get_beat_sessionmaker, get_worker_sessionmaker
    from kseg.shared.store.models import Job

    worker = get_worker_sessionmaker(url)

    def top_up() -> list[str] | None:  # as worker.tasks._top_up, without the publish
        with get_beat_sessionmaker(url)() as session:
            if not dispatch.has_waiting(session, "batch"):
                return None
        with worker.begin() as session:
            return dispatch.top_up(session, "batch", per_process=2, stale_after=60)

    top_up()  # the first fills the window (4 places)
    cpu, wall = [], []
    while True:
        with worker.begin() as session:
            job_id = session.scalar(select(Job.id).where(dispatch.IN_FLIGHT).limit(1))
            if job_id is None:
                break
            session.execute(update(Job).where(Job.id == job_id).values(status="succeeded"))
        c0, w0 = time.process_time(), time.perf_counter()
        if top_up() is None:
            break
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {
        "top_ups": len(cpu),
        "cpu_ms": 1000 * statistics.median(cpu),
        "cpu_p95_ms": 1000 * sorted(cpu)[int(0.95 * (len(cpu) - 1))],
        "wall_ms": 1000 * statistics.median(wall),
    }


def postgres_url() -> str | None:
    from sqlalchemy import create_engine, text

    name = f"kseg_bench_topup_{uuid.uuid4().hex[:8]}"
    try:
        engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
    except Exception as exc:  # no server: the SQLite figure alone
        print(f"PostgreSQL at {PG_ADMIN} unavailable ({type(exc).__name__}); skipped")
        return None
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop(url: str) -> None:
    from sqlalchemy import create_engine, text

    from kseg.shared.store.db import dispose_all

    dispose_all()
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=400, help="waiting jobs of the run (400)")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    from kseg.shared.store.db import migrate

    print("| backend | waiting jobs | top-ups | CPU ms per top-up (median) | p95 | wall ms |")
    print("|---|---|---|---|---|---|")
    for backend in ["sqlite", "postgres"] if args.backend == "both" else [args.backend]:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/kseg.db" if backend == "sqlite" else postgres_url()
            if url is None:
                continue
            try:
                migrate(url)
                fill(url, args.jobs)
                r = measure(url, args.jobs)
            finally:
                if backend == "postgres":
                    drop(url)
        print(
            f"| {backend} | {args.jobs} | {r['top_ups']:.0f} | {r['cpu_ms']:.2f} | "
            f"{r['cpu_p95_ms']:.2f} | {r['wall_ms']:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
