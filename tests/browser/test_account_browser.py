"""Sign-in and tokens in a real browser (headless Chromium) against a real service.

The account page lists the owner's API tokens, creates one (shown once, with copy buttons and
a ready curl line that works against the API) and revokes one (the API then answers 401);
`kseg login-link` mints a fresh one-time link that signs in again after a sign-out, when the
old link is dead and its page says to run `kseg login-link`.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import BrowserStack, images_dir, sign_in
from tests.browser.test_pages_browser import expect
from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.integration]

LINK = re.compile(r"^http://127\.0\.0\.1:\d+/login/kseg_[A-Za-z0-9_-]+$")


def _token_id(live: BrowserStack, owner: str, label: str) -> str:
    from kseg.shared.store.auth import list_tokens
    from kseg.shared.store.db import session_scope

    with session_scope(live.stack.settings.database_url) as session:
        (info,) = [t for t in list_tokens(session, owner) if t.label == label]
    return info.id


def test_account_page_creates_a_token_that_works_and_revokes_it(
    live: BrowserStack, context: Any, page: Any, tmp_path: Path
) -> None:
    owner = "account-owner"
    sign_in(page, live.new_token(owner))
    # The owner's name in the header leads to the account page.
    page.locator(".who-name").click()
    page.wait_for_url(re.compile(r"/account$"))
    expect(page.get_by_role("heading", name="Account", exact=True)).to_be_visible()
    rows = page.locator("[data-tokens] tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.locator(".token-name")).to_have_text(["browser test"])

    # A name is needed.
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#token-name-error")).to_contain_text("Give the token a name")

    page.get_by_label("New token's name").fill("ci script")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("[data-secret]").input_value()
    assert re.fullmatch(r"kseg_[A-Za-z0-9_-]{40,}", secret), secret
    expect(page.get_by_text("it is shown only this once")).to_be_visible()
    curl = page.locator("[data-curl]").input_value()
    assert curl == (
        f"curl -H 'Authorization: Bearer {secret}' -F file=@photo.jpg -F k=16 "
        f"{live.base_url}/api/v1/jobs"
    ), curl
    expect(rows.locator(".token-name")).to_have_text(["ci script", "browser test"])

    # Copy puts the token on the clipboard.
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.base_url)
    page.locator("[data-copy=new-token]").click()
    expect(page.locator("[data-copy=new-token]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    # The token works against the API, as the page's curl line sends it.
    assert live.api("GET", "/api/v1/jobs", token=secret).status == 200
    if shutil.which("curl"):
        shutil.copy(images_dir() / "baby.jpg", tmp_path / "photo.jpg")
        done = subprocess.run(
            [*shlex.split(curl), "-s", "-w", "\n%{http_code}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        body, _, status = done.stdout.rpartition("\n")
        assert status == "202", done.stdout
        job = json.loads(body)
        assert live.api("GET", f"/api/v1/jobs/{job['id']}", token=secret).status == 200

    # Shown once: the page again lists it by name only.
    page.goto("/account")
    expect(rows.locator(".token-name")).to_have_text(["ci script", "browser test"])
    assert secret not in page.content()

    # Another owner's token cannot be revoked from here (404), even knowing its id.
    live.new_token("someone-else")
    theirs = _token_id(live, "someone-else", "browser test")
    status = page.evaluate(
        """async (id) => {
            const body = new URLSearchParams({
                csrf_token: document.querySelector('[name=csrf_token]').value});
            const r = await fetch(`/account/tokens/${id}/revoke`, {method: 'POST', body});
            return r.status;
        }""",
        theirs,
    )
    assert status == 404

    # Revoke it (after the confirmation): the API refuses it at once.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke ci script").click()
    expect(page.get_by_text("Revoked the token “ci script”")).to_be_visible()
    expect(rows.locator(".token-name")).to_have_text(["browser test"])
    refused = live.api("GET", "/api/v1/jobs", token=secret)
    assert refused.status == 401 and refused.json()["error"]["code"] == "invalid_token"
    assert live.api("GET", "/api/v1/jobs", token=live.new_token(owner)).status == 200


def _login_link(live: BrowserStack) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "kseg.shared.cli", "login-link", "--url", live.base_url],
        env=live.stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert LINK.match(link), done.stdout
    return link


def test_a_fresh_login_link_signs_in_after_signing_out(live: BrowserStack, page: Any) -> None:
    first = _login_link(live)
    page.goto(first)
    page.wait_for_url(re.compile(r"/$"))
    expect(page.locator(".who-name")).to_have_text("default")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login$"))

    # The old link is spent; its page says how to get another, with no restart.
    response = page.goto(first)
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("kseg login-link")
    expect(page.get_by_role("alert")).not_to_contain_text("restarting `kseg up`")

    page.goto(_login_link(live))
    page.wait_for_url(re.compile(r"/$"))
    expect(page.get_by_text("Signed in as default")).to_be_visible()
    page.goto("/account")
    expect(page.get_by_role("heading", name="Account", exact=True)).to_be_visible()


def test_login_link_refuses_an_unknown_owner(live: BrowserStack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kseg.shared.cli", "login-link", "--owner", "nobody-here"],
        env=live.stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert "no owner 'nobody-here'" in done.stderr and "kseg token create" in done.stderr
