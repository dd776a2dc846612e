"""`kseg up` on the embedded default, as a user runs it, and the un-migrated refusal."""

from __future__ import annotations

import json
import os
import re
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


def test_up_serves_a_job_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "up.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "up"],
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
        body, ctype = multipart(
            {"k": "16"}, {"file": ("baby.jpg", (IMAGES / "baby.jpg").read_bytes())}
        )
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/jobs",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": ctype},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            job = json.loads(resp.read())

        def finished() -> str | None:
            get = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/jobs/{job['id']}",
                headers={"Authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(get, timeout=10) as resp:
                status = json.loads(resp.read())["status"]
            return status if status not in ("queued", "running") else None

        assert wait_for(finished, 60, interval=0.1, what="the job") == "succeeded"

        # The banner's other suggestion: `kseg submit`, with no token given (it takes the
        # one kept under instance/) and no URL (KSEG_PORT, as `kseg up` had).
        assert "submit photo.jpg" in (tmp_path / "up.log").read_text()
        submitted = subprocess.run(
            [sys.executable, "-m", "shared.cli", "submit", str(IMAGES / "weixin.jpg"), "-k", "4",
             "-q", "-o", str(tmp_path / "out")],
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
            [sys.executable, "-m", "shared.cli", command],
            env=_env(tmp_path),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0, command
        assert "kseg migrate" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
