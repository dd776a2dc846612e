#!/usr/bin/env python
"""Scheduling benchmark of the kseg service on this machine (a script, not a test; issue 21).

Each scenario starts a real service (waitress web, a Celery worker of 2 processes, beat) on
Redis + PostgreSQL or on the embedded default, and measures:

1. **Interactive latency beside a run**: ``baby.jpg`` submit → succeeded (a client polling
   every 10 ms), on an idle service and while a 400-image 1 MP gallery run drains.
   Target: p50 ≤ 1.5 s and max ≤ 3 s during the run.
2. **The window costs the run nothing**: the same 400-image run with the dispatch window
   (``KSEG_WINDOW_PER_PROCESS=2``, the default) and without (``0``: every job published at
   once, as before issue 21), in paired trials, alternating which goes first. Target: the
   median of the trials' ratios (jobs/min with ÷ without) ≥ 0.9. Also the worker processes'
   CPU time per job, steadier than wall time on this machine.
3. **Fair share**: a 100-image run started beside another owner's 2,000-image run, against
   the same 100-image run alone on a worker of 1 process (half the workers). Target: beside
   ≤ 1.5 × alone-with-half.
4. **A 5,000-image gallery** (small images) runs to completion; its gallery and run pages and
   the run's API object are timed while it drains and after. Target: every page < 1 s.

    python bench/bench_sched.py                         # every scenario, both backends
    python bench/bench_sched.py --scenario latency --backend embedded
    python bench/bench_sched.py --scenario window --trials 3

This machine's speed drifts by ±15 %: scenario 2 pairs runs back to back and reports every
trial; see bench/README.md for the figures and their spread.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import io
import json
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_service import (
    SEED_IMAGES,
    Service,
    cpu_by_part,
    cpu_snapshot,
    one_megapixel_photos,
    pct,
)

BABY = (SEED_IMAGES / "baby.jpg").read_bytes()


# ---------------------------------------------------------------- images


def variants(photos: list[bytes], n: int, side: int | None = None) -> list[bytes]:
    """``n`` distinct JPEGs made from ``photos`` (each a little different, so the service
    neither deduplicates the uploads nor reuses a result), optionally scaled to ``side``."""
    import numpy as np
    from PIL import Image

    bases = []
    for data in photos:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        if side:
            img.thumbnail((side, side))
        bases.append(np.asarray(img))
    out = []
    for i in range(n):
        array = bases[i % len(bases)].copy()
        # A small, distinct mark: a few pixels in the corner, by number.
        array[0, : min(16, array.shape[1]), 0] = [(i >> bit) & 1 and 255 for bit in range(16)][
            : min(16, array.shape[1])
        ]
        if (i // len(bases)) % 2:
            array = array[:, ::-1]
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# ---------------------------------------------------------------- the service


class Bench(Service):
    """A service with API helpers for galleries, runs and the pages."""

    def __init__(self, backend: str, workdir: Path, **env: str) -> None:
        super().__init__(backend, workdir)
        self.env.update(env)
        self._pages: urllib.request.OpenerDirector | None = None

    def json(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        saved = self.token
        if token:
            self.token = token
        try:
            status, payload = self.call(method, path, data, "application/json")
        finally:
            self.token = saved
        if status >= 300:
            raise SystemExit(f"{method} {path}: {status} {payload}")
        return payload

    def gallery(self, images: list[bytes], token: str | None = None, **params: Any) -> str:
        """A gallery of ``images``, uploaded through the API 50 at a time."""
        from kseg.shared.client import encode_multipart

        gallery_id = self.json(
            "POST", "/api/v1/galleries", {"name": "bench", "params": params}, token
        )["id"]
        saved = self.token
        self.token = token or saved
        try:
            for at in range(0, len(images), 50):
                parts = [
                    ("file", f"{at + i}.jpg", data) for i, data in enumerate(images[at : at + 50])
                ]
                body, ctype = encode_multipart([], parts)
                status, payload = self.call(
                    "POST", f"/api/v1/galleries/{gallery_id}/images", body, ctype
                )
                if status != 201:
                    raise SystemExit(f"upload failed: {status} {payload}")
        finally:
            self.token = saved
        return str(gallery_id)

    def start_run(self, gallery_id: str, token: str | None = None) -> str:
        run = self.json(
            "POST", f"/api/v1/galleries/{gallery_id}/runs", {"only_stale": False}, token
        )
        return str(run["id"])

    def run(self, run_id: str, token: str | None = None) -> dict[str, Any]:
        return dict(self.json("GET", f"/api/v1/runs/{run_id}", token=token))

    def wait_run(
        self, run_id: str, token: str | None = None, timeout: float = 3600
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id, token)
            if run["status"] != "running":
                return run
            time.sleep(0.25)
        raise SystemExit(f"run {run_id} did not end in {timeout} s")

    def page(self, path: str) -> float:
        """Seconds to fetch a page, signed in with the service's token."""
        if self._pages is None:
            jar = http.cookiejar.CookieJar()
            self._pages = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            form = self._pages.open(f"{self.base}/login", timeout=30).read().decode()
            csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form)
            fields = {"token": self.token, "csrf_token": csrf.group(1) if csrf else ""}
            data = urllib.parse.urlencode(fields).encode()
            self._pages.open(f"{self.base}/login", data=data, timeout=30).read()
        start = time.perf_counter()
        with self._pages.open(self.base + path, timeout=60) as resp:
            resp.read()
            if resp.status != 200:
                raise SystemExit(f"{path}: {resp.status}")
        return time.perf_counter() - start


