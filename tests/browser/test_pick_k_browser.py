"""Choosing k from the curve (issue 24, items 5 and 11): each bar of the auto-k chart starts
the same image again at that k, and the job page shows the owner's results for the image at
other k side by side."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.browser.conftest import BrowserStack, images_dir, screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]

JOB_URL = re.compile(r"/jobs/([0-9a-f-]{36})$")


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as _expect

    return _expect(target)


def test_a_bar_of_the_curve_segments_again_at_that_k_and_both_show_side_by_side(
    live: BrowserStack, page: Any
) -> None:
    live.start_worker()
    weixin = (images_dir() / "weixin.jpg").read_bytes()
    auto = live.submit(weixin, "weixin.jpg", k="auto", k_min=2, k_max=8)
    chosen = live.wait_job(auto["id"])["result"]["k"]
    pick = 8 if chosen != 8 else 7

    sign_in(page, live.token)
    page.goto(f"{live.base_url}/jobs/{auto['id']}")
    expect(page.locator("[data-other-k]")).to_have_count(0)  # no other result yet
    bar = page.locator(f"[data-k-chart] [data-pick-k='{pick}']")
    query = parse_qs(urlparse(bar.get_attribute("href") or "").query)
    assert query["k"] == [str(pick)] and "k_min" not in query and "k_max" not in query
    bar.click()

    # The submit page, pre-filled: this image, a fixed k of the bar, the other parameters kept.
    expect(page.locator("input[name=source][value=image]")).to_be_checked()
    expect(page.locator("#k_fixed")).to_be_checked()
    expect(page.locator("#k")).to_have_value(str(pick))
    page.get_by_role("button", name="Segment").click()
    page.wait_for_url(JOB_URL)
    picked_id = JOB_URL.search(page.url).group(1)  # type: ignore[union-attr]
    assert picked_id != auto["id"]
    assert live.wait_job(picked_id)["result"]["k"] == pick

    # Each job page shows the other's result beside its own, linked.
    page.reload()
    strip = page.locator("[data-other-k]")
    expect(strip.locator(".otherk-this")).to_contain_text(f"k = {pick}")
    expect(strip.locator("[data-other-k-job]")).to_have_text([f"k = {chosen}"])
    for img in strip.locator("img").all():  # thumbnails, not full-size files
        assert "/thumbnail?size=" in (img.get_attribute("src") or "")
    strip.scroll_into_view_if_needed()
    screenshot(page, "job-other-k", full_page=False)
    strip.locator("[data-other-k-job]").click()
    page.wait_for_url(re.compile(f"/jobs/{auto['id']}$"))
    expect(page.locator("[data-other-k] [data-other-k-job]")).to_have_text([f"k = {pick}"])
