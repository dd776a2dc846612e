"""Operations endpoints: ``/healthz`` (liveness), ``/readyz`` (database, broker, workers) and
``/metrics`` (Prometheus text, read from the database on every scrape)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.sansio.blueprints import BlueprintSetupState
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import func, select, text

from kseg.shared.messaging.celery_config import broker_dirs, celery_config
from kseg.shared.settings import TRUE, Settings
from kseg.shared.statuses import JOB_STATUSES, JobStatus
from kseg.shared.store.db import get_engine, get_sessionmaker
from kseg.shared.store.dispatch import queue_stats
from kseg.shared.store.jobs import job_counts
from kseg.shared.store.models import Job, WorkerHeartbeat, utcnow
from kseg.web.common.apidoc import json_response, operation, query, ref

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
DURATION_WINDOW = timedelta(hours=24)


def _settings(app: Flask | None = None) -> Settings:
    settings: Settings = (app or current_app).config["KSEG_SETTINGS"]
    return settings


def _why(exc: BaseException) -> str:
    text_ = " ".join(str(exc).split()) or type(exc).__name__
    return f"error: {type(exc).__name__}: {text_[:300]}"


# ---------------------------------------------------------------- health and readiness


@bp.get("/healthz")
@operation(
    "healthz",
    "Liveness: 200 while the process serves",
    tag="operations",
    public=True,
    responses={"200": json_response(ref("Health"), "Alive.")},
)
def healthz() -> Response:
    return jsonify({"status": "ok"})


def check_database(settings: Settings) -> str:
    try:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return _why(exc)
    return "ok"


def check_broker(settings: Settings) -> str:
    url = settings.broker_url
    if url.startswith("filesystem://"):
        try:
            for folder in sorted(set(broker_dirs(settings).values())):
                Path(folder).mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=folder, prefix=".readyz-"):
                    pass
        except OSError as exc:
            return _why(exc)
        return "ok"
    from kombu import Connection

    options = dict(celery_config(settings)["broker_transport_options"])
    try:
        with Connection(url, connect_timeout=2, transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=2)
    except Exception as exc:
        return _why(exc)
    return "ok"


def fresh_workers(settings: Settings) -> int:
    since = utcnow() - timedelta(seconds=settings.heartbeat_stale_after)
    session = get_sessionmaker(settings.database_url)()
    try:
        return int(
            session.scalar(
                select(func.count())
                .select_from(WorkerHeartbeat)
                .where(WorkerHeartbeat.seen_at >= since)
            )
            or 0
        )
    finally:
        session.close()


@bp.get("/readyz")
@operation(
    "readyz",
    "Readiness: 200 when the database and the broker answer",
    tag="operations",
    description="With `?workers=1`, also 503 when no worker heart-beat recently.",
    public=True,
    parameters=[
        query(
            "workers", "1: also require a fresh worker heartbeat.", type="string", enum=["0", "1"]
        )
    ],
    responses={
        "200": json_response(ref("Ready"), "Ready."),
        "503": json_response(ref("Ready"), "Not ready; each check says why."),
    },
)
def readyz() -> tuple[Response, int]:
    """200 when the database and the broker answer, else 503 saying which failed. Worker
    heartbeats are reported; with ``?workers=1`` none being fresh is also a 503."""
    settings = _settings()
    database = check_database(settings)
    broker = check_broker(settings)
    body: dict[str, Any] = {"database": database, "broker": broker}
    workers_required = request.args.get("workers", "").strip().lower() in TRUE
    count: int | None = None
    if database == "ok":
        try:
            count = fresh_workers(settings)
        except Exception as exc:  # e.g. not migrated
            body["workers"] = _why(exc)
        else:
            stale = f"{settings.heartbeat_stale_after:g}s"
            body["workers"] = (
                f"ok: {count} fresh" if count else f"none: no worker heartbeat within {stale}"
            )
    else:
        body["workers"] = "unknown: database unavailable"
    body["fresh_workers"] = count
    ready = database == "ok" and broker == "ok"
    if workers_required and not count:
        ready = False
    body = {"status": "ready" if ready else "not_ready", **body}
    return jsonify(body), 200 if ready else 503


# ---------------------------------------------------------------- metrics


class JobsCollector:
    """Reads the database on each scrape, so every web process reports the same numbers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("kseg_up", "")
        yield GaugeMetricFamily("kseg_jobs", "", labels=["status"])
        yield GaugeMetricFamily("kseg_queue_depth", "", labels=["queue"])
        yield GaugeMetricFamily("kseg_queue_oldest_seconds", "", labels=["queue"])
        yield GaugeMetricFamily("kseg_queue_dispatched", "", labels=["queue"])
        yield GaugeMetricFamily("kseg_workers", "")
        yield HistogramMetricFamily("kseg_job_duration_seconds", "")

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("kseg_up", "1 when the database answered this scrape.")
        session = get_sessionmaker(self.settings.database_url)()
        try:
            counts = job_counts(session)
            queues = queue_stats(session)
            since = utcnow() - timedelta(seconds=self.settings.heartbeat_stale_after)
            workers = session.scalar(
                select(func.count())
                .select_from(WorkerHeartbeat)
                .where(WorkerHeartbeat.seen_at >= since)
            )
            window = utcnow() - DURATION_WINDOW
            spans = session.execute(
                select(Job.started_at, Job.finished_at).where(
                    Job.status.in_((JobStatus.SUCCEEDED, JobStatus.FAILED)),
                    Job.reused_from.is_(None),
                    Job.started_at.is_not(None),
                    Job.finished_at >= window,
                )
            ).all()
        except Exception as exc:
            log.warning("metrics: database unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        finally:
            session.close()
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("kseg_jobs", "Jobs by status.", labels=["status"])
        for status in JOB_STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        depth = GaugeMetricFamily(
            "kseg_queue_depth",
            "Jobs queued and not yet started, by class of work (interactive: submitted one by "
            "one; batch: made by gallery runs).",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "kseg_queue_oldest_seconds",
            "Age of the oldest queued job, by class of work (0 when none waits).",
            labels=["queue"],
        )
        in_broker = GaugeMetricFamily(
            "kseg_queue_dispatched",
            "Queued jobs handed to the broker (the dispatch window's waiting part), by class.",
            labels=["queue"],
        )
        for queue, stats in queues.items():
            depth.add_metric([queue], stats["waiting"])
            oldest.add_metric([queue], stats["oldest_seconds"])
            in_broker.add_metric([queue], stats["in_broker"])
        yield depth
        yield oldest
        yield in_broker
        alive = GaugeMetricFamily("kseg_workers", "Worker processes with a fresh heartbeat.")
        alive.add_metric([], int(workers or 0))
        yield alive
        durations = [
            max(0.0, (end - start).total_seconds()) for start, end in spans if start and end
        ]
        buckets: list[tuple[str, float]] = []
        for bound in DURATION_BUCKETS:
            buckets.append((repr(bound), sum(1 for d in durations if d <= bound)))
        buckets.append(("+Inf", len(durations)))
        hist = HistogramMetricFamily(
            "kseg_job_duration_seconds",
            "Run time (started to finished) of jobs computed in the last 24 hours.",
            buckets=buckets,
            sum_value=sum(durations),
        )
        yield hist


@bp.record_once
def _on_register(state: BlueprintSetupState) -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(JobsCollector(_settings(state.app)))  # type: ignore[arg-type]
    state.app.extensions["kseg_metrics_registry"] = registry


@bp.get("/metrics")
@operation(
    "metrics",
    "Prometheus metrics: jobs by status, queue depth, job durations",
    tag="operations",
    public=True,
    responses={
        "200": {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics() -> Response:
    registry: CollectorRegistry = current_app.extensions["kseg_metrics_registry"]
    return Response(
        generate_latest(registry),
        mimetype=CONTENT_TYPE_LATEST.split(";")[0],
        headers={"Cache-Control": "no-store"},
    )


__all__ = ["bp", "check_broker", "check_database"]
