"""The web pages through Flask's test client, on PostgreSQL + Redis and on SQLite.

Sign-in and sign-out, CSRF refusals, another owner's objects answering 404, friendly form
errors, the submit → job → history path, and the API's cookie authentication for reads.
No worker runs: jobs run in-process with the worker's own runner where a test needs results.
"""

from __future__ import annotations

import html
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from kseg.shared.store.auth import hash_token
from kseg.shared.store.db import get_sessionmaker
from kseg.shared.store.models import ApiToken, Image, Job, Owner, WebSession
from tests.service.test_api_common import Api, baby, make_api, tiny_png, weixin

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
JOB_PATH = re.compile(r"^/jobs/([0-9a-f-]{36})$")


@dataclass
class Pages:
    """A browser-like test client (cookies kept) next to the API helper of the same owner."""

    api: Api

    @property
    def client(self) -> Any:
        return self.api.client

    def csrf(self, path: str = "/") -> str:
        page = self.client.get(path)
        found = CSRF_INPUT.search(page.get_data(as_text=True))
        assert found, page.get_data(as_text=True)[:500]
        return found.group(1)

    def sign_in(self, token: str | None = None) -> TestResponse:
        token = token or self.api.token
        return self.client.post(
            "/login", data={"csrf_token": self.csrf("/login"), "token": token, "next": "/"}
        )

    def form(self, **overrides: Any) -> dict[str, Any]:
        """The submit form as a browser sends it, at its defaults."""
        data: dict[str, Any] = {
            "csrf_token": self.csrf("/"),
            "source": "upload",
            "k_mode": "number",
            "k": "16",
            "normalize": "fixed",
            "color_space": "rgb",
            "outputs": ["labels", "gray", "color", "recolor", "overlay"],
            "max_side": "",
            "seed": "0",
            "reuse": "1",
        }
        data.update(overrides)
        return data

    def submit(self, files: list[tuple[bytes, str]] | None = None, **overrides: Any) -> Any:
        data = self.form(**overrides)
        if files is not None:
            data["file"] = [(io.BytesIO(blob), name) for blob, name in files]
        return self.client.post("/", data=data, content_type="multipart/form-data")

    def post_as(self, token: str, path: str, data: bytes, filename: str) -> Any:
        """``path``'s JSON answer to an upload of ``data`` with another ``token`` (another
        owner's, say)."""
        files = {"file": (io.BytesIO(data), filename)}
        response = self.api.post(path, token=token, data=files, content_type="multipart/form-data")
        return response.get_json()

    def count(self, model: Any) -> int:
        with get_sessionmaker(self.api.settings.database_url)() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(model).where(model.owner_id == self.owner_id)
                )
                or 0
            )

    @property
    def owner_id(self) -> str:
        """The signed-in owner, from the server-side session the cookie names."""
        with get_sessionmaker(self.api.settings.database_url)() as session:
            return str(session.get(WebSession, self.session_id).owner_id)  # type: ignore[union-attr]

    @property
    def session_id(self) -> str:
        """What the session cookie holds: the id of a server-side session."""
        with self.client.session_transaction() as sess:
            return str(sess["sid"])

    def session_cookie(self) -> str:
        """The session cookie's value, as an attacker who copied it would have it."""
        cookie = self.client.get_cookie(self.api.app.config["SESSION_COOKIE_NAME"])
        assert cookie is not None
        return cookie.value

    def replay(self, cookie: str) -> Any:
        """A new browser sending only ``cookie`` as its session cookie."""
        client = self.api.app.test_client()
        client.set_cookie(self.api.app.config["SESSION_COOKIE_NAME"], cookie)
        return client


def text(response: TestResponse) -> str:
    return html.unescape(response.get_data(as_text=True))


def field_error(response: TestResponse, field: str) -> str:
    found = re.search(rf'id="err-{field}"[^>]*>([^<]*)<', response.get_data(as_text=True))
    assert found, f"no error shown next to {field}: {text(response)[:3000]}"
    return html.unescape(found.group(1))


def job_id_of(response: TestResponse) -> str:
    assert response.status_code == 303, text(response)[:2000]
    found = JOB_PATH.match(response.headers["Location"])
    assert found, response.headers["Location"]
    return found.group(1)


# ---------------------------------------------------------------- signing in and out


