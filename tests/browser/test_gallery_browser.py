"""The gallery pages in a real browser (headless Chromium) against a real service.

Create a gallery, upload three images, run it and watch the grid fill in without a reload
(the page polls the API with its session cookie), the run's counters and its page, a
schedule's preview, dropping files on the upload box, another owner's gallery, and a phone's
width. ``KSEG_SCREENSHOTS=1`` also saves ``docs/screenshots/gallery.png``.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from tests.browser.conftest import BrowserStack, images_dir, screenshot, sign_in
from tests.browser.test_pages_browser import all_images_loaded, expect, tiny_png

pytestmark = [pytest.mark.browser, pytest.mark.integration]

GALLERY_URL = re.compile(r"/galleries/([0-9a-f-]{36})(#images)?$")
RUN_URL = re.compile(r"/runs/([0-9a-f-]{36})$")


def landscape(width: int = 160, height: int = 120) -> bytes:
    """A small picture with a few smooth colour regions (sky, sun, hills, lake)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / height
        draw.line(
            [(0, y), (width, y)], fill=(int(250 - 90 * t), int(170 - 60 * t), int(90 + 120 * t))
        )
    draw.ellipse([100, 18, 136, 54], fill=(255, 214, 102))
    draw.polygon(
        [(0, 84), (42, 52), (88, 80), (126, 60), (160, 78), (160, 120), (0, 120)],
        fill=(46, 110, 84),
    )
    draw.rectangle([0, 98, 160, 120], fill=(52, 96, 160))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def three_files() -> list[dict[str, Any]]:
    return [
        {
            "name": "baby.jpg",
            "mimeType": "image/jpeg",
            "buffer": (images_dir() / "baby.jpg").read_bytes(),
        },
        {
            "name": "weixin.jpg",
            "mimeType": "image/jpeg",
            "buffer": (images_dir() / "weixin.jpg").read_bytes(),
        },
        {"name": "landscape.png", "mimeType": "image/png", "buffer": landscape()},
    ]


def create_gallery(page: Any, name: str, k: str | None = None) -> str:
    page.goto("/galleries")
    page.get_by_label("Name", exact=True).fill(name)
    if k is not None:
        page.locator("summary", has_text="Default parameters").click()
        page.locator("#k").fill(k)
    page.get_by_role("button", name="Create gallery").click()
    page.wait_for_url(GALLERY_URL)
    return GALLERY_URL.search(page.url).group(1)  # type: ignore[union-attr]


# ---------------------------------------------------------------- the main path


