"""Helpers shared by the API tests (this module holds no tests).

Each test gets the Flask test client of a real app on a real database: PostgreSQL (with the
real Redis as broker) and the embedded default (SQLite with the filesystem broker). No worker
runs, so jobs stay queued unless a test runs one in-process with the real job runner.
"""

from __future__ import annotations

import io
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.conftest import IMAGES, service_env, settings_from

BACKENDS = ["postgres", "sqlite"]


@dataclass
class Api:
    """A test client plus a fresh owner (and its token) on one backend."""

    backend: str
    app: Flask
    client: FlaskClient
    settings: Any
    env: dict[str, str]
    token: str
    extra: dict[str, Any] = field(default_factory=dict)

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def new_token(
        self, owner: str | None = None, label: str = "test", *, one_time: bool = False
    ) -> str:
        from kseg.shared.store.auth import create_token
        from kseg.shared.store.db import session_scope

        with session_scope(self.settings.database_url) as session:
            owner = owner or f"owner-{uuid.uuid4().hex[:8]}"
            return create_token(session, owner, label, one_time=one_time)

    def get(self, path: str, token: str | None = None, **kw: Any) -> TestResponse:
        return self.client.get(path, headers={**self.headers(token), **kw.pop("headers", {})}, **kw)

    def post(self, path: str, token: str | None = None, **kw: Any) -> TestResponse:
        headers = {**self.headers(token), **kw.pop("headers", {})}
        return self.client.post(path, headers=headers, **kw)

    def put(self, path: str, token: str | None = None, **kw: Any) -> TestResponse:
        headers = {**self.headers(token), **kw.pop("headers", {})}
        return self.client.put(path, headers=headers, **kw)

    def patch(self, path: str, token: str | None = None, **kw: Any) -> TestResponse:
        headers = {**self.headers(token), **kw.pop("headers", {})}
        return self.client.patch(path, headers=headers, **kw)

    def delete(self, path: str, token: str | None = None) -> TestResponse:
        return self.client.delete(path, headers=self.headers(token))

    def submit(self, data: bytes, filename: str = "img.jpg", **params: Any) -> TestResponse:
        form: dict[str, Any] = {k: str(v) for k, v in params.items()}
        form["file"] = (io.BytesIO(data), filename)
        return self.post("/api/v1/jobs", data=form, content_type="multipart/form-data")

    def upload(self, *files: tuple[bytes, str]) -> TestResponse:
        form = {"file": [(io.BytesIO(data), name) for data, name in files]}
        return self.post("/api/v1/images", data=form, content_type="multipart/form-data")

    def run_job(self, job_id: str) -> str:
        """Run a queued job to its end in-process, with the worker's own job runner."""
        from kseg.shared.store.runner import run_job

        return run_job(job_id, settings=self.settings, worker=f"test-{uuid.uuid4().hex[:6]}")


def database_for(request: pytest.FixtureRequest, backend: str, fresh: bool = False) -> str:
    if backend == "postgres":
        if fresh:
            return str(request.getfixturevalue("pg_database")("api"))
        return str(request.getfixturevalue("pg_url"))
    return str(request.getfixturevalue("sqlite_url"))


def make_api(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    backend: str,
    *,
    fresh_db: bool = False,
    broker_url: str | None = None,
    **env_extra: Any,
) -> Api:
    from kseg.web import create_app

    database_url = database_for(request, backend, fresh=fresh_db)
    if broker_url is None:
        if backend == "postgres":
            broker_url = str(request.getfixturevalue("redis_url"))
        else:
            broker_url = "filesystem://"
    env = service_env(database_url, broker_url, tmp_path / "instance", **env_extra)
    settings = settings_from(env)
    app = create_app({"TESTING": True}, settings=settings)
    api = Api(backend, app, app.test_client(), settings, env, token="")
    api.token = api.new_token()
    return api


def assert_error(response: TestResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """The contract's error: this status, JSON ``{"error": {"code", "message"}}``."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json", response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"], body
    assert error["code"] == error["code"].lower() and " " not in error["code"], body
    assert isinstance(error["message"], str) and len(error["message"]) > 10, body
    if code is not None:
        assert error["code"] == code, body
    return dict(error)


# ---------------------------------------------------------------- images


def baby() -> bytes:
    return (IMAGES / "baby.jpg").read_bytes()


def weixin() -> bytes:
    return (IMAGES / "weixin.jpg").read_bytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def tiny_png(seed: int = 0, size: int = 8) -> bytes:
    """A small valid PNG, different for each ``seed``."""
    from PIL import Image

    image = Image.new("RGB", (size, size))
    image.putdata(
        [
            ((x * 31 + seed) % 256, (y * 17 + seed * 7) % 256, (seed * 13) % 256)
            for y in range(size)
            for x in range(size)
        ]
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
