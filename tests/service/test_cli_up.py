"""`kseg up` on the embedded default, as a user runs it, and the un-migrated refusal."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import IMAGES, ROOT, free_port, wait_for
from tests.service.test_e2e import multipart

pytestmark = pytest.mark.integration


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSEG_", "CELERY_"))}
    env.pop("DATABASE_URL", None)
    env.update(KSEG_INSTANCE_DIR=str(tmp_path / "instance"), PYTHONUNBUFFERED="1", **extra)
    return env


def _descendants(pid: int) -> set[int]:
    """All live processes below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _submit_baby(port: int, token: str, k: int) -> str:
    """baby.jpg through the API of the service on ``port``; the job's id."""
    body, ctype = multipart(
        {"k": str(k)}, {"file": ("baby.jpg", (IMAGES / "baby.jpg").read_bytes())}
    )
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/jobs",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": ctype},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.loads(resp.read())["id"])


def _final_status(port: int, token: str, job_id: str) -> str | None:
    """The job's status once it is final, else None (for ``wait_for``)."""
    get = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(get, timeout=10) as resp:
        status = str(json.loads(resp.read())["status"])
    return status if status not in ("queued", "running") else None


def test_up_serves_a_job_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "up.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kseg.shared.cli", "up"],
        env=_env(tmp_path, KSEG_PORT=str(port)),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def banner() -> str | None:
            text = (tmp_path / "up.log").read_text()
            match = re.search(r"API token \(default owner\): (\S+)", text)
            return match.group(1) if match else None

        token = wait_for(banner, 60, interval=0.2, what="kseg up's banner")
        assert f"http://127.0.0.1:{port}" in (tmp_path / "up.log").read_text()
        job_id = _submit_baby(port, token, 16)
        finished = wait_for(lambda: _final_status(port, token, job_id), 60, 0.1, "the job")
        assert finished == "succeeded"

        # The banner's other suggestion: `kseg submit`, with no token given (it takes the
        # one kept under instance/) and no URL (KSEG_PORT, as `kseg up` had).
        assert "submit photo.jpg" in (tmp_path / "up.log").read_text()
        submitted = subprocess.run(
            [sys.executable, "-m", "kseg.shared.cli", "submit", str(IMAGES / "weixin.jpg"),
             "-k", "4", "-q", "-o", str(tmp_path / "out")],
            env=_env(tmp_path, KSEG_PORT=str(port)), cwd=ROOT, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        assert json.loads((tmp_path / "out" / "result.json").read_text())["k"] == 4

        children = _descendants(proc.pid)
        assert len(children) >= 3, "web, worker and beat run as children"
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        assert time.monotonic() - started < 15, "Ctrl-C must stop everything within seconds"
        assert proc.returncode == 0
        wait_for(lambda: not any(_alive(pid) for pid in children), 5, what="no orphans")
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_services_refuse_an_unmigrated_database(tmp_path: Path) -> None:
    for command in ("worker", "web", "beat"):
        done = subprocess.run(
            [sys.executable, "-m", "kseg.shared.cli", command],
            env=_env(tmp_path),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0, command
        assert "kseg migrate" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def _started(log: Path, name: str) -> list[int]:
    """The pids ``kseg up`` said it started ``name`` with, oldest first."""
    return [int(pid) for pid in re.findall(rf"kseg: started {name} \(pid (\d+)\)", log.read_text())]


def _restarted(log: Path, name: str, old: int) -> int | None:
    """The pid of ``name`` started after ``old``, once it runs."""
    pids = _started(log, name)
    new = pids[-1] if pids else old
    return new if new != old and _alive(new) else None


def test_up_restarts_a_killed_child_and_keeps_the_others(tmp_path: Path) -> None:
    """SIGKILL beat, then the worker's main process: `kseg up` restarts each alone (the old
    worker's pool goes with it), web stays, a job still succeeds, Ctrl-C stops everything."""
    port = free_port()
    path = tmp_path / "up.log"
    log = path.open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kseg.shared.cli", "up"],
        env=_env(tmp_path, KSEG_PORT=str(port)),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        token = wait_for(
            lambda: (
                (m := re.search(r"API token \(default owner\): (\S+)", path.read_text()))
                and m.group(1)
            ),
            60,
            interval=0.2,
            what="kseg up's banner",
        )
        [web] = _started(path, "web")
        [beat] = _started(path, "beat")
        [worker] = _started(path, "worker")
        # The pool: wait until the worker has forked it, to see it go with its parent.
        pool = wait_for(lambda: _descendants(worker), 30, interval=0.2, what="the worker's pool")

        def restarted(name: str, old: int) -> int | None:
            assert proc.poll() is None, f"kseg up exited:\n{path.read_text()[-2000:]}"
            return _restarted(path, name, old)

        os.kill(beat, signal.SIGKILL)
        new_beat = wait_for(lambda: restarted("beat", beat), 30, 0.1, "a new beat")
        assert "kseg: beat exited (killed by SIGKILL); restarting in 1 s (crash 1 of 5)" in (
            path.read_text()
        )

        os.kill(worker, signal.SIGKILL)
        meanwhile = _submit_baby(port, token, 8)  # while no worker runs: it waits, and is not lost
        new_worker = wait_for(lambda: restarted("worker", worker), 30, 0.1, "a new worker")
        assert "kseg: worker exited (killed by SIGKILL); restarting in 1 s" in path.read_text()
        assert not any(_alive(pid) for pid in pool), "the old worker's pool must not run on"
        assert _started(path, "web") == [web] and _alive(web), "web is left alone"
        assert _alive(new_beat)
        assert proc.poll() is None

        for job_id in (meanwhile, _submit_baby(port, token, 8)):
            status = wait_for(lambda j=job_id: _final_status(port, token, j), 90, 0.1, "the job")
            assert status == "succeeded"
        assert _alive(new_worker)

        children = _descendants(proc.pid)
        assert {web, new_beat, new_worker} <= children
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        assert proc.returncode == 0
        wait_for(lambda: not any(_alive(pid) for pid in children), 5, what="no orphans")
    finally:
        if proc.poll() is None:  # a failure above: stop the children too, not only kseg up
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


# ---------------------------------------------------------------- `make run`'s output


def test_make_run_installs_the_service_only_and_make_test_the_test_tools(tmp_path: Path) -> None:
    """Each has its own stamp: `make run` after `make test` installs nothing more, `make test`
    after `make run` still installs the test tools; pip's output goes to a log, not the screen."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")

    def plan(target: str) -> str:
        done = subprocess.run(
            ["make", "-n", "--no-print-directory", target],
            cwd=tmp_path, capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return done.stdout

    fresh = plan("run")
    installs = [line for line in fresh.splitlines() if "pip install" in line]
    assert installs and all("--quiet" in line and ">" in line for line in installs), fresh
    assert "-e ." in fresh and "[test]" not in fresh, fresh
    assert ".venv/bin/kseg up" in fresh

    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed-run").touch()  # as `make run` leaves it
    assert "pip install" not in plan("run")
    assert "-e '.[test]'" in plan("test"), "the test tools are not installed by `make run`"

    (tmp_path / ".venv" / ".installed-test").touch()  # as `make test` leaves it
    assert "pip install" not in plan("test")
    assert "pip install" not in plan("run")


def test_make_run_ends_with_the_banner_logs_requests_to_a_file_and_saves_its_url(
    tmp_path: Path,
) -> None:
    """`make run` on a non-default port: the last lines on stdout are the banner, even after
    requests and a job; the access log goes to instance/access.log; `kseg submit` run in the
    same folder, with no port nor token given, finds the service through instance/api_url."""
    port = free_port()
    stamp = tmp_path / "installed"
    stamp.touch()  # newer than pyproject.toml: make installs nothing (the test's venv is it)
    out_path, err_path = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"RUN_STAMP={stamp}",
             f"BIN={Path(sys.executable).parent}"],
            env=_env(tmp_path, KSEG_PORT=str(port)), cwd=ROOT, stdout=out, stderr=err,
            start_new_session=True,  # make and kseg up in one group, as a terminal has them
        )  # fmt: skip
    instance = tmp_path / "instance"
    try:
        token = wait_for(
            lambda: (
                (m := re.search(r"API token \(default owner\): (\S+)", out_path.read_text()))
                and m.group(1)
            ),
            90,
            interval=0.2,
            what="the banner",
        )
        stdout = out_path.read_text()
        assert f"kseg is running at http://127.0.0.1:{port}" in stdout
        assert (instance / "api_url").read_text().strip() == f"http://127.0.0.1:{port}"

        job_id = _submit_baby(port, token, 8)
        assert wait_for(lambda: _final_status(port, token, job_id), 60, 0.1) == "succeeded"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10):
            pass
        submitted = subprocess.run(
            [sys.executable, "-m", "kseg.shared.cli", "submit", str(IMAGES / "weixin.jpg"),
             "-k", "4", "-q", "-o", str(tmp_path / "out")],
            env=_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        assert json.loads((tmp_path / "out" / "result.json").read_text())["k"] == 4

        def logged() -> str | None:
            text = (instance / "access.log").read_text()
            return text if f'"GET /api/v1/jobs/{job_id} HTTP/1.1" 200' in text else None

        access = wait_for(logged, 10, what="the access log's lines")
        assert '"POST /api/v1/jobs HTTP/1.1" 202' in access
        assert '"GET /login HTTP/1.1" 200' in access
        assert token not in access

        lines = [line for line in out_path.read_text().splitlines() if line.strip()]
        assert lines[-1] == "Press Ctrl-C to stop.", lines[-15:]
        start = max(i for i, line in enumerate(lines) if line.startswith("kseg is running at"))
        assert len(lines) - start <= 12, lines[start:]
        assert not any("make:" in line for line in lines), "make installed something"
        for text in (out_path.read_text(), err_path.read_text()):
            assert '"GET /' not in text and '"POST /' not in text, "access lines on the screen"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    assert "kseg: stopping web, worker, beat and webhooks" in err_path.read_text()
