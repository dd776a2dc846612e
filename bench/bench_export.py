#!/usr/bin/env python
"""Benchmark of a gallery run's ZIP export (``GET /api/v1/runs/<id>/export.zip``; issue 25):
wall time, bytes, and the web process's memory — its resident set before the request and its
peak (``VmHWM`` of ``/proc/<pid>/status``) after it — for runs of several sizes, each served
by a fresh ``kseg web`` process (waitress, as deployed), so the peaks do not mix.

The runs are made fast, straight through the store layer, not by a worker: a small photo
(``baby.jpg`` scaled to ``--side`` px) is segmented once by the core, and every job of the
run gets that result through the worker's own claim and completion (``claim_job``,
``complete_job``): real rows, real rendered PNGs (all five outputs), stored as a worker
stores them. Each job has its own image (distinct bytes), as in a real gallery. The client
reads the ZIP as it comes, counts its bytes and checks it (every job's folder, testzip).

    python bench/bench_export.py                          # 100 and 500 jobs, SQLite
    python bench/bench_export.py --jobs 500 --backend postgres
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT.parent / "shared" / "images"
PG_ADMIN = os.environ.get("KSEG_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def make_database(backend: str, tmp: Path) -> tuple[str, Any]:
    """A migrated database; returns its URL and a function that drops it."""
    from sqlalchemy import create_engine, text

    from kseg.shared.store.db import migrate

    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'instance' / 'kseg.db'}"
        migrate(url)
        return url, lambda: None
    name = f"kseg_bench_export_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)

    def drop() -> None:
        from kseg.shared.store.db import dispose_all

        dispose_all()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def make_run(url: str, jobs: int, side: int) -> tuple[str, str, int]:
    """A gallery of ``jobs`` images and a finished run of them; returns (token, run id,
    stored PNG bytes)."""
    import numpy as np
    from PIL import Image

    from kseg.shared.core.params import parse_params
    from kseg.shared.core.segment import segment
    from kseg.shared.store import galleries
    from kseg.shared.store import jobs as job_store
    from kseg.shared.store.auth import create_token, owner_for_token
    from kseg.shared.store.db import get_sessionmaker
    from kseg.shared.store.images import store_image
    from kseg.shared.store.runs import refresh_run

    photo = Image.open(IMAGES / "baby.jpg").convert("RGB")
    scale = side / max(photo.size)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS)
    base = np.asarray(photo).copy()
    params = parse_params({"k": 8})
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    seg = segment(buf.getvalue(), params)
    png_bytes = sum(len(png) for png in seg.outputs.values())
    maker = get_sessionmaker(url)
    with maker.begin() as session:
        token = create_token(session, "bench", "bench")
        owner = owner_for_token(session, token)
        assert owner is not None
        gallery = galleries.create_gallery(session, owner.id, "bench", {"k": 8})
        images = []
        for i in range(jobs):
            pixels = base.copy()
            pixels[0, 0] = (i % 256, (i // 256) % 256, 7)  # distinct bytes: distinct images
            out = io.BytesIO()
            Image.fromarray(pixels).save(out, "PNG", compress_level=1)
            images.append(store_image(session, owner.id, out.getvalue(), f"photo {i:04d}.png")[0])
        galleries.add_images(session, gallery, images)
        start = galleries.start_run(
            session, gallery, trigger="manual", params=params, only_stale=False
        )
        run_id = start.run.id
        job_ids = list(start.job_ids)
    for job_id in job_ids:
        with maker.begin() as session:
            claim = job_store.claim_job(session, job_id, "bench:1", max_attempts=3, stale_after=30)
            assert claim.claimed, claim
            job_store.complete_job(session, job_id, "bench:1", seg, {"total": 1.0}, claim=claim)
    with maker.begin() as session:
        refresh_run(session, run_id)
    return token, run_id, png_bytes * jobs


def start_web(url: str, tmp: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSEG_", "CELERY_"))}
    env.update(
        DATABASE_URL=url,
        CELERY_BROKER_URL="filesystem://",
        KSEG_INSTANCE_DIR=str(tmp / "instance"),
        KSEG_PORT=str(port),
        KSEG_ACCESS_LOG="0",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kseg.web.serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("kseg web did not start")


def warm_up(port: int, token: str, run_id: str) -> None:
    """One small request through the same code (imports, pools), so the 'before' RSS is a
    serving process's, not a fresh one's."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/runs/{run_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def export(port: int, token: str, run_id: str, target: Path) -> tuple[float, int, float]:
    """GET the run's export.zip into ``target``; (seconds, bytes, seconds to first byte)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/runs/{run_id}/export.zip",
        headers={"Authorization": f"Bearer {token}"},
    )
    started = time.perf_counter()
    first = None
    size = 0
    with urllib.request.urlopen(req, timeout=600) as resp, target.open("wb") as out:
        while block := resp.read(1 << 20):
            if first is None:
                first = time.perf_counter() - started
            out.write(block)
            size += len(block)
    return time.perf_counter() - started, size, first or 0.0


def check(target: Path, jobs: int) -> None:
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        assert names[0] == "manifest.json"
        assert sum(name.endswith("/result.json") for name in names) == jobs, len(names)
        assert sum(name.endswith(".png") for name in names) == 5 * jobs
        assert archive.testzip() is None


def trial(backend: str, jobs: int, side: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kseg-bench-export-") as raw:
        tmp = Path(raw)
        url, drop = make_database(backend, tmp)
        try:
            made = time.perf_counter()
            token, run_id, stored = make_run(url, jobs, side)
            made = time.perf_counter() - made
            port = free_port()
            web = start_web(url, tmp, port)
            try:
                warm_up(port, token, run_id)
                before = proc_status(web.pid)
                seconds, size, first = export(port, token, run_id, tmp / "run.zip")
                after = proc_status(web.pid)
            finally:
                os.killpg(web.pid, signal.SIGTERM)
                web.wait(10)
            check(tmp / "run.zip", jobs)
        finally:
            drop()
    return {
        "backend": backend,
        "jobs": jobs,
        "made_s": made,
        "png_mb": stored / 1e6,
        "zip_mb": size / 1e6,
        "seconds": seconds,
        "first_byte_ms": first * 1000,
        "mb_per_s": size / 1e6 / seconds,
        "rss_before_mb": before["VmRSS"] / 1024,
        "peak_mb": after["VmHWM"] / 1024,
        "growth_mb": (after["VmHWM"] - before["VmRSS"]) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default="100,500", help="run sizes, comma-separated")
    parser.add_argument(
        "--backend", default="sqlite", help="sqlite, postgres, or both: sqlite,postgres"
    )
    parser.add_argument("--side", type=int, default=400, help="longer side of each photo, px")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    rows = []
    for backend in args.backend.split(","):
        for jobs in (int(n) for n in args.jobs.split(",")):
            row = trial(backend.strip(), jobs, args.side)
            rows.append(row)
            print(
                f"{row['backend']:8s} {row['jobs']:5d} jobs: {row['zip_mb']:7.1f} MB in "
                f"{row['seconds']:5.2f} s ({row['mb_per_s']:5.1f} MB/s, first byte "
                f"{row['first_byte_ms']:.0f} ms); web RSS {row['rss_before_mb']:.1f} MB before, "
                f"peak {row['peak_mb']:.1f} MB (+{row['growth_mb']:.1f} MB); "
                f"setup {row['made_s']:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
