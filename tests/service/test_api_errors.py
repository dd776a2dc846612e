"""Every bad request answers the contract's status and JSON error body: never a 500, never HTML."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from kseg.shared.store.db import get_sessionmaker
from kseg.shared.store.models import Image, Job
from tests.service.test_api_common import (
    BACKENDS,
    Api,
    assert_error,
    baby,
    make_api,
    png_header_only,
    tiny_png,
)


def count(api: Api, model: Any) -> int:
    """This owner's rows of ``model`` (the PostgreSQL database is shared by the tests)."""
    from kseg.shared.store.auth import owner_for_token

    with get_sessionmaker(api.settings.database_url)() as session:
        owner = owner_for_token(session, api.token)
        assert owner is not None
        stmt = select(func.count()).select_from(model).where(model.owner_id == owner.id)
        return int(session.scalar(stmt) or 0)


# ---------------------------------------------------------------- images that are not


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        pytest.param(
            b"this is not an image, just text\n" * 10, 415, "unsupported_image", id="text"
        ),
        pytest.param(b"", 422, "empty_file", id="empty"),
        pytest.param(baby()[: len(baby()) // 2], 422, "corrupt_image", id="truncated-jpeg"),
        pytest.param(png_header_only(30000, 30000), 413, "image_too_large", id="bomb-png"),
    ],
)
@pytest.mark.parametrize("endpoint", ["jobs", "images"])
def test_bad_image(api: Api, endpoint: str, data: bytes, status: int, code: str) -> None:
    r = api.submit(data, "upload.jpg") if endpoint == "jobs" else api.upload((data, "upload.jpg"))
    assert_error(r, status, code)
    assert count(api, Image) == 0 and count(api, Job) == 0, "nothing stored"


def test_one_bad_file_rejects_the_whole_upload(api: Api) -> None:
    r = api.upload((tiny_png(1), "good.png"), (b"nope" * 10, "bad.txt"))
    error = assert_error(r, 415, "unsupported_image")
    assert "bad.txt" in error["message"]
    assert count(api, Image) == 0


