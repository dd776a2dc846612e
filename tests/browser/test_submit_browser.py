"""The submit form keeps what was valid, in a real browser (issue 24, item 1): an upload
survives a form error and is sent again by id, the browser checks the k range and the
outputs before sending, and a drop with a bad file submits the good ones and names the bad.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import BrowserStack, images_dir, sign_in
from tests.browser.test_pages_browser import JOB_URL, all_images_loaded, expect, tiny_png

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def posts(page: Any) -> list[str]:
    """The form posts the page sends from now on."""
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    return sent


def job_of(live: BrowserStack, page: Any) -> dict[str, Any]:
    page.wait_for_url(JOB_URL)
    job_id = JOB_URL.search(page.url).group(1)  # type: ignore[union-attr]
    return dict(live.api("GET", f"/api/v1/jobs/{job_id}").json())


def test_an_upload_survives_a_k_error(live: BrowserStack, page: Any) -> None:
    sign_in(page, live.token)
    page.set_input_files(
        "#file",
        files=[
            {
                "name": "baby.jpg",
                "mimeType": "image/jpeg",
                "buffer": (images_dir() / "baby.jpg").read_bytes(),
            },
            {"name": "grad.png", "mimeType": "image/png", "buffer": tiny_png(7)},
        ],
    )
    # k = 1, typed past the browser's own check: the server refuses it.
    page.locator("#k").evaluate("el => { el.removeAttribute('min'); el.value = '1'; }")
    with page.expect_response(lambda r: r.request.method == "POST") as refused:
        page.get_by_role("button", name="Segment").click()
    assert refused.value.status == 422
    expect(page.locator("#err-k")).to_contain_text("at least 2")
    expect(page.get_by_text("Choose your file")).to_have_count(0)

    # Both images are kept and shown; the file input is empty.
    items = page.locator("[data-kept-item]")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("baby.jpg")
    expect(items.nth(1)).to_contain_text("grad.png")
    all_images_loaded(page, "[data-kept-item] img")
    assert page.locator("#file").evaluate("el => el.files.length") == 0

    # One removed, k fixed, sent again without choosing anything: a job on baby.jpg.
    page.get_by_role("button", name="Remove grad.png").click()
    expect(items).to_have_count(1)
    page.locator("#k").fill("5")
    page.get_by_role("button", name="Segment").click()
    job = job_of(live, page)
    assert job["image"]["filename"] == "baby.jpg" and job["params"]["k"] == 5
    jobs = live.api("GET", "/api/v1/jobs").json()["items"]
    assert [j["image"]["filename"] for j in jobs].count("grad.png") == 0


def test_the_browser_checks_the_range_and_outputs_first(live: BrowserStack, page: Any) -> None:
    sign_in(page, live.token)
    sent = posts(page)
    page.set_input_files("#file", str(images_dir() / "baby.jpg"))
    page.get_by_label("Auto", exact=True).check()
    page.get_by_label("Smallest k").fill("8")
    page.get_by_label("Largest k").fill("3")
    page.get_by_role("button", name="Segment").click()
    k_min = page.locator("#k_min")
    assert k_min.evaluate("el => el.validationMessage") == "“from” (8) must not exceed “to” (3)."
    assert k_min.evaluate("el => document.activeElement === el")  # the browser points at it

    page.get_by_label("Largest k").fill("10")
    assert k_min.evaluate("el => el.validationMessage") == ""
    for box in page.locator("input[name=outputs]").all():
        box.uncheck()
    page.get_by_role("button", name="Segment").click()
    first = page.locator("input[name=outputs]").first
    assert first.evaluate("el => el.validationMessage") == "Tick at least one output."
    page.wait_for_timeout(300)
    assert sent == [], sent  # nothing reached the server

    page.locator("input[name=outputs][value=recolor]").check()
    page.get_by_role("button", name="Segment").click()
    job = job_of(live, page)
    assert job["params"]["k_min"] == 8 and job["params"]["k_max"] == 10
    assert job["params"]["outputs"] == ["recolor"]


def test_a_drop_with_bad_files_submits_the_good_ones(live: BrowserStack, page: Any) -> None:
    sign_in(page, live.token)
    files = [
        {"name": "one.png", "type": "image/png", "data": list(tiny_png(11))},
        {"name": "notes.txt", "type": "text/plain", "data": list(b"hello\n")},
        {"name": "two.png", "type": "image/png", "data": list(tiny_png(12))},
        {"name": "fake.png", "type": "image/png", "data": list(b"not a png at all")},
    ]
    drop = page.evaluate_handle(
        """files => {
            const dt = new DataTransfer();
            for (const f of files) {
                dt.items.add(new File([new Uint8Array(f.data)], f.name, {type: f.type}));
            }
            return dt;
        }""",
        files,
    )
    page.dispatch_event("[data-dropzone]", "drop", {"dataTransfer": drop})

    # The text file is left out at once, and listed with why; fake.png looks like an image.
    bad = page.locator("[data-chosen] [data-left-out]")
    expect(bad).to_have_text(
        ["notes.txt: not an image (PNG, JPEG, GIF, WebP, TIFF or BMP) — left out"]
    )
    names = page.locator("#file").evaluate("el => Array.from(el.files, f => f.name)")
    assert names == ["one.png", "two.png", "fake.png"]

    page.get_by_role("button", name="Segment").click()
    page.wait_for_url(re.compile(r"/jobs$"))
    expect(page.get_by_text("Submitted 2 jobs.")).to_be_visible()
    # The server's own check names the file that only looked like an image.
    expect(
        page.get_by_text(re.compile(r"^Left out fake\.png: not an image format"))
    ).to_be_visible()
    jobs = live.api("GET", "/api/v1/jobs").json()["items"]
    assert sorted(j["image"]["filename"] for j in jobs[:2]) == ["one.png", "two.png"]
