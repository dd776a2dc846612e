"""``/api/v1/jobs`` on PostgreSQL + Redis and on SQLite + the filesystem broker."""

from __future__ import annotations

import io
import re
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from kseg.shared.store.db import get_sessionmaker
from kseg.shared.store.models import Job, Result
from tests.service.test_api_common import (
    Api,
    assert_error,
    baby,
    make_api,
    tiny_png,
    weixin,
)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_submit_answers_202_with_job_and_location(api: Api) -> None:
    r = api.submit(baby(), "baby.jpg", k=4, outputs="gray,labels", seed=3)
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert r.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["progress"] == 0
    assert job["params"] == {
        "k": 4,
        "normalize": "fixed",
        "color_space": "rgb",
        "outputs": ["labels", "gray"],
        "max_side": None,
        "seed": 3,
    }
    assert job["image"]["filename"] == "baby.jpg"
    assert (job["image"]["width"], job["image"]["height"]) == (100, 133)
    assert ISO_Z.match(job["created_at"]), job["created_at"]
    assert job["started_at"] is None and job["finished_at"] is None
    assert job["error"] is None and job["result"] is None and job["reused_from"] is None
    # The row was committed (the API reads it back through a new request).
    again = api.get(r.headers["Location"])
    assert again.status_code == 200 and again.get_json()["id"] == job["id"]


def test_submit_defaults_are_the_contracts(api: Api) -> None:
    job = api.submit(baby()).get_json()
    assert job["params"] == {
        "k": 16,
        "normalize": "fixed",
        "color_space": "rgb",
        "outputs": ["labels", "gray", "color", "recolor", "overlay"],
        "max_side": None,
        "seed": 0,
    }


def test_submit_auto_k_keeps_range_and_repeated_outputs(api: Api) -> None:
    form = {"k": "auto", "k_min": "2", "k_max": "5", "outputs": ["recolor", "labels"]}
    r = api.post("/api/v1/jobs", data={**form, "file": (io.BytesIO(baby()), "b.jpg")})
    assert r.status_code == 202, r.get_json()
    params = r.get_json()["params"]
    assert params["k"] == "auto" and (params["k_min"], params["k_max"]) == (2, 5)
    assert params["outputs"] == ["labels", "recolor"]


def test_submit_json_with_uploaded_image_id(api: Api) -> None:
    image = api.upload((weixin(), "w.jpg")).get_json()["items"][0]
    r = api.post("/api/v1/jobs", json={"image_id": image["id"], "k": 3, "normalize": "minmax"})
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert job["image"]["id"] == image["id"]
    assert job["params"]["k"] == 3 and job["params"]["normalize"] == "minmax"