def test_create_upload_run_and_see_the_grid_fill_in(live: BrowserStack, page: Any) -> None:
    sign_in(page, live.token)
    page.get_by_role("link", name="Galleries").click()
    expect(page.get_by_role("heading", name="Galleries", exact=True)).to_be_visible()
    expect(page.get_by_text("No galleries yet")).to_be_visible()
    gallery_id = create_gallery(page, "Holiday", k="8")
    expect(page.get_by_role("heading", name="Holiday", exact=True)).to_be_visible()
    expect(page.get_by_text("Created the gallery Holiday")).to_be_visible()
    expect(page.get_by_role("button", name="Run now")).to_be_disabled()  # nothing to run yet

    # Three images at once, with the file picker.
    page.set_input_files("#file", files=three_files())
    expect(page.locator("[data-chosen] li")).to_have_count(3)
    page.get_by_role("button", name="Add images").click()
    expect(page.get_by_text("Added 3 images.")).to_be_visible()
    tiles = page.locator(".tiles [data-image-id]")
    expect(tiles).to_have_count(3)
    expect(tiles.locator("[data-badge]")).to_have_text(["Not run yet"] * 3)
    all_images_loaded(page, "[data-tile-img]")

    # Run it. The worker is not started yet, so the run is seen waiting first.
    polled: list[str] = []
    page.on("request", lambda r: polled.append(r.url) if "/api/v1/" in r.url else None)
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_text("Started a run: 3 images to segment.")).to_be_visible()
    run_row = page.locator(".runrow").first
    expect(run_row.locator("[data-run-badge]")).to_have_text("Running")
    expect(run_row.locator("[data-counter-text]")).to_have_text("0/3 done")
    expect(tiles.locator("[data-badge]")).to_have_text(["Queued"] * 3)
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    live.start_worker()
    page.wait_for_function(
        """() => {
            const imgs = Array.from(document.querySelectorAll('[data-tile-img]'));
            return imgs.length === 3 && imgs.every(i =>
                /\\/api\\/v1\\/jobs\\/[0-9a-f-]{36}\\/outputs\\/recolor\\/thumbnail\\?size=480$/
                    .test(i.src)
                && i.complete && i.naturalWidth > 0);
        }""",
        timeout=90_000,
    )
    expect(tiles.locator("[data-badge]")).to_have_text(["Succeeded"] * 3)
    expect(run_row.locator("[data-run-badge]")).to_have_text("Succeeded", timeout=30_000)
    expect(run_row.locator("[data-counter-text]")).to_have_text("3/3 done")
    expect(run_row.locator("[data-counter-detail]")).to_have_text("3 succeeded")
    expect(run_row.locator("[data-seg=succeeded]")).to_have_attribute("style", re.compile("100%"))
    assert page.evaluate("window.__sameDocument === true"), "the grid filled in by reloading"
    assert any(re.search(r"/api/v1/runs/[0-9a-f-]{36}$", url) for url in polled), polled
    assert any(f"/api/v1/galleries/{gallery_id}/images" in url for url in polled), polled
    srcs = tiles.locator("[data-tile-img]").evaluate_all("imgs => imgs.map(i => i.src)")
    assert len(set(srcs)) == 3, srcs
    assert all(s.endswith("/outputs/recolor/thumbnail?size=480") for s in srcs), srcs

    # The API agrees: the run succeeded with all three.
    run = live.api("GET", f"/api/v1/galleries/{gallery_id}/runs").json()["items"][0]
    assert run["status"] == "succeeded" and run["jobs"]["succeeded"] == 3, run

    # A schedule, with its human-readable preview.
    page.get_by_label("Cron expression").fill("0 3 * * *")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_role("button", name="Schedule runs").click()
    expect(page.get_by_text("Saved the schedule.")).to_be_visible()
    expect(page.locator("[data-schedule-preview]")).to_contain_text(
        re.compile(r"every day at 03:00 \(Europe/Berlin\), next: \d{4}-\d\d-\d\d 03:00 CES?T")
    )
    # A bad one is explained next to its field.
    page.get_by_label("Cron expression").fill("0 25 * * *")
    page.get_by_role("button", name="Save schedule").click()
    expect(page.locator("#err-cron")).to_contain_text("not a five-field cron expression")
    expect(page.get_by_label("Cron expression")).to_have_attribute("aria-invalid", "true")

    page.goto(f"/galleries/{gallery_id}")
    all_images_loaded(page, "[data-tile-img]")
    screenshot(page, "gallery")

    # The run's own page: trigger, status, counters and each image with its job.
    page.locator(".runrow").first.get_by_role("link", name="Run now").click()
    page.wait_for_url(RUN_URL)
    expect(page.get_by_role("heading", name=re.compile("Run of Holiday"))).to_be_visible()
    expect(page.locator(".job-title [data-run-badge]")).to_have_text("Succeeded")
    expect(page.locator(".run-progress [data-counter-text]")).to_have_text("3/3 done")
    rows = page.locator("[data-run-jobs] [data-job-id]")
    expect(rows).to_have_count(3)
    expect(rows.locator("[data-badge]")).to_have_text(["Succeeded"] * 3)
    all_images_loaded(page, "[data-run-jobs] img")
    rows.first.locator(".jobrow-title a").click()
    expect(page.locator("[data-results]")).to_be_visible()

    # The list sums it up.
    page.goto("/galleries")
    card = page.locator(".gcard", has_text="Holiday")
    expect(card).to_contain_text("3 images")
    expect(card.locator("[data-run-badge]")).to_have_text("Succeeded")
    expect(card).to_contain_text("3/3 done")
    expect(card).to_contain_text("every day at 03:00 (Europe/Berlin)")
    live.extra["gallery"] = gallery_id
    live.extra["run"] = RUN_URL.search(  # type: ignore[union-attr]
        page.locator(".gcard a[href^='/runs/']").first.get_attribute("href") or ""
    ).group(1)


