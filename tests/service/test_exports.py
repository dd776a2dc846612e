"""Exports and palettes: a run's ZIP checked file by file against the API, a job's ZIP, and
each palette format parsed back (ASE by its binary layout) and compared with the clusters.

Runs on PostgreSQL (Redis as broker) and on the embedded default, with the real job runner
in-process (no worker needed: the files come from the database either way).
"""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.service.test_api_common import BACKENDS, Api, assert_error, make_api, tiny_png

pytestmark = pytest.mark.integration


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Api:
    return make_api(request, tmp_path, request.param, KSEG_WEBHOOK_ALLOW_PRIVATE=1)


def finished_job(api: Api, seed: int = 0, **params: Any) -> dict[str, Any]:
    params = {"k": 3, **params}
    job = api.submit(tiny_png(seed, 24), f"photo-{seed}.png", **params).get_json()
    assert api.run_job(job["id"]) == "succeeded"
    return dict(api.get(f"/api/v1/jobs/{job['id']}").get_json())


def read_zip(api: Api, path: str) -> zipfile.ZipFile:
    r = api.get(path)
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    assert r.mimetype == "application/zip"
    assert "attachment" in r.headers["Content-Disposition"]
    assert r.is_streamed, "the ZIP is streamed, not built in memory first"
    archive = zipfile.ZipFile(io.BytesIO(r.get_data()))
    assert archive.testzip() is None
    return archive


def check_job_folder(api: Api, archive: zipfile.ZipFile, job: dict[str, Any]) -> None:
    """The job's folder holds its result.json (= the API's result) and every output PNG
    byte for byte as the API serves it."""
    stem = Path(job["image"]["filename"]).stem
    folder = f"{stem}-{job['id'][:8]}/"
    result = json.loads(archive.read(folder + "result.json"))
    assert result["job_id"] == job["id"] and result["status"] == job["status"]
    assert result["params"] == job["params"] and result["image"] == job["image"]
    for key, value in (job["result"] or {}).items():
        assert result[key] == value, key
    outputs = (job["result"] or {}).get("outputs", {})
    for name, url in outputs.items():
        assert archive.read(f"{folder}{name}.png") == api.get(url).get_data(), name
    names = {n for n in archive.namelist() if n.startswith(folder)}
    assert names == {folder + "result.json", *(f"{folder}{name}.png" for name in outputs)}


def test_run_export_holds_every_job_as_the_api_serves_it(api: Api) -> None:
    images = [tiny_png(seed, 20) for seed in range(4)]
    gallery = api.post("/api/v1/galleries", json={"name": "g", "params": {"k": 3}}).get_json()
    upload = api.upload(*[(data, f"pic {i}.png") for i, data in enumerate(images)]).get_json()
    ids = [item["id"] for item in upload["items"]]
    r = api.post(f"/api/v1/galleries/{gallery['id']}/images", json={"image_ids": ids})
    assert r.status_code == 201
    run = api.post(
        f"/api/v1/galleries/{gallery['id']}/runs",
        json={"only_stale": False, "params": {"outputs": ["labels", "recolor", "overlay"]}},
    ).get_json()
    jobs = api.get(f"/api/v1/runs/{run['id']}/jobs").get_json()["items"]
    assert len(jobs) == 4
    for job in jobs[:3]:
        assert api.run_job(job["id"]) == "succeeded"
    api.delete(f"/api/v1/jobs/{jobs[3]['id']}")  # canceled: a folder with result.json only
    jobs = [api.get(f"/api/v1/jobs/{job['id']}").get_json() for job in jobs]

    archive = read_zip(api, f"/api/v1/runs/{run['id']}/export.zip")
    assert archive.namelist()[0] == "manifest.json"
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["kind"] == "run" and manifest["run"]["id"] == run["id"]
    assert {entry["job_id"] for entry in manifest["jobs"]} == {job["id"] for job in jobs}
    for entry in manifest["jobs"]:
        for name in entry["files"]:
            archive.getinfo(entry["folder"] + name)  # every file the manifest names is there
    for job in jobs:
        check_job_folder(api, archive, job)
    statuses = sorted(job["status"] for job in jobs)
    assert statuses == ["canceled", "succeeded", "succeeded", "succeeded"]
    png = next(info for info in archive.infolist() if info.filename.endswith(".png"))
    assert png.compress_type == zipfile.ZIP_STORED  # PNGs are compressed already
    assert all(re.fullmatch(r"[A-Za-z0-9._ /-]+", name) for name in archive.namelist())


