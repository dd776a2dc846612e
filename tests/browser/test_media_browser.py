"""Images in the pages, in a real browser (headless Chromium) against a real service (issue 24).

- Thumbnails: the history of 20 jobs on 1 MP photos loads small server-made thumbnails, not
  the full-size files (the bytes of every image response, as the browser counts them).
- The lightbox: the job page's original and outputs open in an accessible in-page viewer with
  keyboard (and swipe) navigation, a 1:1 zoom with panning, and a download link.
- The before/after slider has the image's own aspect ratio and the full width of its card.
- A phone (375 px): no element of any page is wider than its box or the screen, measured over
  every element; "Drop images here" is not offered on a touch screen.

``KSEG_SCREENSHOTS=1`` also saves ``docs/screenshots/`` images of the lightbox and the phone.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from tests.browser.conftest import BrowserStack, screenshot, sign_in
from tests.browser.test_pages_browser import all_images_loaded, expect

pytestmark = [pytest.mark.browser, pytest.mark.integration]

JOB_URL = re.compile(r"/jobs/([0-9a-f-]{36})$")
PHONE = {"width": 375, "height": 740}
ORDER = ["original", "labels", "gray", "color", "recolor", "overlay"]


def photo(seed: int, width: int = 1224, height: int = 816) -> bytes:
    """A ~1 MP "phone photo" as JPEG: a sky, a sun, hills and a lake, with sensor noise (which
    is what makes real photos, and their segmentations, large files)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    tint = [int(v) for v in rng.integers(-40, 40, 3)]
    for y in range(height):
        t = y / height
        sky = (250 - 90 * t + tint[0], 170 - 60 * t + tint[1], 90 + 120 * t + tint[2])
        draw.line([(0, y), (width, y)], fill=tuple(int(max(0, min(255, c))) for c in sky))
    sx, sy = int(rng.integers(width // 2, width - 200)), int(rng.integers(60, height // 3))
    draw.ellipse([sx, sy, sx + 180, sy + 180], fill=(255, 214, 102))
    ridge = [(0, int(height * 0.7))]
    for x in range(0, width + 100, 100):
        ridge.append((x, int(height * (0.45 + 0.2 * rng.random()))))
    draw.polygon([*ridge, (width, height), (0, height)], fill=(46, 110 + seed % 40, 84))
    draw.rectangle([0, int(height * 0.82), width, height], fill=(52, 96, 160))
    pixels = np.asarray(image, dtype=np.int16)
    pixels = pixels + rng.normal(0, 9, pixels.shape).astype(np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def image_bytes(page: Any) -> list[dict[str, Any]]:
    """Every image the page fetched, as the browser counts it (Resource Timing: bytes on the
    wire with headers, and the body's bytes)."""
    return list(
        page.evaluate(
            """() => performance.getEntriesByType('resource')
                .filter(e => e.initiatorType === 'img')
                .map(e => ({url: e.name, transfer: e.transferSize, body: e.encodedBodySize}))"""
        )
    )


def load_every_image(page: Any, selector: str) -> None:
    """Scroll to the end (lazy images load when near the screen) and wait for them all."""
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    all_images_loaded(page, selector)
    page.evaluate("window.scrollTo(0, 0)")


def finished_job(live: BrowserStack, key: str, data: bytes, name: str, **params: Any) -> str:
    """A job that succeeded, made once per module (kept in ``live.extra[key]``)."""
    if key not in live.extra:
        job = live.submit(data, name, **params)
        assert live.wait_job(job["id"], timeout=120)["status"] == "succeeded"
        live.extra[key] = job["id"]
    return str(live.extra[key])


# ---------------------------------------------------------------- item 2: thumbnails


def test_history_of_20_photos_loads_small_thumbnails(live: BrowserStack, page: Any) -> None:
    jobs = [live.submit(photo(seed), f"photo-{seed:02}.jpg", k=16) for seed in range(20)]
    for job in jobs:
        assert live.wait_job(job["id"], timeout=180)["status"] == "succeeded"
    sizes = [
        len(live.api("GET", f"/api/v1/jobs/{job['id']}/outputs/recolor.png").body())
        for job in jobs[:3]
    ]
    assert min(sizes) > 200_000, sizes  # the full-size files are big, as a phone's would be

    sign_in(page, live.token)
    page.goto("/jobs")
    rows = page.locator("[data-joblist] .jobrow")
    expect(rows).to_have_count(20)
    load_every_image(page, "[data-joblist] img")
    fetched = image_bytes(page)
    total = sum(entry["transfer"] for entry in fetched)
    print(f"history: {len(fetched)} images, {total:,} bytes transferred")
    assert len(fetched) >= 20, fetched
    assert total < 500_000, (total, fetched)
    # Each tile is a small WebP made for it, at most 160 px on its long side (72 px at 2x).
    naturals = page.locator("[data-joblist] img").evaluate_all(
        "imgs => imgs.map(i => Math.max(i.naturalWidth, i.naturalHeight))"
    )
    assert all(0 < n <= 160 for n in naturals), naturals
    live.extra["photo_jobs"] = [job["id"] for job in jobs]


def test_thumbnails_are_cached_and_revalidated(live: BrowserStack, browser: Any) -> None:
    job_id = finished_job(live, "landscape", photo(99), "wide.jpg", k=8)
    url = f"/api/v1/jobs/{job_id}/outputs/recolor/thumbnail?size=160"
    first = live.api("GET", url)
    assert first.status == 200, first.text()
    assert first.headers["content-type"] in ("image/webp", "image/jpeg")
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[^"]+"', etag), etag  # a strong validator
    assert "private" in first.headers["cache-control"]
    assert "max-age=" in first.headers["cache-control"]
    again = live.request.fetch(
        live.base_url + url,
        headers={"Authorization": f"Bearer {live.token}", "If-None-Match": etag},
    )
    assert again.status == 304 and again.body() == b""
    assert live.api("GET", url).headers["etag"] == etag  # made once, then stored

    # The browser's cache keeps them: coming back to the page fetches no thumbnail again.
    # (A context of its own: the other tests' guard routes requests, which turns off
    # Chromium's HTTP cache.)
    ctx = browser.new_context(base_url=live.base_url)
    try:
        page = ctx.new_page()
        sign_in(page, live.token)
        page.goto(f"/jobs/{job_id}")
        load_every_image(page, "[data-results] .shot img")
        first_bytes = [e for e in image_bytes(page) if "/thumbnail" in e["url"]]
        assert len(first_bytes) == 6 and all(e["transfer"] > 1000 for e in first_bytes)
        page.goto("/jobs")
        page.goto(f"/jobs/{job_id}")
        load_every_image(page, "[data-results] .shot img")
        again_bytes = [e for e in image_bytes(page) if "/thumbnail" in e["url"]]
        # Served from the cache (0 bytes), or at most revalidated (headers only, a 304).
        assert len(again_bytes) == 6, again_bytes
        assert all(e["transfer"] < 1000 for e in again_bytes), again_bytes
    finally:
        ctx.close()


def test_pages_show_thumbnails_not_full_size_files(live: BrowserStack, page: Any) -> None:
    """The job page's strip, a gallery's grid, the galleries list and a run page."""
    job_id = finished_job(live, "landscape", photo(99), "wide.jpg", k=8)
    sign_in(page, live.token)
    page.goto(f"/jobs/{job_id}")
    load_every_image(page, "[data-results] .shot img")
    strip = page.locator("[data-results] .shot img").evaluate_all(
        "imgs => imgs.map(i => [i.dataset.output, i.getAttribute('src'), i.naturalWidth])"
    )
    assert [name for name, _, _ in strip] == ORDER, strip
    assert all("/thumbnail?size=480" in src and 0 < w <= 480 for _, src, w in strip), strip
    # The labels output is a machine-readable index map (nearly black): its thumbnail shows
    # the regions in visible colours instead.
    spread = page.locator("img[data-output=labels]").evaluate(
        """img => {
            const c = document.createElement('canvas');
            c.width = img.naturalWidth; c.height = img.naturalHeight;
            const g = c.getContext('2d');
            g.drawImage(img, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data;
            let lo = 255, hi = 0;
            for (let i = 0; i < d.length; i += 4) {
                const v = (d[i] + d[i + 1] + d[i + 2]) / 3;
                lo = Math.min(lo, v); hi = Math.max(hi, v);
            }
            return hi - lo;
        }"""
    )
    assert spread > 60, spread
    strip_bytes = sum(e["transfer"] for e in image_bytes(page) if "/thumbnail" in e["url"])
    print(f"job page strip: {strip_bytes:,} bytes for 6 thumbnails")

    gallery = live.api("POST", "/api/v1/galleries", data={"name": "Trip", "params": {"k": 6}})
    gallery_id = gallery.json()["id"]
    files = [
        {"name": f"trip-{seed}.jpg", "mimeType": "image/jpeg", "buffer": photo(200 + seed)}
        for seed in range(3)
    ]
    added = live.api("POST", f"/api/v1/galleries/{gallery_id}/images", multipart={"file": files[0]})
    assert added.status == 201, added.text()
    for extra in files[1:]:
        assert (
            live.api(
                "POST", f"/api/v1/galleries/{gallery_id}/images", multipart={"file": extra}
            ).status
            == 201
        )
    # Never run: the grid shows thumbnails of the originals.
    page.goto(f"/galleries/{gallery_id}")
    load_every_image(page, "[data-tile-img]")
    srcs = page.locator("[data-tile-img]").evaluate_all("imgs => imgs.map(i => i.src)")
    assert len(srcs) == 3 and all(
        re.search(r"/api/v1/images/[0-9a-f-]{36}/thumbnail\?size=480$", s) for s in srcs
    ), srcs
    run = live.api("POST", f"/api/v1/galleries/{gallery_id}/runs", data={}).json()
    live.start_worker()
    # Then the recolor outputs' thumbnails (put in place by the page while the run runs).
    page.goto(f"/galleries/{gallery_id}")
    page.wait_for_function(
        """() => {
            const imgs = Array.from(document.querySelectorAll('[data-tile-img]'));
            return imgs.length === 3 && imgs.every(i =>
                /\\/api\\/v1\\/jobs\\/[0-9a-f-]{36}\\/outputs\\/recolor\\/thumbnail\\?size=480$/
                    .test(i.src) && i.complete && i.naturalWidth > 0);
        }""",
        timeout=120_000,
    )
    page.goto("/galleries")
    covers = page.locator(".gcard", has_text="Trip").locator(".gcard-cover img")
    expect(covers).to_have_count(3)
    load_every_image(page, ".gcard-cover img")
    srcs = covers.evaluate_all("imgs => imgs.map(i => i.src)")
    assert all("/thumbnail?size=" in s for s in srcs), srcs
    assert not [e for e in image_bytes(page) if e["url"].endswith(("/file", ".png"))]

    page.goto(f"/runs/{run['id']}")
    expect(page.locator(".job-title [data-run-badge]")).to_have_text("Succeeded", timeout=60_000)
    page.reload()
    load_every_image(page, "[data-run-jobs] img")
    srcs = page.locator("[data-run-jobs] img").evaluate_all("imgs => imgs.map(i => i.src)")
    assert len(srcs) == 3 and all(s.endswith("/outputs/recolor/thumbnail?size=160") for s in srcs)
    live.extra["gallery"] = gallery_id
    live.extra["run"] = run["id"]


# ---------------------------------------------------------------- item 3: the lightbox


def viewer_state(page: Any) -> dict[str, Any]:
    return dict(
        page.locator("[data-lightbox]").evaluate(
            """box => {
                const img = box.querySelector('[data-lightbox-img]');
                const stage = box.querySelector('[data-lightbox-stage]');
                const r = img.getBoundingClientRect();
                return {
                    name: box.dataset.current,
                    src: img.getAttribute('src'),
                    title: box.querySelector('[data-lightbox-title]').textContent,
                    download: box.querySelector('[data-lightbox-download]').getAttribute('href'),
                    width: r.width, natural: img.naturalWidth,
                    scrollable: stage.scrollWidth > stage.clientWidth,
                    focusInside: box.contains(document.activeElement),
                };
            }"""
        )
    )


def test_lightbox_keyboard_zoom_and_download(live: BrowserStack, page: Any) -> None:
    job_id = finished_job(live, "landscape", photo(99), "wide.jpg", k=8)
    sign_in(page, live.token)
    page.goto(f"/jobs/{job_id}")
    box = page.locator("[data-lightbox]")
    expect(box).to_be_hidden()

    opener = page.locator("figure:has(img[data-output=recolor]) a")
    opener.click()
    expect(box).to_be_visible()
    dialog = page.get_by_role("dialog", name=re.compile("recolor"))
    expect(dialog).to_be_visible()
    expect(dialog).to_have_attribute("aria-modal", "true")
    page.wait_for_function(
        "() => document.querySelector('[data-lightbox-img]').complete"
        " && document.querySelector('[data-lightbox-img]').naturalWidth > 0"
    )
    state = viewer_state(page)
    assert state["name"] == "recolor" and state["focusInside"], state
    assert state["src"].endswith(f"/api/v1/jobs/{job_id}/outputs/recolor.png"), state
    assert state["natural"] == 1224  # the full-size file, not a thumbnail
    assert state["width"] <= 1200  # fitted to the screen
    assert state["download"] == state["src"]
    assert "5 / 6" in state["title"]

    # ←/→ go through the original and the outputs, round.
    page.keyboard.press("ArrowRight")
    assert viewer_state(page)["name"] == "overlay"
    page.keyboard.press("ArrowRight")
    state = viewer_state(page)
    assert state["name"] == "original" and state["src"].endswith("/file"), state
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert viewer_state(page)["name"] == "recolor"
    # The label map (0..k-1, nearly black) is shown brightened, and says so.
    note = page.locator("[data-lightbox-note]")
    expect(note).to_be_hidden()
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    assert viewer_state(page)["name"] == "labels"
    expect(note).to_be_visible()
    shown = page.locator("[data-lightbox-img]").evaluate("i => getComputedStyle(i).filter")
    assert shown == f"brightness({255 / 7:.2f})", shown  # k = 8: label 7 is white
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert viewer_state(page)["name"] == "recolor"

    # Focus stays in the dialog.
    for _ in range(8):
        page.keyboard.press("Tab")
        assert viewer_state(page)["focusInside"]
    for _ in range(3):
        page.keyboard.press("Shift+Tab")
        assert viewer_state(page)["focusInside"]

    # 1:1: one image pixel per screen pixel, panned by scrolling.
    zoom = page.get_by_role("button", name=re.compile("1:1"))
    zoom.click()
    expect(zoom).to_have_attribute("aria-pressed", "true")
    page.wait_for_function(
        "() => Math.abs(document.querySelector('[data-lightbox-img]')"
        ".getBoundingClientRect().width - 1224) < 1"
    )
    assert viewer_state(page)["scrollable"]
    stage = page.locator("[data-lightbox-stage]")
    stage.evaluate("s => { s.scrollLeft = 30; }")
    assert stage.evaluate("s => s.scrollLeft") == 30  # panned
    zoom.click()
    expect(zoom).to_have_attribute("aria-pressed", "false")
    assert viewer_state(page)["width"] < 1224
    screenshot(page, "lightbox", full_page=False)

    # The download link gives the full-size PNG.
    with page.expect_download() as download:
        page.locator("[data-lightbox-download]").click()
    saved = download.value.path()
    from PIL import Image

    with Image.open(saved) as png:
        assert png.format == "PNG" and png.size == (1224, 816)

    # Esc closes it, and focus goes back to where it was.
    page.keyboard.press("Escape")
    expect(box).to_be_hidden()
    assert opener.evaluate("a => a === document.activeElement")
    # Without JavaScript's viewer the link still leads to the file.
    assert (opener.get_attribute("href") or "").endswith("/outputs/recolor.png")


def test_lightbox_on_a_touch_screen(live: BrowserStack, browser: Any) -> None:
    job_id = finished_job(live, "landscape", photo(99), "wide.jpg", k=8)
    ctx = browser.new_context(
        base_url=live.base_url, viewport=PHONE, is_mobile=True, has_touch=True
    )
    try:
        phone = ctx.new_page()
        sign_in(phone, live.token)
        phone.goto(f"/jobs/{job_id}")
        phone.locator("figure:has(img[data-output=gray]) a").tap()
        box = phone.locator("[data-lightbox]")
        expect(box).to_be_visible()
        assert viewer_state(phone)["name"] == "gray"
        # A swipe to the left shows the next one; to the right, the one before.
        swipe = """(stage, dx) => {
            const at = (type, x) => stage.dispatchEvent(new PointerEvent(type, {
                pointerId: 7, pointerType: 'touch', isPrimary: true, bubbles: true,
                clientX: x, clientY: 300}));
            at('pointerdown', 200); at('pointermove', 200 + dx / 2); at('pointerup', 200 + dx);
        }"""
        stage = phone.locator("[data-lightbox-stage]")
        stage.evaluate(swipe, -120)
        assert viewer_state(phone)["name"] == "color"
        stage.evaluate(swipe, 120)
        stage.evaluate(swipe, 120)
        assert viewer_state(phone)["name"] == "labels"
        phone.get_by_role("button", name="Next").tap()
        assert viewer_state(phone)["name"] == "gray"
        state = viewer_state(phone)
        assert state["width"] <= PHONE["width"], state
        screenshot(phone, "lightbox-phone", full_page=False)
        phone.get_by_role("button", name="Close").tap()
        expect(box).to_be_hidden()
    finally:
        ctx.close()


# ---------------------------------------------------------------- item 4: the slider


@pytest.mark.parametrize(("width", "height"), [(1224, 816), (600, 900)])
def test_slider_has_the_images_shape_and_its_cards_width(
    live: BrowserStack, page: Any, width: int, height: int
) -> None:
    job_id = finished_job(
        live, f"shape-{width}x{height}", photo(width, width, height), f"{width}.jpg", k=6
    )
    sign_in(page, live.token)
    page.goto(f"/jobs/{job_id}")
    all_images_loaded(page, "[data-compare] img")
    box = page.locator("[data-compare]").evaluate(
        """el => {
            const card = el.closest('.card');
            const cs = getComputedStyle(card);
            const inner = card.clientWidth - parseFloat(cs.paddingLeft)
                - parseFloat(cs.paddingRight);
            const r = el.getBoundingClientRect();
            const img = el.querySelector('img').getBoundingClientRect();
            return {w: r.width, h: r.height, inner, imgW: img.width, imgH: img.height,
                    vh: window.innerHeight};
        }"""
    )
    # Its shape is the image's: no grey bands.
    assert box["h"] == pytest.approx(box["w"] * height / width, abs=1.5), box
    assert (box["imgW"], box["imgH"]) == (pytest.approx(box["w"]), pytest.approx(box["h"]))
    # As wide as its card, unless that would make it taller than most of the screen.
    if box["inner"] * height / width <= 0.8 * box["vh"]:
        assert box["w"] == pytest.approx(box["inner"], abs=1), box
    else:
        assert box["h"] == pytest.approx(0.8 * box["vh"], abs=1.5), box
    if width > height:
        assert box["w"] >= 900, box  # a landscape photo gets the page's width
    if width > height:
        screenshot(page, "job-landscape")


# ---------------------------------------------------------------- item 9: a phone's screen

OVERFLOWS = """() => {
    // Every element that is drawn: its box must lie within the screen's width, and its
    // content within its box (a box narrower than its content cuts it off or scrolls it
    // sideways). Text cut with an ellipsis on purpose is fine; so are the visually hidden
    // helpers (.sr-only, the skip link until focused).
    const vw = document.documentElement.clientWidth;
    const out = [];
    const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
        (el.className && typeof el.className === 'string'
            ? '.' + el.className.trim().split(/\\s+/).join('.') : '') +
        ' "' + (el.textContent || '').trim().slice(0, 30) + '"';
    for (const el of document.body.querySelectorAll('*')) {
        if (el.closest('.sr-only, .skip-link, script, style, template, dialog:not([open])')) {
            continue;
        }
        if (el instanceof SVGElement && !(el instanceof SVGSVGElement)) { continue; }
        const cs = getComputedStyle(el);
        if (cs.display === 'none' || cs.visibility === 'hidden') { continue; }
        const r = el.getBoundingClientRect();
        if (r.width === 0 && r.height === 0) { continue; }
        if (r.left < -0.5 || r.right > vw + 0.5) {
            out.push(name(el) + ` spans ${r.left.toFixed(1)}..${r.right.toFixed(1)} of ${vw}`);
        }
        const ellipsis = cs.textOverflow === 'ellipsis' && cs.overflowX !== 'visible';
        if (!ellipsis && el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
            out.push(name(el) + ` holds ${el.scrollWidth}px in ${el.clientWidth}px` +
                ` (overflow-x: ${cs.overflowX})`);
        }
    }
    return out;
}"""


def test_every_page_fits_a_phone(live: BrowserStack, browser: Any) -> None:
    auto = finished_job(live, "auto", photo(7, 640, 480), "auto.jpg", k="auto", k_max=10)
    long_name = finished_job(
        live, "long-name", photo(8, 480, 640), "a-photo-with-a-really-long-file-name.jpg", k=4
    )
    if "gallery" not in live.extra:
        gallery = live.api("POST", "/api/v1/galleries", data={"name": "Phone"}).json()
        file = {"name": "phone-photo-name.jpg", "mimeType": "image/jpeg", "buffer": photo(300)}
        live.api("POST", f"/api/v1/galleries/{gallery['id']}/images", multipart={"file": file})
        run = live.api("POST", f"/api/v1/galleries/{gallery['id']}/runs", data={}).json()
        live.extra.update(gallery=gallery["id"], run=run["id"])
    ctx = browser.new_context(
        base_url=live.base_url, viewport=PHONE, is_mobile=True, has_touch=True
    )
    try:
        phone = ctx.new_page()
        phone.goto("/login")
        assert phone.evaluate(OVERFLOWS) == []
        sign_in(phone, live.token)
        pages = [
            "/",
            f"/jobs/{auto}",
            f"/jobs/{long_name}",
            "/jobs",
            "/galleries",
            f"/galleries/{live.extra['gallery']}",
            f"/runs/{live.extra['run']}",
        ]
        problems = {}
        for path in pages:
            phone.goto(path)
            phone.evaluate("document.fonts.ready")
            found = phone.evaluate(OVERFLOWS)
            if found:
                problems[path] = found
        assert problems == {}, "\n".join(
            f"{path}: {line}" for path, lines in problems.items() for line in lines
        )

        # The k chart is drawn whole, scaled to the screen: no hidden sideways scroll.
        phone.goto(f"/jobs/{auto}")
        chart = phone.locator("[data-k-chart] svg").evaluate(
            "s => [s.getBoundingClientRect().right, document.documentElement.clientWidth]"
        )
        assert chart[0] <= chart[1], chart
        screenshot(phone, "job-phone")

        # A phone has no drag and drop: the upload box offers to choose files instead.
        for path in ("/", f"/galleries/{live.extra['gallery']}"):
            phone.goto(path)
            expect(phone.get_by_text("Drop images here")).to_be_hidden()
            expect(phone.locator("label[for=file]")).to_be_visible()
            expect(phone.locator("label[for=file]")).to_contain_text(re.compile("[Cc]hoose"))
        phone.goto(f"/galleries/{live.extra['gallery']}")
        remove = phone.locator(".tile-remove").first
        expect(remove).to_have_text("Remove")
        assert remove.evaluate("b => b.scrollWidth <= b.clientWidth")
        screenshot(phone, "gallery-phone")
    finally:
        ctx.close()
