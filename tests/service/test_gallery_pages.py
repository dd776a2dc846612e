"""The gallery pages through Flask's test client, on PostgreSQL + Redis and on SQLite.

The list and the new-gallery form, adding (several) images, removing one, renaming and the
default parameters, run now, the schedule form (and its friendly errors), the run page, CSRF
refusals and another owner's gallery and run answering the 404 page. No worker runs: a run's
jobs run in-process with the worker's own runner where a test needs results.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from kseg.shared.store.db import get_sessionmaker
from kseg.shared.store.models import Gallery, GalleryImage, Image, Run, Schedule
from tests.service.test_api_common import baby, make_api, tiny_png
from tests.service.test_pages import Pages, field_error, text

GALLERY_PATH = re.compile(r"^/galleries/([0-9a-f-]{36})$")


def csrf(pages: Pages, path: str = "/galleries") -> str:
    return pages.csrf(path)


def create(pages: Pages, name: str = "Holiday", **params: Any) -> TestResponse:
    data: dict[str, Any] = {
        "csrf_token": csrf(pages),
        "name": name,
        "k_mode": "number",
        "k": "4",
        "normalize": "fixed",
        "color_space": "rgb",
        "outputs": ["labels", "recolor"],
        "max_side": "",
        "seed": "0",
    }
    data.update(params)
    return pages.client.post("/galleries", data=data)


def gallery_id_of(response: TestResponse) -> str:
    assert response.status_code == 303, text(response)[:3000]
    found = GALLERY_PATH.match(response.headers["Location"])
    assert found, response.headers["Location"]
    return found.group(1)


def new_gallery(pages: Pages, name: str = "Holiday", **params: Any) -> str:
    return gallery_id_of(create(pages, name, **params))


def upload(pages: Pages, gallery_id: str, files: list[tuple[bytes, str]]) -> TestResponse:
    data: dict[str, Any] = {
        "csrf_token": csrf(pages, f"/galleries/{gallery_id}"),
        "file": [(io.BytesIO(blob), name) for blob, name in files],
    }
    return pages.client.post(
        f"/galleries/{gallery_id}/images", data=data, content_type="multipart/form-data"
    )


def post(pages: Pages, path: str, gallery_id: str, **data: Any) -> TestResponse:
    return pages.client.post(
        path, data={"csrf_token": csrf(pages, f"/galleries/{gallery_id}"), **data}
    )


def count(pages: Pages, model: Any, **where: Any) -> int:
    """Rows of ``model`` matching ``where`` (the signed-in owner's, where rows have owners:
    the PostgreSQL database is shared by the session's tests)."""
    if hasattr(model, "owner_id") and "gallery_id" not in where:
        where["owner_id"] = pages.owner_id
    with get_sessionmaker(pages.api.settings.database_url)() as session:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return int(session.scalar(stmt) or 0)


def api_json(pages: Pages, path: str) -> Any:
    response = pages.api.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def three(pages: Pages, gallery_id: str) -> list[str]:
    response = upload(
        pages, gallery_id, [(tiny_png(seed, 16), f"tile-{seed}.png") for seed in (1, 2, 3)]
    )
    assert response.status_code == 303, text(response)[:3000]
    items = api_json(pages, f"/api/v1/galleries/{gallery_id}/images")["items"]
    return [item["id"] for item in items]


# ---------------------------------------------------------------- the list and creating


@pytest.mark.parametrize(
    "path",
    [
        "/galleries",
        "/galleries/00000000-0000-0000-0000-000000000000",
        "/runs/00000000-0000-0000-0000-000000000000",
    ],
)
def test_signed_out_gallery_pages_redirect_to_sign_in(pages: Pages, path: str) -> None:
    response = pages.client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/login?next={path}"


def test_the_list_offers_a_new_gallery_form_with_the_parameter_fields(signed_in: Pages) -> None:
    response = signed_in.client.get("/galleries")
    body = text(response)
    assert response.status_code == 200
    assert "No galleries yet" in body
    assert 'href="/galleries" aria-current="page">Galleries<' in body  # in the header nav
    assert '<label for="name">Name</label>' in body
    for field in ("k", "k_min", "k_max", "normalize", "color_space", "max_side", "seed"):
        assert f'id="{field}" name="{field}"' in body, field
    assert 'name="reuse"' not in body  # runs always compute afresh
    assert "<script>" not in body


def test_create_a_gallery_with_its_default_parameters(signed_in: Pages) -> None:
    gallery_id = new_gallery(
        signed_in, "  Holiday   2026 ", k_mode="auto", k_min="3", k_max="6", color_space="lab"
    )
    gallery = api_json(signed_in, f"/api/v1/galleries/{gallery_id}")
    assert gallery["name"] == "Holiday 2026"
    assert gallery["params"]["k"] == "auto" and gallery["params"]["k_max"] == 6
    assert gallery["params"]["color_space"] == "lab"
    assert gallery["params"]["outputs"] == ["labels", "recolor"]

    page = signed_in.client.get(f"/galleries/{gallery_id}")
    body = text(page)
    assert page.status_code == 200
    assert "Created the gallery Holiday 2026" in body
    assert "<h1>Holiday 2026</h1>" in body and "No images in this gallery yet" in body
    # The settings form shows the gallery's parameters.
    assert re.search(r'value="auto"[^>]*checked', body)
    assert 'id="k_max" name="k_max" value="6"' in body
    assert re.search(r'value="recolor" checked', body)
    assert not re.search(r'value="gray" checked', body)
    listing = text(signed_in.client.get("/galleries"))
    assert "Holiday 2026" in listing and "0 images" in listing and "never" in listing


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"name": "   "}, "name", "Give the gallery a name."),
        ({"name": "x" * 201}, "name", "At most 200 characters."),
        ({"k": "1"}, "k", "at least 2"),
        (
            {"k_mode": "auto", "k_min": "9", "k_max": "3"},
            "k_min",
            "“from” (9) must not exceed “to” (3)",
        ),
        ({"outputs": []}, "outputs", "at least one output"),
    ],
)
def test_a_bad_new_gallery_shows_the_error_next_to_its_field(
    signed_in: Pages, overrides: dict[str, Any], field: str, message: str
) -> None:
    response = create(signed_in, **overrides)
    assert response.status_code == 422 and response.mimetype == "text/html"
    assert message in field_error(response, field)
    assert "The gallery was not created" in text(response)
    assert 'aria-invalid="true"' in text(response)
    assert count(signed_in, Gallery) == 0