def test_job_export_and_not_found(api: Api) -> None:
    job = finished_job(api)
    archive = read_zip(api, f"/api/v1/jobs/{job['id']}/export.zip")
    assert archive.namelist()[0] == "manifest.json"
    check_job_folder(api, archive, job)
    other = api.new_token()
    assert_error(api.get(f"/api/v1/jobs/{job['id']}/export.zip", other), 404, "job_not_found")
    assert_error(api.get("/api/v1/runs/nope/export.zip"), 404, "run_not_found")


def parse_gpl(text: str) -> list[tuple[int, int, int, str]]:
    lines = text.splitlines()
    assert lines[0] == "GIMP Palette" and lines[1].startswith("Name: ")
    assert re.fullmatch(r"Columns: \d+", lines[2])
    out = []
    for line in lines[3:]:
        if not line or line.startswith("#"):
            continue
        rgb, name = line.split("\t", 1)
        r, g, b = (int(v) for v in rgb.split())
        out.append((r, g, b, name))
    return out


def parse_ase(data: bytes) -> list[tuple[str, str, tuple[float, ...], int]]:
    """Adobe Swatch Exchange, read by its layout (big-endian)."""
    assert data[:4] == b"ASEF"
    major, minor, count = struct.unpack(">HHI", data[4:12])
    assert (major, minor) == (1, 0)
    pos, out = 12, []
    for _ in range(count):
        kind, length = struct.unpack(">HI", data[pos : pos + 6])
        assert kind == 0x0001
        block = data[pos + 6 : pos + 6 + length]
        (units,) = struct.unpack(">H", block[:2])
        raw_name = block[2 : 2 + units * 2]
        assert raw_name[-2:] == b"\x00\x00", "the name ends with its NUL"
        name = raw_name[:-2].decode("utf-16-be")
        rest = block[2 + units * 2 :]
        model = rest[:4].decode("ascii")
        values = struct.unpack(">fff", rest[4:16])
        (color_type,) = struct.unpack(">H", rest[16:18])
        assert len(rest) == 18
        out.append((name, model, values, color_type))
        pos += 6 + length
    assert pos == len(data)
    return out


