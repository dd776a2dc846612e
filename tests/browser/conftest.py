"""Browser tests: Playwright for Python driving Debian's Chromium against a real service.

One stack per module (SQLite + the filesystem broker, a real Celery worker, the web app in a
thread) and one headless Chromium per session. The worker is started on demand
(:meth:`BrowserStack.start_worker`), so a test can watch a job sit in the queue first.

Needs ``/usr/bin/chromium`` (``tests/browser/install.sh``) and the ``playwright`` package
(the ``test`` extra). Without them the tests skip, or fail under ``KSEG_REQUIRE_SERVICES=1``.
Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Stack, build_stack, need, start_worker, wait_for

CHROMIUM = os.environ.get("KSEG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1200, "height": 900}


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        need(f"Chromium is not installed at {CHROMIUM} (run tests/browser/install.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("the playwright package is not installed (pip install -e '.[test]')")
    manager = sync_playwright().start()
    try:
        yield manager
    finally:
        manager.stop()


@pytest.fixture(scope="session")
def browser(playwright: Any) -> Iterator[Any]:
    try:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
    except Exception as exc:
        need(f"Chromium at {CHROMIUM} did not start: {exc}")
    try:
        yield chromium
    finally:
        chromium.close()


@dataclass
class BrowserStack:
    """The running service plus helpers the browser tests share."""

    stack: Stack
    request: Any  # Playwright's APIRequestContext, for the JSON API with the stack's token
    worker_started: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    @property
    def token(self) -> str:
        return self.stack.token

    def start_worker(self) -> None:
        if not self.worker_started:
            self.stack.processes.append(start_worker(self.stack.env, self.stack.log_dir))
            self.worker_started = True

    def new_token(self, owner: str | None = None, *, one_time: bool = False) -> str:
        from kseg.shared.store.auth import create_token
        from kseg.shared.store.db import session_scope

        name = owner or f"owner-{uuid.uuid4().hex[:6]}"
        with session_scope(self.stack.settings.database_url) as session:
            return create_token(session, name, "browser test", one_time=one_time)

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return self.request.fetch(self.base_url + path, method=method, headers=headers, **kw)

    def submit(self, data: bytes, filename: str, **params: Any) -> dict[str, Any]:
        """``POST /api/v1/jobs`` with the stack's token; returns the job object."""
        form: dict[str, Any] = {k: str(v) for k, v in params.items()}
        form["file"] = {"name": filename, "mimeType": "application/octet-stream", "buffer": data}
        response = self.api("POST", "/api/v1/jobs", multipart=form)
        assert response.status == 202, response.text()
        return dict(response.json())

    def wait_job(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        self.start_worker()

        last: dict[str, Any] = {}

        def done() -> dict[str, Any] | None:
            last.update(self.api("GET", f"/api/v1/jobs/{job_id}").json())
            return last if last["status"] in ("succeeded", "failed", "canceled") else None

        try:
            return dict(wait_for(done, timeout, 0.1, f"job {job_id} to finish"))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast: {last}\n{self.stack.logs()}") from None


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, playwright: Any, browser: Any
) -> Iterator[BrowserStack]:
    from kseg.shared.store.db import migrate

    tmp = tmp_path_factory.mktemp("browser")
    database_url = f"sqlite:///{tmp / 'instance' / 'kseg.db'}"
    migrate(database_url)
    # beat runs the sweeper, which re-sends a message the filesystem broker lost (kombu reads
    # a message file without the writer's lock, so a rare read of a half-written file drops it).
    stack = build_stack("sqlite-embedded", database_url, "filesystem://", tmp, workers=0, beat=True)
    request = playwright.request.new_context()
    live = BrowserStack(stack, request)
    try:
        yield live
    finally:
        request.dispose()
        stack.stop()


@pytest.fixture
def context(browser: Any, live: BrowserStack) -> Iterator[Any]:
    ctx = browser.new_context(viewport=VIEWPORT, base_url=live.base_url)
    ctx.set_default_timeout(15_000)
    # Nothing may come from another origin: any such request fails the test.
    outside: list[str] = []

    def guard(route: Any) -> None:
        outside.append(route.request.url)
        route.abort()

    ctx.route(re.compile(r"^(?!" + re.escape(live.base_url) + r")https?://.*"), guard)
    yield ctx
    ctx.close()
    assert not outside, f"pages requested other origins: {outside}"


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()


def sign_in(page: Any, token: str) -> None:
    """Sign in through the form, by pasting the token."""
    page.goto("/login")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/$"))


def screenshot(page: Any, name: str, *, full_page: bool = True) -> None:
    """Save docs/screenshots/<name>.png, only when KSEG_SCREENSHOTS=1 (keeps the tree clean);
    ``full_page=False``: what the screen shows (a dialog, say)."""
    if os.environ.get("KSEG_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    tmp = target.with_suffix(".tmp.png")
    page.screenshot(path=str(tmp), full_page=full_page)
    shutil.move(tmp, target)


def images_dir() -> Path:
    from tests.conftest import IMAGES

    return IMAGES