def test_job_enqueued_on_real_broker(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """On Redis, the message is really published on the interactive queue, after the commit."""
    import redis

    from kseg.shared.messaging.celery_config import queue_name

    # A database of its own: jobs that earlier tests left without a worker fill the window.
    api = make_api(request, tmp_path, "postgres", fresh_db=True)
    job = api.submit(tiny_png(1)).get_json()
    assert job["queue"] == "interactive"
    client = redis.Redis.from_url(api.settings.broker_url)
    try:
        messages = client.lrange(queue_name(api.settings, "interactive"), 0, -1)
    finally:
        client.close()
    assert any(job["id"].encode() in m for m in messages), messages


def test_get_list_and_paging(api: Api) -> None:
    ids = [api.submit(tiny_png(i), f"t{i}.png", k=2).get_json()["id"] for i in range(5)]
    r = api.get("/api/v1/jobs?limit=2")
    assert r.status_code == 200
    seen: list[str] = []
    page = r.get_json()
    pages = 0
    while True:
        pages += 1
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        if page["next"] is None:
            break
        page = api.get(f"/api/v1/jobs?limit=2&cursor={page['next']}").get_json()
    assert pages == 3
    assert seen == list(reversed(ids)), "newest first, no repeats, no gaps"
    stamps = [
        datetime.fromisoformat(j["created_at"]) for j in api.get("/api/v1/jobs").get_json()["items"]
    ]
    assert stamps == sorted(stamps, reverse=True)


def test_list_filters_status_and_gallery(api: Api) -> None:
    first = api.submit(tiny_png(10)).get_json()["id"]
    second = api.submit(tiny_png(11)).get_json()["id"]
    assert api.delete(f"/api/v1/jobs/{second}").status_code == 204  # queued → canceled
    queued = api.get("/api/v1/jobs?status=queued").get_json()["items"]
    assert [j["id"] for j in queued] == [first]
    canceled = api.get("/api/v1/jobs?status=canceled").get_json()["items"]
    assert [j["id"] for j in canceled] == [second]
    both = api.get("/api/v1/jobs?status=queued,canceled").get_json()["items"]
    assert {j["id"] for j in both} == {first, second}
    # gallery_id filters by the gallery's runs (tests/service/test_api_galleries.py)
    assert_error(api.get("/api/v1/jobs?gallery_id=some-gallery"), 404, "gallery_not_found")
    assert_error(api.get("/api/v1/jobs?status=bogus"), 422, "invalid_parameter")


def test_list_filters_by_image(api: Api) -> None:
    a1 = api.submit(tiny_png(40), k=2).get_json()
    a2 = api.submit(tiny_png(40), k=3).get_json()  # the same bytes: the same image
    b = api.submit(tiny_png(41), k=2).get_json()
    image = a1["image"]["id"]
    assert a2["image"]["id"] == image != b["image"]["id"]
    listed = api.get(f"/api/v1/jobs?image_id={image}").get_json()["items"]
    assert [j["id"] for j in listed] == [a2["id"], a1["id"]]
    both = api.get(f"/api/v1/jobs?image_id={image}&status=queued&limit=1").get_json()
    assert [j["id"] for j in both["items"]] == [a2["id"]] and both["next"]
    assert_error(api.get("/api/v1/jobs?image_id=nope"), 404, "image_not_found")
    other = api.new_token()
    assert_error(api.get(f"/api/v1/jobs?image_id={image}", token=other), 404, "image_not_found")


def test_list_is_per_owner(api: Api) -> None:
    mine = api.submit(tiny_png(20)).get_json()["id"]
    other = api.new_token()
    theirs = api.get("/api/v1/jobs", token=other).get_json()["items"]
    assert mine not in [j["id"] for j in theirs]


def test_another_owners_job_is_404(api: Api) -> None:
    job = api.submit(tiny_png(30)).get_json()
    other = api.new_token()
    assert_error(api.get(f"/api/v1/jobs/{job['id']}", token=other), 404, "job_not_found")
    assert_error(api.delete(f"/api/v1/jobs/{job['id']}", token=other), 404, "job_not_found")
    assert_error(api.get(f"/api/v1/jobs/{job['id']}/outputs/gray.png", token=other), 404)
    image_id = job["image"]["id"]
    assert_error(api.get(f"/api/v1/images/{image_id}", token=other), 404, "image_not_found")
    r = api.post("/api/v1/jobs", token=other, json={"image_id": image_id})
    assert_error(r, 404, "image_not_found")
    # and it still exists for its owner
    assert api.get(f"/api/v1/jobs/{job['id']}").status_code == 200


def test_unknown_job_is_404(api: Api) -> None:
    assert_error(api.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000"), 404, "job_not_found")
    assert_error(api.delete("/api/v1/jobs/nope"), 404, "job_not_found")


def test_delete_queued_job_cancels_it(api: Api) -> None:
    job = api.submit(tiny_png(40)).get_json()
    r = api.delete(f"/api/v1/jobs/{job['id']}")
    assert r.status_code == 204 and r.data == b""
    after = api.get(f"/api/v1/jobs/{job['id']}").get_json()
    assert after["status"] == "canceled" and after["finished_at"] is not None
    # a finished (canceled) job is removed by a second DELETE
    assert api.delete(f"/api/v1/jobs/{job['id']}").status_code == 204
    assert_error(api.get(f"/api/v1/jobs/{job['id']}"), 404)


def test_succeeded_job_result_outputs_etag_and_304(api: Api) -> None:
    job = api.submit(baby(), "baby.jpg", k=3, outputs="labels,gray").get_json()
    assert api.run_job(job["id"]) == "succeeded"
    done = api.get(f"/api/v1/jobs/{job['id']}").get_json()
    assert done["status"] == "succeeded" and done["progress"] == 100
    assert ISO_Z.match(done["started_at"]) and ISO_Z.match(done["finished_at"])
    result = done["result"]
    assert result["k"] == 3 and len(result["clusters"]) == 3
    assert result["outputs"] == {
        "labels": f"/api/v1/jobs/{job['id']}/outputs/labels.png",
        "gray": f"/api/v1/jobs/{job['id']}/outputs/gray.png",
    }
    r = api.get(result["outputs"]["gray"])
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert r.data.startswith(b"\x89PNG")
    etag = r.headers["ETag"]
    assert etag.strip('"') and "max-age" in r.headers["Cache-Control"]
    again = api.get(result["outputs"]["gray"], headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["ETag"] == etag
    other = api.get(result["outputs"]["gray"], headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.data == r.data
    # an output that was not asked for, and a name that does not exist
    assert_error(api.get(f"/api/v1/jobs/{job['id']}/outputs/color.png"), 404, "output_not_found")
    assert_error(api.get(f"/api/v1/jobs/{job['id']}/outputs/bogus.png"), 404, "output_not_found")


def test_shared_image_data_is_stored_once_and_served_whole(api: Api) -> None:
    import numpy as np
    from PIL import Image as PILImage

    from kseg.shared.core.render import LABEL2RGB_COLORS
    from kseg.shared.store.models import ResultOutput

    job = api.submit(baby(), "baby.jpg", k=4).get_json()  # all five outputs
    assert api.run_job(job["id"]) == "succeeded"
    done = api.get(f"/api/v1/jobs/{job['id']}").get_json()
    pngs, etags = {}, []
    for name, url in done["result"]["outputs"].items():
        r = api.get(url)
        assert r.status_code == 200
        etags.append(r.headers["ETag"])
        pngs[name] = r.data
    assert len(set(etags)) == len(etags)  # each output its own validator, shared data or not
    decoded = {name: PILImage.open(io.BytesIO(png)) for name, png in pngs.items()}
    labels = np.asarray(decoded["labels"])
    centers = np.array([c["rgb"] for c in done["result"]["clusters"]], dtype=np.uint8)
    np.testing.assert_array_equal(
        np.asarray(decoded["color"].convert("RGB")), LABEL2RGB_COLORS[labels % 10]
    )
    np.testing.assert_array_equal(np.asarray(decoded["recolor"].convert("RGB")), centers[labels])
    # labels, color and recolor are one label map: its image data is stored once
    with get_sessionmaker(api.settings.database_url)() as session:
        rows = {
            row.name: row
            for row in session.scalars(
                select(ResultOutput).where(
                    ResultOutput.result_id
                    == select(Job.result_id).where(Job.id == job["id"]).scalar_subquery()
                )
            )
        }
        stored = {name: len(row.data) for name, row in rows.items()}
        sharing = {name: row.payload_of for name, row in rows.items()}
        sizes = {name: row.size_bytes for name, row in rows.items()}
    assert sharing == {
        "labels": None,
        "gray": None,
        "color": "labels",
        "recolor": "labels",
        "overlay": None,
    }
    assert stored["color"] < 1000 and stored["recolor"] < 1000
    assert stored["labels"] == len(pngs["labels"])
    assert sizes == {name: len(png) for name, png in pngs.items()}


def test_outputs_of_a_queued_job_are_404(api: Api) -> None:
    job = api.submit(tiny_png(50)).get_json()
    assert_error(api.get(f"/api/v1/jobs/{job['id']}/outputs/labels.png"), 404, "output_not_found")


def test_identical_job_reuses_result_and_delete_keeps_shared_result(api: Api) -> None:
    first = api.submit(weixin(), k=2, outputs="labels").get_json()
    assert api.run_job(first["id"]) == "succeeded"
    r = api.submit(weixin(), k=2, outputs="labels")
    assert r.status_code == 202
    second = r.get_json()
    assert second["status"] == "succeeded" and second["reused_from"] == first["id"]
    assert second["result"]["outputs"] == {
        "labels": f"/api/v1/jobs/{second['id']}/outputs/labels.png"
    }
    png_first = api.get(f"/api/v1/jobs/{first['id']}/outputs/labels.png").data
    png_second = api.get(f"/api/v1/jobs/{second['id']}/outputs/labels.png").data
    assert png_first == png_second
    # reuse=false computes again
    fresh = api.submit(weixin(), k=2, outputs="labels", reuse="false").get_json()
    assert fresh["status"] == "queued" and fresh["reused_from"] is None
    # deleting the computing job keeps the result the other job shares
    assert api.delete(f"/api/v1/jobs/{first['id']}").status_code == 204
    assert api.get(f"/api/v1/jobs/{second['id']}/outputs/labels.png").data == png_second
    assert api.delete(f"/api/v1/jobs/{second['id']}").status_code == 204
    with get_sessionmaker(api.settings.database_url)() as session:
        assert session.scalar(select(Job).where(Job.id == second["id"])) is None
        assert session.scalar(select(Result).where(Result.job_id == first["id"])) is None


def test_failed_job_has_error_object(api: Api) -> None:
    from kseg.shared.store.db import session_scope
    from kseg.shared.store.jobs import fail_job

    job = api.submit(tiny_png(60)).get_json()
    with session_scope(api.settings.database_url) as session:
        assert fail_job(session, job["id"], "worker_lost", "The worker stopped; try again.")
    body = api.get(f"/api/v1/jobs/{job['id']}").get_json()
    assert body["status"] == "failed" and body["result"] is None
    assert body["error"] == {"code": "worker_lost", "message": "The worker stopped; try again."}
