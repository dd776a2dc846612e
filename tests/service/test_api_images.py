"""``/api/v1/images``: upload, deduplication per owner, metadata, original bytes."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.service.test_api_common import (
    Api,
    assert_error,
    baby,
    make_api,
    tiny_png,
    weixin,
)


def test_upload_answers_201_with_items(api: Api) -> None:
    r = api.upload((baby(), "baby.jpg"), (tiny_png(1), "dir/tiny.png"))
    assert r.status_code == 201, r.get_json()
    items = r.get_json()["items"]
    assert [i["filename"] for i in items] == ["baby.jpg", "tiny.png"]
    first = items[0]
    assert (first["width"], first["height"]) == (100, 133)
    assert first["content_type"] == "image/jpeg" and first["format"] == "JPEG"
    assert first["size_bytes"] == len(baby())
    assert re.fullmatch(r"[0-9a-f]{64}", first["sha256"])
    assert first["created_at"].endswith("Z")
    assert items[1]["content_type"] == "image/png" and (items[1]["width"], items[1]["height"]) == (
        8,
        8,
    )


def test_same_bytes_twice_give_the_same_id(api: Api) -> None:
    one = api.upload((weixin(), "a.jpg")).get_json()["items"][0]
    two = api.upload((weixin(), "b.jpg")).get_json()["items"][0]
    assert one["id"] == two["id"]
    both = api.upload((tiny_png(2), "x.png"), (tiny_png(2), "y.png")).get_json()["items"]
    assert both[0]["id"] == both[1]["id"]
    # a job submitted with the same bytes uses the same image
    job = api.submit(weixin(), "c.jpg").get_json()
    assert job["image"]["id"] == one["id"]
    # another owner uploading the same bytes gets their own image
    other = api.new_token()
    r = api.post(
        "/api/v1/images",
        token=other,
        data={"file": (io.BytesIO(weixin()), "a.jpg")},
    )
    assert r.status_code == 201 and r.get_json()["items"][0]["id"] != one["id"]


def test_get_image_and_its_file(api: Api) -> None:
    image = api.upload((baby(), "baby.jpg")).get_json()["items"][0]
    r = api.get(f"/api/v1/images/{image['id']}")
    assert r.status_code == 200 and r.get_json() == image
    f = api.get(f"/api/v1/images/{image['id']}/file")
    assert f.status_code == 200 and f.data == baby() and f.mimetype == "image/jpeg"
    assert f.headers["ETag"] == f'"{image["sha256"]}"'
    assert "baby.jpg" in f.headers["Content-Disposition"]
    cached = api.get(
        f"/api/v1/images/{image['id']}/file", headers={"If-None-Match": f.headers["ETag"]}
    )
    assert cached.status_code == 304 and cached.data == b""
    assert_error(api.get("/api/v1/images/nope"), 404, "image_not_found")
    assert_error(api.get("/api/v1/images/nope/file"), 404, "image_not_found")
    other = api.new_token()
    assert_error(api.get(f"/api/v1/images/{image['id']}/file", token=other), 404)


def test_list_images_paged(api: Api) -> None:
    ids = [
        api.upload((tiny_png(100 + i), f"{i}.png")).get_json()["items"][0]["id"] for i in range(3)
    ]
    page1 = api.get("/api/v1/images?limit=2").get_json()
    assert [i["id"] for i in page1["items"]] == ids[::-1][:2] and page1["next"]
    page2 = api.get(f"/api/v1/images?limit=2&cursor={page1['next']}").get_json()
    assert [i["id"] for i in page2["items"]] == ids[:1] and page2["next"] is None


def test_upload_needs_multipart(api: Api) -> None:
    assert_error(api.post("/api/v1/images", json={"file": "x"}), 400, "unsupported_content_type")
    r = api.post(
        "/api/v1/images",
        data={"file": (io.BytesIO(tiny_png(3)), "a.png"), "note": "hi"},
    )
    assert_error(r, 422, "unknown_field")


# ---------------------------------------------------------------- delete


def _rows(api: Api, model: type, **where: str) -> int:
    from sqlalchemy import func, select

    from kseg.shared.store.db import get_sessionmaker

    with get_sessionmaker(api.settings.database_url)() as session:
        stmt = select(func.count()).select_from(model)
        for column, value in where.items():
            stmt = stmt.where(getattr(model, column) == value)
        return int(session.scalar(stmt) or 0)


def test_delete_image_removes_it_with_its_jobs_and_results(api: Api) -> None:
    from kseg.shared.store.models import Image, Job, Result, ResultOutput

    keep = api.submit(tiny_png(21), k=2).get_json()  # another image of the same owner
    done = api.submit(baby(), "baby.jpg", k=3).get_json()
    image_id = done["image"]["id"]
    assert api.run_job(done["id"]) == "succeeded"
    again = api.submit(baby(), "baby.jpg", k=3).get_json()  # reuses the result
    assert again["status"] == "succeeded" and again["image"]["id"] == image_id
    queued = api.submit(baby(), "baby.jpg", k=4).get_json()
    assert api.run_job(keep["id"]) == "succeeded"
    result_id = _result_id(api, done["id"])
    assert _rows(api, ResultOutput, result_id=result_id) == 5

    r = api.delete(f"/api/v1/images/{image_id}")
    assert r.status_code == 204 and r.get_data() == b""

    assert_error(api.get(f"/api/v1/images/{image_id}"), 404, "image_not_found")
    assert_error(api.get(f"/api/v1/images/{image_id}/file"), 404, "image_not_found")
    for job in (done, again, queued):
        assert_error(api.get(f"/api/v1/jobs/{job['id']}"), 404, "job_not_found")
    assert_error(api.get(f"/api/v1/jobs/{done['id']}/outputs/recolor.png"), 404)
    assert _rows(api, Image, id=image_id) == 0
    assert _rows(api, Job, image_id=image_id) == 0
    assert _rows(api, Result, image_id=image_id) == 0
    assert _rows(api, ResultOutput, result_id=result_id) == 0
    # The owner's other image, job and result are untouched.
    assert api.get(f"/api/v1/jobs/{keep['id']}").get_json()["status"] == "succeeded"
    assert api.get(f"/api/v1/jobs/{keep['id']}/outputs/recolor.png").status_code == 200
    # The queued job's message may still arrive: there is nothing left to run or store.
    assert api.run_job(queued["id"]) == "missing"
    assert _rows(api, Result, image_id=image_id) == 0
    # The same bytes again are a new image.
    new = api.upload((baby(), "baby.jpg")).get_json()["items"][0]
    assert new["id"] != image_id
    assert_error(api.delete(f"/api/v1/images/{image_id}"), 404, "image_not_found")


def _result_id(api: Api, job_id: str) -> str:
    from sqlalchemy import select

    from kseg.shared.store.db import get_sessionmaker
    from kseg.shared.store.models import Job

    with get_sessionmaker(api.settings.database_url)() as session:
        return str(session.scalar(select(Job.result_id).where(Job.id == job_id)))


def test_delete_image_leaves_galleries_and_recounts_their_runs(api: Api) -> None:
    gid = api.post("/api/v1/galleries", json={"name": "trip", "params": {"k": 2}}).get_json()["id"]
    form = {"file": [(io.BytesIO(tiny_png(31)), "a.png"), (io.BytesIO(tiny_png(32)), "b.png")]}
    added = api.post(
        f"/api/v1/galleries/{gid}/images", data=form, content_type="multipart/form-data"
    )
    assert added.status_code == 201, added.get_json()
    first, second = (item["id"] for item in added.get_json()["items"])
    run = api.post(f"/api/v1/galleries/{gid}/runs", json={"only_stale": False}).get_json()
    jobs = api.get(f"/api/v1/runs/{run['id']}/jobs").get_json()["items"]
    (on_second,) = [job for job in jobs if job["image"]["id"] == second]
    (on_first,) = [job for job in jobs if job["image"]["id"] == first]
    assert api.run_job(on_first["id"]) == "succeeded"

    assert api.delete(f"/api/v1/images/{second}").status_code == 204

    gallery = api.get(f"/api/v1/galleries/{gid}").get_json()
    assert gallery["image_count"] == 1
    listed = api.get(f"/api/v1/galleries/{gid}/images").get_json()["items"]
    assert [image["id"] for image in listed] == [first]
    # The run's queued job went with the image: nothing is left to wait for, so it ended.
    counted = api.get(f"/api/v1/runs/{run['id']}").get_json()
    assert counted["jobs"]["queued"] == 0 and counted["jobs"]["succeeded"] == 1, counted
    assert counted["status"] == "succeeded" and counted["finished_at"] is not None
    assert api.run_job(on_second["id"]) == "missing"


def test_another_owners_image_cannot_be_deleted(api: Api) -> None:
    image = api.upload((weixin(), "w.jpg")).get_json()["items"][0]
    other = api.new_token()
    assert_error(api.delete(f"/api/v1/images/{image['id']}", token=other), 404, "image_not_found")
    assert_error(api.delete("/api/v1/images/not-an-id", token=other), 404, "image_not_found")
    assert api.get(f"/api/v1/images/{image['id']}").status_code == 200


def test_an_image_deleted_while_its_job_runs_leaves_nothing_behind(api: Api) -> None:
    from kseg.shared.core.segment import segment
    from kseg.shared.store.models import Job, Result
    from kseg.shared.store.runner import run_job

    job = api.submit(baby(), "baby.jpg", k=3).get_json()
    image_id = job["image"]["id"]

    def segment_then_delete(*args: object, **kwargs: object) -> object:
        seg = segment(*args, **kwargs)  # type: ignore[arg-type]
        assert api.delete(f"/api/v1/images/{image_id}").status_code == 204
        return seg

    outcome = run_job(
        job["id"], settings=api.settings, worker="test-delete", segment_fn=segment_then_delete
    )
    assert outcome == "lost"
    assert _rows(api, Job, id=job["id"]) == 0
    assert _rows(api, Result, image_id=image_id) == 0
    assert _rows(api, Result, job_id=job["id"]) == 0


def test_deleting_an_image_while_its_job_completes_waits_instead_of_deadlocking(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The completion takes the image's key-share lock (its result's foreign key) and then
    the job row's; the delete takes the image row first, so it waits for the completion
    and then removes its result too, where the other order would deadlock."""
    import threading

    from sqlalchemy import text

    from kseg.shared.store.db import get_engine, get_sessionmaker
    from kseg.shared.store.jobs import claim_job
    from kseg.shared.store.models import Result

    api = make_api(request, tmp_path, "postgres")  # row locks (SQLite has one writer)
    job = api.submit(baby(), "baby.jpg", k=3).get_json()
    image_id = job["image"]["id"]
    with get_sessionmaker(api.settings.database_url)() as session:
        assert claim_job(session, job["id"], "w1", max_attempts=3, stale_after=60).claimed
        session.commit()

    engine = get_engine(api.settings.database_url)
    worker = engine.connect()
    tx = worker.begin()
    worker.execute(  # as the completion's first statement does
        text(
            "INSERT INTO results (id, job_id, image_id, params_key, algorithm_version, meta, "
            "created_at) VALUES (:id, :job, :image, 'k', 'v', '{}', now())"
        ),
        {"id": "r-" + job["id"][:30], "job": job["id"], "image": image_id},
    )
    answer: dict[str, int] = {}
    deleting = threading.Thread(
        target=lambda: answer.update(code=api.delete(f"/api/v1/images/{image_id}").status_code)
    )
    deleting.start()
    try:
        # Autocommit: each poll its own transaction (a transaction sees one fixed snapshot
        # of pg_stat_activity).
        watcher = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        wait_for(
            lambda: (
                watcher.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"
                    )
                )
                == 1
            ),
            10,
            what="the delete waiting for the completion's lock",
        )
        watcher.close()
        worker.execute(  # the completion's compare-and-set, then its commit
            text("UPDATE jobs SET status = 'succeeded' WHERE id = :job"), {"job": job["id"]}
        )
        tx.commit()
    finally:
        deleting.join(30)
        worker.close()
    assert answer.get("code") == 204, answer
    assert _rows(api, Result, image_id=image_id) == 0
    assert_error(api.get(f"/api/v1/jobs/{job['id']}"), 404, "job_not_found")