def test_upload_over_the_size_limit_is_413(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    for backend in BACKENDS:
        api = make_api(request, tmp_path / backend, backend, KSEG_MAX_UPLOAD_BYTES=4000)
        assert len(baby()) > 4000
        assert_error(api.submit(baby()), 413, "upload_too_large")
        assert_error(api.upload((baby(), "b.jpg")), 413, "upload_too_large")
        assert api.submit(tiny_png(2)).status_code == 202  # small ones still pass


def test_pixel_limit_is_413(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    api = make_api(request, tmp_path, "sqlite", KSEG_MAX_IMAGE_PIXELS=1000)
    assert_error(api.submit(baby()), 413, "image_too_large")  # 100x133 > 1000 pixels
    assert api.submit(tiny_png(3)).status_code == 202  # 8x8


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"k": "1"}, id="k=1"),
        pytest.param({"k": "300"}, id="k=300"),
        pytest.param({"k": "abc"}, id="k=abc"),
        pytest.param({"k": "2.5"}, id="k=2.5"),
        pytest.param({"normalize": "bogus"}, id="normalize=bogus"),
        pytest.param({"color_space": "hsv"}, id="color_space=hsv"),
        pytest.param({"outputs": "labels,sparkles"}, id="unknown-output"),
        pytest.param({"outputs": ""}, id="no-outputs"),
        pytest.param({"max_side": "4"}, id="max_side=4"),
        pytest.param({"seed": "-1"}, id="seed=-1"),
        pytest.param({"k": "auto", "k_min": "9", "k_max": "3"}, id="k_min>k_max"),
        pytest.param({"colour": "red"}, id="unknown-field"),
        pytest.param({"reuse": "perhaps"}, id="reuse=perhaps"),
        pytest.param({"k": ["3", "4"]}, id="k-twice"),
        pytest.param({"k": "1" * 401}, id="k-401-digits"),
        pytest.param({"k": "9" * 5000}, id="k-over-python's-int-digits"),
        pytest.param({"seed": "1" * 401}, id="seed-401-digits"),
        pytest.param({"max_side": "1e400"}, id="max_side=1e400"),
    ],
)
def test_invalid_parameter_multipart_is_422(api: Api, fields: dict[str, Any]) -> None:
    r = api.post("/api/v1/jobs", data={**fields, "file": (io.BytesIO(tiny_png(5)), "t.png")})
    error = assert_error(r, 422, "invalid_parameter")
    name = next(iter(fields))
    assert name in error["message"] or name == "k_min", error
    assert count(api, Job) == 0 and count(api, Image) == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"k": 1}, id="k=1"),
        pytest.param({"k": 300}, id="k=300"),
        pytest.param({"k": "abc"}, id="k=abc"),
        pytest.param({"k": True}, id="k=true"),
        pytest.param({"normalize": "bogus"}, id="normalize=bogus"),
        pytest.param({"outputs": ["labels", "sparkles"]}, id="unknown-output"),
        pytest.param({"unknown": 1}, id="unknown-field"),
        pytest.param({"image_id": 5}, id="image_id-number"),
        pytest.param({"k": 10**400}, id="k=10**400"),
        pytest.param({"k": -(10**400)}, id="k=-10**400"),
        pytest.param({"k": 1e308}, id="k=1e308"),
        pytest.param({"k_min": 10**400, "k": "auto"}, id="k_min=10**400"),
        pytest.param({"seed": 10**400}, id="seed=10**400"),
        pytest.param({"max_side": 10**400}, id="max_side=10**400"),
    ],
)
def test_invalid_parameter_json_is_422(api: Api, body: dict[str, Any]) -> None:
    image = api.upload((tiny_png(6), "t.png")).get_json()["items"][0]
    r = api.post("/api/v1/jobs", json={"image_id": image["id"], **body})
    error = assert_error(r, 422, "invalid_parameter")
    assert len(error["message"]) < 300, error
    assert count(api, Job) == 0


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b'{"k": 1e400}', id="k=1e400 (inf)"),
        pytest.param(b'{"k": NaN}', id="k=NaN"),
        pytest.param(b'{"k": ' + b"9" * 5000 + b"}", id="k-over-python's-int-digits"),
    ],
)
def test_numbers_python_cannot_hold_are_4xx(api: Api, text: bytes) -> None:
    r = api.post("/api/v1/jobs", data=text, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422) and r.is_json, (r.status_code, r.data[:300])


@pytest.mark.parametrize("k", [10**400, "1" * 401, 1e308], ids=["10**400", "401-digits", "1e308"])
def test_gallery_params_with_huge_numbers_are_422(api: Api, k: Any) -> None:
    r = api.post("/api/v1/galleries", json={"name": "g", "params": {"k": k}})
    error = assert_error(r, 422, "invalid_parameter")
    assert "k" in error["message"]


def test_json_without_image_id_is_422(api: Api) -> None:
    assert_error(api.post("/api/v1/jobs", json={"k": 3}), 422, "invalid_parameter")


# ---------------------------------------------------------------- malformed requests


@pytest.mark.parametrize(
    ("body", "ctype", "code"),
    [
        pytest.param(b"{not json", "application/json", "malformed_json", id="bad-json"),
        pytest.param(b"[1, 2]", "application/json", "malformed_json", id="json-array"),
        pytest.param(b"\xff\xfe\x00", "application/json", "malformed_json", id="not-utf8"),
        pytest.param(b"", "application/json", "malformed_json", id="empty-json"),
        pytest.param(b"[" * 100000, "application/json", "malformed_json", id="deep-json"),
        pytest.param(b"k=3", "application/x-www-form-urlencoded", None, id="urlencoded"),
        pytest.param(b"hello", "text/plain", "unsupported_content_type", id="text-plain"),
        pytest.param(b"hello", "", "unsupported_content_type", id="no-content-type"),
    ],
)
def test_malformed_job_request_is_400(api: Api, body: bytes, ctype: str, code: str | None) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    r = api.post("/api/v1/jobs", data=body, headers=headers)
    assert_error(r, 400, code)