# ---------------------------------------------------------------- images


def test_add_several_images_and_remove_one(signed_in: Pages) -> None:
    gallery_id = new_gallery(signed_in)
    ids = three(signed_in, gallery_id)
    assert len(ids) == 3
    page = signed_in.client.get(f"/galleries/{gallery_id}")
    body = text(page)
    assert "Added 3 images. Run the gallery to segment them." in body
    assert len(re.findall(r'class="tile" data-image-id=', body)) == 3
    for image_id in ids:
        # The original's thumbnail while never run.
        assert f'src="/api/v1/images/{image_id}/thumbnail?size=480"' in body
    assert body.count("Not run yet") == 3
    assert "data-watch-grid" not in body  # nothing running: no polling

    # The same file again is the same image: not added twice.
    again = upload(signed_in, gallery_id, [(tiny_png(1, 16), "tile-1-again.png")])
    assert again.status_code == 303
    assert "1 was in the gallery already" in text(signed_in.client.get(f"/galleries/{gallery_id}"))
    assert count(signed_in, GalleryImage, gallery_id=gallery_id) == 3

    removed = post(signed_in, f"/galleries/{gallery_id}/images/{ids[0]}/remove", gallery_id)
    assert removed.status_code == 303
    body = text(signed_in.client.get(f"/galleries/{gallery_id}"))
    assert "from the gallery (the image and its results are kept)" in body
    assert f'data-image-id="{ids[0]}"' not in body
    assert count(signed_in, GalleryImage, gallery_id=gallery_id) == 2
    assert count(signed_in, Image, id=ids[0]) == 1  # the image itself stays
    # Removing it twice: not in the gallery any more.
    gone = post(signed_in, f"/galleries/{gallery_id}/images/{ids[0]}/remove", gallery_id)
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("files", "status", "message"),
    [
        ([(b"hello\n", "notes.txt"), (b"", "empty.png")], 415, "notes.txt: not an image"),
        ([(b"", "empty.png")], 422, "empty.png: the file is empty"),
        ([], 422, "Choose at least one image"),
    ],
)
def test_a_bad_upload_shows_a_message_and_adds_nothing(
    signed_in: Pages, files: list[tuple[bytes, str]], status: int, message: str
) -> None:
    gallery_id = new_gallery(signed_in)
    response = upload(signed_in, gallery_id, files)
    assert response.status_code == status, text(response)[:2000]
    assert message in field_error(response, "file")
    assert count(signed_in, GalleryImage, gallery_id=gallery_id) == 0
    assert signed_in.count(Image) == 0


