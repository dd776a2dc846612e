"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kseg.shared.store.db import session_scope
from kseg.shared.store.models import WorkerHeartbeat, utcnow
from tests.conftest import free_port
from tests.service.test_api_common import BACKENDS, Api, make_api, tiny_png


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Api:
    return make_api(request, tmp_path, request.param, fresh_db=True)


def test_healthz(api: Api) -> None:
    r = api.client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


def test_readyz_when_everything_answers(api: Api) -> None:
    r = api.client.get("/readyz")
    body = r.get_json()
    assert r.status_code == 200, body
    assert body["status"] == "ready" and body["database"] == "ok" and body["broker"] == "ok"
    assert body["fresh_workers"] == 0 and body["workers"].startswith("none")


def test_readyz_workers_param_needs_a_fresh_heartbeat(api: Api) -> None:
    r = api.client.get("/readyz?workers=1")
    assert r.status_code == 503 and r.get_json()["status"] == "not_ready"
    with session_scope(api.settings.database_url) as session:
        session.add(WorkerHeartbeat(hostname="w1@test", pid=1, seen_at=utcnow()))
    r = api.client.get("/readyz?workers=1")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["fresh_workers"] == 1 and r.get_json()["workers"].startswith("ok")


@pytest.mark.parametrize("backend", BACKENDS)
def test_readyz_503_when_broker_is_unreachable(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    api = make_api(request, tmp_path, backend, broker_url=dead)
    started = time.monotonic()
    r = api.client.get("/readyz")
    assert time.monotonic() - started < 10, "the probe is bounded"
    body = r.get_json()
    assert r.status_code == 503, body
    assert body["database"] == "ok" and body["broker"].startswith("error")
    if backend != "sqlite":
        return  # (a publish to a dead broker takes seconds to give up: check it once)
    # The API still accepts work: the job row is stored and the sweeper enqueues it later.
    job = api.submit(tiny_png(1))
    assert job.status_code == 202 and job.get_json()["status"] == "queued"


def test_readyz_503_when_database_is_unreachable(tmp_path: Path) -> None:
    from kseg.web import create_app
    from tests.conftest import service_env, settings_from

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none"
    env = service_env(url, "filesystem://", tmp_path / "instance")
    client = create_app({"TESTING": True}, settings=settings_from(env)).test_client()
    r = client.get("/readyz")
    body = r.get_json()
    assert r.status_code == 503 and body["database"].startswith("error") and body["broker"] == "ok"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.get_data(as_text=True))}
    assert families["kseg_up"].samples[0].value == 0


def test_metrics_parse_and_count(api: Api) -> None:
    queued = [api.submit(tiny_png(i)).get_json()["id"] for i in range(3)]
    assert api.run_job(queued[0]) == "succeeded"
    assert api.delete(f"/api/v1/jobs/{queued[1]}").status_code == 204
    r = api.client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    families = {f.name: f for f in text_string_to_metric_families(r.get_data(as_text=True))}
    jobs = {s.labels["status"]: s.value for s in families["kseg_jobs"].samples}
    assert jobs == {"queued": 1, "running": 0, "succeeded": 1, "failed": 0, "canceled": 1}
    assert families["kseg_queue_depth"].samples[0].value == 1
    assert families["kseg_up"].samples[0].value == 1
    hist = families["kseg_job_duration_seconds"]
    assert hist.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in hist.samples}
    assert samples[("kseg_job_duration_seconds_count", None)] == 1
    assert samples[("kseg_job_duration_seconds_bucket", "+Inf")] == 1
    assert samples[("kseg_job_duration_seconds_sum", None)] > 0
    bounds = [float(s.labels["le"]) for s in hist.samples if s.name.endswith("_bucket")]
    assert bounds == sorted(bounds) and len(bounds) == 12
