#!/usr/bin/env python
"""What a job costs the worker, against what the core alone costs, on the same jobs.

One worker process with one core thread (``KSEG_WORKER_CONCURRENCY=1``,
``KSEG_CORE_THREADS=1``) runs ``--jobs`` distinct ~1 MP jobs (five real photos × seeds, k=16,
every output); a plain process set up as the worker sets up its processes
(``use_passive_openmp``, ``prepare_for_many_jobs``, one thread) runs the same jobs right before
and right after (this machine's speed drifts). Both first run ``--warmup`` jobs that are not
counted. Per job it prints, for the worker's pool process (read from ``/proc``) and for the
plain process (``getrusage``): CPU time (user, system), minor page faults, voluntary and
involuntary context switches, and the core's own wall time (the job's ``timings_ms.total``
in the worker). CPU time is the figure to compare: wall time moves with whatever else runs.

    python bench/bench_worker_cpu.py                     # PostgreSQL + Redis
    python bench/bench_worker_cpu.py --backend embedded  # SQLite + the filesystem broker
    python bench/bench_worker_cpu.py --env KSEG_X=1      # a setting for the worker (A/B)
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import Service, one_megapixel_photos  # noqa: E402

K = 16
FIELDS = (
    "cpu_ms",
    "user_ms",
    "sys_ms",
    "main_ms",
    "core_cpu_ms",
    "minflt",
    "vcsw",
    "ivcsw",
    "core_ms",
)


def _usage() -> dict[str, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    main = resource.getrusage(resource.RUSAGE_THREAD)
    return {
        "user_ms": ru.ru_utime * 1000,
        "sys_ms": ru.ru_stime * 1000,
        "main_ms": (main.ru_utime + main.ru_stime) * 1000,
        "minflt": ru.ru_minflt,
        "vcsw": ru.ru_nvcsw,
        "ivcsw": ru.ru_nivcsw,
    }


def _core_alone(
    jobs: list[tuple[bytes, int]], warmup: int, perf: str | None = None
) -> dict[str, float]:
    """In a fresh (spawned) process set up as a worker's: per-job usage of the counted jobs."""
    from kseg.shared.core.openmp import use_passive_openmp

    use_passive_openmp()
    from kseg.shared.core.params import parse_params
    from kseg.shared.core.segment import prepare_for_many_jobs, segment
    from kseg.shared.settings import get_settings

    prepare_for_many_jobs(get_settings().malloc_retain_bytes)
    for data, seed in jobs[:warmup]:
        segment(data, parse_params(k=K, seed=seed), n_threads=1)
    recorder = _perf_record(os.getpid(), perf) if perf else None
    before = _usage()
    core = core_cpu = 0.0
    for data, seed in jobs[warmup:]:
        timings = segment(data, parse_params(k=K, seed=seed), n_threads=1).result["timings_ms"]
        core += timings["total"]
        core_cpu += timings["cpu"]
    after = _usage()
    _perf_stop(recorder)
    n = len(jobs) - warmup
    out = {key: (after[key] - before[key]) / n for key in before}
    out["cpu_ms"] = out["user_ms"] + out["sys_ms"]
    out["core_ms"] = core / n
    out["core_cpu_ms"] = core_cpu / n
    return out


def core_alone(
    jobs: list[tuple[bytes, int]], warmup: int, perf: str | None = None
) -> dict[str, float]:
    with get_context("spawn").Pool(1) as pool:
        return pool.apply(_core_alone, (jobs, warmup, perf))


def _perf_record(pid: int, output: str) -> subprocess.Popen[bytes]:
    """``perf record`` of one process (software clock: no hardware counters needed), or
    py-spy's (Python stacks, collapsed) for an output ending in ``.txt``."""
    if output.endswith(".txt"):
        command = ["py-spy", "record", "--pid", str(pid), "--rate", "500", "--format", "raw"]
        command += ["--nonblocking", "--output", output]
    else:
        command = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g"]
        command += ["-p", str(pid), "-o", output]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # perf attaches asynchronously; the batch is seconds long
    return proc


def _perf_stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def _proc_usage(pid: int) -> dict[str, float]:
    """A process's usage so far, from ``/proc/<pid>/stat`` and ``status``."""
    tick = os.sysconf("SC_CLK_TCK")
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()  # fields[0] is stat(5)'s 3rd field
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    main = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    main_fields = main[main.rindex(")") + 2 :].split()
    main_ms = (int(main_fields[11]) + int(main_fields[12])) / tick * 1000
    return {
        "user_ms": int(fields[11]) / tick * 1000,
        "sys_ms": int(fields[12]) / tick * 1000,
        "main_ms": main_ms,
        "minflt": int(fields[7]),
        "vcsw": int(status["voluntary_ctxt_switches"]),
        "ivcsw": int(status["nonvoluntary_ctxt_switches"]),
    }


