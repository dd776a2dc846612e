"""Running one job: claim the row, run the core, store the result — framework-free.

The Celery task in ``worker/tasks.py`` is a thin wrapper around :func:`run_job`, so the same
code can run (and be tested) without a broker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError

from shared import jobs
from shared.db import get_sessionmaker
from shared.errors import KsegError
from shared.models import Image, Job
from shared.params import SegmentParams
from shared.settings import Settings

log = logging.getLogger(__name__)

#: Exceptions that mean "try again later" rather than "this job is bad".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, DBAPIError)


def worker_name() -> str:
    """``host:pid`` of this process: identifies the holder of a running job."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_dead(name: str | None) -> bool:
    """Whether ``host:pid`` names a process on this host that no longer exists."""
    if not name or ":" not in name:
        return False
    host, _, pid_text = name.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class _Heartbeat(threading.Thread):
    """Keeps ``jobs.heartbeat_at`` fresh while the core runs, so the sweeper can tell a busy
    worker from a dead one."""

    def __init__(self, settings: Settings, job_id: str, worker: str) -> None:
        super().__init__(name=f"kseg-heartbeat-{job_id[:8]}", daemon=True)
        self.settings, self.job_id, self.worker = settings, job_id, worker
        self.stop_event = threading.Event()
        self.lost = False

    def run(self) -> None:
        maker = get_sessionmaker(self.settings.database_url)
        while not self.stop_event.wait(self.settings.heartbeat_interval):
            try:
                with maker.begin() as session:
                    if not jobs.touch_job(session, self.job_id, self.worker):
                        self.lost = True
                        return
            except Exception:  # a hiccup must not kill the beat; the next one retries
                log.warning("job heartbeat failed for %s", self.job_id, exc_info=True)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)


def run_job(
    job_id: str,
    *,
    settings: Settings,
    worker: str | None = None,
    timeout_errors: tuple[type[BaseException], ...] = (),
    segment_fn: Callable[..., Any] | None = None,
) -> str:
    """Run job ``job_id`` to its end if it is this worker's to run.

    Returns the outcome: ``"succeeded"``, ``"failed"``, ``"finished"`` (already done: a
    duplicate message), ``"busy"`` (another live worker holds it), ``"exhausted"`` (attempts
    used up, now failed), ``"missing"`` or ``"lost"`` (canceled or taken over meanwhile).
    Transient database errors propagate, for the caller to retry with backoff.
    """
    from shared.segment import segment

    segment_fn = segment_fn or segment
    worker = worker or worker_name()
    maker = get_sessionmaker(settings.database_url)

    with maker.begin() as session:
        holder = session.scalar(select(Job.worker).where(Job.id == job_id))
        # Our own name as holder means an earlier attempt in this very process gave up
        # (a transient error), so nobody is running it now.
        dead = [holder] if holder and (holder == worker or _pid_dead(holder)) else []
        claim = jobs.claim_job(
            session,
            job_id,
            worker,
            max_attempts=settings.max_attempts,
            stale_after=settings.heartbeat_stale_after,
            dead_workers=dead,
        )
    if not claim.claimed:
        log.info("job %s not run: %s", job_id, claim.reason)
        if claim.reason == "exhausted":
            _refresh_run_of(settings, job_id)
        return claim.reason

    with maker() as session:
        row = session.execute(
            select(Job.params, Image.data)
            .join(Image, Job.image_id == Image.id)
            .where(Job.id == job_id)
        ).one()
        params = SegmentParams.model_validate(row.params)
        data: bytes = row.data

    last = {"stage": "", "percent": -1, "at": 0.0}

    def progress(stage: str, percent: int) -> None:
        now = time.monotonic()
        # Throttled: a row update per stage change or per 5 %, not per callback.
        if stage == last["stage"] and percent - int(last["percent"]) < 5 and percent < 100:
            return
        last.update(stage=stage, percent=percent, at=now)
        with maker.begin() as session:
            jobs.report_progress(session, job_id, worker, stage, percent)

    beat = _Heartbeat(settings, job_id, worker)
    beat.start()
    started = time.perf_counter()
    try:
        return _run_core(
            job_id, worker, settings, data, params, progress, segment_fn, timeout_errors, started
        )
    finally:
        beat.stop()
        _refresh_run_of(settings, job_id)


def _refresh_run_of(settings: Settings, job_id: str) -> None:
    """Recount the job's gallery run, if it belongs to one (ending the run with its last job)."""
    from shared.galleries import refresh_run

    try:
        with get_sessionmaker(settings.database_url).begin() as session:
            run_id = session.scalar(select(Job.run_id).where(Job.id == job_id))
            if run_id:
                refresh_run(session, run_id)
    except Exception:  # the sweeper recounts open runs too
        log.warning("could not refresh the run of job %s", job_id, exc_info=True)


def _run_core(
    job_id: str,
    worker: str,
    settings: Settings,
    data: bytes,
    params: SegmentParams,
    progress: Callable[[str, int], None],
    segment_fn: Callable[..., Any],
    timeout_errors: tuple[type[BaseException], ...],
    started: float,
) -> str:
    maker = get_sessionmaker(settings.database_url)
    try:
        seg = segment_fn(data, params, max_pixels=settings.max_image_pixels, progress=progress)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        timings = dict(seg.result.get("timings_ms") or {})
        timings.setdefault("total", elapsed_ms)
        with maker.begin() as session:
            jobs.complete_job(session, job_id, worker, seg, timings)
        return "succeeded"
    except jobs.JobLostError:
        log.info("job %s was canceled or taken over while running", job_id)
        return "lost"
    except KsegError as exc:
        with maker.begin() as session:
            jobs.fail_job(session, job_id, exc.code, exc.message, worker=worker)
        return "failed"
    except timeout_errors:
        with maker.begin() as session:
            jobs.fail_job(
                session,
                job_id,
                "timeout",
                f"The job ran longer than {settings.task_soft_time_limit} s and was stopped. "
                "Try a smaller max_side or a smaller k.",
                worker=worker,
            )
        return "failed"
    except TRANSIENT_ERRORS:
        _release_quietly(settings, job_id, worker)
        raise
    except MemoryError:
        with maker.begin() as session:
            jobs.fail_job(
                session,
                job_id,
                "out_of_memory",
                "The worker ran out of memory on this image. Try a smaller max_side.",
                worker=worker,
            )
        return "failed"
    except Exception as exc:
        log.exception("job %s failed unexpectedly", job_id)
        with maker.begin() as session:
            jobs.fail_job(
                session,
                job_id,
                "internal_error",
                f"The segmentation failed unexpectedly ({type(exc).__name__}). "
                "This is a bug in kseg; please report it with the job id.",
                worker=worker,
            )
        return "failed"


def _release_quietly(settings: Settings, job_id: str, worker: str) -> None:
    try:
        with get_sessionmaker(settings.database_url).begin() as session:
            jobs.release_job(session, job_id, worker)
    except Exception:  # the database is what failed; the sweeper or the retry will cope
        log.warning("could not release job %s after a transient error", job_id, exc_info=True)