def test_a_run_page_follows_a_running_run(live: BrowserStack, page: Any) -> None:
    """The run page's counters and rows update in place while the run runs."""
    live.start_worker()
    sign_in(page, live.token)
    gallery_id = create_gallery(page, "Gradients", k="4")
    page.set_input_files(
        "#file",
        files=[
            {"name": f"g{seed}.png", "mimeType": "image/png", "buffer": tiny_png(seed + 10, 64)}
            for seed in range(4)
        ],
    )
    page.get_by_role("button", name="Add images").click()
    expect(page.locator(".tiles [data-image-id]")).to_have_count(4)
    page.get_by_role("button", name="Run now").click()
    page.locator(".runrow").first.get_by_role("link", name="Run now").click()
    page.wait_for_url(RUN_URL)
    expect(page.locator(".job-title [data-run-badge]")).to_have_text("Succeeded", timeout=60_000)
    expect(page.locator(".run-progress [data-counter-text]")).to_have_text("4/4 done")
    expect(page.locator("[data-run-jobs] [data-badge]")).to_have_text(["Succeeded"] * 4)
    expect(page.locator("[data-run-announce]")).to_have_text(re.compile("Succeeded|^$"))
    all_images_loaded(page, "[data-run-jobs] img")
    srcs = page.locator("[data-run-jobs] img").evaluate_all("imgs => imgs.map(i => i.src)")
    assert all(s.endswith("/outputs/recolor/thumbnail?size=160") for s in srcs), srcs
    assert live.api("GET", f"/api/v1/galleries/{gallery_id}").json()["image_count"] == 4


# ---------------------------------------------------------------- the upload box, owners, phones


def test_drop_files_on_the_upload_box(live: BrowserStack, page: Any) -> None:
    sign_in(page, live.token)
    create_gallery(page, "Dropped")
    files = [
        {"name": f"drop-{seed}.png", "data": list(tiny_png(seed + 30, 24))} for seed in range(2)
    ]
    page.locator("[data-dropzone]").evaluate(
        """(zone, files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                dt.items.add(new File([new Uint8Array(f.data)], f.name, {type: "image/png"}));
            }
            const init = {dataTransfer: dt, bubbles: true, cancelable: true};
            zone.dispatchEvent(new DragEvent("dragover", init));
            zone.dispatchEvent(new DragEvent("drop", init));
        }""",
        files,
    )
    expect(page.locator("[data-chosen] li")).to_have_text(
        [re.compile(r"drop-0\.png"), re.compile(r"drop-1\.png")]
    )
    page.get_by_role("button", name="Add images").click()
    expect(page.get_by_text("Added 2 images.")).to_be_visible()
    expect(page.locator(".tiles .tile-name")).to_have_count(2)
    names = page.locator(".tiles .tile-name").all_inner_texts()
    assert sorted(names) == ["drop-0.png", "drop-1.png"], names

    # A file that is not an image: explained next to the box, nothing added.
    page.set_input_files(
        "#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello\n"}]
    )
    page.get_by_role("button", name="Add images").click()
    expect(page.locator("#err-file")).to_contain_text("notes.txt: not an image")
    expect(page.locator(".tiles [data-image-id]")).to_have_count(2)


def test_another_owners_gallery_is_not_found(live: BrowserStack, page: Any) -> None:
    theirs = live.api("POST", "/api/v1/galleries", data={"name": "Secret garden"}).json()
    sign_in(page, live.new_token())
    response = page.goto(f"/galleries/{theirs['id']}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert "Secret garden" not in page.content()
    page.goto("/galleries")
    expect(page.get_by_text("No galleries yet")).to_be_visible()
    if "run" in live.extra:
        response = page.goto(f"/runs/{live.extra['run']}")
        assert response is not None and response.status == 404
    assert page.request.get(f"/api/v1/galleries/{theirs['id']}/images").status == 404


def test_gallery_pages_fit_a_phone_screen(live: BrowserStack, browser: Any) -> None:
    if "gallery" not in live.extra:
        pytest.skip("needs the gallery of the main test")
    ctx = browser.new_context(
        base_url=live.base_url, viewport={"width": 375, "height": 740}, is_mobile=True
    )
    try:
        phone = ctx.new_page()
        sign_in(phone, live.token)
        for path in (
            "/galleries",
            f"/galleries/{live.extra['gallery']}",
            f"/runs/{live.extra['run']}",
        ):
            phone.goto(path)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, (path, width)
    finally:
        ctx.close()
