"""The worker's OpenMP threads sleep instead of spinning while they wait (see shared.openmp).

Checked in fresh interpreters by what libgomp itself reports at load time
(``OMP_DISPLAY_ENV=VERBOSE``): its spin count is 0 under the passive policy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment where the worker's Celery app can be imported (a migrated database)."""
    tmp = tmp_path_factory.mktemp("openmp")
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KSEG_", "CELERY_", "OMP_", "GOMP_"))
        },
        "DATABASE_URL": f"sqlite:///{tmp / 'kseg.db'}",
        "KSEG_INSTANCE_DIR": str(tmp / "instance"),
    }
    subprocess.run(
        [sys.executable, "-m", "kseg.shared.cli", "migrate"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return env


def spin_count(code: str, env: dict[str, str]) -> int:
    """libgomp's spin count in a fresh interpreter running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "OMP_DISPLAY_ENV": "VERBOSE"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)
    if found is None:
        pytest.skip("scikit-learn's OpenMP runtime is not libgomp: nothing reports its policy")
    return int(found.group(1))


def test_the_worker_app_loads_openmp_with_the_passive_policy(worker_env: dict[str, str]) -> None:
    # The worker's app loads the compiled Lloyd step (and with it libgomp) before forking.
    assert spin_count("import kseg.worker.celery_app", worker_env) == 0


def test_without_the_worker_openmp_spins(worker_env: dict[str, str]) -> None:
    """The check above can fail: the same load outside the worker keeps libgomp's spinning."""
    code = "from kseg.shared.core.accel import compiled_lloyd_step; compiled_lloyd_step()"
    assert spin_count(code, worker_env) > 0


def test_a_policy_set_in_the_environment_is_kept(worker_env: dict[str, str]) -> None:
    env = {**worker_env, "OMP_WAIT_POLICY": "ACTIVE"}
    code = "import os, kseg.worker.celery_app; print(os.environ['OMP_WAIT_POLICY'])"
    assert spin_count(code, env) > 0
