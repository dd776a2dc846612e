"""One import name: the repo's shared/, web/, worker/ and migrations/ install as ``kseg.*``.

A wheel holds exactly one top-level package, and ``kseg`` started in a folder that has
``web/``, ``shared/`` and ``worker/`` folders of its own (``python -m``, gunicorn-style servers
and Celery all put the working directory first on the path) still runs kseg's own code.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import IMAGES, ROOT, free_port, wait_for

PARTS = ("shared", "web", "worker", "migrations")


def test_the_package_list_names_every_package_of_the_tree() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {f"kseg.{part}": part for part in PARTS}
    found = {
        "kseg." + ".".join(init.parent.relative_to(ROOT).parts)
        for part in PARTS
        for init in (ROOT / part).rglob("__init__.py")
    }
    assert set(config["packages"]) == found


@pytest.mark.slow
def test_a_wheel_has_one_top_level_package(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info/ into the source tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for part in PARTS:
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("kseg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"kseg"}, tops
    for needed in (
        "kseg/web/templates/base.html",
        "kseg/migrations/alembic.ini",
        "kseg/migrations/versions/0001_jobs_images_results.py",
        "kseg/worker/celery_app.py",
    ):
        assert needed in names, needed
    assert not any(name.startswith("kseg/__init__") for name in names), "a namespace"


def decoy_folder(path: Path) -> Path:
    """A folder with ``shared/``, ``web/`` and ``worker/`` packages that fail on import."""
    for part in ("shared", "web", "worker"):
        (path / part).mkdir(parents=True)
        (path / part / "__init__.py").write_text(f"raise ImportError('the decoy {part}/')\n")
    return path


def test_segment_runs_from_a_folder_with_its_own_web_and_shared(tmp_path: Path) -> None:
    here = decoy_folder(tmp_path / "project")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "kseg"), "segment", str(IMAGES / "baby.jpg"),
         "-k", "4", "-o", "out", "-q"],
        cwd=here, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((here / "out" / "result.json").read_text())["k"] == 4


@pytest.mark.integration
@pytest.mark.slow
def test_up_runs_from_a_folder_with_its_own_web_and_shared(tmp_path: Path) -> None:
    from tests.service.test_cli_up import _env, _final_status, _submit_baby

    here = decoy_folder(tmp_path / "project")
    port = free_port()
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "kseg"), "up"],
            env=_env(tmp_path, KSEG_PORT=str(port)), cwd=here,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def token() -> str | None:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            found = re.search(r"API token \(default owner\): (\S+)", log_path.read_text())
            return found.group(1) if found else None

        api_token = wait_for(token, 90, interval=0.2, what="kseg up's banner")
        job_id = _submit_baby(port, api_token, 4)  # web, then worker: both kseg's own
        status = wait_for(lambda: _final_status(port, api_token, job_id), 90, 0.1, "the job")
        assert status == "succeeded", log_path.read_text()[-3000:]
        assert "the decoy" not in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