def test_multipart_without_file_part_is_400(api: Api) -> None:
    r = api.post("/api/v1/jobs", data={"k": "3"}, content_type="multipart/form-data")
    assert_error(r, 400, "missing_file")
    r = api.post("/api/v1/jobs", data={"file": "just text"}, content_type="multipart/form-data")
    assert_error(r, 400, "missing_file")
    r = api.post("/api/v1/images", data={}, content_type="multipart/form-data")
    assert_error(r, 400, "missing_file")
    r = api.post(
        "/api/v1/jobs",
        data={"image": (io.BytesIO(tiny_png(7)), "t.png")},
        content_type="multipart/form-data",
    )
    assert_error(r, 400, "unexpected_file_part")


def test_two_files_for_one_job_is_400(api: Api) -> None:
    r = api.post(
        "/api/v1/jobs",
        data={"file": [(io.BytesIO(tiny_png(8)), "a.png"), (io.BytesIO(tiny_png(9)), "b.png")]},
        content_type="multipart/form-data",
    )
    assert_error(r, 400, "too_many_files")


def test_broken_multipart_is_400_not_500(api: Api) -> None:
    body = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc'
    r = api.post(
        "/api/v1/jobs", data=body, headers={"Content-Type": "multipart/form-data; boundary=xyz"}
    )
    assert r.status_code in (400, 413), r.get_data(as_text=True)
    assert_error(r, r.status_code)
    r = api.post("/api/v1/jobs", data=b"abc", headers={"Content-Type": "multipart/form-data"})
    assert_error(r, 400)


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("limit=0", 422, "invalid_parameter"),
        ("limit=201", 422, "invalid_parameter"),
        ("limit=abc", 422, "invalid_parameter"),
        ("cursor=garbage", 400, "invalid_cursor"),
        ("cursor=W10", 400, "invalid_cursor"),  # base64 of "[]"
        ("cursor=%FF%FE", 400, "invalid_cursor"),
    ],
)
@pytest.mark.parametrize("what", ["jobs", "images"])
def test_bad_paging_parameters(api: Api, what: str, query: str, status: int, code: str) -> None:
    assert_error(api.get(f"/api/v1/{what}?{query}"), status, code)


def test_limit_bounds_are_accepted(api: Api) -> None:
    assert api.get("/api/v1/jobs?limit=1").status_code == 200
    assert api.get("/api/v1/jobs?limit=200").status_code == 200


def test_unknown_path_and_wrong_method_are_json(api: Api) -> None:
    assert_error(api.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(api.client.get("/api/v2/jobs"), 404, "not_found")
    assert_error(api.get("/api/v1/jobs/x/outputs/labels"), 404, "not_found")
    r = api.client.put("/api/v1/jobs", headers=api.headers())
    assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["Allow"]
    assert_error(api.client.patch("/api/v1/jobs/x", headers=api.headers()), 405)
    assert_error(api.client.delete("/api/v1/images", headers=api.headers()), 405)


# ---------------------------------------------------------------- auth


def test_no_token_is_401_with_challenge(api: Api) -> None:
    for method, path in [
        ("get", "/api/v1/jobs"),
        ("get", "/api/v1/jobs/x"),
        ("post", "/api/v1/jobs"),
        ("get", "/api/v1/images"),
        ("post", "/api/v1/images"),
        ("delete", "/api/v1/jobs/x"),
        ("get", "/api/v1/jobs/x/outputs/labels.png"),
    ]:
        r = getattr(api.client, method)(path)
        assert_error(r, 401, "missing_token")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong-token", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "bearer"],
)
def test_bad_token_is_401(api: Api, header: str) -> None:
    r = api.client.get("/api/v1/jobs", headers={"Authorization": header})
    assert_error(r, 401, "invalid_token")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_token_is_401(api: Api) -> None:
    from sqlalchemy import update

    from kseg.shared.store.auth import hash_token
    from kseg.shared.store.db import session_scope
    from kseg.shared.store.models import ApiToken, utcnow

    token = api.new_token()
    assert api.get("/api/v1/jobs", token=token).status_code == 200
    with session_scope(api.settings.database_url) as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == hash_token(token))
            .values(revoked_at=utcnow())
        )
    assert_error(api.get("/api/v1/jobs", token=token), 401, "invalid_token")