def test_one_bad_file_in_a_drop_is_left_out_and_the_good_ones_are_added(
    signed_in: Pages,
) -> None:
    gallery_id = new_gallery(signed_in)
    files = [(tiny_png(1), "ok-1.png"), (b"hello\n", "notes.txt"), (tiny_png(2), "ok-2.png")]
    response = upload(signed_in, gallery_id, files)
    assert response.status_code == 303, text(response)[:2000]
    body = text(signed_in.client.get(f"/galleries/{gallery_id}"))
    assert "Added 2 images." in body
    assert "Left out notes.txt: not an image" in body
    assert count(signed_in, GalleryImage, gallery_id=gallery_id) == 2
    assert signed_in.count(Image) == 2


def test_an_upload_over_the_limit_is_a_friendly_413(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    pages = Pages(make_api(request, tmp_path, "sqlite", KSEG_MAX_UPLOAD_BYTES=str(20_000)))
    pages.sign_in()
    gallery_id = new_gallery(pages)
    response = upload(pages, gallery_id, [(b"\0" * 40_000, "big.png")])
    assert response.status_code == 413
    assert "over the 19.5 KB limit" in field_error(response, "file")
    assert "<h1>Holiday</h1>" in text(response)


# ---------------------------------------------------------------- settings and schedule


def test_rename_and_change_the_default_parameters(signed_in: Pages) -> None:
    gallery_id = new_gallery(signed_in)
    path = f"/galleries/{gallery_id}/settings"
    bad = post(
        signed_in, path, gallery_id, name="Renamed", k_mode="number", k="999", outputs="recolor"
    )
    assert bad.status_code == 422
    assert "at most 256" in field_error(bad, "k")
    assert re.search(r"<details[^>]*open", text(bad))  # the settings are shown open
    assert api_json(signed_in, f"/api/v1/galleries/{gallery_id}")["name"] == "Holiday"

    ok = post(
        signed_in,
        path,
        gallery_id,
        name="Renamed",
        k_mode="number",
        k="7",
        normalize="minmax",
        color_space="rgb",
        outputs=["recolor", "overlay"],
        seed="5",
        max_side="64",
    )
    assert ok.status_code == 303
    gallery = api_json(signed_in, f"/api/v1/galleries/{gallery_id}")
    assert gallery["name"] == "Renamed"
    assert gallery["params"] == {
        "k": 7,
        "normalize": "minmax",
        "color_space": "rgb",
        "outputs": ["recolor", "overlay"],
        "max_side": 64,
        "seed": 5,
    }
    assert "Saved the name" in text(signed_in.client.get(f"/galleries/{gallery_id}"))
    empty = post(signed_in, path, gallery_id, name=" ", k="7", outputs="recolor")
    assert empty.status_code == 422 and "Give the gallery a name" in field_error(empty, "name")


def test_a_schedule_shows_its_human_preview(signed_in: Pages) -> None:
    gallery_id = new_gallery(signed_in)
    path = f"/galleries/{gallery_id}/schedule"
    page = text(signed_in.client.get(f"/galleries/{gallery_id}"))
    assert "Not scheduled" in page and 'list="timezones"' in page
    assert '<option value="Europe/Berlin">' in page

    saved = post(
        signed_in, path, gallery_id, cron="0  3 * * *", timezone="Europe/Berlin", enabled="1"
    )
    assert saved.status_code == 303
    body = text(signed_in.client.get(f"/galleries/{gallery_id}"))
    assert "Saved the schedule." in body
    preview = re.search(r"Runs <strong>([^<]+)</strong>", body)
    assert preview, body
    assert re.fullmatch(
        r"every day at 03:00 \(Europe/Berlin\), next: \d{4}-\d\d-\d\d 03:00 CES?T", preview.group(1)
    ), preview.group(1)
    assert 'id="cron" name="cron" value="0 3 * * *"' in body
    schedule = api_json(signed_in, f"/api/v1/galleries/{gallery_id}/schedule")
    assert schedule["enabled"] is True and schedule["only_stale"] is False  # box left unticked
    listing = text(signed_in.client.get("/galleries"))
    assert "every day at 03:00 (Europe/Berlin)" in listing

    paused = post(signed_in, path, gallery_id, cron="30 6 * * 1", timezone="UTC", only_stale="1")
    assert paused.status_code == 303
    body = text(signed_in.client.get(f"/galleries/{gallery_id}"))
    assert "disabled" in body and "schedule disabled" in body
    schedule = api_json(signed_in, f"/api/v1/galleries/{gallery_id}/schedule")
    assert schedule["enabled"] is False and schedule["next_run_at"] is None

    removed = post(signed_in, f"{path}/delete", gallery_id)
    assert removed.status_code == 303
    assert count(signed_in, Schedule, gallery_id=gallery_id) == 0
    assert "Removed the schedule" in text(signed_in.client.get(f"/galleries/{gallery_id}"))


@pytest.mark.parametrize(
    ("cron", "timezone", "field", "message"),
    [
        ("0 25 * * *", "UTC", "cron", "is not a five-field cron expression"),
        ("every day", "UTC", "cron", "is not a five-field cron expression"),
        ("0 0 30 2 *", "UTC", "cron", "never matches"),
        ("0 3 * * *", "Mars/Olympus", "timezone", "is not an IANA time zone"),
        ("0 3 * * *", "", "timezone", "give an IANA time zone"),
    ],
)
def test_a_bad_schedule_shows_the_error_next_to_its_field(
    signed_in: Pages, cron: str, timezone: str, field: str, message: str
) -> None:
    gallery_id = new_gallery(signed_in)
    response = post(
        signed_in,
        f"/galleries/{gallery_id}/schedule",
        gallery_id,
        cron=cron,
        timezone=timezone,
        enabled="1",
    )
    assert response.status_code == 422 and response.mimetype == "text/html"
    shown = field_error(response, field)
    assert message.lower() in shown.lower(), shown
    body = text(response)
    assert f'value="{cron}"' in body  # what was typed stays in the form
    assert "Traceback" not in body
    assert count(signed_in, Schedule, gallery_id=gallery_id) == 0


# ---------------------------------------------------------------- runs


def test_run_now_creates_a_run_and_the_pages_follow_it(signed_in: Pages) -> None:
    gallery_id = new_gallery(signed_in)
    ids = three(signed_in, gallery_id)
    started = post(signed_in, f"/galleries/{gallery_id}/runs", gallery_id, only_stale="1")
    assert started.status_code == 303
    assert started.headers["Location"] == f"/galleries/{gallery_id}"
    runs = api_json(signed_in, f"/api/v1/galleries/{gallery_id}/runs")["items"]
    assert len(runs) == 1
    run = runs[0]
    assert run["trigger"] == "manual" and run["status"] == "running"
    assert run["jobs"]["total"] == 3 and run["jobs"]["queued"] == 3
    assert run["params"]["k"] == 4 and run["params"]["outputs"] == ["labels", "recolor"]

    body = text(signed_in.client.get(f"/galleries/{gallery_id}"))
    assert "Started a run: 3 images to segment." in body
    assert f'data-live-run="/api/v1/runs/{run["id"]}"' in body
    assert "data-watch-grid" in body
    assert f'data-grid="/api/v1/galleries/{gallery_id}/images?limit=48"' in body
    assert body.count(">Queued<") == 3 and "0/3 done" in body

    run_page = signed_in.client.get(f"/runs/{run['id']}")
    body = text(run_page)
    assert run_page.status_code == 200
    assert "Run of Holiday" in body and "Started with Run now" in body
    assert f'data-live-run="/api/v1/runs/{run["id"]}"' in body
    assert f'data-run-jobs="/api/v1/runs/{run["id"]}/jobs?limit=200"' in body
    assert len(re.findall(r'class="jobrow" data-job-id=', body)) == 3

    jobs = api_json(signed_in, f"/api/v1/runs/{run['id']}/jobs")["items"]
    for job in jobs:
        assert signed_in.api.run_job(job["id"]) == "succeeded"

    body = text(signed_in.client.get(f"/galleries/{gallery_id}"))
    for job in jobs:
        assert f'src="/api/v1/jobs/{job["id"]}/outputs/recolor/thumbnail?size=480"' in body
        assert f'href="/jobs/{job["id"]}" data-tile-link' in body
    for image_id in ids:
        assert f'src="/api/v1/images/{image_id}/thumbnail?size=480"' not in body
    assert "data-watch-grid" not in body and "data-live-run" not in body
    assert ">Succeeded<" in body and "3/3 done" in body and "3 succeeded" in body

    # A run's job page leads back to its gallery and run, not to the history.
    body = text(signed_in.client.get(f"/jobs/{jobs[0]['id']}"))
    assert f'href="/galleries/{gallery_id}">gallery</a>' in body
    assert f'href="/runs/{run["id"]}">run</a>' in body

    body = text(signed_in.client.get(f"/runs/{run['id']}"))
    assert ">Succeeded<" in body and "3/3 done" in body and "data-live-run" not in body
    assert body.count("outputs/recolor/thumbnail?size=160") == 3
    listing = text(signed_in.client.get("/galleries"))
    assert "3 images" in listing and ">Succeeded<" in listing and "3/3 done" in listing

    # Again, only stale ones: every image is current, so all are skipped.
    post(signed_in, f"/galleries/{gallery_id}/runs", gallery_id, only_stale="1")
    body = text(signed_in.client.get(f"/galleries/{gallery_id}"))
    assert "0 images to segment, 3 skipped (already up to date)" in body
    assert "3 skipped (up to date)" in body
    # Unticked: every image again.
    post(signed_in, f"/galleries/{gallery_id}/runs", gallery_id)
    assert "3 images to segment." in text(signed_in.client.get(f"/galleries/{gallery_id}"))
    assert count(signed_in, Run, gallery_id=gallery_id) == 3


def test_run_now_without_images_says_to_add_some(signed_in: Pages) -> None:
    gallery_id = new_gallery(signed_in)
    response = post(signed_in, f"/galleries/{gallery_id}/runs", gallery_id, only_stale="1")
    assert response.status_code == 303
    assert "has no images yet" in text(signed_in.client.get(f"/galleries/{gallery_id}"))
    assert count(signed_in, Run, gallery_id=gallery_id) == 0


def test_delete_a_gallery_keeps_its_images(signed_in: Pages) -> None:
    gallery_id = new_gallery(signed_in)
    three(signed_in, gallery_id)
    response = post(signed_in, f"/galleries/{gallery_id}/delete", gallery_id)
    assert response.status_code == 303 and response.headers["Location"] == "/galleries"
    assert "Deleted the gallery Holiday" in text(signed_in.client.get("/galleries"))
    assert signed_in.client.get(f"/galleries/{gallery_id}").status_code == 404
    assert count(signed_in, Gallery) == 0 and signed_in.count(Image) == 3


# ---------------------------------------------------------------- CSRF and owners


def test_form_posts_without_csrf_token_are_refused(signed_in: Pages) -> None:
    gallery_id = new_gallery(signed_in)
    image_id = three(signed_in, gallery_id)[0]
    refused = [
        ("/galleries", {"name": "Forged", "k": "4", "outputs": "recolor"}),
        (f"/galleries/{gallery_id}/runs", {"only_stale": "1"}),
        (f"/galleries/{gallery_id}/schedule", {"cron": "0 3 * * *", "timezone": "UTC"}),
        (f"/galleries/{gallery_id}/settings", {"name": "Forged", "k": "4"}),
        (f"/galleries/{gallery_id}/images/{image_id}/remove", {}),
        (f"/galleries/{gallery_id}/delete", {}),
    ]
    for path, data in refused:
        for token in (None, "forged"):
            sent = dict(data) if token is None else {**data, "csrf_token": token}
            response = signed_in.client.post(path, data=sent)
            assert response.status_code == 400, path
            assert response.mimetype == "text/html" and "form expired" in text(response), path
    upload_forged = signed_in.client.post(
        f"/galleries/{gallery_id}/images",
        data={"file": (io.BytesIO(baby()), "baby.jpg")},
        content_type="multipart/form-data",
    )
    assert upload_forged.status_code == 400
    assert count(signed_in, Gallery) == 1 and count(signed_in, Run) == 0
    assert count(signed_in, Schedule, gallery_id=gallery_id) == 0
    assert signed_in.count(Image) == 3
    assert api_json(signed_in, f"/api/v1/galleries/{gallery_id}")["name"] == "Holiday"


def test_another_owners_gallery_and_run_are_not_found(signed_in: Pages) -> None:
    api = signed_in.api
    theirs = api.new_token()
    gallery = api.post(
        "/api/v1/galleries", token=theirs, json={"name": "Secret garden", "params": {"k": 2}}
    ).get_json()
    added = api.post(
        f"/api/v1/galleries/{gallery['id']}/images",
        token=theirs,
        data={"file": (io.BytesIO(tiny_png(9)), "secret-rose.png")},
        content_type="multipart/form-data",
    )
    assert added.status_code == 201
    image_id = added.get_json()["items"][0]["id"]
    run = api.post(f"/api/v1/galleries/{gallery['id']}/runs", token=theirs, json={}).get_json()

    for path in (f"/galleries/{gallery['id']}", f"/runs/{run['id']}", "/runs/not-an-id"):
        page = signed_in.client.get(path)
        assert page.status_code == 404 and page.mimetype == "text/html", path
        body = text(page)
        assert "Not found" in body and "Secret garden" not in body and "secret-rose" not in body
    assert "Secret garden" not in text(signed_in.client.get("/galleries"))

    # Their gallery takes no writes from me either (a valid CSRF token of my own session).
    mine = new_gallery(signed_in, "Mine")
    token = csrf(signed_in, f"/galleries/{mine}")
    for path, data in (
        (f"/galleries/{gallery['id']}/runs", {}),
        (f"/galleries/{gallery['id']}/settings", {"name": "Taken", "k": "3"}),
        (f"/galleries/{gallery['id']}/schedule", {"cron": "0 3 * * *", "timezone": "UTC"}),
        (f"/galleries/{gallery['id']}/images/{image_id}/remove", {}),
        (f"/galleries/{gallery['id']}/delete", {}),
        (f"/galleries/{mine}/images/{image_id}/remove", {}),  # their image, my gallery
    ):
        response = signed_in.client.post(path, data={"csrf_token": token, **data})
        assert response.status_code == 404, path
    upload_theirs = signed_in.client.post(
        f"/galleries/{gallery['id']}/images",
        data={"csrf_token": token, "file": (io.BytesIO(baby()), "baby.jpg")},
        content_type="multipart/form-data",
    )
    assert upload_theirs.status_code == 404
    still = api.get(f"/api/v1/galleries/{gallery['id']}", token=theirs).get_json()
    assert still["name"] == "Secret garden" and still["image_count"] == 1
    assert count(signed_in, Run, gallery_id=gallery["id"]) == 1
    assert count(signed_in, Schedule, gallery_id=gallery["id"]) == 0


def test_run_counters_tell_next_in_line_from_waiting() -> None:
    from kseg.web.pages.galleries import counters

    jobs = {
        "total": 10,
        "succeeded": 3,
        "failed": 0,
        "skipped": 0,
        "running": 2,
        "queued": 5,
        "dispatched": 2,
    }
    shown = counters(jobs)
    assert shown["text"] == "3/10 done"
    assert shown["detail"] == "3 succeeded · 2 running · 2 next in line · 3 waiting"
    assert "3 waiting" in shown["label"]
