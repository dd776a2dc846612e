"""Webhooks through the real service, against a real HTTP receiver on this machine: a job's
``job.succeeded`` arrives once, signed; a receiver answering 500 twice then 200 gets the
event three times with backoff; a sender killed mid-delivery loses nothing; a private URL is
refused at submission (and at send time); a run's ``run.finished`` comes after its jobs'.

The stacks run on PostgreSQL + Redis and on the embedded default, each with a worker, beat
and a webhook sender (``kseg webhooks``) as real processes, ended by pid. The receiver's
address is loopback, so ``KSEG_WEBHOOK_ALLOW_PRIVATE=1`` (what local development sets).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kseg.shared import webhooks
from tests.conftest import (
    RUN_ID,
    Proc,
    Stack,
    build_stack,
    settings_from,
    start_process,
    wait_for,
)
from tests.service.test_api_common import Api, assert_error, make_api, tiny_png
from tests.service.test_e2e import request, submit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKOFF = (1.0, 2.0)


# ---------------------------------------------------------------- a real receiver


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """An HTTP server on a free loopback port that records every POST and answers as told:
    ``script`` holds the answers to the next requests (a status, or ``"hold"``: keep the
    request open until ``release`` is set); then 200."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    script: list[Any] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks/kseg?source=test"

    def events(self, kind: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.received if kind is None or r.event["type"] == kind]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rec = holder["r"]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with rec.lock:
                rec.received.append(Received(time.monotonic(), dict(self.headers), body))
                answer = rec.script.pop(0) if rec.script else 200
            if answer == "hold":
                rec.arrived.set()
                rec.release.wait(60)
                answer = 200
            payload = b'{"ok": true}'
            self.send_response(int(answer))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the sender is gone (killed mid-delivery)
                self.wfile.write(payload)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["r"] = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder["r"]
    holder["r"].release.set()
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- the service


def start_sender(stack: Stack) -> Proc:
    """``kseg webhooks``, as `kseg up` starts it (a unique node name per test)."""
    from kseg.shared.cli.processes import webhooks_command

    name = ["-n", f"test-{RUN_ID}-hooks-{uuid.uuid4().hex[:6]}@%h"]
    proc = start_process(
        "webhooks", webhooks_command(settings_from(stack.env)) + name, stack.env, stack.log_dir
    )
    stack.processes.append(proc)
    return proc


@pytest.fixture(params=["postgres-redis", "sqlite-embedded"])
def hook_stack(
    request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[str], str]
) -> Iterator[Stack]:
    if request.param == "postgres-redis":
        broker_url = request.getfixturevalue("redis_url")
        database_url = pg_database("hooks")
    else:
        from kseg.shared.store.db import migrate

        database_url = f"sqlite:///{tmp_path / 'instance' / 'kseg.db'}"
        broker_url = "filesystem://"
        migrate(database_url)
    stack = build_stack(
        request.param,
        database_url,
        broker_url,
        tmp_path,
        KSEG_WEBHOOK_ALLOW_PRIVATE=1,
        KSEG_WEBHOOK_BACKOFF=",".join(str(d) for d in BACKOFF),
        KSEG_WEBHOOK_TIMEOUT=3,
        KSEG_WEBHOOK_SWEEP_INTERVAL=0.5,
    )
    start_sender(stack)
    try:
        yield stack
    finally:
        stack.stop()
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(stack.logs())


