"""A gallery's tiles and a run's counters tell one story, in a real browser (headless
Chromium) against a real service.

A run page's counters and its rows come from one answer (``GET /api/v1/runs/<id>/jobs``
counts the run in the same statement as the page of jobs), so they agree at every moment
while the run drains; a tile shows the image's current result wherever it came from, so an
image a run skips as "already up to date" never reads "Not run yet".
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.browser.conftest import BrowserStack, sign_in
from tests.browser.test_gallery_browser import landscape
from tests.browser.test_pages_browser import expect, tiny_png

pytestmark = [pytest.mark.browser, pytest.mark.integration]

RUN_JOBS = re.compile(r"/api/v1/runs/([0-9a-f-]{36})/jobs(\?.*)?$")

# Samples the run page every 20 ms: the counters' "N/M done" against the rows' statuses.
# kseg.js updates both in one callback, so no sample may ever see them disagree.
WATCH = """() => {
    window.__samples = 0;
    window.__mismatches = [];
    const look = () => {
        const text = document.querySelector('.run-progress [data-counter-text]').textContent;
        const done = parseInt(text, 10);
        const rows = Array.from(document.querySelectorAll('[data-run-jobs] [data-job-id]'));
        const ended = rows.filter(r => ['succeeded', 'failed', 'canceled'].includes(
            r.getAttribute('data-status'))).length;
        window.__samples += 1;
        if (done !== ended) { window.__mismatches.push(text + ' vs ' + ended + ' rows ended'); }
    };
    look();
    window.__watch = window.setInterval(look, 20);
}"""


def _gallery(live: BrowserStack, name: str, params: dict[str, Any]) -> str:
    response = live.api("POST", "/api/v1/galleries", data={"name": name, "params": params})
    assert response.status == 201, response.text()
    return str(response.json()["id"])


def _upload(live: BrowserStack, gallery_id: str, files: list[tuple[str, bytes]]) -> list[str]:
    ids = []
    for name, data in files:  # one part per request: Playwright's multipart takes one per name
        form = {"file": {"name": name, "mimeType": "image/png", "buffer": data}}
        response = live.api("POST", f"/api/v1/galleries/{gallery_id}/images", multipart=form)
        assert response.status == 201, response.text()
        ids.append(response.json()["items"][0]["id"])
    return ids


def test_a_run_pages_counters_agree_with_its_rows_while_it_drains(
    live: BrowserStack, page: Any
) -> None:
    # First in the module: no worker yet, so the run is seen from its start to its end.
    assert not live.worker_started
    gallery_id = _gallery(live, "Draining", {"k": 16})
    _upload(live, gallery_id, [(f"d{seed}.png", tiny_png(seed + 50, 160)) for seed in range(10)])
    run = live.api(
        "POST", f"/api/v1/galleries/{gallery_id}/runs", data={"only_stale": False}
    ).json()

    snapshots: list[dict[str, Any]] = []
    polled: list[str] = []

    def record(route: Any) -> None:
        response = route.fetch()
        snapshots.append(json.loads(response.body()))
        route.fulfill(response=response)

    page.route(RUN_JOBS, record)
    page.on("request", lambda r: polled.append(r.url) if "/api/v1/" in r.url else None)
    sign_in(page, live.token)
    page.goto(f"/runs/{run['id']}")
    expect(page.locator(".run-progress [data-counter-text]")).to_have_text("0/10 done")
    expect(page.locator("[data-run-jobs] [data-job-id]")).to_have_count(10)
    page.evaluate(WATCH)

    live.start_worker()
    expect(page.locator(".job-title [data-run-badge]")).to_have_text("Succeeded", timeout=90_000)
    expect(page.locator(".run-progress [data-counter-text]")).to_have_text("10/10 done")
    expect(page.locator("[data-run-jobs] [data-badge]")).to_have_text(["Succeeded"] * 10)
    page.evaluate("window.clearInterval(window.__watch)")
    assert page.evaluate("window.__mismatches") == []
    assert page.evaluate("window.__samples") > 10

    # Each answer the page polled: the run's counters are the rows' tally, exactly.
    assert snapshots, "the run page polls its jobs"
    for snap in snapshots:
        statuses = [item["status"] for item in snap["items"]]
        counts = snap["run"]["jobs"]
        tally = {s: statuses.count(s) for s in ("queued", "running", "succeeded")}
        assert {s: counts[s] for s in tally} == tally, snap["run"]
        assert counts["failed"] == statuses.count("failed") + statuses.count("canceled")
        if snap["run"]["status"] != "running":
            assert tally["succeeded"] == 10
    # One request answers both: no separate poll of the run for its counters.
    assert not [url for url in polled if re.search(r"/api/v1/runs/[0-9a-f-]{36}$", url)]


def test_a_tile_shows_the_result_a_run_skips_as_up_to_date(live: BrowserStack, page: Any) -> None:
    """An image segmented on its own (the submit form or `kseg submit`) with the gallery's
    parameters is up to date: its tile shows that result before any run, and while a run
    skips it, never "Not run yet"."""
    single = live.submit(landscape(), "lake.png", k=8)
    single = live.wait_job(single["id"])
    assert single["status"] == "succeeded"
    gallery_id = _gallery(live, "Mixed", {"k": 8})
    added = live.api(
        "POST",
        f"/api/v1/galleries/{gallery_id}/images",
        data={"image_ids": [single["image"]["id"]]},
    )
    assert added.status == 201, added.text()
    (fresh,) = _upload(live, gallery_id, [("new.png", tiny_png(77, 64))])

    sign_in(page, live.token)
    page.goto(f"/galleries/{gallery_id}")
    lake = page.locator(f'[data-image-id="{single["image"]["id"]}"]')
    new = page.locator(f'[data-image-id="{fresh}"]')
    expect(lake.locator("[data-badge]")).to_have_text("Succeeded")
    expect(lake.locator("[data-tile-img]")).to_have_attribute(
        "src", f"/api/v1/jobs/{single['id']}/outputs/recolor/thumbnail?size=480"
    )
    expect(lake.locator("[data-tile-link]")).to_have_attribute("href", f"/jobs/{single['id']}")
    expect(new.locator("[data-badge]")).to_have_text("Not run yet")

    page.get_by_role("button", name="Run now").click()  # only images without a current result
    expect(
        page.get_by_text("Started a run: 1 image to segment, 1 skipped (already up to date).")
    ).to_be_visible()
    run_row = page.locator(".runrow").first
    expect(run_row.locator("[data-run-badge]")).to_have_text("Succeeded", timeout=60_000)
    expect(run_row.locator("[data-counter-text]")).to_have_text("2/2 done")
    expect(run_row.locator("[data-counter-detail]")).to_have_text(
        "1 succeeded · 1 skipped (up to date)"
    )
    expect(page.locator(".tiles [data-badge]")).to_have_text(["Succeeded", "Succeeded"])
    expect(lake.locator("[data-tile-img]")).to_have_attribute(
        "src", f"/api/v1/jobs/{single['id']}/outputs/recolor/thumbnail?size=480"
    )

    # After a reload too, and over the API: the same story.
    page.reload()
    expect(page.locator(".tiles [data-badge]")).to_have_text(["Succeeded", "Succeeded"])
    items = live.api("GET", f"/api/v1/galleries/{gallery_id}/images").json()["items"]
    by_id = {item["id"]: item for item in items}
    assert by_id[single["image"]["id"]]["current_job"]["id"] == single["id"]
    assert by_id[single["image"]["id"]]["latest_job"] is None  # no run of the gallery made one
    assert by_id[fresh]["current_job"]["status"] == "succeeded"

    # The run's page: one image segmented, one skipped, and the counters say the same.
    run_row.get_by_role("link", name="Run now").click()
    expect(page.locator(".run-progress [data-counter-text]")).to_have_text("2/2 done")
    expect(page.locator("[data-run-jobs] [data-job-id]")).to_have_count(1)
    expect(page.locator(".run-skipped")).to_contain_text("1 image was skipped")