def pool_process(service: Service) -> int:
    """The worker's one pool process: the child of Celery's main process."""
    worker = service.procs[1].pid  # `kseg worker` execs celery: same pid
    children = Path(f"/proc/{worker}/task/{worker}/children").read_text().split()
    if len(children) != 1:
        raise SystemExit(f"expected one pool process under the worker, found {children}")
    return int(children[0])


def run_batch(service: Service, jobs: list[tuple[bytes, int]]) -> list[dict[str, Any]]:
    ids = [service.submit(data, k=K, seed=seed) for data, seed in jobs]
    return [service.wait(job_id, interval=0.25) for job_id in ids]


def in_worker(
    backend: str,
    jobs: list[tuple[bytes, int]],
    warmup: int,
    env: dict[str, str],
    perf: str | None = None,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="kseg-bench-cpu-") as tmp:
        service = Service(backend, Path(tmp), concurrency=1, KSEG_CORE_THREADS="1", **env)
        try:
            service.start()
            run_batch(service, jobs[:warmup])
            pid = pool_process(service)
            recorder = _perf_record(pid, perf) if perf else None
            before = _proc_usage(pid)
            done = run_batch(service, jobs[warmup:])
            after = _proc_usage(pid)
            _perf_stop(recorder)
        finally:
            service.stop()
    n = len(jobs) - warmup
    out = {key: (after[key] - before[key]) / n for key in before}
    out["cpu_ms"] = out["user_ms"] + out["sys_ms"]
    out["core_ms"] = statistics.fmean(job["result"]["timings_ms"]["total"] for job in done)
    out["core_cpu_ms"] = statistics.fmean(job["result"]["timings_ms"]["cpu"] for job in done)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("redis", "embedded"), default="redis")
    parser.add_argument("--jobs", type=int, default=40, help="counted jobs (40)")
    parser.add_argument("--warmup", type=int, default=5, help="uncounted jobs first (5)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the service's processes (repeatable), e.g. to compare a change",
    )
    parser.add_argument(
        "--perf",
        metavar="DIR",
        help="also profile the counted jobs with `perf record` into DIR (worker.data, "
        "alone.data; read them with `perf report -i`)",
    )
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="with --perf: profile with py-spy (Python and native stacks, collapsed, "
        "worker.txt and alone.txt) instead of perf",
    )
    args = parser.parse_args()
    perf = {}
    if args.perf:
        Path(args.perf).mkdir(parents=True, exist_ok=True)
        suffix = ".txt" if args.py_spy else ".data"
        perf = {name: str(Path(args.perf, name + suffix)) for name in ("worker", "alone")}
    env = dict(item.split("=", 1) for item in args.env)
    photos = one_megapixel_photos()
    total = args.warmup + args.jobs
    jobs = [(photos[i % len(photos)], 1000 + i) for i in range(total)]

    rows = [("core alone, before", core_alone(jobs, args.warmup, perf.get("alone")))]
    rows.append(
        (
            f"worker ({args.backend})",
            in_worker(args.backend, jobs, args.warmup, env, perf.get("worker")),
        )
    )
    rows.append(("core alone, after", core_alone(jobs, args.warmup)))

    print(f"\n{args.jobs} jobs at k={K}, ~1 MP, one process, one core thread; per job:")
    print(
        "| | CPU ms | user ms | sys ms | main thread ms | core CPU ms | minor faults "
        "| vol. switches | invol. switches | core wall ms |"
    )
    print("|---" * (len(FIELDS) + 1) + "|")
    for name, row in rows:
        print(
            f"| {name} | "
            + " | ".join(f"{row[f]:.1f}" if f.endswith("ms") else f"{row[f]:.0f}" for f in FIELDS)
            + " |"
        )
    alone = statistics.fmean(row["cpu_ms"] for name, row in rows if name.startswith("core"))
    worker = rows[1][1]["cpu_ms"]
    print(
        f"\nworker CPU per job / core alone's: {worker:.1f} / {alone:.1f} ms = "
        f"{worker / alone:.2f}× (target ≤ 1.10×)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
