"""``/api/v1/images``: upload, deduplication per owner, metadata, original bytes."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from tests.service.test_api_common import (
    BACKENDS,
    Api,
    assert_error,
    baby,
    make_api,
    tiny_png,
    weixin,
)


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Api:
    return make_api(request, tmp_path, request.param)


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