def api_json(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    status, _, payload = request(
        stack, method, path, body=data, headers={"Content-Type": "application/json"}
    )
    assert status < 300, (status, payload[:500])
    return json.loads(payload) if payload else None


def secret_of(stack: Stack) -> str:
    secret = api_json(stack, "GET", "/api/v1/webhooks/secret")["secret"]
    assert secret.startswith("whsec_")
    return str(secret)


def delivery_of(stack: Stack, object_id: str, kind: str) -> dict[str, Any] | None:
    items = api_json(stack, "GET", "/api/v1/webhooks/deliveries?limit=200")["items"]
    found = [d for d in items if d["object_id"] == object_id and d["type"] == kind]
    return found[0] if found else None


def wait_delivered(stack: Stack, object_id: str, kind: str, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        d = delivery_of(stack, object_id, kind)
        return d if d and d["status"] != "pending" else None

    try:
        return dict(wait_for(done, timeout, 0.1, f"the {kind} delivery of {object_id}"))
    except AssertionError:
        print(stack.logs())
        raise


def check_signed(received: Received, secret: str) -> None:
    header = received.headers["Kseg-Signature"]
    assert webhooks.verify(secret, received.body, header), header
    assert not webhooks.verify("whsec_other", received.body, header)
    assert received.headers["Kseg-Event-Id"] == received.event["id"]
    assert received.headers["Content-Type"] == "application/json"


# ---------------------------------------------------------------- the tests


def test_job_succeeded_arrives_once_with_a_valid_signature(
    hook_stack: Stack, receiver: Receiver
) -> None:
    secret = secret_of(hook_stack)
    job = submit(hook_stack, tiny_png(1, 16), "hook.png", k=3, webhook_url=receiver.url)
    assert job["webhook_url"] == receiver.url
    delivery = wait_delivered(hook_stack, job["id"], "job.succeeded")
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200 and delivery["next_attempt_at"] is None
    # Recorded succeeded: no sender can claim it again, so this count is final.
    [got] = receiver.events()
    check_signed(got, secret)
    event = got.event
    assert event["type"] == "job.succeeded" and event["id"] == delivery["event_id"]
    assert set(event) == {"id", "type", "created_at", "data"}
    now = api_json(hook_stack, "GET", f"/api/v1/jobs/{job['id']}")
    assert event["data"] == now, "data is the job object the API answers"


def test_a_failing_receiver_gets_the_event_again_with_backoff(
    hook_stack: Stack, receiver: Receiver
) -> None:
    secret = secret_of(hook_stack)
    receiver.script = [500, 500, 200]
    job = submit(hook_stack, tiny_png(2, 16), "retry.png", k=3, webhook_url=receiver.url)
    delivery = wait_delivered(hook_stack, job["id"], "job.succeeded")
    assert delivery["status"] == "succeeded"
    assert delivery["attempts"] == 3 and delivery["last_status_code"] == 200
    got = receiver.events()
    assert len(got) == 3
    assert len({r.event["id"] for r in got}) == 1, "the same event each time"
    assert [r.body for r in got] == [got[0].body] * 3, "the same body each time"
    for r in got:
        check_signed(r, secret)
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    for gap, pause in zip(gaps, BACKOFF, strict=True):
        assert gap >= pause - 0.2, (gaps, BACKOFF)
    assert gaps[1] > gaps[0], "the pauses grow"
    listed = api_json(hook_stack, "GET", "/api/v1/webhooks/deliveries?status=succeeded")
    assert delivery["id"] in [d["id"] for d in listed["items"]]


def test_a_sender_killed_mid_delivery_still_delivers(hook_stack: Stack, receiver: Receiver) -> None:
    receiver.script = ["hold"]
    job = submit(hook_stack, tiny_png(3, 16), "kill.png", k=3, webhook_url=receiver.url)
    assert receiver.arrived.wait(90), hook_stack.logs()
    sender = next(p for p in hook_stack.processes if p.name == "webhooks")
    os.killpg(sender.pid, signal.SIGKILL)  # mid-POST: nothing is recorded, nothing acked
    sender.popen.wait(10)
    receiver.release.set()
    start_sender(hook_stack)
    delivery = wait_delivered(hook_stack, job["id"], "job.succeeded")
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 2
    got = receiver.events()
    assert len(got) == 2 and got[0].event["id"] == got[1].event["id"]


def test_run_finished_arrives_after_its_last_job(hook_stack: Stack, receiver: Receiver) -> None:
    from tests.service.test_scheduling import gallery_of, noise_png

    gallery_id = gallery_of(hook_stack, [noise_png(seed, 24) for seed in range(3)], k=3)
    run = api_json(
        hook_stack,
        "POST",
        f"/api/v1/galleries/{gallery_id}/runs",
        {"only_stale": False, "webhook_url": receiver.url},
    )
    assert run["webhook_url"] == receiver.url
    wait_delivered(hook_stack, run["id"], "run.finished")
    got = receiver.events()
    kinds = [r.event["type"] for r in got]
    assert kinds.count("job.succeeded") == 3 and kinds[-1] == "run.finished", kinds
    finished = got[-1].event["data"]
    assert finished["id"] == run["id"] and finished["status"] == "succeeded"
    assert finished["jobs"]["succeeded"] == 3
    job_ends = [r.event["data"]["finished_at"] for r in got[:-1]]
    assert all(end <= finished["finished_at"] for end in job_ends)
    assert {r.event["data"]["run_id"] for r in got[:-1]} == {run["id"]}


# ---------------------------------------------------------------- without a stack


@pytest.fixture(params=["sqlite"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Api:
    return make_api(request, tmp_path, request.param)  # KSEG_WEBHOOK_ALLOW_PRIVATE unset


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "http://user:pw@example.com/hook",
        "not a url",
    ],
)
def test_a_refused_url_is_a_422_at_submission(api: Api, url: str) -> None:
    r = api.submit(tiny_png(4), "p.png", k=2, webhook_url=url)
    assert_error(r, 422, "webhook_url_refused")
    image = api.upload((tiny_png(5), "q.png")).get_json()["items"][0]
    r = api.post("/api/v1/jobs", json={"image_id": image["id"], "webhook_url": url})
    assert_error(r, 422, "webhook_url_refused")
    gallery = api.post("/api/v1/galleries", json={"name": "g"}).get_json()
    r = api.post(f"/api/v1/galleries/{gallery['id']}/runs", json={"webhook_url": url})
    assert_error(r, 422, "webhook_url_refused")
    r = api.put(
        f"/api/v1/galleries/{gallery['id']}/schedule",
        json={"cron": "0 3 * * *", "webhook_url": url},
    )
    assert_error(r, 422, "webhook_url_refused")
    assert api.get("/api/v1/jobs").get_json()["items"] == [], "nothing was stored"


def test_send_time_check_refuses_a_private_address_without_connecting(
    receiver: Receiver,
) -> None:
    outcome = webhooks.post(receiver.url, b"{}", {}, timeout=2, allow_private=False)
    assert not outcome.ok and outcome.status is None and "loopback" in (outcome.error or "")
    assert receiver.events() == []
    outcome = webhooks.post(receiver.url, b"{}", {}, timeout=2, allow_private=True)
    assert outcome.ok and outcome.status == 200
    [got] = receiver.received
    host, port = receiver.server.server_address[:2]
    assert got.headers["Host"] == f"{host}:{port}" and got.body == b"{}"
    assert got.headers["User-Agent"] == webhooks.USER_AGENT


def test_events_filter_secret_rotation_and_giving_up(
    request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver
) -> None:
    """In-process, with the sender's own code: a filter leaves an event out; a receiver that
    always fails gets the last retry, then the delivery is failed; a rotated secret signs."""
    from kseg.shared.store import webhooks as store

    api = make_api(
        request, tmp_path, "sqlite", KSEG_WEBHOOK_ALLOW_PRIVATE=1, KSEG_WEBHOOK_BACKOFF="0"
    )
    first = api.get("/api/v1/webhooks/secret").get_json()["secret"]
    assert api.get("/api/v1/webhooks/secret").get_json()["secret"] == first
    rotated = api.post("/api/v1/webhooks/secret/rotate").get_json()["secret"]
    assert rotated != first and rotated.startswith("whsec_")

    skipped = api.submit(
        tiny_png(6), "f.png", k=2, webhook_url=receiver.url, webhook_events="job.failed"
    ).get_json()
    assert skipped["webhook_events"] == ["job.failed"]
    assert api.run_job(skipped["id"]) == "succeeded"
    assert api.get("/api/v1/webhooks/deliveries").get_json()["items"] == []

    receiver.script = [503, 503, 503]
    job = api.submit(tiny_png(7), "g.png", k=2, webhook_url=receiver.url).get_json()
    assert api.run_job(job["id"]) == "succeeded"
    [delivery] = api.get("/api/v1/webhooks/deliveries").get_json()["items"]
    assert delivery["status"] == "pending" and delivery["attempts"] == 0
    assert store.deliver(delivery["id"], api.settings).sent
    again = store.deliver(delivery["id"], api.settings)
    assert again.sent and again.retry_in is None
    assert not store.deliver(delivery["id"], api.settings).sent, "given up: nothing to send"
    [delivery] = api.get("/api/v1/webhooks/deliveries?status=failed").get_json()["items"]
    assert delivery["attempts"] == 2 and delivery["last_status_code"] == 503
    assert len(receiver.events()) == 2
    for got in receiver.events():
        check_signed(got, rotated)
    assert_error(api.get("/api/v1/webhooks/deliveries?status=nope"), 422, "invalid_parameter")


def test_the_readme_receiver_accepts_a_signed_event_and_refuses_forged_or_old_ones() -> None:
    """The README's 10-line receiver, run as written (with a secret filled in)."""
    import re

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"Flask, 10 lines\):\n\n```python\n(.*?)```", readme, re.S)
    assert code is not None, "the README's receiver example"
    lines = [line for line in code.group(1).splitlines() if line.strip()]
    assert len(lines) == 10
    secret = "whsec_readme"
    namespace: dict[str, Any] = {"__name__": "__main__"}  # a script, as it would run
    exec(code.group(1).replace('b"whsec_..."', f'b"{secret}"'), namespace)
    client = namespace["app"].test_client()
    body = json.dumps({"id": "evt_1", "type": "job.succeeded", "data": {}}).encode()

    def post(header: str, data: bytes = body) -> int:
        headers = {"Kseg-Signature": header, "Content-Type": "application/json"}
        return int(client.post("/kseg-hook", data=data, headers=headers).status_code)

    now = int(time.time())
    assert post(webhooks.sign(secret, body, now)) == 204
    assert post(webhooks.sign("whsec_other", body, now)) == 400
    assert post(webhooks.sign(secret, body, now), data=body + b" ") == 400
    assert post(webhooks.sign(secret, body, now - 3600)) == 400, "a replay an hour later"
    assert post("t=1,v1=00") == 400


def test_a_schedule_gives_its_runs_and_their_jobs_the_webhook_and_run_finished_waits(
    request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver
) -> None:
    """In-process: a scheduled run and its jobs carry the schedule's webhook; ``run.finished``
    is not sent while a job event of the run is pending, and is once that one is
    delivered."""
    from datetime import timedelta

    from kseg.shared.store import galleries
    from kseg.shared.store import webhooks as store
    from kseg.shared.store.db import get_sessionmaker
    from kseg.shared.store.events import delivery_id
    from kseg.shared.store.models import utcnow

    api = make_api(request, tmp_path, "sqlite", KSEG_WEBHOOK_ALLOW_PRIVATE=1)
    image = api.upload((tiny_png(8), "s.png")).get_json()["items"][0]
    gallery = api.post("/api/v1/galleries", json={"name": "sched"}).get_json()
    api.post(f"/api/v1/galleries/{gallery['id']}/images", json={"image_ids": [image["id"]]})
    schedule = api.put(
        f"/api/v1/galleries/{gallery['id']}/schedule",
        json={"cron": "* * * * *", "webhook_url": receiver.url, "webhook_events": []},
    ).get_json()
    assert schedule["webhook_url"] == receiver.url and schedule["webhook_events"] is None
    maker = get_sessionmaker(api.settings.database_url)
    with maker.begin() as session:
        [start] = galleries.run_due_schedules(session, now=utcnow() + timedelta(minutes=2))
        run_id, [job_id] = start.run.id, start.job_ids
    run = api.get(f"/api/v1/runs/{run_id}").get_json()
    assert run["trigger"] == "schedule" and run["webhook_url"] == receiver.url
    assert api.get(f"/api/v1/jobs/{job_id}").get_json()["webhook_url"] == receiver.url
    assert api.run_job(job_id) == "succeeded"  # ends the run too
    job_event, run_event = delivery_id(job_id, "job.succeeded"), delivery_id(run_id, "run.finished")

    waited = store.deliver(run_event, api.settings)
    assert not waited.sent and waited.retry_in is not None, "its job's event goes first"
    assert store.deliver(job_event, api.settings).sent
    later = utcnow() + timedelta(seconds=waited.retry_in + 1)
    with maker.begin() as session:
        claimed, _ = store.claim(session, run_event, lease=30, now=later)
    assert claimed is not None and claimed.attempt == 1, "the wait counted no attempt"
    assert json.loads(claimed.body)["data"]["status"] == "succeeded"


def test_finished_deliveries_are_pruned_after_30_days(
    request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver
) -> None:
    from datetime import timedelta

    from kseg.shared.store import webhooks as store
    from kseg.shared.store.db import get_sessionmaker
    from kseg.shared.store.models import utcnow

    api = make_api(request, tmp_path, "sqlite", KSEG_WEBHOOK_ALLOW_PRIVATE=1)
    job = api.submit(tiny_png(13), "p.png", k=2, webhook_url=receiver.url).get_json()
    assert api.run_job(job["id"]) == "succeeded"
    [delivery] = api.get("/api/v1/webhooks/deliveries").get_json()["items"]
    assert store.deliver(delivery["id"], api.settings).sent
    maker = get_sessionmaker(api.settings.database_url)
    with maker.begin() as session:
        assert store.prune(session, now=utcnow() + timedelta(days=29)) == 0
        assert store.prune(session, now=utcnow() + timedelta(days=31)) == 1
    assert api.get("/api/v1/webhooks/deliveries").get_json()["items"] == []