def test_each_palette_format_parses_back_to_the_clusters(api: Api) -> None:
    job = finished_job(api, seed=5, k=4)
    clusters = job["result"]["clusters"]
    base = f"/api/v1/jobs/{job['id']}/palette"

    r = api.get(base + ".json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    from kseg.shared.core.palette import distinct_names, percents

    names = distinct_names([c["name"] for c in clusters])
    shown = percents([c["fraction"] for c in clusters])
    assert r.get_json() == [
        {"hex": c["hex"], "rgb": c["rgb"], "name": n, "fraction": c["fraction"], "percent": p}
        for c, n, p in zip(clusters, names, shown, strict=True)
    ]
    assert abs(sum(shown) - 100) < 1e-9

    r = api.get(base + ".css")
    assert r.status_code == 200 and r.mimetype == "text/css"
    css = r.get_data(as_text=True)
    assert re.search(r":root\s*\{", css)
    found = re.findall(r"--kseg-(\d+):\s*(#[0-9a-f]{6});", css)
    assert found == [(str(i), c["hex"]) for i, c in enumerate(clusters)]

    r = api.get(base + ".gpl")
    assert r.status_code == 200
    gpl = parse_gpl(r.get_data(as_text=True))
    assert [(r_, g, b) for r_, g, b, _ in gpl] == [tuple(c["rgb"]) for c in clusters]
    assert all(c["hex"] in name for (_, _, _, name), c in zip(gpl, clusters, strict=True))

    r = api.get(base + ".ase")
    assert r.status_code == 200 and r.mimetype == "application/octet-stream"
    ase = parse_ase(r.get_data())
    assert len(ase) == len(clusters)
    for (name, model, values, color_type), c in zip(ase, clusters, strict=True):
        assert model == "RGB " and color_type == 2 and c["hex"] in name
        assert [round(v * 255) for v in values] == c["rgb"]

    assert_error(api.get(base + ".svg"), 404, "output_not_found")
    queued = api.submit(tiny_png(9), "q.png", k=2).get_json()
    assert_error(api.get(f"/api/v1/jobs/{queued['id']}/palette.json"), 404, "output_not_found")


def test_cli_submit_webhook_and_fetch_zip(api: Api, tmp_path: Path) -> None:
    """``kseg submit --webhook URL`` passes the URL on; ``kseg fetch --zip`` writes the job's
    export.zip."""
    from tests.conftest import serve_app
    from tests.service.test_cli_client import kseg

    server = serve_app(api.app)
    try:
        image = tmp_path / "cli photo.png"
        image.write_bytes(tiny_png(11, 20))
        hook = "http://127.0.0.1:9/kseg-hook"
        connection = ["--url", server.base_url, "--token", api.token]
        done = kseg(
            "submit", str(image), "-k", "3", "--no-wait", "--webhook", hook,
            "--webhook-events", "job.succeeded,job.failed", *connection, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.split("\t")[0]
        job = api.get(f"/api/v1/jobs/{job_id}").get_json()
        assert job["webhook_url"] == hook
        assert job["webhook_events"] == ["job.succeeded", "job.failed"]
        assert api.run_job(job_id) == "succeeded"
        out = tmp_path / "zips"
        done = kseg("fetch", job_id, "--zip", "-o", str(out), *connection, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        target = out / "cli photo-kseg.zip"
        assert target.is_file(), sorted(p.name for p in out.iterdir())
        archive = zipfile.ZipFile(target)
        assert archive.namelist()[0] == "manifest.json"
        check_job_folder(api, archive, api.get(f"/api/v1/jobs/{job_id}").get_json())
        assert not list(out.glob(".*.part")), "no partial download left behind"
    finally:
        server.stop()


def test_job_and_run_pages_offer_the_zip(api: Api) -> None:
    """The job page and the run page link their export.zip, which the page's session cookie
    may download (GET on the API with the cookie)."""
    job = finished_job(api, seed=12)
    from kseg.shared.store.auth import create_token, owner_for_token
    from kseg.shared.store.db import session_scope

    client = api.app.test_client()
    # Sign the page client in as the API's owner, with a one-time link of that owner.
    with session_scope(api.settings.database_url) as session:
        owner = owner_for_token(session, api.token)
        assert owner is not None
        link = create_token(session, owner.name, "link", one_time=True)
    assert client.get(f"/login/{link}").status_code in (302, 303)
    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert f'href="/api/v1/jobs/{job["id"]}/export.zip"' in page and "Download ZIP" in page
    for fmt in ("json", "css", "gpl", "ase"):
        assert f'href="/api/v1/jobs/{job["id"]}/palette.{fmt}"' in page
    r = client.get(f"/api/v1/jobs/{job['id']}/export.zip")
    assert r.status_code == 200 and r.mimetype == "application/zip"

    gallery = api.post("/api/v1/galleries", json={"name": "pages"}).get_json()
    image_id = job["image"]["id"]
    api.post(f"/api/v1/galleries/{gallery['id']}/images", json={"image_ids": [image_id]})
    run = api.post(f"/api/v1/galleries/{gallery['id']}/runs", json={"only_stale": False})
    run_id = run.get_json()["id"]
    page = client.get(f"/runs/{run_id}").get_data(as_text=True)
    assert f'href="/api/v1/runs/{run_id}/export.zip"' in page and "Download ZIP" in page
