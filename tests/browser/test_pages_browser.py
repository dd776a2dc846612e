"""The web pages in a real browser (headless Chromium) against a real service.

Sign-in (token and one-time link), submitting with the form, watching a job's progress,
its results (outputs, palette, k chart), the history, and the refusals: CSRF, another owner's
job, a file that is not an image. ``KSEG_SCREENSHOTS=1`` also saves the screenshots in
``docs/screenshots/``.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest

from tests.browser.conftest import BrowserStack, images_dir, screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]

JOB_URL = re.compile(r"/jobs/([0-9a-f-]{36})$")


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as _expect

    return _expect(target)


def baby() -> bytes:
    return (images_dir() / "baby.jpg").read_bytes()


def record_polls(page: Any) -> list[dict[str, Any]]:
    """Every ``GET /api/v1/jobs/<id>`` the page makes, with the JSON it received."""
    seen: list[dict[str, Any]] = []

    def handle(route: Any) -> None:
        response = route.fetch()
        try:
            seen.append(json.loads(response.body()))
        except ValueError:
            seen.append({"status": f"http {response.status}"})
        route.fulfill(response=response)

    page.route(re.compile(r"/api/v1/jobs/[0-9a-f-]{36}$"), handle)
    return seen


def all_images_loaded(page: Any, selector: str) -> None:
    page.wait_for_function(
        """sel => {
            const imgs = Array.from(document.querySelectorAll(sel));
            return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=selector,
    )


