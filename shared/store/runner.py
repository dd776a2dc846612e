"""Running one job: claim the row, run the core, store the result — framework-free.

The Celery task in ``worker/tasks.py`` is a thin wrapper around :func:`run_job`, so the same
code can run (and be tested) without a broker.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError

from kseg.shared.core.params import SegmentParams
from kseg.shared.errors import KsegError
from kseg.shared.settings import Settings
from kseg.shared.store import jobs
from kseg.shared.store.db import get_beat_sessionmaker, get_worker_sessionmaker
from kseg.shared.store.events import delivery_id, run_delivery
from kseg.shared.store.models import Job

log = logging.getLogger(__name__)

#: Seconds between progress writes within one stage (stage changes are always written).
PROGRESS_EVERY = 0.25
#: Seconds before the first progress write: the claim and the completion already bracket a
#: job that ends sooner, and its in-between writes would only cost (a 1 MP job takes ~0.2 s).
PROGRESS_DELAY = 0.2

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


class _Monitor:
    """Writes one job's progress and heartbeat from a side thread while the core runs.

    The core only records its progress in memory (:meth:`report`); the database round trips
    happen on the process's monitor thread (:class:`_MonitorThread`), off the computing
    thread (numpy releases the GIL), so they cost the job no time. After ``PROGRESS_DELAY``
    s, a stage change is written at once, progress within a stage at most every
    ``PROGRESS_EVERY`` s, and a bare heartbeat every ``heartbeat_interval`` s, which lets
    the sweeper tell a busy worker from a dead one.
    """

    def __init__(self, settings: Settings, job_id: str, worker: str) -> None:
        self.settings, self.job_id, self.worker = settings, job_id, worker
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.lock = threading.Lock()
        #: Held while a write is on its way; :meth:`stop` waits for it, never for the thread.
        self.writing = threading.Lock()
        self.pending: tuple[str, int] | None = None
        self.lost = False

    def start(self) -> None:
        _MonitorThread.serve(self)

    def report(self, stage: str, percent: int) -> None:
        with self.lock:
            changed = self.pending is None or self.pending[0] != stage
            self.pending = (stage, percent)
        if changed:
            self.wake.set()

    def run(self) -> None:
        """Write until stopped (on the monitor thread)."""
        maker = get_beat_sessionmaker(self.settings.database_url)
        written: tuple[str, int] | None = None
        last_write = time.monotonic()  # the claim has just beaten
        if self.stop_event.wait(PROGRESS_DELAY):
            return
        self.wake.set()  # write whatever stage was reached meanwhile
        while not self.stop_event.is_set():
            self.wake.wait(min(PROGRESS_EVERY, self.settings.heartbeat_interval))
            self.wake.clear()
            with self.lock:
                pending = self.pending
            now = time.monotonic()
            fresh = pending is not None and pending != written
            if not fresh and now - last_write < self.settings.heartbeat_interval:
                continue
            with self.writing:
                if self.stop_event.is_set():
                    return
                try:
                    with maker() as session:
                        if fresh and pending is not None:
                            jobs.report_progress(session, self.job_id, self.worker, *pending)
                            written = pending
                        elif not jobs.touch_job(session, self.job_id, self.worker):
                            raise jobs.JobLostError(self.job_id)
                    last_write = now
                except jobs.JobLostError:
                    self.lost = True  # canceled or taken over: completing will be refused
                    return
                except Exception:  # a hiccup must not kill the monitor; the next beat retries
                    log.warning("job heartbeat failed for %s", self.job_id, exc_info=True)

    def stop(self) -> None:
        """No write of this job's after this returns: waits for one on its way (at most
        5 s, as long as a stalled database may take), never for the thread."""
        self.stop_event.set()
        self.wake.set()
        if self.writing.acquire(timeout=5):
            self.writing.release()


class _MonitorThread(threading.Thread):
    """A monitor thread, serving one :class:`_Monitor` at a time and then the next.

    Threads are kept and reused (one per job running at once in the process: one in a
    worker process): starting a thread per job made each job wait for the new thread to be
    scheduled, ~1 ms between two jobs when both CPUs are busy.
    """

    _idle: ClassVar[list[_MonitorThread]] = []
    _guard = threading.Lock()

    def __init__(self) -> None:
        super().__init__(name="kseg-monitor", daemon=True)
        self.pid = os.getpid()
        self.jobs: queue.SimpleQueue[_Monitor] = queue.SimpleQueue()

    @classmethod
    def serve(cls, monitor: _Monitor) -> None:
        with cls._guard:
            # A forked child inherits the list but not the threads.
            cls._idle[:] = [t for t in cls._idle if t.pid == os.getpid() and t.is_alive()]
            thread = cls._idle.pop() if cls._idle else None
        if thread is None:
            thread = cls()
            thread.start()
        thread.jobs.put(monitor)

    def run(self) -> None:
        while True:
            monitor = self.jobs.get()
            try:
                monitor.run()
            except Exception:  # pragma: no cover - run() handles its own errors
                log.exception("job monitor failed for %s", monitor.job_id)
            with self._guard:
                self._idle.append(self)


def run_job(
    job_id: str,
    *,
    settings: Settings,
    worker: str | None = None,
    timeout_errors: tuple[type[BaseException], ...] = (),
    segment_fn: Callable[..., Any] | None = None,
    on_events: Callable[[list[str]], None] | None = None,
) -> str:
    """Run job ``job_id`` to its end if it is this worker's to run.

    ``on_events`` is called, after the commits, with the ids of the webhook deliveries the
    job's end (and its run's) may have recorded, for the caller to wake the senders up.

    Returns the outcome: ``"succeeded"``, ``"failed"``, ``"finished"`` (already done: a
    duplicate message), ``"busy"`` (another live worker holds it), ``"exhausted"`` (attempts
    used up, now failed), ``"missing"`` or ``"lost"`` (canceled or taken over meanwhile).
    Transient database errors propagate, for the caller to retry with backoff.
    """
    from kseg.shared.core.segment import segment

    segment_fn = segment_fn or segment
    worker = worker or worker_name()
    # The claim is one guarded statement (on PostgreSQL with the image read in it), so it
    # needs no transaction around it: on an autocommit connection it costs one round trip
    # instead of three (BEGIN, the statement, COMMIT), all between two jobs of this process.
    with get_beat_sessionmaker(settings.database_url)() as session:

        def claim_for(dead_workers: list[str]) -> jobs.Claim:
            return jobs.claim_job(
                session,
                job_id,
                worker,
                max_attempts=settings.max_attempts,
                stale_after=settings.heartbeat_stale_after,
                dead_workers=dead_workers,
                with_image=True,
            )

        claim = claim_for([])
        if claim.reason == "busy":
            holder = session.scalar(select(Job.worker).where(Job.id == job_id))
            # Our own name as holder means an earlier attempt in this very process gave up
            # (a transient error), so nobody is running it now; a dead pid on this host
            # will not heart-beat again either.
            if holder and (holder == worker or _pid_dead(holder)):
                claim = claim_for([holder])
        data = claim.image_data
    if not claim.claimed:
        log.info("job %s not run: %s", job_id, claim.reason)
        if claim.reason == "exhausted":
            run_event = _refresh_run_of(settings, job_id)
            _announce(on_events, [delivery_id(job_id, "job.failed"), run_event])
        return claim.reason
    if data is None:  # the image row went with its job: nothing left to run
        return "missing"
    params = SegmentParams.model_validate(claim.params)

    monitor = _Monitor(settings, job_id, worker)
    monitor.start()
    started = time.perf_counter()
    outcome = "lost"
    run_event = None
    try:
        outcome = _run_core(
            job_id,
            worker,
            settings,
            data,
            params,
            claim,
            monitor,
            segment_fn,
            timeout_errors,
            started,
        )
        return outcome
    finally:
        monitor.stop()
        if claim.run_id:
            run_event = _refresh_run(settings, claim.run_id)
        if claim.webhook_url and outcome in ("succeeded", "failed"):
            _announce(on_events, [delivery_id(job_id, f"job.{outcome}"), run_event])
        elif run_event:
            _announce(on_events, [run_event])


def _announce(on_events: Callable[[list[str]], None] | None, ids: list[str | None]) -> None:
    wanted = [ident for ident in ids if ident]
    if on_events is not None and wanted:
        try:
            on_events(wanted)
        except Exception:  # the webhook sweep wakes them up anyway
            log.warning("could not announce webhook deliveries %s", wanted, exc_info=True)


def _refresh_run_of(settings: Settings, job_id: str) -> str | None:
    """Recount the job's gallery run, if it belongs to one."""
    with get_worker_sessionmaker(settings.database_url)() as session:
        run_id = session.scalar(select(Job.run_id).where(Job.id == job_id))
    return _refresh_run(settings, run_id) if run_id else None