@pytest.mark.parametrize("path", ["/", "/jobs", "/jobs/00000000-0000-0000-0000-000000000000"])
def test_signed_out_pages_redirect_to_sign_in(pages: Pages, path: str) -> None:
    response = pages.client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/login?next={path}"


def test_sign_in_with_a_token_sets_a_signed_httponly_lax_cookie(pages: Pages) -> None:
    login = pages.client.get("/login")
    assert login.status_code == 200 and 'for="token"' in text(login)
    response = pages.sign_in()
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie, cookie
    assert pages.api.token not in cookie  # a session id, never the token
    assert pages.owner_id
    home = pages.client.get("/")
    assert home.status_code == 200 and "New segmentation" in text(home)


def test_a_bad_token_is_refused_with_a_message(pages: Pages) -> None:
    response = pages.sign_in("kseg_not-a-real-token")
    assert response.status_code == 403
    assert "That token is not valid" in text(response)
    assert pages.client.get("/").status_code == 302
    empty = pages.sign_in("   ")
    assert empty.status_code == 400 and "Paste your token" in text(empty)


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil"])
def test_sign_in_goes_only_to_local_pages(pages: Pages, target: str) -> None:
    response = pages.client.post(
        "/login",
        data={"csrf_token": pages.csrf("/login"), "token": pages.api.token, "next": target},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_one_time_link_signs_in_once(pages: Pages) -> None:
    from kseg.shared.store.auth import create_token
    from kseg.shared.store.db import session_scope

    with session_scope(pages.api.settings.database_url) as session:
        link_token = create_token(session, "link-owner", "sign-in link", one_time=True)
    first = pages.client.get(f"/login/{link_token}")
    assert first.status_code == 302 and first.headers["Location"] == "/"
    assert pages.client.get("/").status_code == 200

    other = pages.api.app.test_client()
    second = other.get(f"/login/{link_token}")
    assert second.status_code == 403 and "works once" in text(second)
    assert other.get("/").status_code == 302
    # A long-lived token does not belong in a URL: refused there, and not spent.
    refused = other.get(f"/login/{pages.api.token}")
    assert refused.status_code == 403
    assert pages.api.get("/api/v1/jobs").status_code == 200


def test_sign_out_is_a_csrf_protected_post(signed_in: Pages) -> None:
    forged = signed_in.client.post("/logout")
    assert forged.status_code == 400 and "form expired" in text(forged)
    assert signed_in.client.get("/").status_code == 200  # still signed in
    out = signed_in.client.post("/logout", data={"csrf_token": signed_in.csrf("/")})
    assert out.status_code == 302 and out.headers["Location"] == "/login"
    assert signed_in.client.get("/").status_code == 302
    assert signed_in.client.get("/api/v1/jobs").status_code == 401


def token_owner(pages: Pages) -> Owner:
    """The owner of the test's token."""
    with get_sessionmaker(pages.api.settings.database_url)() as session:
        owner = session.scalar(
            select(Owner)
            .join(ApiToken, ApiToken.owner_id == Owner.id)
            .where(ApiToken.token_hash == hash_token(pages.api.token))
        )
    assert owner is not None
    return owner


def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(signed_in: Pages) -> None:
    copied = signed_in.session_cookie()
    assert signed_in.replay(copied).get("/").status_code == 200  # the copy works while signed in
    assert signed_in.replay(copied).get("/api/v1/jobs").status_code == 200
    out = signed_in.client.post("/logout", data={"csrf_token": signed_in.csrf("/")})
    assert out.status_code == 302 and out.headers["Location"] == "/login"
    # The copy taken before signing out is signed out too: on the pages ...
    page = signed_in.replay(copied).get("/jobs")
    assert page.status_code == 302 and page.headers["Location"] == "/login?next=/jobs"
    # ... and on the API's cookie path.
    polled = signed_in.replay(copied).get("/api/v1/jobs")
    assert polled.status_code == 401 and polled.get_json()["error"]["code"] == "missing_token"
    # Signing in again starts a new session; the old copy stays dead.
    assert signed_in.sign_in().status_code == 302
    assert signed_in.client.get("/").status_code == 200
    assert signed_in.replay(copied).get("/").status_code == 302


def test_a_cookie_from_before_server_side_sessions_signs_nobody_in(signed_in: Pages) -> None:
    owner_id = token_owner(signed_in).id
    legacy = signed_in.api.app.test_client()
    with legacy.session_transaction() as sess:  # what the cookie held before: the owner id
        sess["owner_id"] = owner_id
    page = legacy.get("/")
    assert page.status_code == 302 and page.headers["Location"] == "/login?next=/"
    assert legacy.get("/api/v1/jobs").status_code == 401
    login = legacy.get("/login")
    assert login.status_code == 200 and 'for="token"' in text(login)


def test_revoking_a_token_signs_out_the_pages_signed_in_with_it(pages: Pages) -> None:
    from kseg.shared.store.auth import revoke_token
    from kseg.shared.store.db import session_scope

    assert pages.sign_in().status_code == 302
    other = Pages(replace(pages.api, client=pages.api.app.test_client()))
    second_token = pages.api.new_token(token_owner(pages).name, "second")
    assert other.sign_in(second_token).status_code == 302
    with session_scope(pages.api.settings.database_url) as session:
        revoke_token(session, pages.api.token)
    assert pages.client.get("/").status_code == 302  # signed in with the revoked token
    assert other.client.get("/").status_code == 200  # signed in with another: still in


def test_a_session_is_refreshed_as_it_is_used_and_ends_when_idle_too_long(
    signed_in: Pages,
) -> None:
    from datetime import timedelta

    from kseg.shared.store.models import utcnow

    def set_last_seen(ago: timedelta) -> None:
        with get_sessionmaker(signed_in.api.settings.database_url)() as session:
            row = session.get(WebSession, signed_in.session_id)
            assert row is not None and row.revoked_at is None
            row.last_seen_at = utcnow() - ago
            session.commit()

    def last_seen_ago() -> timedelta:
        with get_sessionmaker(signed_in.api.settings.database_url)() as session:
            row = session.get(WebSession, signed_in.session_id)
            assert row is not None
            return utcnow() - row.last_seen_at

    set_last_seen(timedelta(minutes=6))  # stale enough to be refreshed by the next request
    assert signed_in.client.get("/api/v1/jobs").status_code == 200
    assert last_seen_ago() < timedelta(minutes=1)
    lifetime = signed_in.api.app.permanent_session_lifetime
    set_last_seen(lifetime + timedelta(minutes=1))  # idle longer than the cookie lives
    assert signed_in.client.get("/").status_code == 302


# ---------------------------------------------------------------- the access log


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The ``kseg.access`` lines (that logger does not propagate: it writes to stdout)."""
    from kseg.web.access_log import configure_logger

    configure_logger()  # as an app with the log on leaves it, whichever test runs first
    logger = logging.getLogger("kseg.access")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="kseg.access")
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kseg.access"]


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_the_access_log_never_shows_a_token(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    backend: str,
    access_log: pytest.LogCaptureFixture,
) -> None:
    pages = Pages(make_api(request, tmp_path, backend, KSEG_ACCESS_LOG="1"))
    # buffered: the test client then closes each response, as every WSGI server does; the
    # line is written when the response is closed (its body sent).
    link = pages.api.new_token("link-owner", "sign-in link", one_time=True)
    assert pages.client.get(f"/login/{link}", buffered=True).status_code == 302
    browser = pages.api.app.test_client()
    assert browser.get(f"/login/{pages.api.token}", buffered=True).status_code == 403
    ok = pages.api.get("/api/v1/jobs", buffered=True)  # Authorization: Bearer <token>
    assert ok.status_code == 200
    browser.get(f"/login?next=/&token={pages.api.token}", buffered=True)
    lines = access_lines(access_log)
    logged = "\n".join(lines)
    assert len(lines) == 4, logged
    assert link not in logged and pages.api.token not in logged, logged
    assert '"GET /login/[redacted] HTTP/1.1" 302 ' in logged, logged
    assert '"GET /login/[redacted] HTTP/1.1" 403 ' in logged, logged
    assert '"GET /login?next=/&token=[redacted] HTTP/1.1" 200 ' in logged, logged
    api_line = next(line for line in lines if '"GET /api/v1/jobs HTTP/1.1"' in line)
    # Common log format plus the time taken: addr - - [when] "request" status bytes time.
    assert re.fullmatch(
        r"127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "
        r'"GET /api/v1/jobs HTTP/1\.1" 200 (\d+) \d+\.\dms',
        api_line,
    ), api_line
    assert api_line.split()[-2] == str(len(ok.get_data())), api_line
    assert "Bearer" not in logged and "session=" not in logged  # no headers


def test_the_access_log_works_under_a_real_wsgi_server(
    request: pytest.FixtureRequest, tmp_path: Path, access_log: pytest.LogCaptureFixture
) -> None:
    import requests

    from tests.conftest import serve_app, wait_for

    api = make_api(request, tmp_path, "sqlite", KSEG_ACCESS_LOG="1")
    server = serve_app(api.app)
    try:
        refused = requests.get(f"{server.base_url}/login/{api.token}", timeout=10)
        assert refused.status_code == 403
    finally:
        server.stop()
    line = wait_for(lambda: access_lines(access_log), 5, what="the access log line")[0]
    assert api.token not in line, line
    assert f'"GET /login/[redacted] HTTP/1.1" 403 {len(refused.content)} ' in line, line


def test_werkzeugs_own_request_log_is_redacted_too() -> None:
    """`kseg web --dev` (Flask's debug server) writes its own request lines."""
    from kseg.web.access_log import RedactTokens

    token = "kseg_" + "A1b2C3d4" * 4
    record = logging.LogRecord(
        "werkzeug", logging.INFO, __file__, 1, '%s - - [%s] "%s" %s -', None, None
    )
    record.args = ("127.0.0.1", "now", f"GET /login/{token} HTTP/1.1", 302)
    assert RedactTokens().filter(record)
    assert record.getMessage() == '127.0.0.1 - - [now] "GET /login/[redacted] HTTP/1.1" 302 -'
    record.msg, record.args = f'"GET /jobs?next=%2Flogin%2F{token[5:]}&t={token} HTTP/1.1"', None
    RedactTokens().filter(record)
    assert token not in record.getMessage() and token[5:] not in record.getMessage()


def test_the_access_log_can_be_turned_off(
    request: pytest.FixtureRequest, tmp_path: Path, access_log: pytest.LogCaptureFixture
) -> None:
    api = make_api(request, tmp_path, "sqlite", KSEG_ACCESS_LOG="0")
    assert api.client.get("/login", buffered=True).status_code == 200
    assert access_lines(access_log) == []


def test_auth_disabled_needs_no_sign_in(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    api = make_api(request, tmp_path, "sqlite", KSEG_AUTH_DISABLED="1")
    page = api.client.get("/")
    assert page.status_code == 200 and "New segmentation" in text(page)
    assert "Sign out" not in text(page)


# ---------------------------------------------------------------- CSRF


def test_form_post_without_csrf_token_is_refused(signed_in: Pages) -> None:
    data = signed_in.form()
    del data["csrf_token"]
    data["file"] = (io.BytesIO(baby()), "baby.jpg")
    response = signed_in.client.post("/", data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "form expired" in text(response) and "Traceback" not in text(response)
    data = signed_in.form(csrf_token="forged")
    data["file"] = (io.BytesIO(baby()), "baby.jpg")
    assert signed_in.client.post("/", data=data).status_code == 400
    assert signed_in.count(Job) == 0 and signed_in.count(Image) == 0


def test_the_api_stays_csrf_exempt_and_cookies_only_read(signed_in: Pages) -> None:
    api = signed_in.api
    # Bearer-token writes need no CSRF token, as before.
    job = api.submit(baby(), "baby.jpg", k=4).get_json()
    assert job["status"] == "queued"
    # The session cookie reads ...
    assert signed_in.client.get(f"/api/v1/jobs/{job['id']}").get_json()["id"] == job["id"]
    assert signed_in.client.head(f"/api/v1/images/{job['image']['id']}/file").status_code == 200
    listed = signed_in.client.get("/api/v1/jobs").get_json()
    assert [item["id"] for item in listed["items"]] == [job["id"]]
    # ... but never writes,
    assert signed_in.client.delete(f"/api/v1/jobs/{job['id']}").status_code == 401
    post = signed_in.client.post(
        "/api/v1/jobs",
        data={"file": (io.BytesIO(baby()), "b.jpg")},
        content_type="multipart/form-data",
    )
    assert post.status_code == 401 and post.get_json()["error"]["code"] == "missing_token"
    # ... and a bad bearer token is still a 401, cookie or not.
    bad = signed_in.client.get("/api/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.get_json()["error"]["code"] == "invalid_token"
    # Without a cookie, nothing changed.
    assert api.app.test_client().get("/api/v1/jobs").status_code == 401


# ---------------------------------------------------------------- submitting


def test_submit_one_file_goes_to_its_job_page(signed_in: Pages) -> None:
    response = signed_in.submit([(baby(), "baby.jpg")], k="7", seed="3", max_side="64")
    job_id = job_id_of(response)
    job = signed_in.api.get(f"/api/v1/jobs/{job_id}").get_json()
    assert job["status"] == "queued"
    assert job["params"] == {
        "k": 7,
        "normalize": "fixed",
        "color_space": "rgb",
        "outputs": ["labels", "gray", "color", "recolor", "overlay"],
        "max_side": 64,
        "seed": 3,
    }
    page = signed_in.client.get(f"/jobs/{job_id}")
    body = text(page)
    assert page.status_code == 200
    assert 'id="job-progress"' in body and f'data-watch-job="/api/v1/jobs/{job_id}"' in body
    assert "Queued" in body


def test_submit_auto_k_and_several_files_goes_to_history(signed_in: Pages) -> None:
    response = signed_in.submit(
        [(baby(), "baby.jpg"), (weixin(), "weixin.jpg")],
        k_mode="auto",
        k_min="3",
        k_max="6",
        outputs=["recolor"],
        color_space="lab",
    )
    assert response.status_code == 303 and response.headers["Location"] == "/jobs"
    jobs = signed_in.api.get("/api/v1/jobs").get_json()["items"]
    assert sorted(j["image"]["filename"] for j in jobs) == ["baby.jpg", "weixin.jpg"]
    for job in jobs:
        assert job["params"]["k"] == "auto" and job["params"]["k_min"] == 3
        assert job["params"]["outputs"] == ["recolor"] and job["params"]["color_space"] == "lab"
    history = signed_in.client.get("/jobs")
    assert "Submitted 2 jobs." in text(history)


ERROR_CASES = [
    ({"k": "1"}, "k", "at least 2"),
    ({"k": "300"}, "k", "at most 256"),
    ({"k": "many"}, "k", "integer 2..256"),
    (
        {"k_mode": "auto", "k_min": "8", "k_max": "3"},
        "k_min",
        "“from” (8) must not exceed “to” (3)",
    ),
    ({"k_mode": "auto", "k_min": "1"}, "k_min", "at least 2"),
    ({"max_side": "4"}, "max_side", "at least 16"),
    ({"seed": "-1"}, "seed", "at least 0"),
    ({"seed": "x"}, "seed", "whole number"),
    ({"outputs": []}, "outputs", "at least one output"),
    ({"normalize": "zscore"}, "normalize", "minmax"),
]


@pytest.mark.parametrize(("overrides", "field", "message"), ERROR_CASES)
def test_a_bad_value_shows_a_message_next_to_its_field(
    signed_in: Pages, overrides: dict[str, Any], field: str, message: str
) -> None:
    response = signed_in.submit([(baby(), "baby.jpg")], **overrides)
    assert response.status_code == 422
    assert response.mimetype == "text/html"
    assert message in field_error(response, field)
    body = text(response)
    assert "Please fix" in body and "Traceback" not in body
    assert 'aria-invalid="true"' in body
    # No job, but the upload is kept and offered again (tests/service/test_pages_uploads.py).
    assert signed_in.count(Image) == 1 and signed_in.count(Job) == 0
    assert 'name="image_ids"' in body and "Choose your file" not in body


@pytest.mark.parametrize(
    ("files", "status", "message"),
    [
        ([(b"hello, world\n", "notes.txt")], 415, "notes.txt: not an image format"),
        ([(b"", "empty.png")], 422, "empty.png: the file is empty"),
        ([(baby()[:1500], "cut.jpg")], 422, "cut.jpg: the image is truncated"),
        ([(b"nope", "bad.gif"), (b"", "empty.png")], 415, "bad.gif"),
        ([], 422, "Choose at least one image"),
    ],
)
def test_a_bad_file_shows_a_message_and_stores_nothing(
    signed_in: Pages, files: list[tuple[bytes, str]], status: int, message: str
) -> None:
    response = signed_in.submit(files, k="5")
    assert response.status_code == status, text(response)[:2000]
    assert message in field_error(response, "file")
    assert 'value="5"' in text(response)  # the other values are kept
    assert signed_in.count(Image) == 0 and signed_in.count(Job) == 0


def test_an_upload_over_the_limit_is_a_friendly_413(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    api = make_api(request, tmp_path, "sqlite", KSEG_MAX_UPLOAD_BYTES=str(20_000))
    pages = Pages(api)
    pages.sign_in()
    response = pages.submit([(b"\0" * 40_000, "big.png")])
    assert response.status_code == 413
    assert "over the 19.5 KB limit" in field_error(response, "file")
    assert "Up to 19.5 KB per submission" in text(response)


def test_run_again_prefills_the_form_with_the_image(signed_in: Pages) -> None:
    job = signed_in.api.submit(baby(), "baby.jpg", k=4).get_json()
    page = signed_in.client.get(
        f"/?image_id={job['image']['id']}&k=auto&k_min=3&k_max=7&outputs=recolor&seed=9"
    )
    body = text(page)
    assert "Use image" in body and "baby.jpg" in body
    assert re.search(r'value="auto"[^>]*checked', body)
    assert 'id="k_min" name="k_min" value="3"' in body
    assert re.search(r'value="recolor" checked', body) and not re.search(
        r'value="labels" checked', body
    )
    assert 'id="seed" name="seed" value="9"' in body
    response = signed_in.submit(
        None, source="image", image_id=job["image"]["id"], k_mode="auto", k_min="3", k_max="7"
    )
    again = signed_in.api.get(f"/api/v1/jobs/{job_id_of(response)}").get_json()
    assert again["image"]["id"] == job["image"]["id"]
    assert again["params"]["k"] == "auto" and again["params"]["k_max"] == 7


# ---------------------------------------------------------------- owners


def test_another_owners_job_and_images_are_not_found(signed_in: Pages) -> None:
    theirs_token = signed_in.api.new_token()
    theirs = signed_in.post_as(theirs_token, "/api/v1/jobs", weixin(), "secret-weixin.jpg")
    page = signed_in.client.get(f"/jobs/{theirs['id']}")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "Not found" in text(page) and "secret-weixin" not in text(page)
    for url in (
        f"/api/v1/jobs/{theirs['id']}",
        f"/api/v1/images/{theirs['image']['id']}/file",
        f"/api/v1/jobs/{theirs['id']}/outputs/recolor.png",
    ):
        answer = signed_in.client.get(url)
        assert answer.status_code == 404 and answer.mimetype == "application/json", url
    # Their image is not offered to run again, nor accepted in a post.
    offered = signed_in.client.get(f"/?image_id={theirs['image']['id']}")
    assert "Use image" not in text(offered) and "secret-weixin" not in text(offered)
    refused = signed_in.submit(None, source="image", image_id=theirs["image"]["id"])
    assert refused.status_code == 422
    assert "no longer available" in field_error(refused, "file")
    history = signed_in.client.get("/jobs")
    assert "secret-weixin" not in text(history)


def test_unknown_pages_are_html_and_unknown_api_paths_json(signed_in: Pages) -> None:
    page = signed_in.client.get("/no/such/page")
    assert page.status_code == 404 and page.mimetype == "text/html"
    bad_id = signed_in.client.get("/jobs/" + "x" * 300)
    assert bad_id.status_code == 404 and bad_id.mimetype == "text/html"
    api = signed_in.client.get("/api/v1/no-such-thing")
    assert api.status_code == 404 and api.get_json()["error"]["code"] == "not_found"


def test_pages_send_a_strict_content_security_policy(signed_in: Pages) -> None:
    page = signed_in.client.get("/")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "<script>" not in text(page)  # no inline script: all of it is in /static/kseg.js
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert signed_in.client.get("/static/kseg.css").status_code == 200
    assert signed_in.client.get("/static/kseg.js").status_code == 200


# ---------------------------------------------------------------- results and history


def test_a_finished_job_page_shows_the_results(signed_in: Pages) -> None:
    job_id = job_id_of(signed_in.submit([(baby(), "baby.jpg")], k="6"))
    assert signed_in.api.run_job(job_id) == "succeeded"
    page = signed_in.client.get(f"/jobs/{job_id}")
    body = text(page)
    assert page.status_code == 200 and "data-watch-job" not in body
    percents = [float(p) for p in re.findall(r'data-percent="([0-9.]+)"', body)]
    assert len(percents) == 6 and sum(percents) == pytest.approx(100.0, abs=1e-9)
    assert len(re.findall(r'class="swatch-hex" data-copy-text="#[0-9a-f]{6}"', body)) == 6
    for name in ("labels", "gray", "color", "recolor", "overlay"):
        assert f"/api/v1/jobs/{job_id}/outputs/{name}.png" in body
        assert signed_in.client.get(f"/api/v1/jobs/{job_id}/outputs/{name}.png").status_code == 200
    assert "data-compare" in body and "PSNR" in body and "Timings" in body
    assert "data-k-chart" not in body  # only for k=auto
    run_again = re.search(r'href="(/\?image_id=[^"]+)" data-run-again', body)
    assert run_again and "k=6" in run_again.group(1)


def test_an_auto_k_job_page_marks_the_chosen_k(signed_in: Pages) -> None:
    job_id = job_id_of(signed_in.submit([(baby(), "baby.jpg")], k_mode="auto", k_max="7"))
    signed_in.api.run_job(job_id)
    result = signed_in.api.get(f"/api/v1/jobs/{job_id}").get_json()["result"]
    body = text(signed_in.client.get(f"/jobs/{job_id}"))
    assert "<svg" in body and "data-k-chart" in body
    bars = re.findall(r'class="kchart-bar[^"]*" data-k="(\d+)"', body)
    assert bars == [str(k) for k in range(2, 8)]
    chosen = re.findall(r'data-k="(\d+)" data-chosen="true"', body)
    assert chosen == [str(result["k"])]
    assert f"★ k = {result['k']}" in body


def test_a_failed_job_page_says_what_went_wrong_and_what_to_do(signed_in: Pages) -> None:
    from kseg.shared.store.db import session_scope
    from kseg.shared.store.jobs import fail_job

    job_id = job_id_of(signed_in.submit([(baby(), "baby.jpg")]))
    with session_scope(signed_in.api.settings.database_url) as session:
        fail_job(session, job_id, "timeout", "The job ran longer than 570 s and was stopped.")
    body = text(signed_in.client.get(f"/jobs/{job_id}"))
    assert "This job failed" in body and "ran longer than 570 s" in body
    assert "What to do:" in body and "max side" in body
    assert "data-watch-job" not in body
    history = text(signed_in.client.get("/jobs?status=failed"))
    assert "ran longer than 570 s" in history


def test_history_lists_newest_first_filters_and_pages(signed_in: Pages) -> None:
    ids = [
        job_id_of(signed_in.submit([(tiny_png(seed), f"img-{seed}.png")], k="3"))
        for seed in range(3)
    ]
    signed_in.api.run_job(ids[0])
    page = text(signed_in.client.get("/jobs"))
    order = [page.index(f"img-{seed}.png") for seed in (2, 1, 0)]
    assert order == sorted(order)  # newest first
    assert f"/api/v1/jobs/{ids[0]}/outputs/recolor/thumbnail?size=160" in page  # its tile
    assert f'data-live-job="/api/v1/jobs/{ids[1]}"' in page  # still queued: watched live

    done = text(signed_in.client.get("/jobs?status=succeeded"))
    assert "img-0.png" in done and "img-1.png" not in done
    assert "No canceled jobs." in text(signed_in.client.get("/jobs?status=canceled"))

    first = text(signed_in.client.get("/jobs?limit=2"))
    assert "img-2.png" in first and "img-1.png" in first and "img-0.png" not in first
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older
    second = text(signed_in.client.get(html.unescape(older.group(1))))
    assert "img-0.png" in second and "img-2.png" not in second
    assert 'rel="next"' not in second and "Newest" in second

    broken = signed_in.client.get("/jobs?cursor=garbage")
    assert broken.status_code == 200 and "not valid any more" in text(broken)


# ---------------------------------------------------------------- deleting


def test_deleting_a_finished_job_from_its_page_keeps_the_photo(signed_in: Pages) -> None:
    first = job_id_of(signed_in.submit([(baby(), "baby.jpg")], k="3"))
    second = job_id_of(signed_in.submit([(baby(), "baby.jpg")], k="4"))
    assert signed_in.api.run_job(first) == "succeeded"
    page = text(signed_in.client.get(f"/jobs/{first}"))
    assert f'action="/jobs/{first}/delete"' in page and "Delete job" in page

    done = signed_in.client.post(f"/jobs/{first}/delete", data={"csrf_token": signed_in.csrf()})
    assert done.status_code == 303 and done.headers["Location"].endswith("/jobs")
    assert "Deleted the job on baby.jpg" in text(signed_in.client.get("/jobs"))
    assert signed_in.client.get(f"/jobs/{first}").status_code == 404
    assert signed_in.client.get(f"/api/v1/jobs/{first}/outputs/recolor.png").status_code == 404
    assert signed_in.client.get(f"/jobs/{second}").status_code == 200  # same photo, kept
    assert signed_in.count(Image) == 1


def test_canceling_a_queued_job_from_its_page(signed_in: Pages) -> None:
    job_id = job_id_of(signed_in.submit([(baby(), "baby.jpg")], k="3"))
    page = text(signed_in.client.get(f"/jobs/{job_id}"))
    assert "Cancel job" in page
    done = signed_in.client.post(f"/jobs/{job_id}/delete", data={"csrf_token": signed_in.csrf()})
    assert done.status_code == 303 and done.headers["Location"].endswith(f"/jobs/{job_id}")
    assert signed_in.api.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "canceled"
    assert "Canceled the job on baby.jpg" in text(signed_in.client.get(f"/jobs/{job_id}"))
    assert signed_in.api.run_job(job_id) == "finished"  # its message finds nothing to run


def test_deleting_the_photo_from_a_job_page_takes_its_jobs(signed_in: Pages) -> None:
    first = job_id_of(signed_in.submit([(baby(), "baby.jpg")], k="3"))
    second = job_id_of(signed_in.submit([(baby(), "baby.jpg")], k="4"))
    other = job_id_of(signed_in.submit([(weixin(), "weixin.jpg")], k="3"))
    image_id = signed_in.api.get(f"/api/v1/jobs/{first}").get_json()["image"]["id"]
    assert f'action="/images/{image_id}/delete"' in text(signed_in.client.get(f"/jobs/{first}"))

    # A form post needs its CSRF token, like every other.
    refused = signed_in.client.post(f"/images/{image_id}/delete")
    assert refused.status_code == 400
    assert signed_in.count(Image) == 2

    done = signed_in.client.post(
        f"/images/{image_id}/delete", data={"csrf_token": signed_in.csrf()}
    )
    assert done.status_code == 303 and done.headers["Location"].endswith("/jobs")
    assert "Deleted baby.jpg and its 2 jobs." in text(signed_in.client.get("/jobs"))
    for job_id in (first, second):
        assert signed_in.client.get(f"/jobs/{job_id}").status_code == 404
    assert signed_in.client.get(f"/jobs/{other}").status_code == 200
    assert signed_in.count(Image) == 1 and signed_in.count(Job) == 1
    # Another owner cannot delete this owner's photo, nor see that it exists.
    kept = signed_in.api.get(f"/api/v1/jobs/{other}").get_json()["image"]["id"]
    browser = signed_in.api.app.test_client()
    stranger = Pages(replace(signed_in.api, client=browser, token=signed_in.api.new_token()))
    assert stranger.sign_in().status_code == 302
    assert (
        stranger.client.post(
            f"/images/{kept}/delete", data={"csrf_token": stranger.csrf()}
        ).status_code
        == 404
    )


def test_an_error_on_a_page_is_the_500_page_and_on_the_api_json(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    api = make_api(request, tmp_path, "sqlite", KSEG_AUTH_DISABLED="1")
    app = api.app
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: the handlers answer

    def boom() -> str:
        raise RuntimeError("a bug")

    app.add_url_rule("/boom", "boom", boom)
    app.add_url_rule("/api/v1/boom", "api_boom", boom)
    page = app.test_client().get("/boom")
    assert page.status_code == 500 and page.mimetype == "text/html"
    assert "Something went wrong" in text(page) and "a bug" not in text(page)
    answer = app.test_client().get("/api/v1/boom")
    assert answer.status_code == 500 and answer.get_json()["error"]["code"] == "internal_error"
