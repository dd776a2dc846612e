"""``/api/v1/galleries`` and ``/api/v1/runs`` on PostgreSQL + Redis and on SQLite + the
filesystem broker: CRUD, membership, owner isolation, schedules, runs executed in-process."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from kseg.shared.store.db import get_sessionmaker
from kseg.shared.store.models import Image, Job
from tests.service.test_api_common import (
    Api,
    assert_error,
    baby,
    make_api,
    tiny_png,
)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
DEFAULTS = {
    "k": 16,
    "normalize": "fixed",
    "color_space": "rgb",
    "outputs": ["labels", "gray", "color", "recolor", "overlay"],
    "max_side": None,
    "seed": 0,
}
FAST = {"k": 2, "outputs": ["labels", "recolor"]}


def create(api: Api, name: str = "holiday", **params: Any) -> dict[str, Any]:
    r = api.post("/api/v1/galleries", json={"name": name, "params": params or FAST})
    assert r.status_code == 201, r.get_json()
    return dict(r.get_json())


def add_by_upload(api: Api, gallery_id: str, *seeds: int) -> list[dict[str, Any]]:
    form = {"file": [(io.BytesIO(tiny_png(seed)), f"t{seed}.png") for seed in seeds]}
    r = api.post(f"/api/v1/galleries/{gallery_id}/images", data=form)
    assert r.status_code == 201, r.get_json()
    return list(r.get_json()["items"])


def owned(api: Api, model: Any) -> int:
    from kseg.shared.store.auth import owner_for_token

    with get_sessionmaker(api.settings.database_url)() as session:
        owner = owner_for_token(session, api.token)
        assert owner is not None
        stmt = select(func.count()).select_from(model).where(model.owner_id == owner.id)
        return int(session.scalar(stmt) or 0)


# ---------------------------------------------------------------- galleries


def test_gallery_crud(api: Api) -> None:
    r = api.post("/api/v1/galleries", json={"name": "  Holiday  2024 ", "params": {"k": 4}})
    assert r.status_code == 201, r.get_json()
    gallery = r.get_json()
    gid = gallery["id"]
    assert r.headers["Location"] == f"/api/v1/galleries/{gid}"
    assert gallery["name"] == "Holiday 2024"
    assert gallery["params"] == {**DEFAULTS, "k": 4}
    assert gallery["image_count"] == 0
    assert gallery["schedule"] is None and gallery["last_run"] is None
    assert ISO_Z.match(gallery["created_at"]) and ISO_Z.match(gallery["updated_at"])
    assert gallery["links"]["images"] == f"/api/v1/galleries/{gid}/images"
    assert api.get(f"/api/v1/galleries/{gid}").get_json() == gallery
    # no params: the contract's defaults
    plain = api.post("/api/v1/galleries", json={"name": "plain"}).get_json()
    assert plain["params"] == DEFAULTS

    # PATCH: rename; params merge over the current defaults; null resets them
    r = api.patch(f"/api/v1/galleries/{gid}", json={"name": "Renamed"})
    assert r.status_code == 200 and r.get_json()["name"] == "Renamed"
    assert r.get_json()["params"]["k"] == 4
    r = api.patch(f"/api/v1/galleries/{gid}", json={"params": {"normalize": "minmax"}})
    assert r.get_json()["params"] == {**DEFAULTS, "k": 4, "normalize": "minmax"}
    assert r.get_json()["name"] == "Renamed"
    r = api.patch(f"/api/v1/galleries/{gid}", json={"params": {"k": "auto", "k_max": 5}})
    assert r.get_json()["params"]["k_max"] == 5 and r.get_json()["params"]["k_min"] == 2
    r = api.patch(f"/api/v1/galleries/{gid}", json={"params": None})
    assert r.get_json()["params"] == DEFAULTS
    assert api.get(f"/api/v1/galleries/{gid}").get_json()["name"] == "Renamed"

    # invalid values are 422 and change nothing
    assert_error(api.patch(f"/api/v1/galleries/{gid}", json={"params": {"k": 1}}), 422)
    assert_error(api.patch(f"/api/v1/galleries/{gid}", json={"name": None}), 422)
    assert_error(api.patch(f"/api/v1/galleries/{gid}", json={"name": "   "}), 422)
    assert_error(api.patch(f"/api/v1/galleries/{gid}", json={"colour": "red"}), 422)
    assert api.get(f"/api/v1/galleries/{gid}").get_json()["params"] == DEFAULTS

    # DELETE, then it is gone
    r = api.delete(f"/api/v1/galleries/{gid}")
    assert r.status_code == 204 and r.data == b""
    assert_error(api.get(f"/api/v1/galleries/{gid}"), 404, "gallery_not_found")
    assert_error(api.delete(f"/api/v1/galleries/{gid}"), 404, "gallery_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x" * 201},
        {"name": 3},
        {"name": "ok", "params": {"k": 1}},
        {"name": "ok", "params": {"k_min": 9, "k_max": 3, "k": "auto"}},
        {"name": "ok", "params": {"outputs": ["nope"]}},
        {"name": "ok", "params": "k=3"},
        {"name": "ok", "extra": True},
    ],
)
def test_create_gallery_invalid_is_422(api: Api, body: dict[str, Any]) -> None:
    assert_error(api.post("/api/v1/galleries", json=body), 422)
    assert api.get("/api/v1/galleries").get_json()["items"] == []


def test_list_galleries_paged_newest_first(api: Api) -> None:
    ids = [create(api, f"g{i}")["id"] for i in range(3)]
    first = api.get("/api/v1/galleries?limit=2").get_json()
    assert [g["id"] for g in first["items"]] == ids[:0:-1] and first["next"]
    second = api.get(f"/api/v1/galleries?limit=2&cursor={first['next']}").get_json()
    assert [g["id"] for g in second["items"]] == ids[:1] and second["next"] is None


# ---------------------------------------------------------------- images


def test_add_images_by_upload_and_by_ids_then_remove(api: Api) -> None:
    gid = create(api)["id"]
    items = add_by_upload(api, gid, 1, 2)
    assert [i["filename"] for i in items] == ["t1.png", "t2.png"]
    assert api.get(f"/api/v1/galleries/{gid}").get_json()["image_count"] == 2
    # by ids: one already in the gallery (kept once), one uploaded elsewhere, one twice
    other = api.upload((baby(), "baby.jpg")).get_json()["items"][0]
    body = {"image_ids": [items[0]["id"], other["id"], other["id"]]}
    r = api.post(f"/api/v1/galleries/{gid}/images", json=body)
    assert r.status_code == 201, r.get_json()
    assert [i["id"] for i in r.get_json()["items"]] == body["image_ids"]
    assert api.get(f"/api/v1/galleries/{gid}").get_json()["image_count"] == 3

    # listed newest added first, with no job yet
    listed = api.get(f"/api/v1/galleries/{gid}/images").get_json()
    assert listed["next"] is None
    assert listed["items"][0]["id"] == other["id"]
    assert {i["id"] for i in listed["items"]} == {items[0]["id"], items[1]["id"], other["id"]}
    assert all(i["latest_job"] is None and ISO_Z.match(i["added_at"]) for i in listed["items"])
    page = api.get(f"/api/v1/galleries/{gid}/images?limit=2").get_json()
    rest = api.get(f"/api/v1/galleries/{gid}/images?limit=2&cursor={page['next']}").get_json()
    assert [i["id"] for i in page["items"] + rest["items"]] == [i["id"] for i in listed["items"]]

    # an unknown id adds nothing
    r = api.post(f"/api/v1/galleries/{gid}/images", json={"image_ids": ["nope", other["id"]]})
    assert_error(r, 404, "image_not_found")
    assert_error(api.post(f"/api/v1/galleries/{gid}/images", json={"image_ids": []}), 422)
    # one bad file in an upload stores none of them
    form = {
        "file": [(io.BytesIO(tiny_png(7)), "good.png"), (io.BytesIO(b"not an image"), "bad.png")]
    }
    images_before = owned(api, Image)
    assert_error(api.post(f"/api/v1/galleries/{gid}/images", data=form), 415, "unsupported_image")
    assert owned(api, Image) == images_before
    assert api.get(f"/api/v1/galleries/{gid}").get_json()["image_count"] == 3

    # remove: the image leaves the gallery but still exists
    r = api.delete(f"/api/v1/galleries/{gid}/images/{other['id']}")
    assert r.status_code == 204
    assert api.get(f"/api/v1/galleries/{gid}").get_json()["image_count"] == 2
    assert api.get(f"/api/v1/images/{other['id']}").status_code == 200
    assert_error(api.delete(f"/api/v1/galleries/{gid}/images/{other['id']}"), 404)
    # deleting the gallery keeps its images
    assert api.delete(f"/api/v1/galleries/{gid}").status_code == 204
    assert api.get(f"/api/v1/images/{items[0]['id']}").status_code == 200


def test_another_owners_gallery_and_run_are_404(api: Api) -> None:
    gallery = create(api)
    gid = gallery["id"]
    image = add_by_upload(api, gid, 3)[0]
    run = api.post(f"/api/v1/galleries/{gid}/runs").get_json()
    other = api.new_token()
    code = "gallery_not_found"
    assert_error(api.get(f"/api/v1/galleries/{gid}", token=other), 404, code)
    assert_error(api.patch(f"/api/v1/galleries/{gid}", token=other, json={"name": "x"}), 404, code)
    assert_error(api.delete(f"/api/v1/galleries/{gid}", token=other), 404, code)
    assert_error(api.get(f"/api/v1/galleries/{gid}/images", token=other), 404, code)
    r = api.post(f"/api/v1/galleries/{gid}/images", token=other, json={"image_ids": ["a"]})
    assert_error(r, 404, code)
    assert_error(api.delete(f"/api/v1/galleries/{gid}/images/{image['id']}", token=other), 404)
    schedule = {"cron": "0 3 * * *"}
    assert_error(api.put(f"/api/v1/galleries/{gid}/schedule", token=other, json=schedule), 404)
    assert_error(api.get(f"/api/v1/galleries/{gid}/schedule", token=other), 404, code)
    assert_error(api.post(f"/api/v1/galleries/{gid}/runs", token=other), 404, code)
    assert_error(api.get(f"/api/v1/galleries/{gid}/runs", token=other), 404, code)
    assert_error(api.get(f"/api/v1/runs/{run['id']}", token=other), 404, "run_not_found")
    assert_error(api.get(f"/api/v1/runs/{run['id']}/jobs", token=other), 404, "run_not_found")
    assert_error(api.get(f"/api/v1/jobs?gallery_id={gid}", token=other), 404, code)
    assert api.get("/api/v1/galleries", token=other).get_json()["items"] == []
    # my image cannot be put in their gallery either
    theirs = api.post("/api/v1/galleries", token=other, json={"name": "theirs"}).get_json()
    r = api.post(
        f"/api/v1/galleries/{theirs['id']}/images", token=other, json={"image_ids": [image["id"]]}
    )
    assert_error(r, 404, "image_not_found")
    # and everything is still there for its owner
    assert api.get(f"/api/v1/galleries/{gid}").get_json()["image_count"] == 1


# ---------------------------------------------------------------- schedules


def next_3am(now: datetime) -> datetime:
    slot = now.replace(hour=3, minute=0, second=0, microsecond=0)
    return slot if slot > now else slot + timedelta(days=1)


def test_schedule_put_get_delete(api: Api) -> None:
    gid = create(api)["id"]
    path = f"/api/v1/galleries/{gid}/schedule"
    assert_error(api.get(path), 404, "schedule_not_found")
    before = datetime.now(UTC)
    r = api.put(path, json={"cron": "0 3 * * *", "timezone": "UTC", "enabled": True})
    after = datetime.now(UTC)
    assert r.status_code == 200, r.get_json()
    schedule = r.get_json()
    assert schedule["cron"] == "0 3 * * *" and schedule["timezone"] == "UTC"
    assert schedule["enabled"] is True and schedule["only_stale"] is True
    assert schedule["params"] is None
    assert ISO_Z.match(schedule["next_run_at"])
    slot = datetime.fromisoformat(schedule["next_run_at"])
    assert slot in {next_3am(before), next_3am(after)}
    assert "03:00" in schedule["description"] and "UTC" in schedule["description"]
    assert api.get(path).get_json() == schedule
    assert api.get(f"/api/v1/galleries/{gid}").get_json()["schedule"] == schedule

    # replaced: another zone, own params (merged over the gallery's), disabled
    body = {
        "cron": "30  2 * * 1-5",
        "timezone": "Europe/Berlin",
        "params": {"k": 3},
        "enabled": False,
        "only_stale": False,
    }
    r = api.put(path, json=body)
    assert r.status_code == 200, r.get_json()
    replaced = r.get_json()
    assert replaced["cron"] == "30 2 * * 1-5" and replaced["timezone"] == "Europe/Berlin"
    assert replaced["params"] == {**DEFAULTS, "k": 3, "outputs": ["labels", "recolor"]}
    assert replaced["enabled"] is False and replaced["next_run_at"] is None
    assert replaced["only_stale"] is False
    r = api.put(path, json={**body, "enabled": True})
    local = datetime.fromisoformat(r.get_json()["next_run_at"]).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    )
    assert (local.hour, local.minute) == (2, 30) and local.weekday() < 5

    r = api.delete(path)
    assert r.status_code == 204
    assert_error(api.get(path), 404, "schedule_not_found")
    assert_error(api.delete(path), 404, "schedule_not_found")
    assert api.get(f"/api/v1/galleries/{gid}").get_json()["schedule"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "hello"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),  # well-formed, never due
        ({"cron": "0 3 * * *", "timezone": "Mars/Base"}, "timezone"),
        ({"cron": "0 3 * * *", "timezone": ""}, "timezone"),
        ({"cron": "0 3 * * *", "params": {"k": 0}}, "k"),
        ({"timezone": "UTC"}, "cron"),
        ({"cron": "0 3 * * *", "enabled": "sometimes"}, "enabled"),
    ],
)
def test_bad_schedule_is_422(api: Api, body: dict[str, Any], field: str) -> None:
    gid = create(api)["id"]
    error = assert_error(api.put(f"/api/v1/galleries/{gid}/schedule", json=body), 422)
    assert error["code"] == "invalid_parameter"
    assert error["message"].startswith(f"{field}:"), error
    assert_error(api.get(f"/api/v1/galleries/{gid}/schedule"), 404)


# ---------------------------------------------------------------- runs


def test_run_executes_and_only_stale_skips(api: Api) -> None:
    gid = create(api)["id"]
    add_by_upload(api, gid, 11, 12)
    r = api.post(f"/api/v1/galleries/{gid}/runs", json={"only_stale": True})
    assert r.status_code == 202, r.get_json()
    run = r.get_json()
    assert r.headers["Location"] == f"/api/v1/runs/{run['id']}"
    assert run["gallery_id"] == gid and run["trigger"] == "manual"
    assert run["status"] == "running" and run["finished_at"] is None
    assert run["jobs"] == {
        "total": 2,
        "queued": 2,
        "dispatched": 0,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "skipped": 0,
    }
    assert run["params"] == {**DEFAULTS, **FAST} and run["only_stale"] is True
    assert run["scheduled_for"] is None and ISO_Z.match(run["created_at"])

    # the gallery's jobs, with gallery_id and run_id
    jobs = api.get(f"/api/v1/jobs?gallery_id={gid}").get_json()["items"]
    assert len(jobs) == 2
    assert all(j["gallery_id"] == gid and j["run_id"] == run["id"] for j in jobs)
    assert api.get(f"/api/v1/runs/{run['id']}/jobs").get_json()["items"] == jobs
    solo = api.submit(tiny_png(13), k=2).get_json()
    assert solo["gallery_id"] is None and solo["run_id"] is None
    assert solo["id"] not in {j["id"] for j in jobs}
    images = api.get(f"/api/v1/galleries/{gid}/images").get_json()["items"]
    assert {i["latest_job"]["status"] for i in images} == {"queued"}
    assert all(i["latest_job"]["recolor_url"] is None for i in images)

    for job in jobs:
        assert api.run_job(job["id"]) == "succeeded"
    done = api.get(f"/api/v1/runs/{run['id']}").get_json()
    assert done["status"] == "succeeded" and ISO_Z.match(done["finished_at"])
    assert done["jobs"] == {**run["jobs"], "queued": 0, "succeeded": 2}
    gallery = api.get(f"/api/v1/galleries/{gid}").get_json()
    assert gallery["last_run"] == done
    images = api.get(f"/api/v1/galleries/{gid}/images").get_json()["items"]
    for image in images:
        latest = image["latest_job"]
        assert latest["status"] == "succeeded" and latest["run_id"] == run["id"]
        assert latest["recolor_url"] == f"/api/v1/jobs/{latest['id']}/outputs/recolor.png"
        assert set(latest["outputs"]) == {"labels", "recolor"}
    png = api.get(images[0]["latest_job"]["recolor_url"])
    assert png.status_code == 200 and png.data.startswith(b"\x89PNG")

    # a second run (only_stale by default, empty body): every image is current
    r = api.post(f"/api/v1/galleries/{gid}/runs")
    assert r.status_code == 202, r.get_json()
    second = r.get_json()
    assert second["status"] == "succeeded" and second["finished_at"] is not None
    assert second["jobs"] == {
        "total": 2,
        "queued": 0,
        "dispatched": 0,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "skipped": 2,
    }
    assert api.get(f"/api/v1/runs/{second['id']}/jobs").get_json()["items"] == []
    # other parameters, or only_stale false: the images are processed again
    third = api.post(f"/api/v1/galleries/{gid}/runs", json={"params": {"k": 3}}).get_json()
    assert third["params"]["k"] == 3 and third["jobs"]["queued"] == 2
    fourth = api.post(f"/api/v1/galleries/{gid}/runs", json={"only_stale": False}).get_json()
    assert fourth["jobs"]["queued"] == 2 and fourth["jobs"]["skipped"] == 0
    listed = api.get(f"/api/v1/galleries/{gid}/runs").get_json()
    assert [x["id"] for x in listed["items"]] == [
        fourth["id"],
        third["id"],
        second["id"],
        run["id"],
    ]
    assert api.get(f"/api/v1/galleries/{gid}").get_json()["last_run"]["id"] == fourth["id"]
    assert len(api.get(f"/api/v1/jobs?gallery_id={gid}").get_json()["items"]) == 6

    # deleting the gallery removes its runs; the jobs stay, detached
    assert api.delete(f"/api/v1/galleries/{gid}").status_code == 204
    assert_error(api.get(f"/api/v1/runs/{run['id']}"), 404, "run_not_found")
    job = api.get(f"/api/v1/jobs/{jobs[0]['id']}").get_json()
    assert job["status"] == "succeeded" and job["gallery_id"] is None and job["run_id"] is None


def test_canceling_a_runs_job_recounts_the_run(api: Api) -> None:
    gid = create(api)["id"]
    add_by_upload(api, gid, 21, 22)
    run = api.post(f"/api/v1/galleries/{gid}/runs").get_json()
    first, second = api.get(f"/api/v1/runs/{run['id']}/jobs").get_json()["items"]
    assert api.delete(f"/api/v1/jobs/{first['id']}").status_code == 204
    counts = api.get(f"/api/v1/runs/{run['id']}").get_json()["jobs"]
    assert counts["failed"] == 1 and counts["queued"] == 1
    assert api.run_job(second["id"]) == "succeeded"
    assert api.get(f"/api/v1/runs/{run['id']}").get_json()["status"] == "partial"


def test_run_params_are_validated_and_empty_gallery_runs(api: Api) -> None:
    gid = create(api)["id"]
    for body in ({"params": {"k": 1}}, {"only_stale": "perhaps"}, {"bogus": 1}):
        assert_error(api.post(f"/api/v1/galleries/{gid}/runs", json=body), 422)
    assert api.get(f"/api/v1/galleries/{gid}/runs").get_json()["items"] == []
    r = api.post(f"/api/v1/galleries/{gid}/runs", json={})
    assert r.status_code == 202
    assert r.get_json()["status"] == "succeeded" and r.get_json()["jobs"]["total"] == 0


def test_run_answers_202_with_the_broker_down(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    api = make_api(request, tmp_path, "sqlite", broker_url=f"redis://127.0.0.1:{free_port()}/0")
    gid = create(api)["id"]
    add_by_upload(api, gid, 31)
    r = api.post(f"/api/v1/galleries/{gid}/runs")
    assert r.status_code == 202, r.get_json()
    assert r.get_json()["jobs"]["queued"] == 1
    assert owned(api, Job) == 1  # stored, for the sweeper to enqueue


# ---------------------------------------------------------------- errors


def test_malformed_requests_are_400(api: Api) -> None:
    gid = create(api)["id"]
    for method, path in [
        ("post", "/api/v1/galleries"),
        ("patch", f"/api/v1/galleries/{gid}"),
        ("post", f"/api/v1/galleries/{gid}/images"),
        ("put", f"/api/v1/galleries/{gid}/schedule"),
        ("post", f"/api/v1/galleries/{gid}/runs"),
    ]:
        send = getattr(api, method)
        r = send(path, data=b'{"name": ', content_type="application/json")
        assert_error(r, 400, "malformed_json")
        r = send(path, data=b"[1, 2]", content_type="application/json")
        assert_error(r, 400, "malformed_json")
        r = send(path, data=b"name=x", content_type="text/plain")
        assert_error(r, 400, "unsupported_content_type")


def test_unknown_and_odd_ids_are_404(api: Api) -> None:
    unknown = "00000000-0000-0000-0000-000000000000"
    gid = create(api)["id"]
    for ident in (unknown, "a%00b", "x" * 300):
        assert_error(api.get(f"/api/v1/galleries/{ident}"), 404, "gallery_not_found")
        assert_error(api.get(f"/api/v1/galleries/{ident}/runs"), 404, "gallery_not_found")
        assert_error(api.get(f"/api/v1/runs/{ident}"), 404, "run_not_found")
        assert_error(api.delete(f"/api/v1/galleries/{gid}/images/{ident}"), 404)
    assert_error(api.get(f"/api/v1/jobs?gallery_id={unknown}"), 404, "gallery_not_found")
    error = assert_error(api.get("/api/v1/galleries/nope"), 404)
    assert "GET /api/v1/galleries" in error["message"]


def test_no_token_is_401(api: Api) -> None:
    gid = create(api)["id"]
    for method, path in [
        ("get", "/api/v1/galleries"),
        ("post", "/api/v1/galleries"),
        ("get", f"/api/v1/galleries/{gid}"),
        ("patch", f"/api/v1/galleries/{gid}"),
        ("delete", f"/api/v1/galleries/{gid}"),
        ("post", f"/api/v1/galleries/{gid}/images"),
        ("put", f"/api/v1/galleries/{gid}/schedule"),
        ("post", f"/api/v1/galleries/{gid}/runs"),
        ("get", "/api/v1/runs/x"),
    ]:
        r = getattr(api.client, method)(path, json={})
        assert_error(r, 401, "missing_token")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.get(f"/api/v1/galleries/{gid}").status_code == 200


def test_run_jobs_come_with_the_run_counted_in_the_same_statement(api: Api) -> None:
    """``GET /runs/<id>/jobs`` answers ``run`` too, its counters and status read with the jobs
    listed: they agree on every page, while the run drains and once it ended."""
    gid = create(api)["id"]
    add_by_upload(api, gid, 21, 22, 23)
    run = api.post(f"/api/v1/galleries/{gid}/runs", json={"only_stale": False}).get_json()

    def page(query: str = "") -> dict[str, Any]:
        r = api.get(f"/api/v1/runs/{run['id']}/jobs{query}")
        assert r.status_code == 200, r.get_json()
        return dict(r.get_json())

    def agrees(body: dict[str, Any]) -> dict[str, int]:
        statuses = [item["status"] for item in body["items"]]
        counts = body["run"]["jobs"]
        for status in ("queued", "running", "succeeded"):
            assert counts[status] == statuses.count(status), (status, body["run"])
        assert counts["total"] == 3 and counts["skipped"] == 0
        return dict(counts)

    first = page()
    assert first["run"]["id"] == run["id"] and first["run"]["status"] == "running"
    assert agrees(first)["queued"] == 3
    assert api.run_job(first["items"][0]["id"]) == "succeeded"
    middle = page()
    assert agrees(middle)["succeeded"] == 1 and middle["run"]["status"] == "running"
    assert {k: v for k, v in middle["run"].items() if k != "jobs"} == {
        k: v for k, v in api.get(f"/api/v1/runs/{run['id']}").get_json().items() if k != "jobs"
    }
    # A page of one still counts the whole run.
    one = page("?limit=1")
    assert len(one["items"]) == 1 and one["next"]
    assert one["run"]["jobs"] == middle["run"]["jobs"]

    for item in middle["items"][1:]:
        assert api.run_job(item["id"]) == "succeeded"
    last = page()
    assert agrees(last)["succeeded"] == 3
    assert last["run"]["status"] == "succeeded" and ISO_Z.match(last["run"]["finished_at"])
    assert last["run"] == api.get(f"/api/v1/runs/{run['id']}").get_json()


def test_an_image_up_to_date_from_a_single_submission_is_current_in_the_gallery(
    api: Api,
) -> None:
    """An image segmented on its own with the gallery's parameters: runs skip it and the
    gallery's ``current_job`` is that job (``latest_job`` stays the gallery's own: none)."""
    gid = create(api)["id"]
    solo = api.submit(tiny_png(31), "solo.png", k=2, outputs="labels,recolor").get_json()
    assert api.run_job(solo["id"]) == "succeeded"
    r = api.post(f"/api/v1/galleries/{gid}/images", json={"image_ids": [solo["image"]["id"]]})
    assert r.status_code == 201, r.get_json()
    (fresh,) = add_by_upload(api, gid, 32)

    items = {i["id"]: i for i in api.get(f"/api/v1/galleries/{gid}/images").get_json()["items"]}
    mine = items[solo["image"]["id"]]
    assert mine["latest_job"] is None
    assert mine["current_job"]["id"] == solo["id"]
    assert mine["current_job"]["recolor_url"] == f"/api/v1/jobs/{solo['id']}/outputs/recolor.png"
    assert items[fresh["id"]]["current_job"] is None

    run = api.post(f"/api/v1/galleries/{gid}/runs", json={"only_stale": True}).get_json()
    assert run["jobs"]["total"] == 2 and run["jobs"]["skipped"] == 1
    (job,) = api.get(f"/api/v1/runs/{run['id']}/jobs").get_json()["items"]
    assert job["image"]["id"] == fresh["id"]
    items = {i["id"]: i for i in api.get(f"/api/v1/galleries/{gid}/images").get_json()["items"]}
    assert items[solo["image"]["id"]]["current_job"]["id"] == solo["id"]
    assert items[fresh["id"]]["current_job"]["id"] == job["id"]
    assert items[fresh["id"]]["current_job"]["status"] == "queued"
