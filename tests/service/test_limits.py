"""Rate limits and quotas: a guesser of tokens and a flood of submissions get 429 with
``Retry-After``; a single user in normal use never does.

On PostgreSQL the counters live in the test Redis (the real stack's storage), on SQLite in
the web process's memory (the embedded default's).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from tests.service.test_api_common import BACKENDS, Api, assert_error, make_api, tiny_png


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def api_with(request: pytest.FixtureRequest, tmp_path: Path, backend: str, **env: Any) -> Api:
    return make_api(request, tmp_path, backend, **env)


def noise_png(side: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def retry_after(response: Any) -> int:
    value = int(response.headers["Retry-After"])
    assert 1 <= value <= 3600, value
    return value


# ---------------------------------------------------------------- failed authentication


def test_guessing_tokens_gets_429_after_a_burst(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    api = api_with(request, tmp_path, backend, KSEG_RATE_LIMIT_FAILED_AUTH="5/minute")
    for i in range(5):
        assert_error(api.get("/api/v1/jobs", token=f"guess-{i}"), 401, "invalid_token")
    r = api.get("/api/v1/jobs", token="guess-6")
    error = assert_error(r, 429, "rate_limited")
    assert 1 <= retry_after(r) <= 60
    assert "Retry-After" in error["message"]
    # Locked out: even the right token waits, and so does the sign-in form...
    assert_error(api.get("/api/v1/jobs"), 429, "rate_limited")
    page = api.client.post("/login", data={"token": api.token})
    assert page.status_code == 429 and page.mimetype == "text/html"
    assert "Retry-After" in page.headers
    # ...but health probes and metrics stay open.
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get("/metrics").status_code == 200


def test_good_requests_do_not_count(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    api = api_with(request, tmp_path, backend, KSEG_RATE_LIMIT_FAILED_AUTH="5/minute")
    for _ in range(20):
        assert api.get("/api/v1/jobs").status_code == 200
    assert_error(api.get("/api/v1/jobs", token="wrong"), 401, "invalid_token")
    assert api.get("/api/v1/jobs").status_code == 200


def test_wrong_sign_in_tokens_count_too(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    api = api_with(request, tmp_path, "sqlite", KSEG_RATE_LIMIT_FAILED_AUTH="3/minute")
    api.app.config["WTF_CSRF_ENABLED"] = False
    for i in range(3):
        assert api.client.post("/login", data={"token": f"nope-{i}"}).status_code == 403
    assert api.client.get("/login/not-a-link").status_code == 429
    assert_error(api.get("/api/v1/jobs"), 429, "rate_limited")


def test_the_default_limit_stops_a_guesser(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    api = api_with(request, tmp_path, "sqlite")
    answers = [api.get("/api/v1/jobs", token=f"guess-{i}").status_code for i in range(100)]
    assert answers.count(401) == 30 and answers[-1] == 429, answers


# ---------------------------------------------------------------- submissions


def test_a_flood_of_submissions_hits_the_rate_limit(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    api = api_with(
        request, tmp_path, backend, KSEG_RATE_LIMIT_SUBMISSIONS="4/minute", KSEG_QUOTA_ACTIVE_JOBS=0
    )
    for i in range(4):
        assert api.submit(tiny_png(i), "t.png", k=2).status_code == 202
    r = api.submit(tiny_png(99), "t.png", k=2)
    assert_error(r, 429, "rate_limited")
    retry_after(r)
    # Per owner: another owner submits on.
    other = api.new_token()
    assert (
        api.post(
            "/api/v1/jobs",
            token=other,
            data={"file": (io.BytesIO(tiny_png(100)), "t.png"), "k": "2"},
            content_type="multipart/form-data",
        ).status_code
        == 202
    )


def test_active_jobs_quota(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    api = api_with(request, tmp_path, backend, KSEG_QUOTA_ACTIVE_JOBS=3)
    ids = [api.submit(tiny_png(i), "t.png", k=2).get_json()["id"] for i in range(3)]
    r = api.submit(tiny_png(50), "t.png", k=2)
    error = assert_error(r, 429, "quota_exceeded")
    assert retry_after(r) <= 60
    assert "gallery" in error["message"] and "3" in error["message"]
    # Nothing was stored for the refused one.
    images = api.get("/api/v1/images?limit=100").get_json()["items"]
    assert len(images) == 3
    # One finishes: room for one more.
    assert api.run_job(ids[0]) == "succeeded"
    assert api.submit(tiny_png(50), "t.png", k=2).status_code == 202


def test_gallery_runs_are_not_held_by_the_active_jobs_quota(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    api = api_with(request, tmp_path, "sqlite", KSEG_QUOTA_ACTIVE_JOBS=2)
    gallery = api.post("/api/v1/galleries", json={"name": "bulk", "params": {"k": 2}}).get_json()
    form = {"file": [(io.BytesIO(tiny_png(i)), f"{i}.png") for i in range(5)]}
    r = api.post(
        f"/api/v1/galleries/{gallery['id']}/images", data=form, content_type="multipart/form-data"
    )
    assert r.status_code in (200, 201), r.get_json()
    run = api.post(f"/api/v1/galleries/{gallery['id']}/runs", json={}).get_json()
    assert run["jobs"]["total"] == 5


def test_stored_bytes_quota(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    api = api_with(request, tmp_path, backend, KSEG_QUOTA_STORED_MB=1)
    big = noise_png(700)  # ~1.5 MB: noise does not compress
    assert len(big) > 1024 * 1024
    small = tiny_png(2)
    assert api.upload((small, "small.png")).status_code == 201
    r = api.upload((big, "big.png"))
    error = assert_error(r, 429, "quota_exceeded")
    assert "delete" in error["message"].lower()
    retry_after(r)
    # The same bytes again cost nothing: an image stored already is reused.
    assert api.upload((small, "again.png")).status_code == 201


def test_quota_on_the_submit_page(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    api = api_with(request, tmp_path, "sqlite", KSEG_QUOTA_ACTIVE_JOBS=1, KSEG_AUTH_DISABLED=1)
    api.app.config["WTF_CSRF_ENABLED"] = False

    def post(i: int) -> Any:
        return api.client.post(
            "/",
            data={
                "file": (io.BytesIO(tiny_png(i)), "t.png"),
                "source": "upload",
                "k_mode": "number",
                "k": "2",
                "normalize": "fixed",
                "color_space": "rgb",
                "outputs": ["recolor"],
                "max_side": "",
                "seed": "0",
                "reuse": "1",
            },
            content_type="multipart/form-data",
        )

    assert post(1).status_code == 303
    page = post(2)
    assert page.status_code == 429 and page.mimetype == "text/html"
    assert "KSEG_QUOTA_ACTIVE_JOBS" in page.get_data(as_text=True)


def test_a_bad_limit_setting_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    from tests.conftest import service_env, settings_from

    env = service_env("sqlite://", "filesystem://", tmp_path, KSEG_RATE_LIMIT_SUBMISSIONS="lots")
    with pytest.raises(SystemExit, match=r"KSEG_RATE_LIMIT_SUBMISSIONS.*30/minute"):
        settings_from(env)


def test_the_defaults_stop_a_flood_but_not_a_user(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    api = api_with(request, tmp_path, "sqlite")
    answers = []
    for i in range(500):  # as fast as the test client goes: a flood
        answers.append(api.submit(tiny_png(i), "t.png", k=2).status_code)
        if answers[-1] != 202:
            break
    assert answers[-1] == 429 and len(answers) < 500, answers
    assert answers.count(202) >= 20, "a user's handful of submissions always passes"