def _refresh_run(settings: Settings, run_id: str) -> str | None:
    """Recount a gallery run (ending it with its last job); the id of its ``run.finished``
    delivery once it has ended and wants one."""
    from kseg.shared.store.runs import refresh_run

    try:
        with get_worker_sessionmaker(settings.database_url).begin() as session:
            run = refresh_run(session, run_id)
            return run_delivery(run)
    except Exception:  # the sweeper recounts open runs too
        log.warning("could not refresh run %s", run_id, exc_info=True)
        return None


def _run_core(
    job_id: str,
    worker: str,
    settings: Settings,
    data: bytes,
    params: SegmentParams,
    claim: jobs.Claim,
    monitor: _Monitor,
    segment_fn: Callable[..., Any],
    timeout_errors: tuple[type[BaseException], ...],
    started: float,
) -> str:
    maker = get_worker_sessionmaker(settings.database_url)
    try:
        seg = segment_fn(
            data,
            params,
            max_pixels=settings.max_image_pixels,
            progress=monitor.report,
            n_threads=settings.threads_per_job(settings.worker_concurrency),
        )
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        timings = dict(seg.result.get("timings_ms") or {})
        timings.setdefault("total", elapsed_ms)
        monitor.stop()  # its last write must not race the completion
        with maker.begin() as session:
            jobs.complete_job(session, job_id, worker, seg, timings, claim=claim)
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
        with get_worker_sessionmaker(settings.database_url).begin() as session:
            jobs.release_job(session, job_id, worker)
    except Exception:  # the database is what failed; the sweeper or the retry will cope
        log.warning("could not release job %s after a transient error", job_id, exc_info=True)
