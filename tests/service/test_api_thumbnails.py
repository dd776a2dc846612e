"""Thumbnails (issue 24): ``GET /api/v1/images/<id>/thumbnail`` and
``GET /api/v1/jobs/<id>/outputs/<name>/thumbnail`` — small WebP, made once and stored,
cacheable with a strong ETag, owner-scoped, gone with their image or job."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from kseg.shared.store.db import session_scope
from kseg.shared.store.models import Thumbnail
from tests.service.test_api_common import BACKENDS, Api, assert_error, make_api


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Api:
    return make_api(request, tmp_path, request.param)


def photo(width: int = 800, height: int = 600, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=2)
    rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=90)
    return out.getvalue()


def webp(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    assert image.format == "WEBP"
    return image


def stored_thumbnails(api: Api) -> int:
    with session_scope(api.settings.database_url) as session:
        return int(session.scalar(select(func.count()).select_from(Thumbnail)) or 0)


def done_job(api: Api, data: bytes, **params: object) -> dict[str, object]:
    job = api.submit(data, "photo.jpg", **params).get_json()
    assert api.run_job(job["id"]) == "succeeded"
    return dict(api.get(f"/api/v1/jobs/{job['id']}").get_json())


def test_image_thumbnail_is_small_cached_and_made_once(api: Api) -> None:
    original = photo()
    image_id = api.upload((original, "photo.jpg")).get_json()["items"][0]["id"]
    before = stored_thumbnails(api)
    url = f"/api/v1/images/{image_id}/thumbnail"
    r = api.get(url)
    assert r.status_code == 200 and r.mimetype == "image/webp"
    assert webp(r.data).size == (160, 120)  # the default size, shape kept
    assert len(r.data) < len(original) / 10
    etag = r.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    cache = r.headers["Cache-Control"]
    assert "private" in cache and "max-age=" in cache
    assert webp(api.get(url + "?size=480").data).size == (480, 360)
    assert stored_thumbnails(api) == before + 2

    again = api.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    assert api.get(url).headers["ETag"] == etag  # stored: the same one, not made again
    assert stored_thumbnails(api) == before + 2


def test_output_thumbnails_and_the_visible_label_map(api: Api) -> None:
    job = done_job(api, photo(seed=1), k=4)
    base = f"/api/v1/jobs/{job['id']}/outputs"
    for name in ("labels", "gray", "color", "recolor", "overlay"):
        r = api.get(f"{base}/{name}/thumbnail?size=480")
        assert r.status_code == 200, (name, r.get_json())
        assert webp(r.data).size == (480, 360), name
    # The full-size download is untouched: still the PNG label map, pixel = label.
    full = Image.open(io.BytesIO(api.get(f"{base}/labels.png").data))
    assert full.format == "PNG" and full.mode == "L" and full.size == (800, 600)
    assert np.asarray(full).max() == 3
    # Its thumbnail is painted: visibly different colours, not near-black greys.
    small = np.asarray(webp(api.get(f"{base}/labels/thumbnail").data).convert("RGB"))
    assert small.max() > 200 and len(np.unique(small.reshape(-1, 3) // 64, axis=0)) >= 3

    # A reused result shares its thumbnails with the job it came from.
    again = api.submit(photo(seed=1), "photo.jpg", k=4).get_json()
    assert again["reused_from"] == job["id"]
    first = api.get(f"{base}/recolor/thumbnail").headers["ETag"]
    assert api.get(f"/api/v1/jobs/{again['id']}/outputs/recolor/thumbnail").headers["ETag"] == first


def test_refusals(api: Api) -> None:
    job = api.submit(photo(seed=2), "photo.jpg", k=3, outputs="recolor").get_json()
    base = f"/api/v1/jobs/{job['id']}/outputs"
    assert_error(api.get(f"{base}/recolor/thumbnail"), 404, "output_not_found")  # queued
    assert api.run_job(job["id"]) == "succeeded"
    assert api.get(f"{base}/recolor/thumbnail").status_code == 200
    assert_error(api.get(f"{base}/overlay/thumbnail"), 404, "output_not_found")  # not asked
    assert_error(api.get(f"{base}/nope/thumbnail"), 404, "output_not_found")
    for size in ("100", "big", "4800"):
        body = assert_error(api.get(f"{base}/recolor/thumbnail?size={size}"), 422)
        assert "160, 480" in body["message"]
    image_id = job["image"]["id"]
    assert_error(api.get(f"/api/v1/images/{image_id}/thumbnail?size=0"), 422, "invalid_parameter")

    # Another owner's image and job are not found.
    other = api.new_token()
    assert_error(api.get(f"/api/v1/images/{image_id}/thumbnail", token=other), 404)
    assert_error(api.get(f"{base}/recolor/thumbnail", token=other), 404, "job_not_found")
    assert_error(api.get("/api/v1/images/nope/thumbnail"), 404, "image_not_found")


def test_thumbnails_go_with_their_image_and_job(api: Api) -> None:
    job = done_job(api, photo(seed=3), k=3)
    image_id = job["image"]["id"]
    before = stored_thumbnails(api)
    assert api.get(f"/api/v1/images/{image_id}/thumbnail").status_code == 200
    for name in ("recolor", "overlay"):
        assert api.get(f"/api/v1/jobs/{job['id']}/outputs/{name}/thumbnail").status_code == 200
    assert stored_thumbnails(api) == before + 3
    assert api.delete(f"/api/v1/jobs/{job['id']}").status_code == 204
    assert stored_thumbnails(api) == before + 1  # the outputs' went with the result
    assert api.delete(f"/api/v1/images/{image_id}").status_code == 204
    assert stored_thumbnails(api) == before


def test_requests_racing_for_one_thumbnail_keep_one(api: Api) -> None:
    """Eight requests at once for a thumbnail nobody made yet: all answer it, with one ETag,
    and one row is kept (INSERT … ON CONFLICT DO NOTHING, then the row read back)."""
    import threading

    image_id = api.upload((photo(seed=4), "race.jpg")).get_json()["items"][0]["id"]
    before = stored_thumbnails(api)
    start = threading.Barrier(8)
    answers: list[tuple[int, str]] = []

    def fetch() -> None:
        client = api.app.test_client()
        start.wait()
        r = client.get(f"/api/v1/images/{image_id}/thumbnail?size=480", headers=api.headers())
        answers.append((r.status_code, r.headers.get("ETag", "")))

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 8 and {status for status, _ in answers} == {200}, answers
    assert len({etag for _, etag in answers}) == 1, answers
    assert stored_thumbnails(api) == before + 1