def tiny_png(seed: int, size: int = 48) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (size, size))
    image.putdata(
        [
            ((x * 5 + seed * 40) % 256, (y * 5 + seed * 90) % 256, ((x + y) * 3 + seed * 20) % 256)
            for y in range(size)
            for x in range(size)
        ]
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# ---------------------------------------------------------------- the main path


def test_submit_watch_and_see_results(live: BrowserStack, page: Any) -> None:
    sign_in(page, live.token)
    expect(page.get_by_role("heading", name="New segmentation")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Up to 50 MB per submission"))).to_be_visible()
    for label in ("Normalize", "Colour space", "Max side (px)", "Seed"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()
    screenshot(page, "submit")

    polls = record_polls(page)
    page.set_input_files("#file", str(images_dir() / "baby.jpg"))
    expect(page.locator("[data-chosen] li")).to_have_text(re.compile(r"baby\.jpg"))
    page.locator("#k").fill("16")
    page.get_by_role("button", name="Segment").click()
    page.wait_for_url(JOB_URL)
    job_id = JOB_URL.search(page.url).group(1)  # type: ignore[union-attr]

    # No worker runs yet: the job waits in the queue, and the page shows it.
    bar = page.locator("#job-progress")
    expect(bar).to_be_visible()
    expect(page.locator("[data-watch-status]")).to_contain_text("Queued")
    live.start_worker()

    expect(page.locator("[data-results]")).to_be_visible(timeout=60_000)
    statuses = [p.get("status") for p in polls]
    assert "queued" in statuses and statuses[-1] == "succeeded", statuses
    progress = [int(p.get("progress", 0)) for p in polls if "progress" in p]
    assert progress == sorted(progress) and progress[-1] == 100, progress
    expect(bar).to_have_count(0)  # the results replaced the progress bar

    # The original and all five outputs, loaded.
    all_images_loaded(page, "img[data-output]")
    shown = page.locator("img[data-output]").evaluate_all("imgs => imgs.map(i => i.dataset.output)")
    assert shown == ["original", "labels", "gray", "color", "recolor", "overlay"], shown
    for name in ("original", "labels", "gray", "color", "recolor", "overlay"):
        expect(page.locator(f"figure:has(img[data-output={name}]) figcaption")).to_contain_text(
            name
        )
    all_images_loaded(page, "[data-compare] img")

    # The palette: 16 swatches with hex codes, fractions adding up to 100 %.
    swatches = page.locator("[data-swatches] .swatch")
    expect(swatches).to_have_count(16)
    texts = swatches.locator(".swatch-pct").all_inner_texts()
    assert sum(float(t.replace("%", "").strip()) for t in texts) == pytest.approx(100, abs=0.5)
    fractions = swatches.evaluate_all("els => els.map(e => parseFloat(e.dataset.fraction))")
    assert sum(fractions) == pytest.approx(1.0, abs=0.005)
    hexes = swatches.locator(".swatch-hex").all_inner_texts()
    assert all(re.fullmatch(r"#[0-9a-f]{6}", h) for h in hexes), hexes
    expect(page.locator(".stackbar span")).to_have_count(16)

    # Numbers, timings, downloads, run again.
    metrics = (page.locator(".metrics").text_content() or "").lower()
    for word in ("k", "inertia", "psnr", "db"):
        assert word in metrics, metrics
    expect(page.locator(".timings li")).to_have_count(4)
    expect(page.locator(".downloads a[download]")).to_have_count(6)
    href = page.locator("[data-run-again]").get_attribute("href") or ""
    assert "image_id=" in href and "k=16" in href, href

    # The slider moves the divider (keyboard).
    slider = page.locator("[data-compare-range]")
    slider.focus()
    page.keyboard.press("Home")
    assert (
        page.locator("[data-compare]").evaluate("el => el.style.getPropertyValue('--pos')") == "0%"
    )
    slider.fill("50")
    slider.blur()
    screenshot(page, "job")
    live.extra["baby_job"] = job_id


def test_text_file_gets_a_friendly_error(live: BrowserStack, page: Any) -> None:
    sign_in(page, live.token)
    page.set_input_files(
        "#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello\n"}]
    )
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Segment").click()
    assert posted.value.status == 415
    error = page.locator("#err-file")
    expect(error).to_be_visible()
    expect(error).to_contain_text("notes.txt")
    expect(error).to_contain_text("not an image")
    expect(page.locator("#file")).to_have_attribute("aria-invalid", "true")
    body = page.content()
    assert "Traceback" not in body and "Internal Server Error" not in body

    # A bad value: the browser's own checks are bypassed to reach the server's.
    page.set_input_files("#file", str(images_dir() / "baby.jpg"))
    page.locator("#max_side").evaluate("el => { el.removeAttribute('min'); el.value = '4'; }")
    page.get_by_role("button", name="Segment").click()
    expect(page.locator("#err-max_side")).to_contain_text("at least 16")


def test_auto_k_shows_the_chart_with_the_chosen_k(live: BrowserStack, page: Any) -> None:
    live.start_worker()
    sign_in(page, live.token)
    page.set_input_files("#file", str(images_dir() / "baby.jpg"))
    page.get_by_label("Auto", exact=True).check()
    page.get_by_label("Smallest k").fill("2")
    page.get_by_label("Largest k").fill("8")
    page.get_by_role("button", name="Segment").click()
    page.wait_for_url(JOB_URL)
    job_id = JOB_URL.search(page.url).group(1)  # type: ignore[union-attr]
    expect(page.locator("[data-results]")).to_be_visible(timeout=60_000)

    result = live.api("GET", f"/api/v1/jobs/{job_id}").json()["result"]
    chart = page.locator("[data-k-chart]")
    expect(chart).to_be_visible()
    expect(chart.locator(".kchart-bar")).to_have_count(7)  # k = 2..8
    chosen = chart.locator(".kchart-bar[data-chosen=true]")
    expect(chosen).to_have_count(1)
    assert chosen.get_attribute("data-k") == str(result["k"])
    expect(chosen.locator(".kchart-mark")).to_have_text(f"★ k = {result['k']}")
    expect(page.locator("[data-swatches] .swatch")).to_have_count(result["k"])

    # Run again: the submit page offers the same image and parameters.
    page.locator("[data-run-again]").click()
    expect(page.get_by_text("Use image")).to_be_visible()
    expect(page.locator("input[name=source][value=image]")).to_be_checked()
    expect(page.locator("#k_auto")).to_be_checked()
    expect(page.locator("#k_max")).to_have_value("8")
    page.get_by_role("button", name="Segment").click()
    page.wait_for_url(JOB_URL)
    # Identical parameters: the earlier result is reused at once.
    expect(page.locator("[data-results]")).to_be_visible()
    expect(page.get_by_text("result reused")).to_be_visible()


def test_history_lists_filters_and_pages(live: BrowserStack, page: Any) -> None:
    weixin = (images_dir() / "weixin.jpg").read_bytes()
    jobs = [
        live.submit(weixin, "weixin.jpg", k=8, color_space="lab"),
        live.submit(tiny_png(1), "gradient-1.png", k=4, outputs="recolor,overlay"),
        live.submit(tiny_png(2), "gradient-2.png", k="auto", k_min=2, k_max=6),
    ]
    for job in jobs:
        assert live.wait_job(job["id"])["status"] == "succeeded"

    sign_in(page, live.token)
    page.get_by_role("link", name="History").first.click()
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    rows = page.locator("[data-joblist] .jobrow")
    assert rows.count() >= 3
    # Newest first.
    expect(rows.nth(0)).to_contain_text("gradient-2.png")
    expect(rows.nth(1)).to_contain_text("gradient-1.png")
    expect(rows.nth(2)).to_contain_text("weixin.jpg")
    expect(rows.nth(2)).to_contain_text("LAB")
    all_images_loaded(page, "[data-joblist] img")
    screenshot(page, "history")

    page.get_by_role("link", name=re.compile(r"^Succeeded")).click()
    expect(page.locator(".filters [aria-current=page]")).to_contain_text("Succeeded")
    badges = page.locator("[data-joblist] [data-badge]").all_text_contents()
    assert badges and all(b.strip() == "Succeeded" for b in badges), badges
    page.get_by_role("link", name=re.compile(r"^Failed")).click()
    expect(page.get_by_text("No failed jobs.")).to_be_visible()

    # Paging: two per page, then the older ones.
    page.goto("/jobs?limit=2")
    expect(rows).to_have_count(2)
    first_page = rows.locator(".jobrow-title a").evaluate_all("as => as.map(a => a.href)")
    page.get_by_role("link", name="Older").click()
    expect(rows.first).to_be_visible()
    assert "cursor=" in page.url
    older = rows.locator(".jobrow-title a").evaluate_all("as => as.map(a => a.href)")
    newest = page.locator("a", has_text="Newest")
    expect(newest).to_be_visible()
    assert older and not set(older) & set(first_page)

    rows.first.locator(".jobrow-title a").click()
    page.wait_for_url(JOB_URL)


# ---------------------------------------------------------------- refusals and sign-in


def test_form_post_without_csrf_token_is_refused(live: BrowserStack, page: Any) -> None:
    sign_in(page, live.token)
    response = page.request.post(
        "/",
        multipart={
            "k": "4",
            "file": {"name": "baby.jpg", "mimeType": "image/jpeg", "buffer": baby()},
        },
    )
    assert response.status == 400
    assert "form expired" in response.text()
    assert page.request.post("/logout").status == 400
    # Still signed in: the forged sign-out did nothing.
    page.goto("/")
    expect(page.get_by_role("heading", name="New segmentation")).to_be_visible()


def test_another_owners_job_is_not_found(live: BrowserStack, browser: Any, page: Any) -> None:
    theirs = live.submit(baby(), "baby.jpg", k=5)
    sign_in(page, live.new_token())
    response = page.goto(f"/jobs/{theirs['id']}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert theirs["image"]["filename"] not in page.content()
    for url in (
        f"/api/v1/jobs/{theirs['id']}",
        f"/api/v1/images/{theirs['image']['id']}/file",
        f"/api/v1/jobs/{theirs['id']}/outputs/recolor.png",
    ):
        assert page.request.get(url).status == 404, url
    # ... while the owner's own cookie reads them.
    own = browser.new_context(base_url=live.base_url)
    try:
        mine = own.new_page()
        sign_in(mine, live.token)
        assert mine.request.get(f"/api/v1/jobs/{theirs['id']}").status == 200
        assert mine.request.get(f"/api/v1/images/{theirs['image']['id']}/file").status == 200
        # A cookie only reads: writes still need a bearer token.
        assert mine.request.delete(f"/api/v1/jobs/{theirs['id']}").status == 401
    finally:
        own.close()


def test_one_time_link_signs_in_once(live: BrowserStack, browser: Any, page: Any) -> None:
    token = live.new_token(one_time=True)
    page.goto(f"/login/{token}")
    page.wait_for_url(re.compile(r"/$"))
    expect(page.get_by_role("heading", name="New segmentation")).to_be_visible()
    expect(page.get_by_text("Signed in as")).to_be_visible()

    other = browser.new_context(base_url=live.base_url)
    try:
        again = other.new_page()
        response = again.goto(f"/login/{token}")
        assert response is not None and response.status == 403
        expect(again.get_by_text("works once")).to_be_visible()
        again.goto("/")
        expect(again).to_have_url(re.compile(r"/login\?next=/$"))
    finally:
        other.close()

    # Sign out (a real form post with its CSRF token).
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login$"))
    expect(page.get_by_text("Signed out.")).to_be_visible()
    page.goto("/jobs")
    expect(page).to_have_url(re.compile(r"/login\?next=/jobs$"))


def test_pages_fit_a_phone_screen(live: BrowserStack, browser: Any) -> None:
    job_id = live.extra.get("baby_job") or live.submit(baby(), "baby.jpg")["id"]
    live.wait_job(job_id)
    ctx = browser.new_context(
        base_url=live.base_url, viewport={"width": 375, "height": 740}, is_mobile=True
    )
    try:
        phone = ctx.new_page()
        sign_in(phone, live.token)
        for path in ("/", f"/jobs/{job_id}", "/jobs", "/login"):
            phone.goto(path)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, (path, width)
    finally:
        ctx.close()
