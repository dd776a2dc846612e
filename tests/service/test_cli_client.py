"""``kseg submit``, ``kseg fetch`` and ``kseg jobs``: the real command, run as a user runs it,
against a real service over HTTP — with a real Celery worker on both backends for the jobs
that must finish, and without one where the jobs must stay queued."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import (
    IMAGES,
    LiveServer,
    Stack,
    build_stack,
    free_port,
    serve_app,
    wait_for,
)
from tests.service.test_api_common import Api, make_api

pytestmark = pytest.mark.integration

OUTPUTS = ("labels", "gray", "color", "recolor", "overlay")


#: ``python -m kseg.shared.cli`` taking SIGINT as Ctrl-C even where it starts with SIGINT ignored,
#: as Python leaves it when the test suite itself runs in the background (as in CI).
WITH_CTRL_C = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('kseg.shared.cli.service', run_name='__main__', alter_sys=True)"
)


def kseg(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The ``kseg`` command, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "kseg.shared.cli", *args],
        env=clean_env(cwd, env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def clean_env(cwd: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the caller's KSEG_* settings, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KSEG_")}
    return {**base, "KSEG_INSTANCE_DIR": str(cwd / "instance"), **(env or {})}


def api_get(base_url: str, token: str, path: str) -> bytes:
    req = urllib.request.Request(base_url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        data: bytes = resp.read()
        return data


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_submit_waits_and_writes_what_segment_writes(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = kseg(
        "submit", str(IMAGES / "baby.jpg"), str(IMAGES / "weixin.jpg"), "-k", "8",
        "--url", stack.base_url, "--token", stack.token, "-o", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for stem in ("baby", "weixin"):
        folder = out / f"{stem}-kseg"
        meta = json.loads((folder / "result.json").read_text())
        job = json.loads(api_get(stack.base_url, stack.token, f"/api/v1/jobs/{meta['job_id']}"))
        assert job["status"] == "succeeded" and job["params"]["k"] == 8
        assert meta["k"] == job["result"]["k"] and meta["clusters"] == job["result"]["clusters"]
        for name in OUTPUTS:  # each file is the service's output, byte for byte
            served = api_get(stack.base_url, stack.token, job["result"]["outputs"][name])
            assert (folder / f"{name}.png").read_bytes() == served, name
        assert f"{stem}.jpg: succeeded" in done.stderr  # progress, one line per change here
    assert "k=8" in done.stdout and "wrote labels.png" in done.stdout

    # The local core gives the same labels for the same image and parameters.
    local = kseg("segment", str(IMAGES / "baby.jpg"), "-k", "8", "-o", str(tmp_path / "l"),
                 "-q", cwd=tmp_path)  # fmt: skip
    assert local.returncode == 0, local.stderr
    np.testing.assert_array_equal(
        pixels((tmp_path / "l" / "labels.png").read_bytes()),
        pixels((out / "baby-kseg" / "labels.png").read_bytes()),
    )


def test_no_wait_then_fetch_and_reuse(stack: Stack, tmp_path: Path) -> None:
    env = {"KSEG_URL": stack.base_url, "KSEG_API_TOKEN": stack.token}  # no --url, no --token
    image = str(IMAGES / "baby.jpg")
    sent = kseg("submit", "--no-wait", image, "-k", "5", "--seed", "3", cwd=tmp_path, env=env)
    assert sent.returncode == 0, sent.stderr
    job_id, path = sent.stdout.strip().split("\t")
    assert path == image
    assert not (tmp_path / "baby-kseg").exists()  # nothing waited for, nothing written

    fetched = kseg("fetch", job_id, cwd=tmp_path, env=env)
    assert fetched.returncode == 0, fetched.stderr
    meta = json.loads((tmp_path / "baby-kseg" / "result.json").read_text())
    assert meta["job_id"] == job_id and meta["k"] == 5 and meta["reused_from"] is None
    assert sorted(p.name for p in (tmp_path / "baby-kseg").glob("*.png")) == sorted(
        f"{name}.png" for name in OUTPUTS
    )

    again = kseg("submit", image, "-k", "5", "--seed", "3", "-o", "again", "--outputs", "labels",
                 cwd=tmp_path, env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    # Only labels asked for: another parameter set, so computed afresh.
    assert json.loads((tmp_path / "again" / "result.json").read_text())["reused_from"] is None
    reused = kseg("submit", image, "-k", "5", "--seed", "3", "-o", "reused",
                  cwd=tmp_path, env=env)  # fmt: skip
    assert reused.returncode == 0, reused.stderr
    assert json.loads((tmp_path / "reused" / "result.json").read_text())["reused_from"] == job_id
    assert f"reused the result of job {job_id}" in reused.stdout
    fresh = kseg("submit", image, "-k", "5", "--seed", "3", "--no-reuse", "-o", "fresh", "-q",
                 cwd=tmp_path, env=env)  # fmt: skip
    assert fresh.returncode == 0 and fresh.stdout == "" and fresh.stderr == ""
    assert json.loads((tmp_path / "fresh" / "result.json").read_text())["reused_from"] is None


@pytest.fixture
def no_worker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Api, LiveServer]]:
    """The web app over HTTP on SQLite with no worker: jobs stay queued."""
    api = make_api(request, tmp_path, "sqlite")
    server = serve_app(api.app)
    try:
        yield api, server
    finally:
        server.stop()


def test_errors_say_what_to_do_and_exit_by_kind(
    no_worker: tuple[Api, LiveServer], tmp_path: Path
) -> None:
    api, server = no_worker
    url = ["--url", server.base_url, "--token", api.token]
    baby = str(IMAGES / "baby.jpg")

    bad_k = kseg("submit", baby, "-k", "1", *url, cwd=tmp_path)
    assert bad_k.returncode == 2 and "k" in bad_k.stderr and "kseg submit --help" in bad_k.stderr
    missing = kseg("submit", str(tmp_path / "nope.jpg"), *url, cwd=tmp_path)
    assert missing.returncode == 2 and "no such file" in missing.stderr

    wrong = kseg("submit", baby, "--url", server.base_url, "--token", "kseg_wrong", cwd=tmp_path)
    assert wrong.returncode == 3
    assert "--token" in wrong.stderr and "kseg token create" in wrong.stderr
    down = kseg("submit", baby, "--url", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert down.returncode == 3 and "cannot reach kseg at" in down.stderr

    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    refused = kseg("submit", str(text), *url, cwd=tmp_path)
    assert refused.returncode == 1
    assert "notes.txt" in refused.stderr and "(unsupported_image)" in refused.stderr

    unknown = kseg("fetch", "0" * 32, *url, cwd=tmp_path)
    assert unknown.returncode == 1 and "(job_not_found)" in unknown.stderr

    # No worker runs here, so the job stays queued: --timeout ends the wait, naming the job.
    slow = kseg("submit", baby, "--timeout", "0.5", *url, cwd=tmp_path)
    assert slow.returncode == 3 and "still queued after 0.5 s" in slow.stderr
    job_id = slow.stderr.split("job ")[1].split()[0]
    assert f"kseg fetch {job_id}" in slow.stderr

    assert api.client.delete(f"/api/v1/jobs/{job_id}", headers=api.headers()).status_code == 204
    canceled = kseg("fetch", job_id, *url, cwd=tmp_path)
    assert canceled.returncode == 1 and f"job {job_id} canceled" in canceled.stderr
    assert not (tmp_path / "baby-kseg").exists()


def test_a_wait_rides_out_the_service_restarting(
    no_worker: tuple[Api, LiveServer], tmp_path: Path
) -> None:
    api, server = no_worker
    port = int(server.base_url.rsplit(":", 1)[1])
    url = ["--url", server.base_url, "--token", api.token]
    sent = kseg("submit", "--no-wait", str(IMAGES / "baby.jpg"), *url, cwd=tmp_path)
    job_id = sent.stdout.split("\t")[0]
    log = tmp_path / "fetch.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kseg.shared.cli", "fetch", job_id, *url],
            env=clean_env(tmp_path), cwd=tmp_path, stdout=err, stderr=err, text=True,
        )  # fmt: skip
    restarted = None
    try:
        wait_for(lambda: "baby.jpg: queued" in log.read_text(), 30, what="fetch to be waiting")
        server.stop()  # the service goes away while fetch waits ...
        wait_for(lambda: "still waiting" in log.read_text(), 30, what="fetch to see it gone")
        assert "cannot reach kseg at" in log.read_text()
        restarted = serve_app(api.app, port)  # ... and comes back, then the job is canceled
        assert api.client.delete(f"/api/v1/jobs/{job_id}", headers=api.headers()).status_code == 204
        assert proc.wait(timeout=60) == 1
        assert f"job {job_id} canceled" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if restarted is not None:
            restarted.stop()


def test_ctrl_c_while_waiting_names_the_jobs_left_to_fetch(
    no_worker: tuple[Api, LiveServer], tmp_path: Path
) -> None:
    api, server = no_worker
    log = tmp_path / "submit.log"
    images = [str(IMAGES / "baby.jpg"), str(IMAGES / "weixin.jpg")]
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", WITH_CTRL_C, "submit", *images,
             "--url", server.base_url, "--token", api.token],
            env=clean_env(tmp_path), cwd=tmp_path, stdout=err, stderr=err, text=True,
        )  # fmt: skip
    try:
        wait_for(lambda: "baby.jpg: queued" in log.read_text(), 30, what="submit to be waiting")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    listed = api.get("/api/v1/jobs").get_json()["items"]
    assert len(listed) == 2 and {job["status"] for job in listed} == {"queued"}
    ids = " ".join(job["id"] for job in reversed(listed))  # oldest first, as submitted
    assert f"interrupted; the service goes on with the jobs: `kseg fetch {ids}`" in log.read_text()
    assert "Traceback" not in log.read_text()


def test_the_local_service_needs_no_token_and_other_servers_get_none(
    no_worker: tuple[Api, LiveServer], tmp_path: Path
) -> None:
    """Where ``kseg up`` runs, it keeps its token in ``instance/api_token``: ``kseg submit``
    there needs neither --url nor --token. That token never goes to a server named by
    --url or KSEG_URL."""
    api, server = no_worker
    port = server.base_url.rsplit(":", 1)[1]
    (tmp_path / "instance").mkdir(exist_ok=True)
    (tmp_path / "instance" / "api_token").write_text(api.token + "\n")  # as `kseg up` writes it
    local = {"KSEG_HOST": "0.0.0.0", "KSEG_PORT": port}  # listening everywhere: via loopback
    baby = str(IMAGES / "baby.jpg")

    sent = kseg("submit", "--no-wait", baby, cwd=tmp_path, env=local)
    assert sent.returncode == 0, sent.stderr
    job_id = sent.stdout.split("\t")[0]
    assert api.get(f"/api/v1/jobs/{job_id}").status_code == 200  # the token's owner has it

    for named in (["--url", server.base_url], []):
        env = local if named else {**local, "KSEG_URL": server.base_url}
        refused = kseg("submit", "--no-wait", baby, *named, cwd=tmp_path, env=env)
        assert refused.returncode == 3, refused.stderr
        assert "(missing_token)" in refused.stderr and "--token or KSEG_API_TOKEN" in refused.stderr


def test_jobs_lists_the_owners_newest_jobs_with_their_ids(
    no_worker: tuple[Api, LiveServer], tmp_path: Path
) -> None:
    api, server = no_worker
    url = ["--url", server.base_url, "--token", api.token]
    empty = kseg("jobs", *url, cwd=tmp_path)
    assert empty.returncode == 0
    assert empty.stdout.strip() == "no jobs yet; submit one with `kseg submit IMAGE`"

    ids = []
    for image, k in (("baby.jpg", "5"), ("weixin.jpg", "auto")):
        sent = kseg("submit", "--no-wait", str(IMAGES / image), "-k", k, *url, cwd=tmp_path)
        ids.append(sent.stdout.split("\t")[0])
    other = api.new_token()  # another owner's job is not listed
    kseg("submit", "--no-wait", str(IMAGES / "baby.jpg"), "--url", server.base_url,
         "--token", other, cwd=tmp_path)  # fmt: skip
    assert api.client.delete(f"/api/v1/jobs/{ids[0]}", headers=api.headers()).status_code == 204

    listed = kseg("jobs", *url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, *rows = [line.split() for line in listed.stdout.splitlines()]
    assert header[:4] == ["ID", "STATUS", "IMAGE", "K"]
    assert [row[:4] for row in rows] == [  # newest first
        [ids[1], "queued", "weixin.jpg", "auto"],
        [ids[0], "canceled", "baby.jpg", "5"],
    ]
    only = kseg("jobs", "--status", "canceled", "-n", "5", *url, cwd=tmp_path)
    assert [line.split()[0] for line in only.stdout.splitlines()[1:]] == [ids[0]]
    none = kseg("jobs", "--status", "failed", *url, cwd=tmp_path)
    assert none.returncode == 0 and none.stdout.strip() == "no jobs with status failed"

    bad = kseg("jobs", "--status", "bogus", *url, cwd=tmp_path)
    assert bad.returncode == 2 and "'bogus' is not a job status" in bad.stderr
    down = kseg("jobs", "--url", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert down.returncode == 3 and "cannot reach kseg at" in down.stderr


def test_submit_waits_out_the_active_jobs_quota_and_goes_on(tmp_path: Path) -> None:
    from kseg.shared.store.db import migrate

    database_url = f"sqlite:///{tmp_path / 'instance' / 'kseg.db'}"
    migrate(database_url)
    stack = build_stack(
        "sqlite-embedded", database_url, "filesystem://", tmp_path, KSEG_QUOTA_ACTIVE_JOBS=1
    )
    try:
        images = [IMAGES / "baby.jpg", IMAGES / "weixin.jpg"]
        done = kseg(
            "submit", *map(str, images), "-k", "4", "--url", stack.base_url,
            "--token", stack.token, "-o", str(tmp_path / "out"), cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr + stack.logs()
        assert "quota_exceeded; waiting 5 s" in done.stderr, done.stderr
        for stem in ("baby", "weixin"):
            assert (tmp_path / "out" / f"{stem}-kseg" / "recolor.png").exists()
    finally:
        stack.stop()