@contextmanager
def service(backend: str, **env: str) -> Iterator[Bench]:
    workdir = Path(tempfile.mkdtemp(prefix=f"kseg-bench-sched-{backend}-"))
    bench = Bench(backend, workdir, **env)
    try:
        bench.start()
        yield bench
    finally:
        bench.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_minutes(run: dict[str, Any]) -> float:
    start = datetime.fromisoformat(run["created_at"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(run["finished_at"].replace("Z", "+00:00"))
    return (end - start).total_seconds() / 60


def baby_latency(
    bench: Bench, n: int, seed: int, pause: float = 0.0, until: Callable[[], bool] | None = None
) -> list[float]:
    seconds = []
    for i in range(n):
        if until is not None and until():
            break
        start = time.perf_counter()
        bench.wait(bench.submit(BABY, k=16, seed=seed + i))
        seconds.append(time.perf_counter() - start)
        time.sleep(pause)
    return seconds


# ---------------------------------------------------------------- scenarios


def scenario_latency(backend: str, photos: list[bytes], images: int) -> dict[str, Any]:
    with service(backend) as bench:
        baby_latency(bench, 3, 0)  # warm-up
        idle = baby_latency(bench, 20, 100)
        gallery = bench.gallery(variants(photos, images), k=16)
        run_id = bench.start_run(gallery)
        done = threading.Event()

        def watch() -> None:
            bench.wait_run(run_id)
            done.set()

        threading.Thread(target=watch, daemon=True).start()
        while not done.is_set() and bench.run(run_id)["jobs"]["succeeded"] < 4:
            time.sleep(0.1)  # until the run is under way
        busy = baby_latency(bench, 1000, 1000, pause=1.0, until=done.is_set)
        run = bench.wait_run(run_id)
    return {
        "backend": backend,
        "idle": idle,
        "busy": busy,
        "run": run,
        "run_jobs_per_min": images / run_minutes(run),
    }


def worker_cpu_ms(bench: Bench, before: dict[int, tuple[str, int, float]], jobs: int) -> float:
    return cpu_by_part(bench, before).get("worker", 0.0) / jobs * 1000


def scenario_window(
    backend: str, photos: list[bytes], images: int, trials: int
) -> list[dict[str, Any]]:
    pictures = variants(photos, images)
    out = []
    for trial in range(trials):
        pair: dict[str, Any] = {"trial": trial + 1}
        order = ["2", "0"] if trial % 2 == 0 else ["0", "2"]
        for window in order:
            with service(backend, KSEG_WINDOW_PER_PROCESS=window) as bench:
                gallery = bench.gallery(pictures, k=16)
                before = cpu_snapshot()
                run = bench.wait_run(bench.start_run(gallery))
                key = "with" if window == "2" else "without"
                pair[key] = images / run_minutes(run)
                pair[f"{key}_cpu"] = worker_cpu_ms(bench, before, images)
            print(
                f"  trial {trial + 1}, window {window}: {pair[key]:.1f} jobs/min, worker "
                f"{pair[f'{key}_cpu']:.0f} CPU ms/job",
                flush=True,
            )
        pair["ratio"] = pair["with"] / pair["without"]
        out.append(pair)
    return out


def scenario_fair(backend: str, photos: list[bytes], small: int, big: int) -> dict[str, Any]:
    side = 320
    mine = variants(photos, small, side)
    with service(backend, KSEG_WORKER_CONCURRENCY="1") as bench:
        alone = run_minutes(bench.wait_run(bench.start_run(bench.gallery(mine, k=16))))
    with service(backend) as bench:
        other = bench.kseg("token", "create", "other").splitlines()[0]
        theirs = bench.gallery(variants(photos[::-1], big, side), token=other, k=16)
        gallery = bench.gallery(mine, k=16)
        their_run = bench.start_run(theirs, token=other)
        time.sleep(3)  # theirs is well under way, holding the whole window
        beside_run = bench.wait_run(bench.start_run(gallery))
        theirs_left = bench.run(their_run, token=other)["jobs"]
    return {
        "backend": backend,
        "alone_half": alone,
        "beside": run_minutes(beside_run),
        "their_queued_at_end": theirs_left["queued"],
    }


def scenario_big(backend: str, photos: list[bytes], images: int) -> dict[str, Any]:
    with service(backend) as bench:
        gallery = bench.gallery(variants(photos, images, 96), k=8, outputs=["recolor"])
        run_id = bench.start_run(gallery)
        times: dict[str, list[float]] = {"gallery page": [], "run page": [], "run API": []}
        while True:
            times["gallery page"].append(bench.page(f"/galleries/{gallery}"))
            times["run page"].append(bench.page(f"/runs/{run_id}"))
            start = time.perf_counter()
            run = bench.run(run_id)
            times["run API"].append(time.perf_counter() - start)
            if run["status"] != "running":
                break
            time.sleep(2)
        # Once more, finished.
        times["gallery page"].append(bench.page(f"/galleries/{gallery}"))
        times["run page"].append(bench.page(f"/runs/{run_id}"))
    return {
        "backend": backend,
        "run": run,
        "times": times,
        "jobs_per_min": images / run_minutes(run),
    }


# ---------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def table_head(title: str, columns: str) -> list[str]:
    """A report section's title and the head of its Markdown table (``columns``: the names
    separated by " | ")."""
    return ["", title, "", f"| {columns} |", "|" + "---|" * (columns.count("|") + 1)]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["redis", "embedded", "both"], default="both")
    parser.add_argument(
        "--scenario", choices=["latency", "window", "fair", "big", "all"], default="all"
    )
    parser.add_argument("--images", type=int, default=400, help="1 MP images of the run (400)")
    parser.add_argument("--trials", type=int, default=3, help="paired window trials (3)")
    parser.add_argument("--small", type=int, default=100, help="the small run's images (100)")
    parser.add_argument("--big", type=int, default=2000, help="the big run's images (2000)")
    parser.add_argument("--gallery", type=int, default=5000, help="the big gallery (5000)")
    args = parser.parse_args()
    from kseg.shared.core.openmp import use_passive_openmp

    use_passive_openmp()
    photos = one_megapixel_photos()
    backends = ["redis", "embedded"] if args.backend == "both" else [args.backend]
    wanted = {"latency", "window", "fair", "big"} if args.scenario == "all" else {args.scenario}
    report: list[str] = []

    if "latency" in wanted:
        report += table_head(
            "1. baby.jpg submit → succeeded, idle and while a "
            f"{args.images}-image 1 MP run drains (target during the run: p50 ≤ 1.5 s, "
            "max ≤ 3 s)",
            "backend | idle p50 | idle max | during p50 | during p95 | during max | samples | "
            "run jobs/min | verdict",
        )
        for backend in backends:
            print(f"latency: {backend} …", flush=True)
            r = scenario_latency(backend, photos, args.images)
            busy = r["busy"]
            ok = statistics.median(busy) <= 1.5 and max(busy) <= 3.0
            report.append(
                f"| {backend} | {ms(statistics.median(r['idle']))} | {ms(max(r['idle']))} | "
                f"{ms(statistics.median(busy))} | {ms(pct(busy, 0.95))} | {ms(max(busy))} | "
                f"{len(busy)} | {r['run_jobs_per_min']:.0f} | {'PASS' if ok else 'FAIL'} |"
            )
            print("\n".join(report[-1:]), flush=True)

    if "window" in wanted:
        backend = backends[0]
        print(f"window: {backend}, {args.trials} paired trials …", flush=True)
        trials = scenario_window(backend, photos, args.images, args.trials)
        ratio = statistics.median(t["ratio"] for t in trials)
        report += table_head(
            f"2. The {args.images}-image 1 MP run with and without the window "
            f"({backend}; target: median ratio ≥ 0.9)",
            "trial | with: jobs/min | without: jobs/min | ratio | worker CPU ms/job with | without",
        )
        for t in trials:
            report.append(
                f"| {t['trial']} | {t['with']:.1f} | {t['without']:.1f} | "
                f"{t['ratio']:.2f} | {t['with_cpu']:.0f} | {t['without_cpu']:.0f} |"
            )
        report.append(f"\nmedian ratio {ratio:.2f}: {'PASS' if ratio >= 0.9 else 'FAIL'}")

    if "fair" in wanted:
        report += table_head(
            f"3. A {args.small}-image run beside another owner's {args.big}-image "
            "run, against it alone with half the workers (target: ≤ 1.5×)",
            "backend | alone, 1 process | beside the big run, 2 processes | ratio | "
            "big run's jobs still queued | verdict",
        )
        for backend in backends:
            print(f"fair: {backend} …", flush=True)
            r = scenario_fair(backend, photos, args.small, args.big)
            ratio = r["beside"] / r["alone_half"]
            report.append(
                f"| {backend} | {r['alone_half'] * 60:.1f} s | {r['beside'] * 60:.1f} s | "
                f"{ratio:.2f} | {r['their_queued_at_end']} | "
                f"{'PASS' if ratio <= 1.5 else 'FAIL'} |"
            )
            print(report[-1], flush=True)

    if "big" in wanted:
        report += table_head(
            f"4. A {args.gallery}-image gallery (96 px images) runs to the end; its "
            "pages timed every 2 s while it drains and once after (target: < 1 s)",
            "backend | run | jobs/min | gallery page max | run page max | run API max | verdict",
        )
        for backend in backends:
            print(f"big: {backend} …", flush=True)
            r = scenario_big(backend, photos, args.gallery)
            worst = {name: max(values) for name, values in r["times"].items()}
            ok = r["run"]["status"] == "succeeded" and max(worst.values()) < 1.0
            report.append(
                f"| {backend} | {r['run']['status']} {r['run']['jobs']['succeeded']}/"
                f"{r['run']['jobs']['total']} | {r['jobs_per_min']:.0f} | "
                f"{ms(worst['gallery page'])} | {ms(worst['run page'])} | "
                f"{ms(worst['run API'])} | {'PASS' if ok else 'FAIL'} |"
            )
            print(report[-1], flush=True)

    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
