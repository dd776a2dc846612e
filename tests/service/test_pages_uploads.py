"""The submit form keeps what was valid (issue 24, item 1), through Flask's test client.

A form error stores the usable files and offers them again by id (only the owner's ids are
accepted back); a post with good and bad files makes jobs for the good ones and names the
bad ones; none good is a form error that stores nothing, as before.
"""

from __future__ import annotations

import re

from kseg.shared.store.models import Image, Job
from tests.service.test_api_common import baby, tiny_png, weixin
from tests.service.test_pages import Pages, field_error, job_id_of, text

KEPT = re.compile(r'name="image_ids" value="([^"]+)"')


def kept_ids(body: str) -> list[str]:
    return KEPT.findall(body)


def test_a_form_error_keeps_the_upload_for_the_next_try(signed_in: Pages) -> None:
    refused = signed_in.submit([(baby(), "baby.jpg")], k="1")
    assert refused.status_code == 422
    assert "at least 2" in field_error(refused, "k")
    body = text(refused)
    assert "Choose your file" not in body and "Kept from your last try" in body
    ids = kept_ids(body)
    assert len(ids) == 1 and signed_in.count(Image) == 1 and signed_in.count(Job) == 0
    assert f"/api/v1/images/{ids[0]}/thumbnail" in body and "baby.jpg" in body

    # Fixed, and sent again without the file: a job on the same image.
    job_id = job_id_of(signed_in.submit(None, k="5", image_ids=ids))
    job = signed_in.api.get(f"/api/v1/jobs/{job_id}").get_json()
    assert job["image"]["id"] == ids[0] and job["params"]["k"] == 5
    assert signed_in.count(Image) == 1


def test_kept_images_and_new_files_go_together_once_each(signed_in: Pages) -> None:
    refused = signed_in.submit([(baby(), "baby.jpg")], k_mode="auto", k_min="8", k_max="3")
    assert "“from” (8) must not exceed “to” (3)" in field_error(refused, "k_min")
    ids = kept_ids(text(refused))
    assert len(ids) == 1
    # baby.jpg chosen again (not two jobs on it) plus a new one.
    response = signed_in.submit(
        [(baby(), "baby.jpg"), (weixin(), "weixin.jpg")], k="4", image_ids=ids
    )
    assert response.status_code == 303 and response.headers["Location"] == "/jobs"
    jobs = signed_in.api.get("/api/v1/jobs").get_json()["items"]
    assert sorted(j["image"]["filename"] for j in jobs) == ["baby.jpg", "weixin.jpg"]


def test_another_owners_image_id_is_refused(signed_in: Pages) -> None:
    theirs_token = signed_in.api.new_token()
    upload = signed_in.post_as(theirs_token, "/api/v1/images", weixin(), "secret-weixin.jpg")
    theirs = upload["items"][0]
    mine = job_id_of(signed_in.submit([(baby(), "baby.jpg")], k="3"))
    my_image = signed_in.api.get(f"/api/v1/jobs/{mine}").get_json()["image"]["id"]

    for ids in ([theirs["id"]], [my_image, theirs["id"]], ["no-such-image"], ["x" * 300]):
        refused = signed_in.submit(None, k="4", image_ids=ids)
        assert refused.status_code == 422, ids
        assert "no longer available" in field_error(refused, "file")
        body = text(refused)
        assert theirs["id"] not in body and "secret-weixin" not in body
        # Only the owner's own image is offered again.
        assert kept_ids(body) == ([my_image] if my_image in ids else [])
    assert signed_in.count(Job) == 1  # only the first, own job
    other = signed_in.api.get("/api/v1/jobs", token=theirs_token).get_json()["items"]
    assert other == []


def test_good_files_are_submitted_and_bad_ones_named(signed_in: Pages) -> None:
    response = signed_in.submit(
        [(tiny_png(1), "ok-1.png"), (b"hello\n", "notes.txt"), (tiny_png(2), "ok-2.png")],
        k="3",
    )
    assert response.status_code == 303 and response.headers["Location"] == "/jobs"
    jobs = signed_in.api.get("/api/v1/jobs").get_json()["items"]
    assert sorted(j["image"]["filename"] for j in jobs) == ["ok-1.png", "ok-2.png"]
    history = text(signed_in.client.get("/jobs"))
    assert "Submitted 2 jobs." in history
    assert "Left out notes.txt: not an image format kseg can read" in history

    # One good file: its job page names the bad one.
    one = signed_in.submit([(b"", "empty.png"), (tiny_png(3), "ok-3.png")], k="3")
    page = text(signed_in.client.get(f"/jobs/{job_id_of(one)}"))
    assert "Left out empty.png: the file is empty" in page


def test_a_form_error_keeps_the_good_files_and_names_the_bad(signed_in: Pages) -> None:
    refused = signed_in.submit([(tiny_png(1), "ok.png"), (b"nope", "bad.gif")], outputs=[])
    assert refused.status_code == 422
    assert "at least one output" in field_error(refused, "outputs")
    body = text(refused)
    assert len(kept_ids(body)) == 1 and "ok.png" in body
    assert re.search(r"<li>bad\.gif: not an image format", body)
    assert signed_in.count(Image) == 1 and signed_in.count(Job) == 0