def test_env_token_is_accepted_for_the_default_owner(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    api = make_api(request, tmp_path, "sqlite", KSEG_API_TOKEN="env-secret-token")
    r = api.get("/api/v1/jobs", token="env-secret-token")
    assert r.status_code == 200, r.get_json()
    job = api.submit(tiny_png(12)).get_json()  # another owner's job is not the default's
    assert_error(api.get(f"/api/v1/jobs/{job['id']}", token="env-secret-token"), 404)


def test_env_token_waits_for_migration(tmp_path: Path) -> None:
    """An app started on an empty database answers 503 (not 500), then works once migrated."""
    from kseg.shared.store.db import migrate
    from kseg.web import create_app
    from tests.conftest import service_env, settings_from

    url = f"sqlite:///{tmp_path / 'late.db'}"
    env = service_env(url, "filesystem://", tmp_path / "instance", KSEG_API_TOKEN="late-token")
    app = create_app({"TESTING": True}, settings=settings_from(env))
    client = app.test_client()
    headers = {"Authorization": "Bearer late-token"}
    assert_error(client.get("/api/v1/jobs", headers=headers), 503, "database_unavailable")
    migrate(url)
    assert client.get("/api/v1/jobs", headers=headers).status_code == 200


def test_auth_disabled_makes_everyone_the_default_owner(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    api = make_api(request, tmp_path, "sqlite", KSEG_AUTH_DISABLED="1")
    r = api.client.post("/api/v1/jobs", data={"file": (io.BytesIO(tiny_png(13)), "t.png")})
    assert r.status_code == 202, r.get_json()
    job_id = r.get_json()["id"]
    assert api.client.get(f"/api/v1/jobs/{job_id}").status_code == 200


def test_database_down_is_503(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from kseg.web import create_app
    from tests.conftest import free_port, service_env, settings_from

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    env = service_env(url, "filesystem://", tmp_path / "instance")
    client = create_app({"TESTING": True}, settings=settings_from(env)).test_client()
    r = client.get("/api/v1/jobs", headers={"Authorization": "Bearer whatever"})
    assert_error(r, 503, "database_unavailable")
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("ident", ["a%00b", "x" * 300, "%C3%00%00%AB", "..%2F..%2Fetc"])
def test_odd_ids_are_404(api: Api, ident: str) -> None:
    for path in (
        f"/api/v1/jobs/{ident}",
        f"/api/v1/images/{ident}",
        f"/api/v1/images/{ident}/file",
    ):
        r = api.get(path)
        assert_error(r, 404)
    r = api.post("/api/v1/jobs", json={"image_id": "a\x00b"})
    assert_error(r, 404, "image_not_found")


def test_unmigrated_postgres_is_503(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from kseg.web import create_app
    from tests.conftest import _pg_exec, service_env, settings_from

    admin = str(request.getfixturevalue("pg_admin_url"))
    name = f"kseg_test_empty_{tmp_path.name[-20:]}".replace("-", "_").lower()
    _pg_exec(admin, f'CREATE DATABASE "{name}"')
    try:
        url = admin.rsplit("/", 1)[0] + f"/{name}"
        env = service_env(url, "filesystem://", tmp_path / "instance", KSEG_API_TOKEN="t0ken")
        client = create_app({"TESTING": True}, settings=settings_from(env)).test_client()
        r = client.get("/api/v1/jobs", headers={"Authorization": "Bearer t0ken"})
        assert_error(r, 503, "database_unavailable")
    finally:
        from kseg.shared.store.db import dispose_all

        dispose_all()
        _pg_exec(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_oversize_upload_over_a_real_socket_is_413_json(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Through a real HTTP server the client gets the JSON 413, not a reset connection."""
    import urllib.error
    import urllib.request

    from tests.conftest import serve_app

    api = make_api(request, tmp_path, "sqlite", KSEG_MAX_UPLOAD_BYTES=100_000)
    server = serve_app(api.app)
    try:
        boundary = "kseg-413"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"'
                "\r\n\r\n"
            ).encode()
            + b"x" * 2_000_000
            + f"\r\n--{boundary}--\r\n".encode()
        )
        req = urllib.request.Request(
            server.base_url + "/api/v1/jobs",
            data=body,
            method="POST",
            headers={
                **api.headers(),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(req, timeout=30)
        assert caught.value.code == 413
        assert caught.value.headers.get_content_type() == "application/json"
        payload = caught.value.read()
        assert b'"upload_too_large"' in payload
    finally:
        server.stop()
