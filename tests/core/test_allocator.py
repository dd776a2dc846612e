"""Freed memory kept for the next job: counted in page faults, in fresh interpreters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kseg.shared.core.allocator import retain_freed_memory
from kseg.shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]

# One "job": 36 MB of buffers, written, then freed all at once, as a segmentation's arrays are.
# Prints the minor page faults per job over ten jobs after the first.
PROBE = """
import resource, sys
from kseg.shared.core.allocator import retain_freed_memory
if sys.argv[1] != "0" and not retain_freed_memory(int(sys.argv[1])):
    sys.exit(3)
def job():
    buffers = [bytearray(6 << 20) for _ in range(6)]
    del buffers
job()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    job()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""


def faults_per_job(retain_bytes: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(retain_bytes)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode == 3:
        pytest.skip("the C library is not glibc: there is no allocator to tune")
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_retained_memory_is_not_faulted_in_again_by_the_next_job() -> None:
    default = faults_per_job(0)
    retained = faults_per_job(128 << 20)
    # 36 MB is ~9,200 pages: glibc's defaults hand them back after each job and the next
    # job faults them in again; kept, they are reused as they are.
    assert default > 5000
    assert retained < default / 50


def test_memory_beyond_the_retained_amount_still_goes_back() -> None:
    # Kept up to 16 MB only: most of a 36 MB job is handed back and faulted in again.
    assert faults_per_job(16 << 20) > 2000


def test_zero_leaves_the_allocator_alone() -> None:
    assert retain_freed_memory(0) is False
    assert retain_freed_memory(-1) is False


def test_the_setting_is_in_megabytes_and_defaults_to_128(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KSEG_MALLOC_RETAIN_MB", raising=False)
    assert load_settings().malloc_retain_bytes == 128 * 1024 * 1024
    monkeypatch.setenv("KSEG_MALLOC_RETAIN_MB", "0")
    assert load_settings().malloc_retain_bytes == 0
    monkeypatch.setenv("KSEG_MALLOC_RETAIN_MB", "lots")
    with pytest.raises(SystemExit, match="KSEG_MALLOC_RETAIN_MB"):
        load_settings()


def test_the_worker_keeps_freed_memory_from_its_start(tmp_path: Path) -> None:
    """The Celery app module sets it before the pool forks, so every pool process has it."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KSEG_", "CELERY_"))},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'kseg.db'}",
        "KSEG_INSTANCE_DIR": str(tmp_path / "instance"),
    }
    subprocess.run(
        [sys.executable, "-m", "kseg.shared.cli", "migrate"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    # The probe's job, run after importing the worker's app instead of calling the function.
    probe = PROBE.replace(
        'if sys.argv[1] != "0" and not retain_freed_memory(int(sys.argv[1])):\n    sys.exit(3)',
        "import kseg.worker.celery_app",
    )
    assert "import kseg.worker.celery_app" in probe
    runs = {}
    for retain in ("128", "0"):
        done = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**env, "KSEG_MALLOC_RETAIN_MB": retain},
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        runs[retain] = int(done.stdout.strip().splitlines()[-1])
    assert runs["0"] > 5000
    assert runs["128"] < runs["0"] / 50
