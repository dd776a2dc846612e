"""The job page's palette as people use it, in a real browser (issue 24, item 5): a click on a
swatch copies its hex; the page's export links give JSON, CSS, GIMP and ASE files that parse
back to the job's clusters; names are distinct and percentages are rounded as the CLI and the
palette files round them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import BrowserStack, images_dir, sign_in
from tests.browser.test_pages_browser import expect
from tests.service.test_exports import parse_ase, parse_gpl

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_swatches_copy_and_every_export_parses_back(
    live: BrowserStack, context: Any, page: Any
) -> None:
    from kseg.shared.cli.segment import summary
    from kseg.shared.core.palette import colors

    job = live.submit((images_dir() / "weixin.jpg").read_bytes(), "weixin.jpg", k=16)
    job = live.wait_job(job["id"], timeout=120)
    assert job["status"] == "succeeded"
    want = colors(job["result"]["clusters"])
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.base_url)
    sign_in(page, live.token)
    page.goto(f"/jobs/{job['id']}")

    # Names on the page are distinct (weixin.jpg has several near-blacks) and its percentages
    # are the CLI's, to the digit.
    names = page.locator(".swatch-name").all_inner_texts()
    assert names == [c["name"] for c in want] and len(set(names)) == len(names)
    shown = [float(t.split()[0]) for t in page.locator(".swatch-pct").all_inner_texts()]
    assert shown == [c["percent"] for c in want] and round(sum(shown), 6) == 100
    cli = summary("weixin.jpg", Path("."), [], job["result"])
    for c in want:
        assert re.search(rf"{c['hex']}\s+{c['percent']:5.1f}%\s+{re.escape(c['name'])}", cli)

    # A click copies the swatch's hex, and says so.
    first = page.locator("[data-copy-text]").first
    first.click()
    expect(first).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == want[0]["hex"]

    # Each export link of the page, fetched as the browser would, parses back.
    links = {
        fmt: page.locator(f"a[data-palette={fmt}]").get_attribute("href")
        for fmt in ("json", "css", "gpl", "ase")
    }
    got = {fmt: page.request.get(live.base_url + href) for fmt, href in links.items()}
    assert all(r.status == 200 for r in got.values())
    assert got["json"].json() == want
    css = got["css"].text()
    assert re.findall(r"--kseg-\d+:\s*(#[0-9a-f]{6});", css) == [c["hex"] for c in want]
    gpl = parse_gpl(got["gpl"].text())
    assert [(r, g, b) for r, g, b, _ in gpl] == [tuple(c["rgb"]) for c in want]
    ase = parse_ase(got["ase"].body())
    assert [name for name, *_ in ase] == [f"{i} {c['name']} {c['hex']}" for i, c in enumerate(want)]
    assert [[round(v * 255) for v in values] for _, _, values, _ in ase] == [c["rgb"] for c in want]
